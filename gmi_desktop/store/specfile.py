"""One ``.safetensors`` file per :class:`Specification`, and the folder of them (:class:`SpecStore`).

File layout (format version :data:`SPEC_FORMAT_VERSION`):

- tensors ``image_features`` (N, D) float32, ``prompt_features`` (N, Dt) float32,
  ``image_sq_distances`` (N, N) float64 (precomputed, query-independent), and optionally
  ``pixel_features`` (N, P) float32;
- metadata (JSON strings): ``gmi.kind`` = ``"specification"``, ``gmi.format_version``,
  ``gmi.model_id``, ``gmi.display_name``, ``gmi.prompts`` (list of N strings), ``gmi.recipe``
  (checkpoint_sha256, encoder_id, prompt_set_digest, generation, format_version),
  ``gmi.popularity`` (number or null) and ``gmi.sha256`` (see :mod:`.tensorfile`).

Files are named ``<model-id-slug>.<encoder-id-slug>.safetensors`` (a slug that had to drop
characters gets a short hash of the original, so names stay unique) and are written atomically;
the temp files of an interrupted write (``.<name>.<random>.tmp``) are never picked up.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmi_desktop.core.errors import SpecFormatError, UserInputError
from gmi_desktop.core.spec import SPEC_FORMAT_VERSION, Specification, SpecRecipe
from gmi_desktop.store.atomic import atomic_write_bytes
from gmi_desktop.store.tensorfile import checked_bytes, json_field, read_checked

SPEC_SUFFIX = ".safetensors"
KIND = "specification"
KNOWN_FORMAT_VERSIONS = frozenset({SPEC_FORMAT_VERSION})
_FLOAT32 = ("image_features", "prompt_features", "pixel_features")
_REQUIRED = ("image_features", "prompt_features", "image_sq_distances")


def _slug(text: str) -> str:
    """A file-name-safe form of ``text``; if that loses anything, a short hash keeps it unique."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:96]
    if slug == text:
        return slug
    return f"{slug or 'x'}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}"


def spec_filename(model_id: str, encoder_id: str) -> str:
    return f"{_slug(model_id)}.{_slug(encoder_id)}{SPEC_SUFFIX}"


def spec_to_bytes(spec: Specification) -> bytes:
    tensors = {
        "image_features": spec.image_features,
        "prompt_features": spec.prompt_features,
        "image_sq_distances": spec.image_sq_distances,
    }
    if spec.pixel_features is not None:
        tensors["pixel_features"] = spec.pixel_features
    recipe = spec.recipe
    metadata = {
        "gmi.kind": json.dumps(KIND),
        "gmi.format_version": json.dumps(recipe.format_version),
        "gmi.model_id": json.dumps(spec.model_id),
        "gmi.display_name": json.dumps(spec.display_name),
        "gmi.prompts": json.dumps(list(spec.prompts), ensure_ascii=False),
        "gmi.recipe": json.dumps(
            {
                "checkpoint_sha256": recipe.checkpoint_sha256,
                "encoder_id": recipe.encoder_id,
                "prompt_set_digest": recipe.prompt_set_digest,
                "generation": dict(recipe.generation),
                "format_version": recipe.format_version,
            },
            sort_keys=True,
        ),
        "gmi.popularity": json.dumps(spec.popularity),
    }
    return checked_bytes(tensors, metadata)


def save_spec(spec: Specification, path: str | os.PathLike[str]) -> Path:
    """Write ``spec`` to ``path`` atomically (the old file stays intact if anything fails)."""
    path = Path(path)
    atomic_write_bytes(path, spec_to_bytes(spec))
    return path


