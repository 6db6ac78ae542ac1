"""What other tools already wrote down about a model: sidecar files and safetensors metadata.

Read next to ``<dir>/<name>.safetensors`` (``<name>`` = the file name without its last suffix; a
diffusers folder's whole name):

``<name>.civitai.info``
    The A1111 Civitai Helper stores the Civitai API *model-version* object: ``id`` (version id),
    ``modelId``, ``name`` (version name), ``baseModel``, ``description``, ``trainedWords``,
    ``stats.downloadCount`` (downloads of this version), ``model.name``.
``<name>.cm-info.json``
    Stability Matrix's ``ConnectedModelInfo``, serialised with .NET's default PascalCase names:
    ``ModelId``, ``ModelName``, ``ModelDescription``, ``VersionId``, ``VersionName``,
    ``BaseModel``, ``TrainedWords``, ``UserTitle`` (a name the user typed) and ``Stats`` (the
    Civitai *model* stats, camelCase inside: ``downloadCount``). Keys are matched without regard
    to case, so either spelling works.
``<name>.preview.png|jpg|jpeg|webp``, then ``<name>.png|jpg|jpeg|webp``
    Preview images (A1111, Forge, ComfyUI-Manager, Stability Matrix).

plus the safetensors ``__metadata__`` the probe already read: ``modelspec.title``,
``modelspec.architecture``, ``modelspec.description``, ``ss_sd_model_name`` (the model a
fine-tune started from) and ``sshs_model_hash``.

Precedence per field: the user's own title in cm-info, then civitai.info, then cm-info, then the
file's metadata, then the file name. A sidecar that is missing is simply absent; one that is not a
regular file, too large, not UTF-8 or not a JSON object is ignored, and ``problems`` says why.
The download count is the popularity the paper's *Download* baseline ranks by.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

MAX_SIDECAR_BYTES = 16 * 1024 * 1024
PREVIEW_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
ARCHITECTURES = {
    "stable-diffusion-v1": "SD 1.x",
    "stable-diffusion-v2-512": "SD 2.x",
    "stable-diffusion-v2-768-v": "SD 2.x 768-v",
    "stable-diffusion-xl-v1-base": "SDXL 1.0",
    "stable-diffusion-xl-v1-refiner": "SDXL Refiner",
}


@dataclass(frozen=True)
class SidecarInfo:
    """Display information gathered around one model. ``source`` names where the name came from."""

    display_name: str
    base_model: str | None = None
    preview_path: Path | None = None
    download_count: int | None = None
    civitai_model_id: int | None = None
    civitai_version_id: int | None = None
    description: str | None = None
    trigger_words: tuple[str, ...] = ()
    source: str = "file name"  # "cm-info.json" | "civitai.info" | "safetensors metadata" | "file name"
    model_hash: str | None = None  # sshs_model_hash from the metadata, when present
    problems: tuple[str, ...] = ()  # sidecars that were ignored, with the reason


def sidecar_stem(model_path: Path) -> str:
    """``name`` for ``name.safetensors``; a directory's whole name."""
    return model_path.name if model_path.suffix == "" or model_path.is_dir() else model_path.stem


