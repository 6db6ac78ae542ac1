"""Device and dtype choice for torch work, made explicitly (never hidden in a constructor).

``"auto"`` picks CUDA, then Apple MPS, then CPU. Half precision only on CUDA (and MPS), fp32 on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cuda", "cuda:1", "mps", "cpu"
    dtype_name: str  # "float16" | "float32"

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype_name)


def choose_device(requested: str = "auto", half: bool = True) -> DeviceChoice:
    """Resolve a device setting (``auto``/``cpu``/``cuda[:i]``/``mps``) to what this machine has."""
    import torch

    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        if torch.cuda.is_available():
            requested = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            requested = "mps"
        else:
            requested = "cpu"
    from gmi_desktop.core.errors import SettingsError

    hint = 'set device = "auto" or "cpu"'
    kind, colon, index = requested.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (colon and (kind != "cuda" or not index.isdigit())):
        raise SettingsError(None, f"unknown device {requested!r} (auto, cpu, cuda, cuda:N or mps)", hint)
    if kind == "cuda" and not torch.cuda.is_available():
        raise SettingsError(None, "device is set to CUDA but no CUDA GPU is available", hint)
    if kind == "cuda" and index and int(index) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise SettingsError(None, f"device {requested!r}: this machine has {count} CUDA GPU(s)", hint)
    if kind == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise SettingsError(None, "device is set to MPS but Apple's Metal backend is not available", hint)
    use_half = half and (requested.startswith("cuda") or requested == "mps")
    return DeviceChoice(requested, "float16" if use_half else "float32")


def release_memory() -> None:
    """Give cached accelerator memory back after a model is dropped."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        mps.empty_cache()
