"""The spec builder's files beside the specifications: per-image progress, failures, thumbnails.

For a specification ``<store>/<stem>.safetensors`` (see :func:`~gmi_desktop.store.specfile.spec_filename`):

- ``<store>/building/<stem>.state.safetensors``: the build in progress for one recipe: image,
  prompt and pixel features of every image generated so far (rows of the full prompt list, a
  ``done`` mask), written atomically after every batch, so a cancel, crash or ``kill -9`` loses at
  most the batch that was running. Deleted when the full specification is written.
- ``<store>/building/<stem>.failed.json``: why this checkpoint failed under this recipe.
- ``<store>/building/<stem>.thumbs/<prompt index>.jpg``: a small thumbnail of every image generated
  so far; when a specification (coarse or full) is written, the thumbnails of its rows are published
  as ``<store>/<stem>.thumbs/<row>.jpg`` (row = the image's index in the specification, 4 digits:
  what :mod:`gmi_desktop.services.identify_explain` shows as the closest images).

The folders are not read by :class:`~gmi_desktop.store.specfile.SpecStore` (it lists the store's
top level only). Every write is atomic; a full disk is :class:`DiskFull` and leaves the previous
files as they were.
"""

from __future__ import annotations

import errno
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gmi_desktop.core.errors import SpecFormatError, UserInputError
from gmi_desktop.store.atomic import atomic_write_bytes
from gmi_desktop.store.specfile import SPEC_SUFFIX
from gmi_desktop.store.tensorfile import checked_bytes, json_field, read_checked

STATE_KIND = "spec-build-state"
THUMBNAIL_SIZE = 128


class DiskFull(UserInputError):
    default_hint = "free some disk space; the build resumes where it stopped"


def write_atomically(path: Path, data: bytes) -> None:
    """:func:`atomic_write_bytes`, with a full disk as :class:`DiskFull`."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(path, "the disk is full; nothing already built was lost") from exc
        raise


@dataclass(frozen=True)
class SpecPaths:
    """Where the files of one specification live."""

    store: Path
    stem: str

    @classmethod
    def of(cls, store: Path, spec_name: str) -> SpecPaths:
        return cls(Path(store), spec_name[: -len(SPEC_SUFFIX)] if spec_name.endswith(SPEC_SUFFIX) else spec_name)

    @property
    def spec(self) -> Path:
        return self.store / f"{self.stem}{SPEC_SUFFIX}"

    @property
    def state(self) -> Path:
        return self.store / "building" / f"{self.stem}.state{SPEC_SUFFIX}"

    @property
    def failed(self) -> Path:
        return self.store / "building" / f"{self.stem}.failed.json"

    @property
    def thumbs(self) -> Path:
        """The published thumbnails of the specification's rows."""
        return self.store / f"{self.stem}.thumbs"

    def thumbnail(self, row: int) -> Path:
        return self.thumbs / f"{row:04d}.jpg"

    @property
    def generated(self) -> Path:
        """Thumbnails of the images generated so far, by prompt index."""
        return self.store / "building" / f"{self.stem}.thumbs"

    def generated_thumbnail(self, prompt_index: int) -> Path:
        return self.generated / f"{prompt_index:04d}.jpg"


class BuildState:
    """Features of the images made so far for one recipe; rows follow the full prompt list."""

    def __init__(self, recipe_digest: str, prompts: tuple[str, ...], arrays: dict[str, np.ndarray] | None = None,
                 engine: dict | None = None):
        self.recipe_digest = recipe_digest
        self.prompts = tuple(prompts)
        self.arrays = arrays or {}
        # what the engine decided while generating (prediction type, zero-terminal SNR, precision):
        # recorded in the specification so that specifications stay comparable
        self.engine = dict(engine or {})
        self.done = (np.asarray(self.arrays.pop("done"), dtype=bool).copy() if "done" in self.arrays
                     else np.zeros(len(self.prompts), dtype=bool))

    @property
    def images_done(self) -> int:
        return int(self.done.sum())

    def has(self, indices) -> bool:
        return bool(self.done[list(indices)].all())

    def put(self, indices: list[int], **features: np.ndarray) -> None:
        """Record the features (one row per index) of a finished batch."""
        for name, rows in features.items():
            rows = np.asarray(rows, dtype=np.float32)
            if name not in self.arrays:
                self.arrays[name] = np.zeros((len(self.prompts), rows.shape[1]), dtype=np.float32)
            self.arrays[name][indices] = rows
        self.done[indices] = True

    def rows(self, name: str, indices) -> np.ndarray:
        return self.arrays[name][list(indices)]

    def to_bytes(self) -> bytes:
        tensors = {name: arr for name, arr in self.arrays.items()}
        tensors["done"] = self.done.astype(np.uint8)
        meta = {"gmi.kind": json.dumps(STATE_KIND), "gmi.recipe_digest": json.dumps(self.recipe_digest),
                "gmi.prompts": json.dumps(list(self.prompts), ensure_ascii=False),
                "gmi.engine": json.dumps(self.engine, sort_keys=True)}
        return checked_bytes(tensors, meta)


