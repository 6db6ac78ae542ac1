"""Where CLIP and BLIP weights come from, in a fixed order, never hanging on the network.

1. An explicit local file or folder from the settings (``clip_weights`` / ``blip_weights``).
2. The drop folder ``<data dir>/weights/<clip|blip>/<name>/`` (named in every error message).
3. The caches the user already has: the Hugging Face hub cache (``HF_HUB_CACHE``, ``HF_HOME/hub``,
   ``~/.cache/huggingface/hub``), which is where open_clip 3.x keeps nearly every pretrained tag.
   (Its legacy URL downloads in ``~/.cache/clip`` are TorchScript archives, which open_clip 3.x's
   ``torch.load(weights_only=True)`` refuses, so they are not looked for.)
4. A download into the hub cache with progress events (stage "downloading", bytes done / total), only when the
   settings allow downloads and ``HF_HUB_OFFLINE`` is not set.

When none works, :class:`~gmi_desktop.core.errors.WeightsUnavailable` says what is missing (model,
file names, approximate size) and where to put it. Every network request has a short timeout, so
a dead connection turns into that error in seconds. This module imports huggingface_hub and
open_clip lazily: importing it costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmi_desktop.core.errors import SettingsError, WeightsUnavailable
from gmi_desktop.core.progress import ProgressSink
from gmi_desktop.engine.download import download_files, hub_cache_dir  # noqa: F401 (re-exported)
from gmi_desktop.store import paths

DEFAULT_BLIP = "Salesforce/blip-image-captioning-large"
LOW_VRAM_BLIP = "Salesforce/blip-image-captioning-base"
CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
CLIP_LOCAL_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth")
# BLIP folder layout: each group is satisfied by any one of its files.
BLIP_GROUPS = (
    ("config.json",),
    ("model.safetensors", "pytorch_model.bin"),
    ("preprocessor_config.json", "processor_config.json"),
    ("tokenizer.json", "vocab.txt"),
)
BLIP_OPTIONAL = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "generation_config.json")
APPROX_BYTES = {
    ("ViT-L-14", "openai"): 1_710_000_000,
    ("ViT-H-14", "laion2b_s32b_b79k"): 3_940_000_000,
    ("ViT-B-32", "openai"): 605_000_000,
    ("ViT-bigG-14", "laion2b_s39b_b160k"): 10_200_000_000,
    DEFAULT_BLIP: 1_880_000_000,
    LOW_VRAM_BLIP: 990_000_000,
}


@dataclass(frozen=True)
class ResolvedWeights:
    what: str  # e.g. "CLIP ViT-L-14/openai"
    path: Path  # a file (CLIP) or a folder (BLIP)
    source: str  # "setting" | "folder" | "cache" | "download"


@dataclass(frozen=True)
class ClipSource:
    """What open_clip's pretrained registry says about a (model, tag) pair."""

    model: str
    pretrained: str
    repo_id: str | None = None
    filenames: tuple[str, ...] = CLIP_FILES
    url: str | None = None
    quick_gelu: bool = False
    preprocess: dict[str, Any] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        return self.repo_id is not None or self.url is not None


def human_size(n: int | None) -> str:
    if not n:
        return "unknown size"
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def drop_folder(kind: str, name: str) -> Path:
    """The folder where a user can put weights by hand (not created here)."""
    return paths.data_dir() / "weights" / kind / _safe_name(name)


def offline_reason(allow_downloads: bool) -> str | None:
    """Why we may not download now, or None when we may."""
    if not allow_downloads:
        return "downloads are turned off in the settings (allow_downloads = false)"
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(key, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"{key} is set"
    return None


def weights_fingerprint(path: Path) -> str:
    """A cheap content fingerprint (size + first and last MiB) of a weights file or folder.

    A file's name does not count (a copy or a rename keeps its fingerprint); in a folder, names do.
    """
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.name if file != path else ''}:{size}".encode())
        with open(file, "rb") as handle:
            digest.update(handle.read(1 << 20))
            if size > 2 << 20:
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------- CLIP


def clip_source(model: str, pretrained: str) -> ClipSource:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(model, pretrained) or {}
    hub = cfg.get("hf_hub") or ""
    repo_id, files = None, CLIP_FILES
    if hub:  # open_clip writes "org/repo/" (default file names) or "org/repo/file.bin"
        repo, filename = os.path.split(hub)
        repo_id = repo.rstrip("/") or None
        if filename:
            stem, ext = os.path.splitext(filename)
            files = (filename,) if ext == ".safetensors" else (f"{stem}.safetensors", filename)
    preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if cfg.get(k) is not None}
    return ClipSource(model, pretrained, repo_id, files, cfg.get("url") or None,
                      bool(cfg.get("quick_gelu", False)), preprocess)


def _clip_missing(src: ClipSource, why: str) -> WeightsUnavailable:
    folder = drop_folder("clip", f"{src.model}-{src.pretrained}")
    size = human_size(APPROX_BYTES.get((src.model, src.pretrained)))
    where = f"huggingface.co/{src.repo_id}" if src.repo_id else (src.url or "its publisher")
    return WeightsUnavailable(
        folder,
        f"CLIP weights {src.model}/{src.pretrained} ({' or '.join(src.filenames)} from {where}, about {size}) "
        f"are not on this computer and {why}",
        f"put the file into {folder} or set clip_weights = \"<path to the file>\" in {paths.settings_path()}",
    )


