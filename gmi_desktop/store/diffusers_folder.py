"""Diffusers-format model folders (``model_index.json`` + one sub-folder per component).

The family comes from ``unet/config.json`` (``cross_attention_dim``: 768 SD 1.x, 1024 SD 2.x,
2048 SDXL, 1280 SDXL refiner; ``in_channels`` 9/5/8 for inpaint/depth/instruct-pix2pix), checked
against the pipeline class named in ``model_index.json``. Every required component must hold
``.safetensors`` weights; their headers are validated with :func:`probe` (header reads only).
Components stored only as ``.bin`` pickles make the folder unsupported, never unpickled.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from gmi_desktop.core.checkpoint_kinds import UNREADABLE, Status
from gmi_desktop.store.classify import CONTEXT_FAMILY, FAMILY_NAMES, IN_CHANNELS_VARIANT, SUPPORTED, VARIANT_NAMES
from gmi_desktop.store.hashing import stat_key
from gmi_desktop.store.probe import MODEL_SUFFIXES, PICKLE_ADVICE, PICKLE_SUFFIXES, UNREADABLE_PREFIX, ProbeResult, probe

MAX_CONFIG_BYTES = 1024 * 1024
SD_PIPELINES = {
    "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline",
    "StableDiffusionDepth2ImgPipeline", "StableDiffusionInstructPix2PixPipeline",
    "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline",
    "StableDiffusionXLInpaintPipeline", "StableDiffusionXLInstructPix2PixPipeline",
}


class _FolderProblem(Exception):
    def __init__(self, status: Status, reason: str, kind: str | None = None):
        super().__init__(reason)
        self.status, self.reason, self.kind = status, reason, kind


def _unreadable(reason: str) -> _FolderProblem:
    return _FolderProblem(Status.SKIPPED, UNREADABLE_PREFIX + reason, UNREADABLE)


def _read_json(path: Path, what: str) -> dict:
    try:  # O_NONBLOCK and a regular-file check: a FIFO named config.json must not block us
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise _FolderProblem(Status.INVALID, f"{what} is not a regular file")
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise _FolderProblem(Status.INVALID, f"{what} is missing") from None
    except OSError as exc:
        raise _unreadable(f"cannot read {what}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise _FolderProblem(Status.INVALID, f"{what} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _FolderProblem(Status.INVALID, f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _FolderProblem(Status.INVALID, f"{what} is not a JSON object")
    return value


def _listed(index: dict, name: str) -> bool:
    entry = index.get(name)
    return isinstance(entry, list) and len(entry) == 2 and entry[0] is not None


def _component_weights(folder: Path, name: str) -> tuple[int, int]:
    """Validate one component's weights; returns (bytes, tensors)."""
    sub = folder / name
    try:
        files = sorted(p for p in sub.iterdir() if p.is_file())
    except FileNotFoundError:
        raise _FolderProblem(Status.INVALID, f"component folder '{name}' is missing") from None
    except OSError as exc:
        raise _unreadable(f"cannot list '{name}': {exc.strerror or exc}") from None
    weights = [p for p in files if p.suffix.lower() == ".safetensors"]
    if not weights:
        if any(p.suffix.lower() in PICKLE_SUFFIXES for p in files):
            raise _FolderProblem(Status.UNSUPPORTED, f"unsupported: '{name}' holds only pickle weights; {PICKLE_ADVICE}")
        raise _FolderProblem(Status.INCOMPLETE, f"component '{name}' has no weights file")
    for index_file in (p for p in files if p.name.endswith(".safetensors.index.json")):
        shards = _read_json(index_file, f"{name}/{index_file.name}").get("weight_map")
        wanted = set(shards.values()) if isinstance(shards, dict) else set()
        missing = sorted(str(w) for w in wanted if not (sub / str(w)).is_file())
        if missing:
            raise _FolderProblem(Status.INCOMPLETE, f"{name}: shard {missing[0]} listed in {index_file.name} is missing")
    size = tensors = 0
    for weight in weights:
        found = probe(weight)
        if found.status != Status.OK and (found.unreadable or found.status != Status.SKIPPED):
            raise _FolderProblem(found.status, f"{name}/{weight.name}: {found.reason}", found.kind)
        size += found.size
        tensors += found.tensor_count
    return size, tensors


