"""What a ranked model shows beside its score: how complete its specification is, and which of
its specification images are closest to the query.

- **Completeness** = images in the specification / images of the full prompt set. The spec
  builder records the full count in the recipe's ``generation["images_total"]``; a coarse
  (first-pass) specification holds fewer images and is partial. Without that entry a
  specification is taken as complete.
- **Closest images**: the specification rows with the largest mean cosine to the query images
  (features are unit-norm, so this is the RBF kernel's order). Their thumbnails live beside the
  spec file in ``<spec file name without .safetensors>.thumbs/<row>.<ext>`` (row = the image's
  index in the specification, 4 digits); rows without a thumbnail are skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gmi_desktop.core.spec import Specification

THUMB_SUFFIXES = (".webp", ".png", ".jpg", ".jpeg")
CLOSEST = 3


def completeness(spec: Specification) -> float:
    total = spec.recipe.generation.get("images_total")
    if isinstance(total, bool) or not isinstance(total, (int, float)) or total <= 0:
        return 1.0
    return float(min(1.0, spec.n_images / float(total)))


def thumbs_dir(spec_path: Path) -> Path:
    return spec_path.with_name(spec_path.name.removesuffix(".safetensors") + ".thumbs")


def thumbnails(spec_path: Path) -> dict[int, Path]:
    """``row -> thumbnail file`` for the thumbnails kept beside ``spec_path``."""
    folder = thumbs_dir(spec_path)
    if not folder.is_dir():
        return {}
    found: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in THUMB_SUFFIXES and path.stem.isdigit() and path.is_file():
            found.setdefault(int(path.stem), path)
    return found


def closest_rows(spec: Specification, query: np.ndarray) -> np.ndarray:
    """Rows of ``spec`` ordered from the closest to the query images (mean cosine) to the farthest;
    ties keep row order."""
    sims = spec.image_features @ np.asarray(query, np.float32).T  # (N, T)
    return np.argsort(-sims.mean(axis=1), kind="stable")


def closest_thumbnails(spec: Specification, spec_path: Path | None, query: np.ndarray,
                       count: int = CLOSEST) -> tuple[Path, ...]:
    if spec_path is None:
        return ()
    thumbs = thumbnails(spec_path)
    if not thumbs:
        return ()
    picked = [thumbs[int(r)] for r in closest_rows(spec, query) if int(r) in thumbs]
    return tuple(picked[:count])