def _find_clip_file(folder: Path) -> Path | None:
    for name in CLIP_FILES:
        if (folder / name).is_file():
            return folder / name
    for pattern in CLIP_LOCAL_PATTERNS:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    return None


def _explicit_clip(path: Path, what: str) -> ResolvedWeights:
    if path.is_file():
        return ResolvedWeights(what, path, "setting")
    if path.is_dir():
        found = _find_clip_file(path)
        if found is not None:
            return ResolvedWeights(what, found, "setting")
        raise WeightsUnavailable(path, f"no CLIP weights file ({', '.join(CLIP_FILES)}) in this folder",
                                 "put the weights file there or fix the clip_weights setting")
    raise WeightsUnavailable(path, "the clip_weights setting points to nothing", "fix or clear the clip_weights setting")


def _cached_clip(src: ClipSource) -> Path | None:
    if not src.repo_id:
        return None
    from huggingface_hub import try_to_load_from_cache

    for name in src.filenames:
        hit = try_to_load_from_cache(src.repo_id, name, cache_dir=hub_cache_dir())
        if isinstance(hit, str) and Path(hit).is_file():
            return Path(hit)
    return None


def resolve_clip(model: str, pretrained: str, explicit: str = "", *, allow_downloads: bool = True,
                 progress: ProgressSink | None = None) -> ResolvedWeights:
    """Find (or fetch) the open_clip weights file for ``model``/``pretrained``."""
    what = f"CLIP {model}/{pretrained}"
    if explicit:
        return _explicit_clip(Path(explicit).expanduser(), what)
    src = clip_source(model, pretrained)
    dropped = drop_folder("clip", f"{model}-{pretrained}")
    if dropped.is_dir() and (found := _find_clip_file(dropped)) is not None:
        return ResolvedWeights(what, found, "folder")
    if not src.known:
        raise SettingsError(None, f"open_clip has no pretrained weights {pretrained!r} for {model!r}",
                            "pick a tag from open_clip.list_pretrained() or set clip_weights to a local file")
    cached = _cached_clip(src)
    if cached is not None:
        return ResolvedWeights(what, cached, "cache")
    why = offline_reason(allow_downloads)
    if why is not None:
        raise _clip_missing(src, why)
    if not src.repo_id:
        raise _clip_missing(src, "this tag is only published as a URL; download it by hand")
    folder = download_files(src.repo_id, [src.filenames], (), what, progress, lambda w: _clip_missing(src, w))
    return ResolvedWeights(what, _find_in(folder, src.filenames), "download")


def _find_in(folder: Path, names: tuple[str, ...]) -> Path:
    return next(folder / n for n in names if (folder / n).is_file())


# ---------------------------------------------------------------------------------------- BLIP


def blip_repo(settings: Any) -> str:
    """The BLIP repo to use: the setting, with the base model standing in for large on low VRAM."""
    repo = settings.blip_model or DEFAULT_BLIP
    return LOW_VRAM_BLIP if settings.low_vram and repo == DEFAULT_BLIP else repo


def missing_blip_files(folder: Path) -> list[str]:
    return [" or ".join(group) for group in BLIP_GROUPS if not any((folder / n).is_file() for n in group)]


def _blip_missing(repo_id: str, why: str) -> WeightsUnavailable:
    folder = drop_folder("blip", repo_id)
    files = ", ".join(" or ".join(g) for g in BLIP_GROUPS)
    return WeightsUnavailable(
        folder,
        f"BLIP caption model {repo_id} ({files} from huggingface.co/{repo_id}, about "
        f"{human_size(APPROX_BYTES.get(repo_id))}) is not on this computer and {why}",
        f"put those files into {folder} or set blip_weights = \"<folder>\" in {paths.settings_path()}",
    )


def _cached_blip(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, cache_dir=hub_cache_dir(), local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return folder if not missing_blip_files(folder) else None


def resolve_blip(repo_id: str, explicit: str = "", *, allow_downloads: bool = True,
                 progress: ProgressSink | None = None) -> ResolvedWeights:
    """Find (or fetch) a BLIP captioning folder (transformers layout) for ``repo_id``."""
    what = f"BLIP {repo_id}"
    candidates = [(Path(explicit).expanduser(), "setting")] if explicit else [(drop_folder("blip", repo_id), "folder")]
    for folder, source in candidates:
        if not folder.is_dir():
            if source == "setting":
                raise WeightsUnavailable(folder, "the blip_weights setting does not point to a folder",
                                         "fix or clear the blip_weights setting")
            continue
        missing = missing_blip_files(folder)
        if not missing:
            return ResolvedWeights(what, folder, source)
        if source == "setting" or any(folder.iterdir()):
            raise WeightsUnavailable(folder, f"the BLIP folder lacks {', '.join(missing)}",
                                     f"copy the missing files from huggingface.co/{repo_id}")
    cached = _cached_blip(repo_id)
    if cached is not None:
        return ResolvedWeights(what, cached, "cache")
    why = offline_reason(allow_downloads)
    if why is not None:
        raise _blip_missing(repo_id, why)
    folder = download_files(repo_id, BLIP_GROUPS, BLIP_OPTIONAL, what, progress, lambda w: _blip_missing(repo_id, w))
    return ResolvedWeights(what, folder, "download")