def _regular(path: Path) -> os.stat_result | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _load_json(path: Path, problems: list[str]) -> dict | None:
    """The JSON object in ``path``; ``None`` (and a problem noted) when unusable."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        problems.append(f"{path.name}: cannot read ({exc.strerror or exc})")
        return None
    if not stat.S_ISREG(st.st_mode):
        problems.append(f"{path.name}: not a regular file, ignored")
        return None
    if st.st_size > MAX_SIDECAR_BYTES:
        problems.append(f"{path.name}: {st.st_size} bytes, larger than {MAX_SIDECAR_BYTES}; ignored")
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_SIDECAR_BYTES + 1)
    except OSError as exc:
        problems.append(f"{path.name}: cannot read ({exc.strerror or exc})")
        return None
    if len(raw) > MAX_SIDECAR_BYTES:
        problems.append(f"{path.name}: grew past {MAX_SIDECAR_BYTES} bytes while read; ignored")
        return None
    try:
        value = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        problems.append(f"{path.name}: not UTF-8 text, ignored")
        return None
    except (ValueError, RecursionError) as exc:
        problems.append(f"{path.name}: not valid JSON ({exc}), ignored")
        return None
    if not isinstance(value, dict):
        kind = "array" if isinstance(value, list) else "string" if isinstance(value, str) else "value"
        problems.append(f"{path.name}: a JSON {kind} instead of an object, ignored")
        return None
    return value


def _get(obj: object, *keys: str) -> object:
    """Nested lookup, case-insensitive per level; ``None`` when any level is missing."""
    for key in keys:
        if not isinstance(obj, dict):
            return None
        if key in obj:
            obj = obj[key]
            continue
        lowered = key.lower()
        obj = next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == lowered), None)
    return obj


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value) if value >= 0 and value == int(value) else None


def _words(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(w.strip() for w in value if isinstance(w, str) and w.strip())


def _joined_name(model: str | None, version: str | None) -> str | None:
    if model and version and version.lower() not in model.lower():
        return f"{model} ({version})"
    return model or version


def _from_civitai_info(doc: dict) -> dict:
    return {
        "display_name": _joined_name(_text(_get(doc, "model", "name")), _text(_get(doc, "name"))),
        "base_model": _text(_get(doc, "baseModel")),
        "download_count": _count(_get(doc, "stats", "downloadCount")),
        "civitai_model_id": _count(_get(doc, "modelId")),
        "civitai_version_id": _count(_get(doc, "id")),
        "description": _text(_get(doc, "description")) or _text(_get(doc, "model", "description")),
        "trigger_words": _words(_get(doc, "trainedWords")),
    }


def _from_cm_info(doc: dict) -> dict:
    return {
        "display_name": _joined_name(_text(_get(doc, "ModelName")), _text(_get(doc, "VersionName"))),
        "base_model": _text(_get(doc, "BaseModel")),
        "download_count": _count(_get(doc, "Stats", "downloadCount")),
        "civitai_model_id": _count(_get(doc, "ModelId")),
        "civitai_version_id": _count(_get(doc, "VersionId")),
        "description": _text(_get(doc, "ModelDescription")) or _text(_get(doc, "VersionDescription")),
        "trigger_words": _words(_get(doc, "TrainedWords")),
    }


def _from_metadata(metadata: Mapping[str, str]) -> dict:
    arch = _text(metadata.get("modelspec.architecture"))
    return {
        "display_name": _text(metadata.get("modelspec.title")),
        "base_model": ARCHITECTURES.get(arch or "", arch) or _text(metadata.get("ss_sd_model_name")),
        "description": _text(metadata.get("modelspec.description")),
        "trigger_words": tuple(
            w.strip() for w in (metadata.get("modelspec.trigger_phrase") or "").split(",") if w.strip()
        ),
    }


def find_preview(model_path: Path) -> Path | None:
    """The first preview image that exists as a non-empty regular file."""
    stem = sidecar_stem(model_path)
    names = [f"{stem}.preview{ext}" for ext in PREVIEW_EXTENSIONS]
    names += [f"{stem}{ext}" for ext in PREVIEW_EXTENSIONS]
    for name in names:
        candidate = model_path.with_name(name)
        st = _regular(candidate)
        if st is not None and st.st_size > 0:
            return candidate
    return None


def read_sidecars(model_path: str | PathLike[str], metadata: Mapping[str, str] | None = None) -> SidecarInfo:
    """Gather display information for ``model_path``. ``metadata`` is its safetensors
    ``__metadata__`` when the caller has probed it already (``ProbeResult.metadata``); ``None``
    reads it from the file's header. Never raises for bad sidecars or a bad model file."""
    model_path = Path(model_path)
    if metadata is None:
        from gmi_desktop.store.probe import probe

        metadata = probe(model_path).metadata
    stem = sidecar_stem(model_path)
    problems: list[str] = []
    layers: list[tuple[str, dict]] = []
    cm_doc = _load_json(model_path.with_name(f"{stem}.cm-info.json"), problems)
    civitai_doc = _load_json(model_path.with_name(f"{stem}.civitai.info"), problems)
    if cm_doc is not None and _text(_get(cm_doc, "UserTitle")):
        layers.append(("cm-info.json", {"display_name": _text(_get(cm_doc, "UserTitle"))}))
    if civitai_doc is not None:
        layers.append(("civitai.info", _from_civitai_info(civitai_doc)))
    if cm_doc is not None:
        layers.append(("cm-info.json", _from_cm_info(cm_doc)))
    if metadata:
        layers.append(("safetensors metadata", _from_metadata(metadata)))
    layers.append(("file name", {"display_name": stem}))

    fields: dict = {}
    source = "file name"
    for origin, values in layers:
        for key, value in values.items():
            if key not in fields and value not in (None, ()):
                fields[key] = value
                if key == "display_name":
                    source = origin
    return SidecarInfo(
        preview_path=find_preview(model_path),
        source=source,
        model_hash=_text((metadata or {}).get("sshs_model_hash")),
        problems=tuple(problems),
        **fields,
    )
