"""Build time of the RKME baselines' reduced sets: one model at a time against one batch.

Synthetic specifications as in ``rank_latency.py`` (N = 55 unit-norm image features per model,
D = 768, a style centre plus noise per model), reduced-set size 1 (the paper's RKME-CLIP), gamma
:data:`DEFAULT_GAMMA`, seed 0. For each M it reports the seconds to reduce all M sets

- "loop (point space)": the former per-model implementation, kernels from the 768-wide points
  (``tests/support/reference_reduced_set.py``), one call per model;
- "loop (reduce_set)": today's ``reduce_set`` (a batch of one) called per model;
- "batched": one ``reduce_sets`` call for all M models;
- "baseline build": ``build_baseline_sets`` (batched reduction + the padded float32 arrays a query
  reads), what ``SpecIndex`` does on its first RKME-CLIP query;

the speed-ups of the batch over both loops, and the largest deviation of the batch from each loop
(points; ``|J|`` for the point-space loop, whose points may differ at the flatness of ``J``).

    python benchmarks/reduced_sets.py [--sizes 100 1000] [--loop-cap 1000] [--size 1]

Everything runs with one BLAS thread (the products are small; see ``core/blas.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.rank_latency import synthetic_specs  # noqa: E402
from gmi_desktop.core.baseline_sets import build_baseline_sets  # noqa: E402
from gmi_desktop.core.blas import blas_threads  # noqa: E402
from gmi_desktop.core.kernels import DEFAULT_GAMMA  # noqa: E402
from gmi_desktop.core.reduced_set import reduce_set, reduce_sets  # noqa: E402
from tests.support.reference_reduced_set import objective, reduce_set_pointwise  # noqa: E402


def seconds(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--loop-cap", type=int, default=1000, help="largest M the loops run on in full")
    ap.add_argument("--size", type=int, default=1, help="reduced-set size")
    ap.add_argument("--repeats", type=int, default=3, help="runs of the batch (median)")
    args = ap.parse_args(argv)
    gamma, k = DEFAULT_GAMMA, args.size
    sets = [s.image_features for s in synthetic_specs(max(args.sizes))]
    n, d = sets[0].shape
    print(f"# N={n}, D={d}, size={k}, gamma={gamma}, seed=0; numpy {np.__version__}", file=sys.stderr)
    head = ["M", "loop (point space) s", "loop (reduce_set) s", "batched s", "baseline build s",
            "vs point loop", "vs reduce_set loop", "max|dc| reduce_set", "max|dJ| point"]
    rows = []
    with blas_threads(1):
        reduce_sets(sets[:10], k, gamma)  # warm-up
        for m in sorted(args.sizes):
            part, loop_m = sets[:m], min(m, args.loop_cap)
            t_batch, (c, b) = seconds(lambda: reduce_sets(part, k, gamma), args.repeats)
            t_build, _ = seconds(lambda: build_baseline_sets(part, k, gamma, 0), args.repeats)
            t_point, ref = seconds(lambda: [reduce_set_pointwise(x, k, gamma) for x in part[:loop_m]], 1)
            t_one, one = seconds(lambda: [reduce_set(x, k, gamma) for x in part[:loop_m]], 1)
            t_point, t_one = t_point * m / loop_m, t_one * m / loop_m
            dc = max(float(np.abs(c[i] - one[i][0]).max()) for i in range(loop_m))
            a = np.full(n, 1.0 / n)
            dj = max(
                abs(objective(c[i], b[i], part[i], a, gamma) - objective(*ref[i], part[i], a, gamma))
                for i in range(loop_m)
            )
            rows.append((m, t_point, t_one, t_batch, t_build, loop_m < m, dc, dj))
    print(" ".join(f"{h:>{max(len(h), 8)}}" for h in head))
    for m, t_point, t_one, t_batch, t_build, extrapolated, dc, dj in rows:
        star = "*" if extrapolated else ""
        cells = [str(m), f"{t_point:.2f}{star}", f"{t_one:.2f}{star}", f"{t_batch:.3f}", f"{t_build:.3f}",
                 f"{t_point / t_batch:.0f}x", f"{t_one / t_batch:.0f}x", f"{dc:.1e}", f"{dj:.1e}"]
        print(" ".join(f"{c:>{max(len(h), 8)}}" for c, h in zip(cells, head)))
    if any(r[5] for r in rows):
        print(f"* loops measured on the first {args.loop_cap} models and extrapolated linearly")
    print("per model: " + ", ".join(f"M={r[0]}: loop {1000 * r[1] / r[0]:.1f} ms, batch {1000 * r[3] / r[0]:.2f} ms"
                                    for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
