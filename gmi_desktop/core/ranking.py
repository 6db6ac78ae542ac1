"""Ranks and orders from scores (ascending = better, as in the paper)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ranks_from_scores(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Paper §4.1: ``r_m = 1 + #{i : s_i < s_m}`` (int64). Tied models share the best rank."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return 1 + np.searchsorted(np.sort(s), s, side="left").astype(np.int64)


def order_from_scores(scores: Sequence[float] | np.ndarray, model_ids: Sequence[str]) -> np.ndarray:
    """Indices from best to worst; equal scores are ordered by ``model_id`` (deterministic)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (len(model_ids),):
        raise ValueError(f"{len(model_ids)} model ids for scores of shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return np.lexsort((np.asarray(list(model_ids), dtype=str), s))
