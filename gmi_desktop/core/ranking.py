"""Ranks and orders from scores (ascending = better, as in the paper).

One rule for every ranking here and in ``evaluation.metrics``: scores are finite. Every method's
score is a finite distance (or a finite popularity), so NaN or an infinity means an overflow or a
bug upstream; ranking it would hide that, so :func:`finite_scores` refuses it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def finite_scores(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """``scores`` as float64, or ``ValueError`` if any is NaN or infinite."""
    s = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(s).all():
        bad = "NaN" if np.isnan(s).any() else "infinity"
        raise ValueError(f"scores contain {bad}; every score must be finite")
    return s


def ranks_from_scores(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Paper §4.1: ``r_m = 1 + #{i : s_i < s_m}`` (int64). Tied models share the best rank."""
    s = finite_scores(scores)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    return 1 + np.searchsorted(np.sort(s), s, side="left").astype(np.int64)


def order_from_scores(scores: Sequence[float] | np.ndarray, model_ids: Sequence[str]) -> np.ndarray:
    """Indices from best to worst; equal scores are ordered by ``model_id`` (deterministic)."""
    s = finite_scores(scores)
    if s.shape != (len(model_ids),):
        raise ValueError(f"{len(model_ids)} model ids for scores of shape {s.shape}")
    return np.lexsort((np.asarray(list(model_ids), dtype=str), s))