def load_spec(path: str | os.PathLike[str]) -> Specification:
    """Read and validate a spec file; anything wrong raises :class:`SpecFormatError` naming it."""
    path = Path(path)
    tensors, meta = read_checked(path, SpecFormatError)

    def field_(key: str):
        return json_field(path, meta, key, SpecFormatError)

    if field_("gmi.kind") != KIND:
        raise SpecFormatError(path, f"not a specification file (kind {meta.get('gmi.kind')})")
    version = field_("gmi.format_version")
    if version not in KNOWN_FORMAT_VERSIONS:
        raise SpecFormatError(
            path, f"specification format version {version!r} is not supported (this version reads "
            f"{sorted(KNOWN_FORMAT_VERSIONS)})",
        )
    for name in _REQUIRED:
        if name not in tensors:
            raise SpecFormatError(path, f"tensor {name!r} is missing")
    unknown = sorted(set(tensors) - set(_REQUIRED) - {"pixel_features"})
    if unknown:
        raise SpecFormatError(path, f"unexpected tensors {unknown}")
    for name in _FLOAT32:
        if name in tensors and tensors[name].dtype != np.float32:
            raise SpecFormatError(path, f"tensor {name!r} has dtype {tensors[name].dtype}, expected float32")
    _check_sq_distances(path, tensors)

    prompts, recipe_data = field_("gmi.prompts"), field_("gmi.recipe")
    if not isinstance(prompts, list):
        raise SpecFormatError(path, "gmi.prompts is not a list")
    n = tensors["image_features"].shape[0] if tensors["image_features"].ndim else -1
    if len(prompts) != n:
        raise SpecFormatError(path, f"{len(prompts)} prompts in the metadata but {n} image feature rows")
    if not isinstance(recipe_data, dict):
        raise SpecFormatError(path, "gmi.recipe is not an object")
    if recipe_data.get("format_version") != version:
        raise SpecFormatError(path, "gmi.recipe.format_version disagrees with gmi.format_version")
    try:
        recipe = SpecRecipe(
            checkpoint_sha256=recipe_data.get("checkpoint_sha256"),
            encoder_id=recipe_data.get("encoder_id"),
            prompt_set_digest=recipe_data.get("prompt_set_digest"),
            generation=recipe_data.get("generation", {}),
            format_version=version,
        )
        spec = Specification(
            model_id=field_("gmi.model_id"),
            image_features=tensors["image_features"],
            prompt_features=tensors["prompt_features"],
            prompts=tuple(prompts),
            recipe=recipe,
            display_name=field_("gmi.display_name"),
            pixel_features=tensors.get("pixel_features"),
            popularity=field_("gmi.popularity"),
        )
    except SpecFormatError as exc:
        raise SpecFormatError(path, exc.reason) from exc
    except TypeError as exc:  # e.g. a non-hashable JSON value where a string belongs
        raise SpecFormatError(path, f"malformed metadata: {exc}") from exc
    d2 = tensors["image_sq_distances"]
    if d2.shape != (spec.n_images, spec.n_images):
        raise SpecFormatError(path, f"image_sq_distances has shape {d2.shape}, expected ({n}, {n})")
    d2.setflags(write=False)
    spec.__dict__["image_sq_distances"] = d2  # the stored precomputation fills the cached property
    return spec


def _check_sq_distances(path: Path, tensors: dict[str, np.ndarray]) -> None:
    d2 = tensors["image_sq_distances"]
    if d2.dtype != np.float64 or d2.ndim != 2 or d2.shape[0] != d2.shape[1]:
        raise SpecFormatError(path, f"image_sq_distances must be a square float64 matrix, got {d2.dtype} {d2.shape}")
    if not np.isfinite(d2).all() or (d2 < 0).any():
        raise SpecFormatError(path, "image_sq_distances has negative, NaN or infinite values")
    if not np.array_equal(d2, d2.T) or np.any(np.diag(d2) != 0):
        raise SpecFormatError(path, "image_sq_distances is not symmetric with a zero diagonal")


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"skipped: {self.path.name}: {self.reason}"


class SpecStore:
    """Every specification in one folder, loaded in file-name order; bad files are skipped.

    ``SpecStore(folder)`` loads at once (``load=False``: an empty store, e.g. to write into).
    ``specs`` are the good ones (``paths`` their files), ``skipped`` says why each bad one was left
    out. A second file with an already-loaded ``model_id`` and encoder is skipped as a duplicate.
    """

    def __init__(self, folder: str | os.PathLike[str], *, load: bool = True):
        self.folder = Path(folder)
        self.specs: list[Specification] = []
        self.paths: list[Path] = []
        self.skipped: list[Skipped] = []
        if load:
            if not self.folder.is_dir():
                raise SpecFormatError(self.folder, "not a folder of specification files")
            self.reload()

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> SpecStore:
        return cls(folder)

    def reload(self) -> None:
        self.specs, self.paths, self.skipped = [], [], []
        seen: set[tuple[str, str]] = set()
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith(".") or path.suffix != SPEC_SUFFIX or not path.is_file():
                continue
            try:
                spec = load_spec(path)
            except UserInputError as exc:
                self.skipped.append(Skipped(path, exc.reason))
                continue
            key = (spec.model_id, spec.recipe.encoder_id)
            if key in seen:
                self.skipped.append(Skipped(path, f"duplicate of model {spec.model_id!r}"))
                continue
            seen.add(key)
            self.specs.append(spec)
            self.paths.append(path)

    def path_for(self, spec: Specification) -> Path:
        return self.folder / spec_filename(spec.model_id, spec.recipe.encoder_id)

    def save(self, spec: Specification) -> Path:
        """Write ``spec`` into the folder (replacing an older file of the same model)."""
        return save_spec(spec, self.path_for(spec))

    def by_id(self) -> dict[str, Specification]:
        return {s.model_id: s for s in self.specs}

    def index(self, **kwargs):
        """The core SpecIndex over all loaded specs: one query scores all M models at once."""
        from gmi_desktop.core.index import SpecIndex

        if not self.specs:
            raise SpecFormatError(self.folder, "no usable specification in this folder")
        return SpecIndex(self.specs, **kwargs)