def save_state(path: Path, state: BuildState) -> None:
    write_atomically(path, state.to_bytes())


def load_state(path: Path, recipe_digest: str, prompts: tuple[str, ...]) -> BuildState | None:
    """The saved progress for this recipe, or None (no file, another recipe, or a damaged file:
    the state is ours and only ever a cache of work, so a bad one is started afresh)."""
    if not path.is_file():
        return None
    try:
        tensors, meta = read_checked(path, SpecFormatError)
        if (json_field(path, meta, "gmi.kind", SpecFormatError) != STATE_KIND
                or json_field(path, meta, "gmi.recipe_digest", SpecFormatError) != recipe_digest
                or tuple(json_field(path, meta, "gmi.prompts", SpecFormatError)) != tuple(prompts)):
            return None
    except SpecFormatError:
        return None
    if "done" not in tensors or tensors["done"].shape != (len(prompts),):
        return None
    if any(a.ndim != 2 or a.shape[0] != len(prompts) for n, a in tensors.items() if n != "done"):
        return None
    try:
        engine = json.loads(meta.get("gmi.engine", "{}"))
    except ValueError:
        return None
    return BuildState(recipe_digest, prompts, dict(tensors), engine if isinstance(engine, dict) else {})


def state_images_done(path: Path) -> tuple[str, int] | None:
    """(recipe digest, images done) of a state file without validating its tensors (for status lists)."""
    try:
        tensors, meta = read_checked(path, SpecFormatError)
        return json.loads(meta["gmi.recipe_digest"]), int(np.asarray(tensors["done"]).sum())
    except (SpecFormatError, KeyError, ValueError):
        return None


def write_failure(path: Path, recipe_digest: str, reason: str) -> None:
    write_atomically(path, json.dumps({"recipe_digest": recipe_digest, "reason": reason}).encode("utf-8"))


def read_failure(path: Path, recipe_digest: str) -> str | None:
    """The recorded reason this recipe failed, or None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("recipe_digest") != recipe_digest:
        return None
    return str(data.get("reason") or "failed")


def save_thumbnail(path: Path, image: Any, size: int = THUMBNAIL_SIZE) -> None:
    """A small JPEG of a PIL image (longest side ``size``).

    Written to a temp file and renamed (a reader never sees half a file) but not fsynced: a
    thumbnail only illustrates a result, and a power cut that loses one costs a picture, not a
    feature, while an fsync per image would slow a fast GPU's build measurably.
    """
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=85)
    _replace_bytes(path, buffer.getvalue())


def _replace_bytes(path: Path, data: bytes) -> None:
    """Temp file + rename, no fsync (see :func:`save_thumbnail`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        remove_quietly(tmp)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(path, "the disk is full; nothing already built was lost") from exc
        raise


def remove_quietly(*paths: Path, on_error: Callable[[Path, OSError], None] | None = None) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if on_error is not None:
                on_error(path, exc)


def thumbnail_paths(spec_path: Path, spec: Any) -> list[Path]:
    """The thumbnail of each row of a built specification; a path may be absent (an imported spec)."""
    where = SpecPaths.of(Path(spec_path).parent, Path(spec_path).name)
    return [where.thumbnail(row) for row in range(spec.n_images)]


def publish_thumbnails(where: SpecPaths, prompt_indices: list[int]) -> None:
    """Copy the generated thumbnails of a specification's rows to their published names."""
    for row, index in enumerate(prompt_indices):
        source = where.generated_thumbnail(index)
        if source.is_file():
            _replace_bytes(where.thumbnail(row), source.read_bytes())
