"""Ranking latency of SpecIndex against per-model loops (same process, same data, same BLAS setting).

Synthetic specifications: N = 55 images and prompts per model, D = 768 (unit-norm image features),
in two libraries: "shared" (every model has the one default prompt set: the index's best case)
and "own" (every fifth model has a prompt set of its own, paper A.5: single-model groups). For
M = 100, 1 000, 10 000 it reports the median latency of (a) a query with a NEW image (and its
pseudo-prompt) and (b) a RE-RANK after the prompt was edited (same image, cached image term), and
two per-model loops, both float32 numpy under the index's BLAS setting (one thread for the small
per-model products):

- "loop": Eq. 9 model by model from its Z and Q alone (prompt cosines, Gram matrix, kernel column);
- "loop+gram": the fair baseline, the same loop with every query-independent part precomputed (the
  kernel matrix exp(-gamma D2) and the squared norms per model, float32) and the prompt weights
  computed once per distinct prompt set. Only the kernel column and two dot products per model
  remain per query; for (b) its kernel columns are kept too, as the index keeps its image term.

The speed-up of (a) is given against both loops and of (b) against the loop+gram re-rank, for both
libraries; also index memory per model.

    python benchmarks/rank_latency.py [--sizes 100 1000 10000] [--repeats 15] [--loop-cap 1000]
                                      [--libraries shared own]

Targets (2-core machine): (a) M=1000 <= 10 ms, M=10000 <= 100 ms; (b) M=10000 <= 15 ms;
(a) >= 50x faster than the loop at M=1000; <= 200 KB per model. Missed targets are printed as such.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gmi_desktop.core.blas import blas_threads  # noqa: E402
from gmi_desktop.core.index import SpecIndex  # noqa: E402
from gmi_desktop.core.scores import DEFAULT_GAMMA, DEFAULT_WEIGHTING, prompt_coefficients, score_proposal  # noqa: E402
from gmi_desktop.core.spec import Requirement, SpecRecipe, Specification, prompt_set_digest  # noqa: E402

N, D, DT = 55, 768, 768
OWN_EVERY = 5  # "own" library: models 0, 5, 10, ... have their own prompt set


def synthetic_specs(m: int, seed: int = 0) -> list[Specification]:
    """``m`` specifications sharing one default prompt set (the "shared" library)."""
    rng = np.random.default_rng(seed)
    prompts = tuple(f"default prompt {i}" for i in range(N))
    q = rng.standard_normal((N, DT), dtype=np.float32)
    q.setflags(write=False)
    digest = prompt_set_digest(prompts)
    z = np.empty((m, N, D), dtype=np.float32)
    for c in range(0, m, 500):  # per-model style centre + noise, unit norm
        e = min(c + 500, m)
        centre = rng.standard_normal((e - c, 1, D), dtype=np.float32)
        block = centre + 0.8 * rng.standard_normal((e - c, N, D), dtype=np.float32)
        z[c:e] = block / np.linalg.norm(block, axis=2, keepdims=True)
    return [
        Specification(f"model-{i:05d}", z[i], q, prompts, SpecRecipe(f"sha{i}", "synthetic-768", digest))
        for i in range(m)
    ]


def with_own_prompts(specs: list[Specification], seed: int = 0) -> list[Specification]:
    """The same models (same Z arrays, no copy), every :data:`OWN_EVERY`-th with its own prompts."""
    own_rng = np.random.default_rng([seed, 1])
    out = []
    for i, s in enumerate(specs):
        if i % OWN_EVERY:
            out.append(s)
            continue
        own = tuple(f"model {i} prompt {j}" for j in range(N))
        qi = own_rng.standard_normal((N, DT), dtype=np.float32)
        out.append(Specification(s.model_id, s.image_features, qi, own,
                                 SpecRecipe(s.recipe.checkpoint_sha256, s.recipe.encoder_id, prompt_set_digest(own))))
    return out


def query(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    z = rng.standard_normal((1, D)).astype(np.float32)
    return z / np.linalg.norm(z), rng.standard_normal((1, DT)).astype(np.float32)


def loop_scores(specs: list[Specification], z: np.ndarray, p: np.ndarray, gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """The straightforward implementation: one model at a time, everything from Z and Q."""
    out = np.empty(len(specs))
    qn = p[0] / np.linalg.norm(p[0])
    for m, s in enumerate(specs):
        zs, qs = s.image_features, s.prompt_features
        alpha = prompt_coefficients((qs @ qn) / np.linalg.norm(qs, axis=1), DEFAULT_WEIGHTING)
        sq = (zs * zs).sum(1)
        gram = np.exp(-gamma * np.maximum(sq[:, None] + sq[None, :] - 2.0 * (zs @ zs.T), 0.0))
        col = np.exp(-gamma * np.maximum(sq + (z[0] @ z[0]) - 2.0 * (zs @ z[0]), 0.0))
        out[m] = alpha @ gram @ alpha - 2.0 * alpha @ col + 1.0
    return out


class GramLoop:
    """The fair per-model loop: kernel matrices and squared norms precomputed per model (float32),
    unit prompt rows per distinct prompt set; per query only the kernel column, the prompt weights
    of each distinct prompt set (cached by digest) and two products per model."""

    def __init__(self, specs: list[Specification], gamma: float = DEFAULT_GAMMA):
        self.gamma = np.float32(gamma)
        self.z = [s.image_features for s in specs]
        self.sq = [np.einsum("ij,ij->i", s.image_features, s.image_features) for s in specs]
        self.kernel = [np.exp(-self.gamma * np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)).astype(np.float32)
                       for z, sq in zip(self.z, self.sq)]
        self.digest = [s.recipe.prompt_set_digest for s in specs]
        self.unit_q = {}
        for s in specs:
            if s.recipe.prompt_set_digest not in self.unit_q:
                qs = s.prompt_features
                self.unit_q[s.recipe.prompt_set_digest] = qs / np.linalg.norm(qs, axis=1, keepdims=True)

    def columns(self, z: np.ndarray) -> list[np.ndarray]:
        """The query image's kernel column per model (what a prompt edit does not change)."""
        zq = z[0].astype(np.float32)
        zz = zq @ zq
        return [np.exp(-self.gamma * np.maximum(sq + zz - 2.0 * (zs @ zq), 0.0)) for zs, sq in zip(self.z, self.sq)]

    def rerank(self, columns: list[np.ndarray], p: np.ndarray) -> np.ndarray:
        qn = (p[0] / np.linalg.norm(p[0])).astype(np.float32)
        alphas = {d: prompt_coefficients(uq @ qn, DEFAULT_WEIGHTING).astype(np.float32) for d, uq in self.unit_q.items()}
        out = np.empty(len(columns))
        for m, (col, k, d) in enumerate(zip(columns, self.kernel, self.digest)):
            alpha = alphas[d]
            out[m] = alpha @ k @ alpha - 2.0 * (alpha @ col) + 1.0
        return out

    def scores(self, z: np.ndarray, p: np.ndarray) -> np.ndarray:
        return self.rerank(self.columns(z), p)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def measure(specs: list[Specification], m_values, args, rng) -> list[tuple]:
    rows = []
    for m in m_values:
        lib = specs[:m]
        t0 = time.perf_counter()
        index = SpecIndex(lib)
        build_s = time.perf_counter() - t0
        z, p = query(rng)

        def new_image():
            zq, pq = query(rng)
            return index.score(Requirement(zq, pq))

        prepared = index.prepare_image(z)

        def prompt_edit():
            return index.score_prompt(prepared, rng.standard_normal((1, DT)).astype(np.float32))

        fast_a = median_ms(new_image, args.repeats)
        fast_b = median_ms(prompt_edit, args.repeats)

        loop_m = min(m, args.loop_cap)
        loop_specs = lib[:loop_m]
        loop_repeats = max(3, args.repeats // 5)
        gram_loop = GramLoop(loop_specs)
        with blas_threads(1):  # the index's setting for small products
            loop_ms = median_ms(lambda: loop_scores(loop_specs, z, p), loop_repeats) * m / loop_m
            gram_ms = median_ms(lambda: gram_loop.scores(z, p), loop_repeats) * m / loop_m
            cols = gram_loop.columns(z)
            gram_b_ms = median_ms(lambda: gram_loop.rerank(cols, rng.standard_normal((1, DT)).astype(np.float32)),
                                  loop_repeats) * m / loop_m
        req = Requirement(z, p)
        want = np.array([score_proposal(s, req) for s in loop_specs])
        err = max(float(np.abs(index.score(req)[:loop_m] - want).max()),
                  float(np.abs(loop_scores(loop_specs, z, p) - want).max()),
                  float(np.abs(gram_loop.scores(z, p) - want).max()))
        z_rate = index._z.nbytes / (fast_a / 1000.0) / 1e9  # (a) streams Z once: its effective GB/s
        rows.append((m, fast_a, fast_b, loop_ms, gram_ms, gram_b_ms, loop_m < m, index.nbytes / m, build_s, err,
                     z_rate))
        del index, prepared, gram_loop
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--loop-cap", type=int, default=1000, help="largest M the loops are run on in full")
    ap.add_argument("--libraries", nargs="+", choices=["shared", "own"], default=["shared", "own"])
    args = ap.parse_args(argv)
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    shared = synthetic_specs(max(args.sizes))
    elapsed = time.perf_counter() - t0
    print(f"# built {len(shared)} synthetic specs (N={N}, D={D}) in {elapsed:.1f} s", file=sys.stderr)
    libraries = {"shared": shared, "own": with_own_prompts(shared)}
    head = ["library", "M", "fast (a) ms", "fast (b) ms", "loop ms", "loop+gram ms", "(a) vs loop",
            "(a) vs loop+gram", "loop+gram (b) ms", "(b) vs loop+gram", "KB/model", "max|diff|", "(a) Z GB/s"]
    table, checks = [], []
    for name in args.libraries:
        rows = measure(libraries[name], sorted(args.sizes), args, rng)
        for m, a, b, loop, gram, gram_b, extrapolated, mem, _build_s, err, rate in rows:
            star = "*" if extrapolated else ""
            table.append([name, str(m), f"{a:.2f}", f"{b:.2f}", f"{loop:.0f}{star}", f"{gram:.1f}{star}",
                          f"{loop / a:.0f}x", f"{gram / a:.1f}x", f"{gram_b:.1f}{star}", f"{gram_b / b:.1f}x",
                          f"{mem / 1024:.1f}", f"{err:.1e}", f"{rate:.1f}"])
        by_m = {r[0]: r for r in rows}
        if 1000 in by_m:
            checks.append((f"{name}: (a) M=1000 <= 10 ms", by_m[1000][1] <= 10))
            checks.append((f"{name}: (a) >= 50x loop at M=1000", by_m[1000][3] / by_m[1000][1] >= 50))
            checks.append((f"{name}: (a) >= 50x loop+gram at M=1000", by_m[1000][4] / by_m[1000][1] >= 50))
        if 10000 in by_m:
            checks.append((f"{name}: (a) M=10000 <= 100 ms", by_m[10000][1] <= 100))
            checks.append((f"{name}: (b) M=10000 <= 15 ms", by_m[10000][2] <= 15))
        checks.append((f"{name}: <= 200 KB per model", all(r[7] <= 200 * 1024 for r in rows)))
    print(" ".join(f"{h:>{max(len(h), 8)}}" for h in head))
    for cells in table:
        print(" ".join(f"{c:>{max(len(h), 8)}}" for c, h in zip(cells, head)))
    if any(c[4].endswith("*") for c in table):
        print(f"* loops measured on the first {args.loop_cap} models and extrapolated linearly")
    for name, ok in checks:
        print(f"target {name}: {'met' if ok else 'MISSED'}")
    print(f"weighting={DEFAULT_WEIGHTING}, combine=mixture, T=1, index and loops with BLAS threads=1 (the index "
          f"streams Z @ z on {os.cpu_count()} once Z > 32 MB); numpy {np.__version__}")
    print("max|diff|: largest deviation of the index and of both loops from the float64 per-spec scores")
    print("(a) Z GB/s: bytes of stored image features / (a) latency; (a) reads them once, so memory")
    print("bandwidth bounds it; other processes on the machine share that bandwidth")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
