"""The CLIP encoders G(.) (images) and T(.) (texts): one open_clip model.

:func:`load_clip` resolves the weights (:mod:`gmi_desktop.engine.weights`) and builds the open_clip
model on the chosen device (fp16 on CUDA, fp32 on CPU, MPS when present). It builds a new model on
every call: keeping it, sharing it with the interrogator and unloading it is the job of the one
owner of loaded models, :class:`gmi_desktop.engine.host.ModelHost`.

Features are **L2-normalised** float32 numpy arrays (CLIP's convention; the kernel bandwidth
``gamma`` in ``core`` is documented against unit-norm features). Encoding runs under
``torch.inference_mode`` with the model in ``eval()`` mode, so on CPU the same inputs give the
same bits; batches are independent (no cross-sample ops), so the batch size changes results only
by float rounding (~1e-7).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gmi_desktop.core.errors import CorruptWeights, OutOfMemory
from gmi_desktop.core.progress import CancelFn, Progress, ProgressSink, check_cancel
from gmi_desktop.engine.device import DeviceChoice, choose_device, device_error, is_device_error, is_out_of_memory
from gmi_desktop.engine.weights import ResolvedWeights, clip_source, resolve_clip, weights_fingerprint


class ClipModel:
    """An open_clip model with its preprocessing and tokenizer. Build it with :func:`load_clip`."""

    def __init__(self, module: Any, preprocess: Any, tokenizer: Any, *, model: str, pretrained: str,
                 feature_dim: int, device: DeviceChoice, weights: ResolvedWeights):
        self.module = module
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.model_name = model
        self.pretrained = pretrained
        self.device = device
        self.weights = weights
        self.feature_dim = int(feature_dim)
        self.lock = threading.RLock()  # one user of the module at a time (encoders, interrogator)

    @functools.cached_property
    def weights_fingerprint(self) -> str:
        """Content fingerprint of the weights file (keys caches such as the interrogator's labels)."""
        return weights_fingerprint(self.weights.path)

    @property
    def encoder_id(self) -> str:
        """Names the feature space, e.g. ``open_clip:ViT-L-14/openai``; specs store it."""
        return f"open_clip:{self.model_name}/{self.pretrained}"

    def _ensure_on_device(self) -> None:
        """Move the module back if someone offloaded it (the interrogator's low-VRAM mode does)."""
        import torch

        target = torch.device(self.device.device)
        where = next(self.module.parameters()).device
        if where.type != target.type or (target.index is not None and where.index != target.index):
            self.module.to(target)

    def _run(self, items: Sequence[Any], batch_size: int, encode, progress: ProgressSink | None,
             cancel: CancelFn | None) -> np.ndarray:
        """Encode in batches; on CUDA out-of-memory, retry the batch at half the size (down to 1)."""
        import torch

        from gmi_desktop.engine.device import release_memory

        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        out = np.empty((len(items), self.feature_dim), dtype=np.float32)
        tried: list[str] = []
        start, size = 0, batch_size
        with self.lock, torch.inference_mode():
            self._ensure_on_device()
            while start < len(items):
                check_cancel(cancel, "encoding cancelled")
                try:
                    feats = encode(items[start:start + size]).float()
                except RuntimeError as exc:  # out of memory on CUDA or MPS: a smaller batch
                    if not is_out_of_memory(exc):
                        raise
                    release_memory()
                    if size == 1:
                        raise OutOfMemory(f"encoding with {self.encoder_id}", tried) from None
                    size = max(1, size // 2)
                    tried.append(f"batch size {size}")
                    continue
                feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                out[start:start + len(feats)] = feats.cpu().numpy()
                start += len(feats)
                if progress is not None:
                    progress(Progress("encoding", start, len(items), item=self.encoder_id))
        return out

    def encode_images(self, images: Sequence[Any], batch_size: int = 32, progress: ProgressSink | None = None,
                      cancel: CancelFn | None = None) -> np.ndarray:
        """Unit-norm image features, shape ``(n, feature_dim)``, float32, for RGB PIL images
        (see :func:`gmi_desktop.store.images.load_image`). ``progress`` gets a
        :class:`~gmi_desktop.core.progress.Progress` ("encoding", items done, items) after each
        batch; ``cancel`` is checked before each batch (:class:`~gmi_desktop.core.errors.Cancelled`)."""
        import torch

        def encode(chunk):
            pixels = torch.stack([self.preprocess(im) for im in chunk])
            pixels = pixels.to(self.device.device, dtype=self.device.dtype)
            return self.module.encode_image(pixels)

        return self._run(list(images), batch_size, encode, progress, cancel)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256, progress: ProgressSink | None = None,
                     cancel: CancelFn | None = None) -> np.ndarray:
        """Unit-norm text features, shape ``(n, feature_dim)``, float32 (prompts longer than the
        77-token context are cut by the tokenizer). ``progress`` as in :meth:`encode_images`."""

        def encode(chunk):
            return self.module.encode_text(self.tokenizer(list(chunk)).to(self.device.device))

        return self._run([str(t) for t in texts], batch_size, encode, progress, cancel)

    def close(self) -> None:
        """Drop the weights and give accelerator memory back; the object is unusable afterwards."""
        from gmi_desktop.engine.device import release_memory

        with self.lock:
            self.module = None
        release_memory()


def register_config_beside(model: str, weights: Any) -> None:
    """Make a custom open_clip architecture known: a config ``<model>.json`` (open_clip's JSON model
    config) lying beside the weights file is registered when open_clip has no model of that name."""
    import open_clip

    config = Path(weights).parent / f"{model}.json"
    if open_clip.get_model_config(model) is None and config.is_file():
        open_clip.add_model_config(config)


def _build(model: str, pretrained: str, weights: ResolvedWeights, device: DeviceChoice) -> ClipModel:
    import open_clip
    import torch

    register_config_beside(model, weights.path)
    src = clip_source(model, pretrained)
    pre = src.preprocess
    precision = "fp16" if device.dtype_name == "float16" else "fp32"
    try:
        module, _, preprocess = open_clip.create_model_and_transforms(
            model, pretrained=str(weights.path), precision=precision, device=device.device,
            force_quick_gelu=src.quick_gelu, image_mean=pre.get("mean"), image_std=pre.get("std"),
            image_interpolation=pre.get("interpolation"), image_resize_mode=pre.get("resize_mode"),
            pretrained_text=False, require_pretrained=True)
    except Exception as exc:  # untrusted file: the unpicklers raise anything (IndexError, TypeError, ...)
        if is_device_error(exc):  # out of memory, or the GPU/driver failing: not the file
            raise device_error(exc, f"loading {weights.what}") from exc
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise CorruptWeights(weights.path, f"cannot load {weights.what} from this file: {first}") from exc
    module.eval()
    torch.manual_seed(0)  # nothing random runs at inference; this only pins any lazy init
    tokenizer = open_clip.get_tokenizer(model)
    dim = open_clip.get_model_config(model)["embed_dim"]
    return ClipModel(module, preprocess, tokenizer, model=model, pretrained=pretrained, feature_dim=dim,
                     device=device, weights=weights)


def load_clip(model: str = "ViT-L-14", pretrained: str = "openai", *, weights: str = "", device: str = "auto",
              allow_downloads: bool = True, progress: ProgressSink | None = None) -> ClipModel:
    """A new :class:`ClipModel` for these arguments (``progress`` sees a download, if one runs)."""
    choice = choose_device(device)
    resolved = resolve_clip(model, pretrained, weights, allow_downloads=allow_downloads, progress=progress)
    return _build(model, pretrained, resolved, choice)


def load_clip_for(settings: Any, progress: ProgressSink | None = None) -> ClipModel:
    """:func:`load_clip` with the user's settings (clip_model, clip_pretrained, clip_weights, device)."""
    return load_clip(settings.clip_model, settings.clip_pretrained, weights=settings.clip_weights,
                     device=settings.device, allow_downloads=settings.allow_downloads, progress=progress)
