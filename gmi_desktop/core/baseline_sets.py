"""Reduced-set arrays of the RKME baselines for many models at once (used by ``SpecIndex``).

Each model contributes a reduced set ``(c_m, b_m)`` (all models in one
:func:`.reduced_set.reduce_sets` call; or all its points with weight 1/N). Sets are padded to a
common size S with zero weights, so one query is one ``(M S) x F`` product:
``score_m = b_m'K_m b_m - 2 (1/T) sum_t sum_j b_mj k(c_mj, x_t) + (1/T^2) sum k(x_t, x_s)``
with the first term precomputed (Eq. 2 generalised to T query points).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .reduced_set import reduce_sets


@dataclass(frozen=True)
class BaselineSets:
    points: np.ndarray  # (M * S, F) float32
    sq_norms: np.ndarray  # (M * S,) float32
    weights: np.ndarray  # (M, S) float32, zero for padding
    self_terms: np.ndarray  # (M,) float64: b'K b
    gamma: float

    @property
    def nbytes(self) -> int:
        return self.points.nbytes + self.sq_norms.nbytes + self.weights.nbytes + self.self_terms.nbytes


def build_baseline_sets(
    point_sets: Iterable[np.ndarray], reduced_size: int | None, gamma: float, seed: int
) -> BaselineSets:
    """Reduce every model's points in one batch (:func:`.reduced_set.reduce_sets`;
    ``reduced_size=None``: keep them all, 1/N each) and pad."""
    sets = [np.asarray(p) for p in point_sets]
    if reduced_size is None:
        reduced_size = max(len(p) for p in sets)
    points, weights = reduce_sets(sets, reduced_size, gamma, seed)
    dim = points.shape[2]
    sq = np.einsum("msf,msf->ms", points, points)
    d2 = np.maximum(sq[:, :, None] + sq[:, None, :] - 2.0 * np.matmul(points, points.transpose(0, 2, 1)), 0.0)
    self_terms = np.einsum("ms,mst,mt->m", weights, np.exp(-gamma * d2), weights)
    flat = np.ascontiguousarray(points.reshape(-1, dim), dtype=np.float32)
    return BaselineSets(flat, np.einsum("ij,ij->i", flat, flat), weights.astype(np.float32), self_terms, float(gamma))


def score_baseline_sets(sets: BaselineSets, query: np.ndarray) -> np.ndarray:
    """Eq. 2 of every model against the query points ``(T, F)``: ``(M,)`` float64."""
    xq = np.asarray(query, dtype=np.float64)
    xq_sq = (xq * xq).sum(1)
    d2 = sets.sq_norms[:, None] + xq_sq[None, :].astype(np.float32) - 2.0 * (sets.points @ xq.T.astype(np.float32))
    k = np.exp(-sets.gamma * np.maximum(d2, 0.0)).reshape(len(sets.weights), -1, len(xq))
    cross = np.einsum("mst,ms->m", k, sets.weights) / len(xq)
    dq = np.maximum(xq_sq[:, None] + xq_sq[None, :] - 2.0 * (xq @ xq.T), 0.0)
    np.fill_diagonal(dq, 0.0)
    return sets.self_terms - 2.0 * cross + np.exp(-sets.gamma * dq).mean()
