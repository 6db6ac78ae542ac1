"""The image interrogator I(.): a BLIP caption plus CLIP label search (clip-interrogator 0.6.0).

We hand clip-interrogator models we already loaded: the shared :class:`ClipModel` (never a second
CLIP) and a :class:`CaptionModel` (BLIP via transformers, weights from
:mod:`gmi_desktop.engine.weights`). Its pitfalls, and what we do about them:

- Pre-built models are assigned as attributes *after* ``Config(...)``; ``caption_model_name``
  stays a string (it calls ``.startswith`` on it).
- ``download_cache=False`` (it would download label caches with no timeout) and an explicit
  ``device`` (its default is picked at import).
- The ~112 000 label embeddings are computed by *us* before it starts, with the shared encoder,
  progress reports and cancellation between batches, and written atomically in its own cache
  format (``<name>_<table>.safetensors`` with ``embeds`` fp16 and the label-list ``hash``) under
  ``<cache dir>/interrogator``. It then finds them and never recomputes or writes in the cwd.
  The cache name carries a fingerprint of the CLIP weights, so other weights never reuse it.
- Its ``torch.cuda.amp.autocast`` deprecation warnings are filtered around its calls only.
- Its low-VRAM defaults (offloading BLIP and CLIP to the CPU in turn, smaller chunks) are
  applied with ``low_vram=True``; the shared CLIP moves itself back when the encoders run.

Modes: ``fast`` (caption + top labels), ``classic`` (caption, medium, artist, trending, movement,
flavors), ``best`` (greedy flavor chain, best of all by CLIP similarity), ``negative``.
Greedy decoding and fixed label lists make results deterministic for a device.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gmi_desktop.core.errors import CorruptWeights, OutOfMemory, SettingsError
from gmi_desktop.core.progress import CancelFn, Progress, ProgressSink, check_cancel
from gmi_desktop.engine.clip import ClipModel
from gmi_desktop.engine.device import DeviceChoice, choose_device
from gmi_desktop.engine.quiet import quiet_loading
from gmi_desktop.engine.weights import DEFAULT_BLIP, ResolvedWeights, blip_repo, resolve_blip
from gmi_desktop.store import paths
from gmi_desktop.store.atomic import atomic_write_bytes

MODES = ("fast", "classic", "best", "negative")
LABEL_FILES = ("artists.txt", "flavors.txt", "mediums.txt", "movements.txt", "negative.txt")
# clip-interrogator 0.6.0 builds its "trendings" table from this list (inside load_clip_model).
_SITES = ("Artstation", "behance", "cg society", "cgsociety", "deviantart", "dribble", "flickr", "instagram",
          "pexels", "pinterest", "pixabay", "pixiv", "polycount", "reddit", "shutterstock", "tumblr",
          "unsplash", "zbrush central")


@contextlib.contextmanager
def _library_warnings() -> Iterator[None]:
    """Silence clip-interrogator's deprecated-autocast warnings here only, not process-wide."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp\.autocast.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*CUDA is not available.*", category=UserWarning)
        yield


def _as_image(image: Any) -> Any:
    """Accept a path as well as a PIL image (paths go through the checks of ``load_image``)."""
    if isinstance(image, (str, os.PathLike)):
        from gmi_desktop.store.images import load_image

        return load_image(image)
    return image


class CaptionModel:
    """A BLIP captioner (model + processor) on one device. Build it with :func:`load_caption_model`."""

    def __init__(self, model: Any, processor: Any, *, repo_id: str, device: DeviceChoice, weights: ResolvedWeights):
        self.model = model
        self.processor = processor
        self.repo_id = repo_id
        self.device = device
        self.weights = weights

    def close(self) -> None:
        """Drop the weights and give accelerator memory back; the object is unusable afterwards."""
        from gmi_desktop.engine.device import release_memory

        self.model = None
        release_memory()

    @property
    def interrogator_name(self) -> str:
        """The CAPTION_MODELS key clip-interrogator expects (only its prefix matters to it)."""
        return "blip-base" if "base" in self.repo_id.lower() else "blip-large"


def load_caption_model(repo_id: str = DEFAULT_BLIP, *, weights: str = "", device: str = "auto",
                       allow_downloads: bool = True, progress: ProgressSink | None = None) -> CaptionModel:
    """A new BLIP :class:`CaptionModel` for these arguments (kept and shared by
    :class:`gmi_desktop.engine.host.ModelHost`, not here)."""
    choice = choose_device(device)
    resolved = resolve_blip(repo_id, weights, allow_downloads=allow_downloads, progress=progress)
    return _build_caption(repo_id, resolved, choice)


