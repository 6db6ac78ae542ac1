"""Score one query against all M specifications in one vectorised pass (every method).

Layout (built once; models are re-ordered internally, results come back in input order):

* **Groups.** Models whose prompt features ``Q`` are identical (same prompt-set digest, encoder and
  array) form a group and share one normalised ``Q``. Prompt weights depend only on ``Q`` and the
  query prompt, so they are computed once per group, not once per model: with the default prompt
  set there is one group and one ``N x Dt`` product per query.
* **Blocks.** Models with the same number of images ``N`` are stored contiguously; within a block,
  multi-model groups come first (each a contiguous slice), single-model groups (A.5: a developer's
  own prompts) after them.
* **Query-independent terms.** ``Z`` of all models as one ``(sum N) x D`` float32 matrix with the
  squared row norms; per model the upper triangle of its Gram matrix ``K = exp(-gamma D2)`` with
  off-diagonal entries doubled, so ``alpha'K alpha = Kup @ (alpha_i alpha_j)_{i<=j}``. For one shared
  ``alpha`` that is a single ``(M x N(N+1)/2) @ N(N+1)/2`` float32 product for the whole group.
  The diagonal entries (all ``k(z_i, z_i) = 1``) are stored as 0 and ``sum_i alpha_i^2`` is added
  in float64 with the query's self term: those large terms are shared by a group, and adding them
  in float32 would round away score differences between its models (ties in the evaluation).

Per query:

1. *New image* (:meth:`SpecIndex.prepare_image`): ``k(z_i, z_t)`` for every stored image: one
   BLAS product ``Z @ z_t`` plus ``exp``. This reads ``Z`` once and is the only O(M N D) step.
2. *Prompt* (:meth:`SpecIndex.score_prompt`): weights per group, then the quadratic term (``Kup``
   product) and the cross term (``alpha . k``): O(M N^2) float32, independent of ``D``. A re-rank
   after a prompt edit re-uses step 1 and only runs step 2.

Baselines (RKME-CLIP, -Concat, -Basic) use reduced sets (:mod:`.reduced_set`), built lazily on
first use and cached; their self terms ``b'K b`` are precomputed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .baseline_sets import BaselineSets, build_baseline_sets, score_baseline_sets
from .blas import blas_threads
from .errors import RequirementError, SpecFormatError
from .kernels import DEFAULT_GAMMA, l2_normalize, pixel_gamma
from .ranking import order_from_scores, ranks_from_scores
from .scores import (
    COMBINES,
    DEFAULT_REDUCED_SIZE,
    DEFAULT_TEMPERATURE,
    DEFAULT_WEIGHTING,
    concat_features,
    prompt_coefficients,
    score_download,
)
from .spec import Requirement, Specification

# Below this size of the stored image features the streaming product stays on ``blas_threads``.
STREAM_MIN_BYTES = 32 * 1024 * 1024

METHODS = ("proposal", "rkme_clip", "rkme_concat", "rkme_basic", "download")


@dataclass
class _Block:
    n: int
    m0: int  # storage-order model range
    m1: int
    r0: int  # row range in the stacked Z
    r1: int
    g0: int  # group range
    g1: int
    kup: np.ndarray  # (m1 - m0, L) float32
    iu: np.ndarray  # (L,)
    ju: np.ndarray
    big: list[tuple[int, int, int]]  # (local group, local m0, local m1)
    single_m0: int  # local model range of single-model groups
    single_groups: np.ndarray  # (n_single,) local group index per single model


@dataclass(frozen=True)
class PreparedQuery:
    """The image part of a query, cached for re-ranking after prompt edits."""

    image_features: np.ndarray  # (T, D) float32
    pixel_features: np.ndarray | None
    kernel: np.ndarray  # (sum N, T) float32: k(z_i, z_t) in storage order
    kernel_mean: np.ndarray  # (sum N,) float32: mean over t
    self_term: float  # (1/T^2) sum_{t,s} k(z_t, z_s)
    gamma: float


def _with_blas_threads(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with blas_threads(self.blas_threads):
            return method(self, *args, **kwargs)

    return wrapper


def _upper(a: np.ndarray, iu: np.ndarray, ju: np.ndarray) -> np.ndarray:
    return a[..., iu] * a[..., ju]


class SpecIndex:
    """All specifications in contiguous arrays; ``score`` returns ``(M,)`` float64 in input order.

    ``gamma`` applies to image features (and the Concat baseline); ``pixel_gamma`` to RKME-Basic
    (default :func:`gmi_desktop.core.kernels.pixel_gamma`). ``reduced_size`` is the baselines'
    reduced-set size (``None``: every image, weight 1/N); ``seed`` makes the reduced sets
    deterministic. Scores equal the per-spec functions of :mod:`gmi_desktop.core.scores` up to
    float32 rounding. Queries run with ``blas_threads`` BLAS threads (see :mod:`.blas`; ``None``
    leaves numpy's setting alone), except the one product that streams every stored image feature
    (``Z @ z``, bound by memory bandwidth): when ``Z`` is larger than :data:`STREAM_MIN_BYTES` it
    runs on ``stream_threads`` threads (default: every core), since one core cannot saturate the
    memory bus (measured here: 14.6 GB/s on one thread, 28.8 GB/s on two, M = 1 000).
    """

    def __init__(
        self,
        specs: Sequence[Specification],
        gamma: float = DEFAULT_GAMMA,
        reduced_size: int | None = DEFAULT_REDUCED_SIZE,
        seed: int = 0,
        pixel_gamma: float | None = None,
        blas_threads: int | None = 1,
        stream_threads: int | None = None,
    ):
        specs = list(specs)
        if not specs:
            raise SpecFormatError(None, "no specifications to index")
        ids = [s.model_id for s in specs]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise SpecFormatError(None, f"model_id {dup!r} appears more than once")
        dims = {s.image_features.shape[1] for s in specs}
        tdims = {s.prompt_features.shape[1] for s in specs}
        if len(dims) != 1 or len(tdims) != 1:
            raise SpecFormatError(
                None, "specifications come from different encoders (feature sizes differ); index them separately"
            )
        encoders = sorted({s.recipe.encoder_id for s in specs})
        if len(encoders) != 1:
            raise SpecFormatError(
                None, f"specifications come from different encoders ({', '.join(encoders)}); index them separately"
            )
        if not (gamma > 0 and np.isfinite(gamma)):
            raise ValueError(f"gamma must be a finite number > 0, got {gamma}")
        self.gamma = float(gamma)
        self.reduced_size = reduced_size
        self.seed = int(seed)
        self.pixel_gamma = pixel_gamma
        self.blas_threads = blas_threads
        self.stream_threads = stream_threads if stream_threads is not None else (os.cpu_count() or 1)
        self.model_ids: tuple[str, ...] = tuple(ids)
        self.dim = dims.pop()
        self.prompt_dim = tdims.pop()
        self._download = score_download(specs)
        self._build(specs)
        self._baselines: dict[str, BaselineSets] = {}

    # ------------------------------------------------------------------ build
    def _build(self, specs: list[Specification]) -> None:
        reps: dict[tuple, list[int]] = {}
        group_of = np.empty(len(specs), dtype=np.int64)
        group_rep: list[int] = []
        for m, s in enumerate(specs):
            key = (s.recipe.prompt_set_digest, s.recipe.encoder_id, s.n_images)
            for g in reps.setdefault(key, []):
                q = specs[group_rep[g]].prompt_features
                if q is s.prompt_features or np.array_equal(q, s.prompt_features):
                    group_of[m] = g
                    break
            else:
                group_of[m] = len(group_rep)
                reps[key].append(len(group_rep))
                group_rep.append(m)
        sizes = np.bincount(group_of, minlength=len(group_rep))
        group_order = sorted(
            range(len(group_rep)), key=lambda g: (specs[group_rep[g]].n_images, sizes[g] == 1, group_rep[g])
        )
        new_gid = np.empty(len(group_rep), dtype=np.int64)
        new_gid[np.asarray(group_order)] = np.arange(len(group_rep))
        order = sorted(range(len(specs)), key=lambda m: (new_gid[group_of[m]], m))
        self._order = np.asarray(order, dtype=np.int64)  # storage position -> input index
        gid = new_gid[group_of[self._order]]  # group per storage position
        self._group_n = np.array([specs[group_rep[g]].n_images for g in group_order], dtype=np.int64)
        self._group_row0 = np.concatenate([[0], np.cumsum(self._group_n)])
        self._qhat = np.ascontiguousarray(
            np.concatenate([l2_normalize(specs[group_rep[g]].prompt_features.astype(np.float64)) for g in group_order]),
            dtype=np.float32,
        )
        self._z = np.ascontiguousarray(np.concatenate([specs[m].image_features for m in order]), dtype=np.float32)
        self._z_sq = np.einsum("ij,ij->i", self._z, self._z)
        self._n = np.array([specs[m].n_images for m in order], dtype=np.int64)
        self._row0 = np.concatenate([[0], np.cumsum(self._n)])
        self._pixels = [specs[m].pixel_features for m in order]
        self._blocks = []
        m = 0
        while m < len(order):
            n = int(self._n[m])
            m1 = m + int(np.searchsorted(self._n[m:], n, side="right"))
            self._blocks.append(self._make_block(n, m, m1, gid[m:m1]))
            m = m1
        self._gid = gid

    def _make_block(self, n: int, m0: int, m1: int, gids: np.ndarray) -> _Block:
        iu, ju = np.triu_indices(n)
        r0, r1 = int(self._row0[m0]), int(self._row0[m1])
        zb = self._z[r0:r1].reshape(m1 - m0, n, self.dim)
        sq = self._z_sq[r0:r1].reshape(m1 - m0, n)
        kup = np.empty((m1 - m0, len(iu)), dtype=np.float32)
        # the diagonal (k(z_i, z_i) = 1) is left out: score_prompt adds sum_i alpha_i^2 in float64
        scale = np.where(iu == ju, 0.0, 2.0).astype(np.float32)
        for c0 in range(0, m1 - m0, 512):
            c1 = min(c0 + 512, m1 - m0)
            gram = np.matmul(zb[c0:c1], zb[c0:c1].transpose(0, 2, 1))
            d2 = sq[c0:c1, iu] + sq[c0:c1, ju] - 2.0 * gram[:, iu, ju]
            np.maximum(d2, 0.0, out=d2)
            d2[:, iu == ju] = 0.0
            kup[c0:c1] = np.exp(-self.gamma * d2) * scale
        g0 = int(gids[0])
        local = gids - g0
        counts = np.bincount(local)
        big, pos = [], 0
        while pos < len(local) and counts[local[pos]] > 1:
            end = pos + int(counts[local[pos]])
            big.append((int(local[pos]), pos, end))
            pos = end
        return _Block(n, m0, m1, r0, r1, g0, int(gids[-1]) + 1, kup, iu, ju, big, pos, local[pos:].copy())

    @property
    def nbytes(self) -> int:
        """Bytes held by the index arrays (baselines included once built)."""
        total = self._z.nbytes + self._z_sq.nbytes + self._qhat.nbytes
        total += sum(b.kup.nbytes for b in self._blocks)
        total += sum(base.nbytes for base in self._baselines.values())
        return total

    def __len__(self) -> int:
        return len(self.model_ids)

    def _to_input_order(self, stored: np.ndarray) -> np.ndarray:
        out = np.empty(len(self.model_ids), dtype=np.float64)
        out[self._order] = stored
        return out

    # ------------------------------------------------------------------ proposal
    @_with_blas_threads
    def prepare_image(
        self, image_features: np.ndarray | Requirement, pixel_features: np.ndarray | None = None
    ) -> PreparedQuery:
        """Step 1: kernel values ``k(z_i, z_t)`` for all stored images and the query's self term."""
        if isinstance(image_features, Requirement):
            pixel_features = image_features.pixel_features
            image_features = image_features.image_features
            if image_features is None:
                raise RequirementError(None, "a text-only query has no image to prepare")
        xq = Requirement(image_features=image_features, pixel_features=pixel_features).image_features
        if xq.shape[1] != self.dim:
            raise RequirementError(None, f"query image features have {xq.shape[1]} dims, the index {self.dim}")
        xq_sq = np.einsum("ij,ij->i", xq, xq)
        # one column: a matrix-vector product (gemv) streams Z at full speed; gemm is ~2x slower
        threads = self.stream_threads if self._z.nbytes >= STREAM_MIN_BYTES else self.blas_threads
        with blas_threads(threads):
            kern = (self._z @ xq[0])[:, None] if len(xq) == 1 else self._z @ xq.T
        kern *= -2.0
        kern += self._z_sq[:, None]
        kern += xq_sq[None, :]
        np.maximum(kern, 0.0, out=kern)
        kern *= -self.gamma
        np.exp(kern, out=kern)
        kmean = kern[:, 0] if kern.shape[1] == 1 else kern.mean(axis=1)
        d2q = np.maximum(xq_sq[:, None] + xq_sq[None, :] - 2.0 * (xq.astype(np.float64) @ xq.T.astype(np.float64)), 0)
        np.fill_diagonal(d2q, 0.0)
        self_term = float(np.exp(-self.gamma * d2q).mean())
        pix = None if pixel_features is None else np.asarray(pixel_features, dtype=np.float32).reshape(len(xq), -1)
        return PreparedQuery(xq, pix, kern, kmean, self_term, self.gamma)

    def _alphas(self, prompt_features: np.ndarray, weighting: str, temperature: float) -> list[np.ndarray]:
        """Per block: coefficients ``(G_b, T, N_b)`` float32 for its groups."""
        q = Requirement(prompt_features=prompt_features).prompt_features
        if q.shape[1] != self.prompt_dim:
            raise RequirementError(None, f"query prompt features have {q.shape[1]} dims, the index {self.prompt_dim}")
        qhat = l2_normalize(q.astype(np.float64)).astype(np.float32)
        cos = self._qhat @ qhat.T  # (sum_g N_g, T)
        out = []
        for b in self._blocks:
            r0, r1 = self._group_row0[b.g0], self._group_row0[b.g1]
            c = cos[r0:r1].reshape(b.g1 - b.g0, b.n, -1).transpose(0, 2, 1)
            out.append(prompt_coefficients(c, weighting, temperature).astype(np.float32))
        return out

    @staticmethod
    def _quad(b: _Block, alpha: np.ndarray) -> np.ndarray:
        """The off-diagonal part of ``alpha_m' K_m alpha_m`` per model and query image: ``(M_b, T)``."""
        out = np.empty((b.m1 - b.m0, alpha.shape[1]), dtype=np.float32)
        for g, m0, m1 in b.big:
            out[m0:m1] = b.kup[m0:m1] @ _upper(alpha[g], b.iu, b.ju).T
        if b.single_m0 < len(out):
            a = alpha[b.single_groups]  # (M_s, T, N)
            out[b.single_m0 :] = np.einsum("ml,mtl->mt", b.kup[b.single_m0 :], _upper(a, b.iu, b.ju))
        return out

    @staticmethod
    def _cross(b: _Block, values: np.ndarray, alpha: np.ndarray) -> np.ndarray:
        """``sum_i alpha_{m,t,i} values_{m,i,t}`` per model and query image: ``(M_b, T)``."""
        out = np.empty((b.m1 - b.m0, alpha.shape[1]), dtype=np.float32)
        for g, m0, m1 in b.big:
            for t in range(alpha.shape[1]):
                out[m0:m1, t] = values[m0:m1, :, t] @ alpha[g, t]
        if b.single_m0 < len(out):
            out[b.single_m0 :] = np.einsum("mnt,mtn->mt", values[b.single_m0 :], alpha[b.single_groups])
        return out

    @_with_blas_threads
    def score_prompt(
        self,
        prepared: PreparedQuery,
        prompt_features: np.ndarray,
        weighting: str = DEFAULT_WEIGHTING,
        temperature: float = DEFAULT_TEMPERATURE,
        combine: str = "mixture",
    ) -> np.ndarray:
        """Step 2 of the proposal (Eq. 9) for a prepared image: fast re-rank after a prompt edit."""
        if combine not in COMBINES:
            raise ValueError(f"unknown combine {combine!r}; choose one of {', '.join(COMBINES)}")
        if prepared.gamma != self.gamma or prepared.kernel.shape[0] != self._z.shape[0]:
            raise ValueError("the prepared query belongs to another index")
        alphas = self._alphas(prompt_features, weighting, temperature)
        t = prepared.kernel.shape[1]
        if alphas[0].shape[1] != t:
            raise RequirementError(None, f"{alphas[0].shape[1]} prompt features for {t} query images")
        stored = np.empty(len(self.model_ids), dtype=np.float64)
        # The model-specific terms stay float32 and small; the large terms shared by a group (the
        # kernel diagonal sum_i alpha_i^2, the query's self term) are added in float64, so scores
        # that differ far below float32's resolution of their sum keep their float64 order.
        for b, alpha in zip(self._blocks, alphas):
            local_group = self._gid[b.m0 : b.m1] - b.g0
            if combine == "mixture":
                a = alpha.mean(axis=1, keepdims=True) if t > 1 else alpha
                kb = prepared.kernel_mean[b.r0 : b.r1].reshape(-1, b.n, 1)
                diag = np.square(a[:, 0].astype(np.float64)).sum(axis=1)[local_group]
                var = self._quad(b, a)[:, 0] - 2.0 * self._cross(b, kb, a)[:, 0]
                s = var.astype(np.float64) + (diag + prepared.self_term)
            else:
                kb = prepared.kernel[b.r0 : b.r1].reshape(-1, b.n, t)
                diag = np.square(alpha.astype(np.float64)).sum(axis=2)[local_group]
                var = self._quad(b, alpha) - 2.0 * self._cross(b, kb, alpha)
                s = (var.astype(np.float64) + (diag + 1.0)).mean(axis=1)
            stored[b.m0 : b.m1] = s
        return self._to_input_order(stored)

    @_with_blas_threads
    def score_text_only(
        self, prompt_features: np.ndarray, weighting: str = DEFAULT_WEIGHTING, temperature: float = DEFAULT_TEMPERATURE
    ) -> np.ndarray:
        """Text-only query, as :func:`gmi_desktop.core.scores.score_text_only`."""
        if self.dim != self.prompt_dim:
            raise RequirementError(None, "text-only ranking needs image and prompt features in one space")
        alphas = self._alphas(prompt_features, weighting, temperature)
        q = l2_normalize(np.asarray(prompt_features, np.float64).reshape(-1, self.prompt_dim)).astype(np.float32)
        cos = (self._z @ q.T) / np.sqrt(np.maximum(self._z_sq, 1e-30))[:, None]
        stored = np.empty(len(self.model_ids), dtype=np.float64)
        for b, alpha in zip(self._blocks, alphas):
            vals = cos[b.r0 : b.r1].reshape(-1, b.n, alpha.shape[1])
            stored[b.m0 : b.m1] = -self._cross(b, vals, alpha).mean(axis=1)
        return self._to_input_order(stored)

    # ------------------------------------------------------------------ baselines
    def _baseline(self, method: str) -> BaselineSets:
        if method in self._baselines:
            return self._baselines[method]
        rows = [self._z[self._row0[pos] : self._row0[pos + 1]] for pos in range(len(self.model_ids))]
        gamma = self.gamma
        if method == "rkme_clip":
            point_sets = rows
        elif method == "rkme_concat":
            qs = [self._qhat[self._group_row0[g] : self._group_row0[g + 1]] for g in self._gid]
            point_sets = [concat_features(z, q) for z, q in zip(rows, qs)]
        else:
            if any(p is None for p in self._pixels):
                raise RequirementError(None, "RKME-Basic needs pixel features in every specification")
            sizes = {p.shape[1] for p in self._pixels}
            if len(sizes) != 1:
                raise RequirementError(None, f"RKME-Basic needs one pixel size for all models, got {sorted(sizes)}")
            point_sets = self._pixels
            gamma = self.pixel_gamma if self.pixel_gamma is not None else pixel_gamma(sizes.pop())
        base = build_baseline_sets(point_sets, self.reduced_size, gamma, self.seed)
        self._baselines[method] = base
        return base

    def _score_baseline(self, method: str, query: np.ndarray) -> np.ndarray:
        base = self._baseline(method)
        if query.shape[1] != base.points.shape[1]:
            raise RequirementError(
                None, f"{method}: query has {query.shape[1]} values per point, the index {base.points.shape[1]}"
            )
        return self._to_input_order(score_baseline_sets(base, query))

    # ------------------------------------------------------------------ front door
    @_with_blas_threads
    def score(
        self,
        req: Requirement,
        method: str = "proposal",
        weighting: str = DEFAULT_WEIGHTING,
        temperature: float = DEFAULT_TEMPERATURE,
        combine: str = "mixture",
        prepared: PreparedQuery | None = None,
    ) -> np.ndarray:
        """Scores of all models (input order, ascending = better) for ``method`` in :data:`METHODS`.
        ``proposal`` with a text-only requirement uses the text-only score; ``prepared`` (from
        :meth:`prepare_image` on the same images) skips the image step of the proposal."""
        if method == "download":
            return self._download.copy()
        if method == "proposal":
            if req.text_only:
                return self.score_text_only(req.prompt_features, weighting, temperature)
            if req.prompt_features is None:
                raise RequirementError(None, "the proposal needs the query's (pseudo-)prompt features")
            prepared = prepared if prepared is not None else self.prepare_image(req)
            return self.score_prompt(prepared, req.prompt_features, weighting, temperature, combine)
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if req.image_features is None:
            raise RequirementError(None, f"{method} needs query image features")
        if method == "rkme_clip":
            return self._score_baseline(method, req.image_features)
        if method == "rkme_concat":
            if req.prompt_features is None:
                raise RequirementError(None, "rkme_concat needs the query's prompt features")
            return self._score_baseline(method, concat_features(req.image_features, req.prompt_features))
        if req.pixel_features is None:
            raise RequirementError(None, "rkme_basic needs the query's pixel features")
        return self._score_baseline(method, req.pixel_features)

    def rank(self, req: Requirement, method: str = "proposal", **options) -> list[tuple[str, float, int]]:
        """``(model_id, score, rank)`` best first; rank per paper §4.1, ties ordered by model_id."""
        scores = self.score(req, method, **options)
        ranks = ranks_from_scores(scores)
        return [(self.model_ids[i], float(scores[i]), int(ranks[i])) for i in order_from_scores(scores, self.model_ids)]
