"""The on-disk benchmark format (docs/benchmark-format.md): model specs + identification tasks.

```
FEATURES_DIR/
  manifest.json          {"format": "gmi-benchmark", "version": 1, "models": [model_id, ...], ...}
  specs/*.safetensors    one specification file per model (store/specfile.py)
  tasks.safetensors      query features and ground truth (checked safetensors, see below)
```

``tasks.safetensors`` tensors: ``image_features`` (K, D) float32, ``prompt_features`` (K, Dt)
float32 (each image's pseudo-prompt), ``true_model`` (K,) int64 indexing ``manifest.models``,
optional ``pixel_features`` (K, P) float32 and ``group`` (K,) int64 (images that may be pooled
into one multi-image query). Metadata: ``gmi.kind`` = ``"benchmark-tasks"``, ``gmi.model_ids``
(the same list as the manifest), optional ``gmi.task_prompts``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gmi_desktop.core.errors import UserInputError
from gmi_desktop.core.spec import Specification
from gmi_desktop.evaluation.metrics import TaskSet
from gmi_desktop.store.atomic import atomic_write_bytes
from gmi_desktop.store.specfile import Skipped, SpecStore
from gmi_desktop.store.tensorfile import checked_bytes, json_field, read_checked

BENCHMARK_FORMAT = "gmi-benchmark"
BENCHMARK_VERSION = 1
TASKS_KIND = "benchmark-tasks"
MANIFEST = "manifest.json"
TASKS_FILE = "tasks.safetensors"
SPECS_DIR = "specs"


class BenchmarkFormatError(UserInputError):
    """A FEATURES_DIR that does not follow docs/benchmark-format.md."""

    default_hint = "see docs/benchmark-format.md"


UNIT_NORM_TOLERANCE = 1e-3


def _check_unit_rows(path: Path, name: str, features: np.ndarray) -> None:
    """Image features must be L2-normalised (gamma is defined in those units, core/kernels.py)."""
    norms = np.linalg.norm(np.asarray(features, np.float64), axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > UNIT_NORM_TOLERANCE)
    if bad.size:
        raise BenchmarkFormatError(
            path, f"{name} are not L2-normalised (row {bad[0]} has norm {norms[bad[0]]:.4g})",
            "divide each row by its L2 norm (see docs/benchmark-format.md)",
        )


@dataclass
class Benchmark:
    """Specs in manifest order (model index m = position), tasks, and the manifest itself."""

    folder: Path
    specs: list[Specification]
    tasks: TaskSet
    manifest: dict
    task_prompts: tuple[str, ...] = ()
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def model_ids(self) -> tuple[str, ...]:
        return tuple(s.model_id for s in self.specs)


def write_benchmark(
    folder: str | os.PathLike[str],
    specs: Sequence[Specification],
    tasks: TaskSet,
    *,
    description: str = "",
    task_prompts: Sequence[str] = (),
    extra: dict | None = None,
) -> Path:
    """Write a FEATURES_DIR; ``tasks.true_model`` indexes ``specs``. Every file is atomic. A folder
    that holds a benchmark already is cleared of it first (:func:`clear_benchmark`); a folder that
    holds anything else is refused."""
    folder = Path(folder)
    ids = [s.model_id for s in specs]
    if len(set(ids)) != len(ids):
        raise ValueError("model ids must be unique")
    if tasks.true_model.size and (tasks.true_model.min() < 0 or tasks.true_model.max() >= len(specs)):
        raise ValueError("tasks.true_model must index the specs")
    clear_benchmark(folder)
    store = SpecStore(folder / SPECS_DIR, load=False)
    (folder / SPECS_DIR).mkdir(parents=True, exist_ok=True)
    for spec in specs:
        store.save(spec)
    tensors = {
        "image_features": np.asarray(tasks.image_features, np.float32),
        "prompt_features": np.asarray(tasks.prompt_features, np.float32),
        "true_model": np.asarray(tasks.true_model, np.int64),
    }
    if tasks.pixel_features is not None:
        tensors["pixel_features"] = np.asarray(tasks.pixel_features, np.float32)
    if tasks.group is not None:
        tensors["group"] = np.asarray(tasks.group, np.int64)
    meta = {"gmi.kind": json.dumps(TASKS_KIND), "gmi.model_ids": json.dumps(ids)}
    if task_prompts:
        meta["gmi.task_prompts"] = json.dumps(list(task_prompts), ensure_ascii=False)
    atomic_write_bytes(folder / TASKS_FILE, checked_bytes(tensors, meta))
    manifest = {
        "format": BENCHMARK_FORMAT,
        "version": BENCHMARK_VERSION,
        "description": description,
        "models": ids,
        "specs_dir": SPECS_DIR,
        "tasks_file": TASKS_FILE,
        "n_tasks": int(tasks.n_images),
        **(extra or {}),
    }
    atomic_write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return folder


def clear_benchmark(folder: Path) -> list[Path]:
    """Make ``folder`` ready for a new benchmark: nothing to do if it is new or empty; if it holds a
    benchmark (a valid manifest), remove that benchmark's files (spec files, tasks file, manifest)
    and return them; anything else is a :class:`BenchmarkFormatError` (nothing is deleted)."""
    hint = "choose an empty or new folder"
    if not folder.exists():
        return []
    if not folder.is_dir():
        raise BenchmarkFormatError(folder, "exists and is not a folder", hint)
    if not any(folder.iterdir()):
        return []
    try:
        manifest = _read_manifest(folder / MANIFEST)
    except BenchmarkFormatError:
        raise BenchmarkFormatError(folder, "is not empty and holds no benchmark (no valid manifest.json)",
                                   hint) from None
    specs_dir = folder / _plain_name(manifest.get("specs_dir"), SPECS_DIR)
    tasks_file = folder / _plain_name(manifest.get("tasks_file"), TASKS_FILE)
    stale = sorted(specs_dir.glob("*.safetensors")) if specs_dir.is_dir() else []
    stale += [p for p in (tasks_file, folder / MANIFEST) if p.is_file()]
    for path in stale:
        path.unlink()
    return stale


def _plain_name(value, default: str) -> str:
    """A manifest's file name if it names an entry of the folder itself, else ``default``: what
    :func:`clear_benchmark` deletes never lies outside the folder."""
    if isinstance(value, str) and value not in ("", ".", "..") and Path(value).name == value:
        return value
    return default


def load_benchmark(folder: str | os.PathLike[str]) -> Benchmark:
    """Read and cross-check a FEATURES_DIR, or raise :class:`BenchmarkFormatError`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BenchmarkFormatError(folder, "not a folder")
    manifest = _read_manifest(folder / MANIFEST)
    ids = manifest["models"]
    specs_dir = folder / str(manifest.get("specs_dir", SPECS_DIR))
    if not specs_dir.is_dir():
        raise BenchmarkFormatError(specs_dir, "the specs folder is missing")
    store = SpecStore.open(specs_dir)
    found = store.by_id()
    missing = [m for m in ids if m not in found]
    if missing:
        why = "; ".join(str(s) for s in store.skipped[:3])
        raise BenchmarkFormatError(
            folder, f"{len(missing)} model(s) of the manifest have no usable spec file (e.g. {missing[0]!r})"
            + (f"; {why}" if why else "")
        )
    specs = [found[m] for m in ids]
    spec_paths = {s.model_id: p for s, p in zip(store.specs, store.paths)}
    for spec in specs:
        _check_unit_rows(spec_paths[spec.model_id], "image_features", spec.image_features)
    for spec in specs[1:]:
        if (spec.image_features.shape[1], spec.prompt_features.shape[1]) != (
            specs[0].image_features.shape[1], specs[0].prompt_features.shape[1]
        ):
            raise BenchmarkFormatError(folder, f"model {spec.model_id!r} has other feature widths than {ids[0]!r}")
    tasks, prompts = _read_tasks(folder / manifest.get("tasks_file", TASKS_FILE), ids, specs)
    return Benchmark(folder, specs, tasks, manifest, prompts, list(store.skipped))


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BenchmarkFormatError(path, "manifest.json is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchmarkFormatError(path, f"unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BENCHMARK_FORMAT:
        raise BenchmarkFormatError(path, f"not a benchmark manifest (format must be {BENCHMARK_FORMAT!r})")
    if manifest.get("version") != BENCHMARK_VERSION:
        raise BenchmarkFormatError(path, f"benchmark version {manifest.get('version')!r} is not supported")
    ids = manifest.get("models")
    if not isinstance(ids, list) or len(ids) < 2 or not all(isinstance(m, str) for m in ids):
        raise BenchmarkFormatError(path, "'models' must list at least two model ids")
    if len(set(ids)) != len(ids):
        raise BenchmarkFormatError(path, "'models' has duplicates")
    return manifest


def _read_tasks(path: Path, ids: list[str], specs: list[Specification]) -> tuple[TaskSet, tuple[str, ...]]:
    tensors, meta = read_checked(path, BenchmarkFormatError)
    if json_field(path, meta, "gmi.kind", BenchmarkFormatError) != TASKS_KIND:
        raise BenchmarkFormatError(path, "not a benchmark tasks file")
    if json_field(path, meta, "gmi.model_ids", BenchmarkFormatError) != ids:
        raise BenchmarkFormatError(path, "gmi.model_ids differs from the manifest's models")
    for name in ("image_features", "prompt_features", "true_model"):
        if name not in tensors:
            raise BenchmarkFormatError(path, f"tensor {name!r} is missing")
    expected = {"image_features": np.float32, "prompt_features": np.float32, "pixel_features": np.float32,
                "true_model": np.int64, "group": np.int64}
    for name, array in tensors.items():
        if name not in expected:
            raise BenchmarkFormatError(path, f"unexpected tensor {name!r}")
        if array.dtype != expected[name]:
            raise BenchmarkFormatError(path, f"tensor {name!r} has dtype {array.dtype}, expected {np.dtype(expected[name])}")
        want_ndim = 1 if name in ("true_model", "group") else 2
        if array.ndim != want_ndim or (array.dtype == np.float32 and not np.isfinite(array).all()):
            raise BenchmarkFormatError(path, f"tensor {name!r} must be {want_ndim}-D and finite, got shape {array.shape}")
    k = tensors["image_features"].shape[0]
    if k == 0 or any(a.shape[0] != k for a in tensors.values()):
        raise BenchmarkFormatError(path, "tensors must all have the same, non-zero number of rows")
    true = tensors["true_model"]
    if true.min() < 0 or true.max() >= len(ids):
        raise BenchmarkFormatError(path, "true_model values must index the manifest's models")
    if "group" in tensors:
        pairs = np.unique(np.stack([tensors["group"], true]), axis=1)
        if len(np.unique(pairs[0])) != pairs.shape[1]:
            raise BenchmarkFormatError(path, "a group holds images of different true models")
    spec = specs[0]
    checks = [("image_features", spec.image_features), ("prompt_features", spec.prompt_features)]
    if "pixel_features" in tensors:
        checks.append(("pixel_features", spec.pixel_features))
    for name, ref in checks:
        if ref is None or tensors[name].shape[1] != ref.shape[1]:
            width = None if ref is None else ref.shape[1]
            raise BenchmarkFormatError(path, f"{name} width {tensors[name].shape[1]} does not match the specs ({width})")
    _check_unit_rows(path, "image_features", tensors["image_features"])
    prompts: tuple[str, ...] = ()
    if "gmi.task_prompts" in meta:
        raw = json_field(path, meta, "gmi.task_prompts", BenchmarkFormatError)
        if not isinstance(raw, list) or len(raw) > k:
            raise BenchmarkFormatError(path, "gmi.task_prompts must be a list of at most one prompt per task")
        prompts = tuple(str(p) for p in raw)
    tasks = TaskSet(
        image_features=tensors["image_features"],
        prompt_features=tensors["prompt_features"],
        true_model=true,
        pixel_features=tensors.get("pixel_features"),
        group=tensors.get("group"),
    )
    return tasks, prompts