def load_caption_model_for(settings: Any, progress: ProgressSink | None = None) -> CaptionModel:
    return load_caption_model(blip_repo(settings), weights=settings.blip_weights, device=settings.device,
                              allow_downloads=settings.allow_downloads, progress=progress)


def _build_caption(repo_id: str, weights: ResolvedWeights, device: DeviceChoice) -> CaptionModel:
    from transformers import BlipForConditionalGeneration, BlipProcessor

    try:
        with quiet_loading():
            model = BlipForConditionalGeneration.from_pretrained(weights.path, dtype=device.dtype, local_files_only=True)
            processor = BlipProcessor.from_pretrained(weights.path, local_files_only=True)
    except Exception as exc:  # untrusted files: loaders raise anything on broken data
        from gmi_desktop.engine.device import device_error, is_device_error

        if is_device_error(exc):  # out of memory, or the GPU/driver failing: not the files
            raise device_error(exc, f"loading {weights.what}") from exc
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise CorruptWeights(weights.path, f"cannot load {weights.what} from this folder: {first}") from exc
    model.eval().to(device.device)
    return CaptionModel(model, processor, repo_id=repo_id, device=device, weights=weights)


def _label_tables(data_path: Path) -> dict[str, list[str]]:
    """The label lists exactly as clip-interrogator 0.6.0 builds them (same order, same hash)."""
    from clip_interrogator.clip_interrogator import load_list

    raw_artists = load_list(str(data_path), "artists.txt")
    trending = list(_SITES) + [f"trending on {s}" for s in _SITES] + [f"featured on {s}" for s in _SITES]
    trending += [f"{s} contest winner" for s in _SITES]
    return {
        "artists": [f"by {a}" for a in raw_artists] + [f"inspired by {a}" for a in raw_artists],
        "flavors": load_list(str(data_path), "flavors.txt"),
        "mediums": load_list(str(data_path), "mediums.txt"),
        "movements": load_list(str(data_path), "movements.txt"),
        "trendings": trending,
        "negative": load_list(str(data_path), "negative.txt"),
    }


def _labels_hash(labels: list[str]) -> np.ndarray:
    digest = hashlib.sha256(",".join(labels).encode()).hexdigest()
    return np.array([ord(c) for c in digest], dtype=np.int8)


def _cache_is_current(path: Path, labels: list[str]) -> bool:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.is_file():
        return False
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError):
        return False
    embeds = tensors.get("embeds")
    return (embeds is not None and embeds.shape[0] == len(labels)
            and np.array_equal(tensors.get("hash"), _labels_hash(labels)))


