"""``bench --images DIR``: the paper's protocol on images made by the user's own models.

``DIR`` holds one folder per model, named like the checkpoint (file name or stem, display name, or
the first 8+ hex digits of its SHA-256), with the images that model made. Each image's prompt is
``<image>.txt`` beside it, or else the prompt embedded in its generation metadata; images without
either count for the pseudo-prompt table only. The library must be scanned and its
specifications built first (``gmi-desktop scan``, ``gmi-desktop build-specs``).

Every image is identified by the identification service from its pixels alone (a copy without
metadata, so the interrogator makes its pseudo-prompt and no metadata match decides), then
re-ranked with the true prompt and with each method. With real checkpoints and images generated
from the evaluation prompts (``resources/prompts/evaluation.txt``, seeds 0-9) this reproduces the
paper's Table 1 (top-k accuracy and average rank per method) on your models.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

from gmi_desktop.core.errors import UserInputError
from gmi_desktop.core.progress import CancelFn, Progress, check_cancel
from gmi_desktop.evaluation.zoo_bench import TestImage, ZooBenchResult, identify_all, reports_for

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
PART = "Your models"


class ImagesFolderError(UserInputError):
    default_hint = "one folder per model, named like its checkpoint, holding that model's images"


def _model_for(name: str, records: list[Any]) -> str:
    low = name.casefold()
    hits = {r.sha256 for r in records if low in (r.path.stem.casefold(), r.path.name.casefold(),
                                                 (r.display_name or "").casefold())}
    if not hits and len(low) >= 8 and all(c in "0123456789abcdef" for c in low):
        hits = {r.sha256 for r in records if r.sha256.startswith(low)}
    if len(hits) != 1:
        raise ImagesFolderError(None, f"folder {name!r} matches {'no' if not hits else 'more than one'} "
                                "checkpoint of the library", "name it like the checkpoint file, or by its SHA-256")
    return hits.pop()


def _true_prompt(path: Path) -> str:
    from gmi_desktop.store.metadata import read_metadata

    sidecar = path.with_suffix(".txt")
    if sidecar.is_file():
        return sidecar.read_text(encoding="utf-8").strip()
    meta = read_metadata(path)
    return meta.prompt.strip() if meta is not None and meta.prompt else ""


def read_images_folder(folder: Path, catalog: Any, work: Path) -> list[TestImage]:
    """The labelled images of ``folder`` (copied without metadata into ``work``)."""
    from gmi_desktop.store.images import load_image

    if not folder.is_dir():
        raise ImagesFolderError(folder, "is not a folder")
    records = [r for r in catalog.files("ok") if r.sha256]
    images = []
    for model_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        sha = _model_for(model_dir.name, records)
        for path in sorted(p for p in model_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            plain = work / model_dir.name / f"{path.stem}.png"
            plain.parent.mkdir(parents=True, exist_ok=True)
            load_image(path).save(plain)
            images.append(TestImage(plain, sha, PART, _true_prompt(path)))
    if len({im.model for im in images}) < 2:
        raise ImagesFolderError(folder, "needs images of at least two models")
    return images


def run_images_bench(folder: Path, settings: Any, host: Any, catalog: Any, work: Path, store_dir: Path | None = None,
                     cancel: CancelFn | None = None) -> Generator[Progress, None, ZooBenchResult]:
    """Identify every image (module docstring) and report every method."""
    from gmi_desktop.core.kernels import DEFAULT_GAMMA
    from gmi_desktop.services.identify import Identifier

    start = time.perf_counter()
    check_cancel(cancel)
    yield Progress("reading", message=f"reading {folder}")
    images = read_images_folder(folder, catalog, work)
    identifier = Identifier(settings, host, catalog, store_dir)
    scores, pseudo = yield from identify_all(identifier, images, cancel)
    ranked = set(scores[("pseudo-prompts", "proposal")][0])
    unbuilt = sorted({im.path.parent.name for im in images if im.model not in ranked})
    if unbuilt:
        raise ImagesFolderError(folder, f"no specification for {', '.join(unbuilt)}", "run gmi-desktop build-specs first")
    gamma = float(getattr(settings, "gamma", 0.0) or DEFAULT_GAMMA)
    shas = list(dict.fromkeys(im.model for im in images))
    reports = reports_for({PART: shas}, images, scores, gamma)
    examples = [(images[i].prompt, pseudo[i]) for i in range(0, len(images), max(1, len(images) // 4))][:4]
    return ZooBenchResult(reports, {"identify (encode + interrogate + rerank)": time.perf_counter() - start}, examples)