def _unet_family(folder: Path) -> tuple[str, str]:
    config = _read_json(folder / "unet" / "config.json", "unet/config.json")
    context = config.get("cross_attention_dim")
    if isinstance(context, list) and context:
        context = context[0] if len(set(context)) == 1 else None
    family = CONTEXT_FAMILY.get(context) if isinstance(context, int) else None
    if family is None:
        raise _FolderProblem(
            Status.UNSUPPORTED, f"unet cross_attention_dim {context!r} matches no SD 1.x/2.x/SDXL family"
        )
    in_channels = config.get("in_channels", 4)
    variant = IN_CHANNELS_VARIANT.get(in_channels) if isinstance(in_channels, int) else None
    if variant is None:
        raise _FolderProblem(Status.UNSUPPORTED, f"unet with {in_channels!r} input channels (unknown variant)")
    if variant not in SUPPORTED[family]:
        raise _FolderProblem(
            Status.UNSUPPORTED,
            f"{FAMILY_NAMES[family]} {VARIANT_NAMES[variant]} pipeline: not supported for generation",
        )
    return family, variant


def _prediction(folder: Path) -> str | None:
    try:
        scheduler = _read_json(folder / "scheduler" / "scheduler_config.json", "scheduler config")
    except _FolderProblem:
        return None
    kind = scheduler.get("prediction_type")
    return kind if kind in {"epsilon", "v_prediction"} else None


def probe_diffusers_folder(path: Path, st: os.stat_result) -> ProbeResult:
    """Probe a directory: a diffusers pipeline folder, or just a directory."""
    def result(status: Status, reason: str = "", **kw) -> ProbeResult:
        fmt = kw.pop("fmt", "diffusers")
        return ProbeResult(path, status, fmt, reason=reason, key=stat_key(st), **kw)

    if not (path / "model_index.json").is_file():
        named = " (named like a model file)" if path.suffix.lower() in MODEL_SUFFIXES else ""
        return result(Status.SKIPPED, f"a directory without model_index.json{named}, not a model",
                      fmt="unknown", kind="unknown")
    try:
        index = _read_json(path / "model_index.json", "model_index.json")
        pipeline = index.get("_class_name")
        if pipeline not in SD_PIPELINES:
            return result(Status.UNSUPPORTED, f"diffusers pipeline {pipeline!r} is not SD 1.x/2.x/SDXL",
                          kind="unknown")
        family, variant = _unet_family(path)
        xl_pipeline = "XL" in pipeline
        if xl_pipeline != family.startswith("sdxl"):
            raise _FolderProblem(
                Status.INVALID, f"{pipeline} folder but its UNet is {FAMILY_NAMES[family]}; the folder is mixed up"
            )
        encoders = [n for n in ("text_encoder", "text_encoder_2") if _listed(index, n)]
        missing = [n for n in ("unet", "vae") if not _listed(index, n)] + ([] if encoders else ["text_encoder"])
        if missing:
            return result(Status.SKIPPED, f"diffusers folder without {', '.join(missing)}, not a full checkpoint",
                          family=family, variant=variant, kind="unet_only" if "unet" not in missing else "unknown")
        size = tensors = 0
        for name in ["unet", "vae", *encoders]:
            part_size, part_tensors = _component_weights(path, name)
            size, tensors = size + part_size, tensors + part_tensors
    except _FolderProblem as problem:
        return result(problem.status, problem.reason, kind=problem.kind)
    return result(Status.OK, family=family, variant=variant, size=size, tensor_count=tensors,
                  prediction=_prediction(path))