class Interrogator:
    """Turns an image into a pseudo-prompt: ``Interrogator(clip, caption).interrogate(image)``."""

    def __init__(self, clip: ClipModel, caption: CaptionModel, mode: str = "fast", label_data_path: str | Path | None = None,
                 low_vram: bool = False, caption_max_length: int = 32):
        if mode not in MODES:
            raise SettingsError(None, f"unknown interrogator mode {mode!r}", f"use one of {', '.join(MODES)}")
        self.clip = clip
        self.caption_model = caption
        self.mode = mode
        self.low_vram = low_vram
        self.caption_max_length = caption_max_length
        self.label_data_path = Path(label_data_path) if label_data_path else self._default_data_path()
        missing = [n for n in LABEL_FILES if not (self.label_data_path / n).is_file()]
        if missing:
            raise SettingsError(self.label_data_path, f"label folder lacks {', '.join(missing)}")
        self.cache_folder = paths.cache_dir() / "interrogator"
        self._ci: Any = None
        self._lock = threading.RLock()

    @staticmethod
    def _default_data_path() -> Path:
        import clip_interrogator

        return Path(clip_interrogator.__file__).parent / "data"

    @property
    def clip_model_name(self) -> str:
        """The name clip-interrogator sees: the open_clip model (for its tokenizer) / weights identity."""
        tag = self.clip.pretrained.replace("/", "_").replace("@", "_")
        return f"{self.clip.model_name}/{tag}-{self.clip.weights_fingerprint}"

    def label_cache_paths(self) -> dict[str, Path]:
        stem = self.clip_model_name.replace("/", "_").replace("@", "_")
        return {table: self.cache_folder / f"{stem}_{table}.safetensors" for table in _label_tables(self.label_data_path)}

    def prepare_labels(self, progress: ProgressSink | None = None, cancel: CancelFn | None = None,
                       fetch: Callable[[str, list[str], Path], bool] | None = None) -> None:
        """Embed every label table not cached yet (each table written atomically when complete).

        ``progress`` gets a :class:`Progress` ("labels", labels done, labels in the table, item =
        the table) after each batch; ``cancel`` is checked before each batch. ``fetch(table,
        labels, path)`` may put a verified pre-computed table at ``path`` first
        (:class:`gmi_desktop.engine.label_cache.PublishedLabels`); when it returns False the table
        is computed here."""
        from safetensors.numpy import save

        tables = _label_tables(self.label_data_path)
        batch = 256 if self.clip.device.device == "cpu" else (1024 if self.low_vram else 2048)
        for table, path in self.label_cache_paths().items():
            labels = tables[table]
            if _cache_is_current(path, labels):
                continue
            if fetch is not None and fetch(table, labels, path) and _cache_is_current(path, labels):
                continue
            parts = []
            for start in range(0, len(labels), batch):
                check_cancel(cancel, "embedding the interrogator's labels was cancelled")
                parts.append(self.clip.encode_texts(labels[start:start + batch], batch_size=batch))
                if progress is not None:
                    done = min(start + batch, len(labels))
                    progress(Progress("labels", done, len(labels), item=table,
                                      message=f"embedding interrogator labels: {table} {done}/{len(labels)}"))
            embeds = np.concatenate(parts) if parts else np.zeros((0, self.clip.feature_dim), np.float32)
            data = save({"embeds": embeds.astype(np.float16), "hash": _labels_hash(labels)})
            atomic_write_bytes(path, data)

    def _interrogator(self) -> Any:
        """Build clip-interrogator's object once (caller holds ``self._lock``)."""
        if self._ci is not None:
            return self._ci
        self.prepare_labels()
        from clip_interrogator import Config
        from clip_interrogator import Interrogator as _CI

        cfg = Config(clip_model_name=self.clip_model_name, caption_model_name=self.caption_model.interrogator_name,
                     cache_path=str(self.cache_folder), download_cache=False, device=self.clip.device.device,
                     data_path=str(self.label_data_path), quiet=True, caption_max_length=self.caption_max_length)
        if self.low_vram:
            cfg.apply_low_vram_defaults()
            cfg.caption_model_name = self.caption_model.interrogator_name
        cfg.caption_model = self.caption_model.model
        cfg.caption_processor = self.caption_model.processor
        cfg.clip_model = self.clip.module
        dtype = self.clip.device.dtype
        preprocess = self.clip.preprocess
        cfg.clip_preprocess = lambda image: preprocess(image).to(dtype)
        with self.clip.lock, _library_warnings():
            ci = _CI(cfg)
        ci.dtype = self.caption_model.model.dtype  # it would guess from the device string
        self._ci = ci
        return ci

    def _call(self, fn: str, *args: Any, **kwargs: Any) -> str:
        import torch

        with self._lock:
            ci = self._interrogator()
            try:
                with self.clip.lock, _library_warnings(), torch.inference_mode():
                    return str(getattr(ci, fn)(*args, **kwargs)).strip()
            except RuntimeError as exc:  # out of memory on CUDA or MPS
                from gmi_desktop.engine.device import is_out_of_memory, release_memory

                if not is_out_of_memory(exc):
                    raise
                release_memory()
                what = "interrogating an image" + ("" if self.low_vram else " (low_vram = true may help)")
                raise OutOfMemory(what, ["low_vram"] if self.low_vram else []) from None

    def caption(self, image: Any) -> str:
        """The BLIP caption of an RGB PIL image or an image file (greedy decoding)."""
        return self._call("generate_caption", _as_image(image))

    def interrogate(self, image: Any, mode: str | None = None, caption: str | None = None) -> str:
        """A prompt for an RGB PIL image or an image file; ``mode`` defaults to the constructor's.

        ``fast``/``classic``/``best`` prompts start with the BLIP caption (pass ``caption`` to reuse
        one); ``negative`` lists the labels least like the image.
        """
        mode = mode or self.mode
        if mode not in MODES:
            raise SettingsError(None, f"unknown interrogator mode {mode!r}", f"use one of {', '.join(MODES)}")
        image = _as_image(image)
        if mode == "negative":
            return self._call("interrogate_negative", image)
        caption = caption if caption is not None else self.caption(image)
        name = {"fast": "interrogate_fast", "classic": "interrogate_classic", "best": "interrogate"}[mode]
        return self._call(name, image, caption=caption)


def build_interrogator(settings: Any, clip: ClipModel, caption: CaptionModel) -> Interrogator:
    """An :class:`Interrogator` configured from the settings, over the shared models."""
    return Interrogator(clip, caption, mode=settings.interrogator_mode, low_vram=settings.low_vram,
                        label_data_path=settings.interrogator_labels or None)
