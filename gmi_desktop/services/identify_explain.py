"""What a ranked model shows beside its score: how complete its specification is, and which of
its specification images are closest to the query.

- **Completeness** = images in the specification / images of its full prompt set. The spec
  builder records the full set's size in the recipe (``generation["prompts_total"]`` x
  ``images_per_prompt``); a coarse (first-pass) specification holds a subset and is partial. A
  specification without that entry (made elsewhere) counts as complete.
- **Closest images**: the specification rows with the largest mean cosine to the query images
  (features are unit-norm, so this is the RBF kernel's order), shown by the thumbnails the
  builder keeps beside the specification (:func:`gmi_desktop.store.spec_state.thumbnail_paths`);
  rows without a thumbnail (an imported specification) are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmi_desktop.core.spec import Specification
from gmi_desktop.store.spec_state import thumbnail_paths

CLOSEST = 3


def closest_rows(spec: Specification, query: np.ndarray) -> np.ndarray:
    """Rows of ``spec`` ordered from the closest to the query images (mean cosine) to the farthest;
    ties keep row order."""
    sims = spec.image_features @ np.asarray(query, np.float32).T  # (N, T)
    return np.argsort(-sims.mean(axis=1), kind="stable")


def closest_thumbnails(spec: Specification, spec_path: Path | None, query: np.ndarray,
                       count: int = CLOSEST) -> tuple[Path, ...]:
    if spec_path is None:
        return ()
    thumbs = thumbnail_paths(spec_path, spec)
    if len(thumbs) != spec.n_images:
        return ()
    picked = [thumbs[int(r)] for r in closest_rows(spec, query) if thumbs[int(r)].is_file()]
    return tuple(picked[:count])
