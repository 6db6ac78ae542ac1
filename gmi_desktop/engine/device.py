"""Device and dtype choice for torch work, made explicitly (never hidden in a constructor).

``"auto"`` picks CUDA, then Apple MPS, then CPU. Half precision only on CUDA (and MPS), fp32 on CPU.

Before a CUDA GPU is used, :func:`cuda_problem` checks what the installed torch can do with it:
the GPU's compute capability against ``torch.cuda.get_arch_list()`` (a GTX 10xx or V100 is older
than what current wheels are built for) and the NVIDIA driver's CUDA version against the one torch
was built with (an old driver makes ``torch.cuda.is_available()`` quietly say no). Under
``"auto"`` such a GPU is skipped for the CPU and :attr:`DeviceChoice.note` says so in one line,
with the torch build that would use it; asking for ``"cuda"`` explicitly is a
:class:`~gmi_desktop.core.errors.SettingsError` with the same sentence. The CUDA queries all go
through :func:`cuda_facts`, the one boundary tests replace.

:func:`is_out_of_memory` and :func:`is_device_error` sort exceptions raised by torch: out of memory
on CUDA or MPS, and a CUDA/driver failure ("no kernel image", "CUDA error") that must never be
reported as a damaged weights file.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cuda", "cuda:1", "mps", "cpu"
    dtype_name: str  # "float16" | "float32"
    note: str = ""  # one line for the user when the choice is not what they would expect
    name: str = ""  # the GPU's name ("NVIDIA GeForce RTX 3060"), "cpu" or "mps"

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype_name)

    @property
    def key(self) -> str:
        """What remembered verdicts (precision, batch size) are keyed by: the kind of device."""
        return f"{self.device.split(':')[0]}:{self.name or self.device}"


@dataclass(frozen=True)
class CudaFacts:
    """What the CUDA boundary says about this machine (see :func:`cuda_facts`)."""

    available: bool  # torch.cuda.is_available()
    torch_cuda: str | None  # the CUDA version torch was built with ("12.8"), None for CPU-only torch
    arch_list: tuple[str, ...] = ()  # torch.cuda.get_arch_list(): "sm_75", ..., "compute_90"
    driver_cuda: int | None = None  # cuDriverGetVersion() (12040 = CUDA 12.4), None: no NVIDIA driver
    gpus: tuple[tuple[str, tuple[int, int]], ...] = field(default_factory=tuple)  # (name, capability)


def _driver_cuda_version() -> int | None:
    """The CUDA version the installed NVIDIA driver supports, straight from the driver library
    (works even when torch refuses the driver); None when there is no NVIDIA driver."""
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so", "libcuda.dylib"]
    found = ctypes.util.find_library("cuda")
    for name in ([found] if found else []) + names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int(0)
        try:
            if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value > 0:
                return int(version.value)
        except AttributeError:
            continue
    return None


def cuda_facts() -> CudaFacts:
    """Ask torch and the driver about CUDA (the only place that does)."""
    import torch

    available = bool(torch.cuda.is_available())
    gpus: tuple[tuple[str, tuple[int, int]], ...] = ()
    arch: tuple[str, ...] = ()
    if available:
        arch = tuple(torch.cuda.get_arch_list())
        gpus = tuple((torch.cuda.get_device_name(i), tuple(torch.cuda.get_device_capability(i)))
                     for i in range(torch.cuda.device_count()))
    return CudaFacts(available, torch.version.cuda, arch, _driver_cuda_version(), gpus)


def _runs_on(capability: tuple[int, int], arch_list: tuple[str, ...]) -> bool:
    """Whether kernels built for ``arch_list`` run on a GPU of ``capability``: a ``sm_XY`` binary
    runs on the same major version with minor >= Y; ``compute_XY`` PTX is compiled for any newer GPU."""
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        if not digits.isdigit() or len(digits) < 2:
            continue
        a_major, a_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and a_major == major and a_minor <= minor:
            return True
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


def _version_text(cuda: int) -> str:
    return f"{cuda // 1000}.{cuda % 1000 // 10}"


def cuda_problem(facts: CudaFacts, index: int = 0) -> str | None:
    """Why CUDA GPU ``index`` cannot be used by this torch, in one sentence; None when it can (or
    when there is no NVIDIA GPU at all)."""
    if not facts.available:
        if facts.driver_cuda is None:
            return None  # no NVIDIA driver: nothing to explain
        if facts.torch_cuda is None:
            return ("an NVIDIA driver is installed but this torch is built without CUDA; install a CUDA "
                    "build of torch (pip install torch --index-url https://download.pytorch.org/whl/cu126)")
        return (f"the NVIDIA driver supports CUDA {_version_text(facts.driver_cuda)} but this torch needs "
                f"CUDA {facts.torch_cuda}; update the NVIDIA driver, or install a torch built for your "
                "CUDA version (download.pytorch.org/whl/cu118 for older drivers)")
    if index >= len(facts.gpus):
        return None
    name, capability = facts.gpus[index]
    if facts.arch_list and not _runs_on(capability, facts.arch_list):
        oldest = min((a for a in facts.arch_list if a.startswith("sm_")), default="?", key=lambda a: int(a[3:]))
        return (f"{name} (compute capability {capability[0]}.{capability[1]}) is older than this torch "
                f"supports (oldest {oldest}); install a torch built with its kernels "
                "(e.g. pip install torch --index-url https://download.pytorch.org/whl/cu118)")
    return None


def _mps_available() -> bool:
    import torch

    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def choose_device(requested: str = "auto", half: bool = True, facts: CudaFacts | None = None) -> DeviceChoice:
    """Resolve a device setting (``auto``/``cpu``/``cuda[:i]``/``mps``) to what this machine has.

    ``half=False`` keeps fp32 on a GPU; ``facts`` defaults to :func:`cuda_facts`.
    """
    from gmi_desktop.core.errors import SettingsError

    requested = (requested or "auto").strip().lower()
    hint = 'set device = "auto" or "cpu"'
    kind, colon, index = requested.partition(":")
    if kind not in ("auto", "cpu", "cuda", "mps") or (colon and (kind != "cuda" or not index.isdigit())):
        raise SettingsError(None, f"unknown device {requested!r} (auto, cpu, cuda, cuda:N or mps)", hint)
    note = ""
    if kind in ("auto", "cuda"):
        facts = cuda_facts() if facts is None else facts
        gpu = int(index) if index else 0
        problem = cuda_problem(facts, gpu)
        if kind == "cuda":
            if problem:
                raise SettingsError(None, f"cannot use the GPU: {problem}", hint)
            if not facts.available:
                raise SettingsError(None, "device is set to CUDA but no CUDA GPU is available", hint)
            if gpu >= len(facts.gpus):
                raise SettingsError(None, f"device {requested!r}: this machine has {len(facts.gpus)} CUDA GPU(s)", hint)
        elif facts.available and not problem:
            requested = "cuda"
        else:
            requested = "mps" if _mps_available() else "cpu"
            if problem:
                note = f"running on the {requested.upper()} (much slower): {problem}"
    if requested == "mps" and not _mps_available():
        raise SettingsError(None, "device is set to MPS but Apple's Metal backend is not available", hint)
    name = requested
    if requested.startswith("cuda"):
        gpu = int(requested.partition(":")[2] or 0)
        name = facts.gpus[gpu][0] if facts is not None and gpu < len(facts.gpus) else requested
    use_half = half and (requested.startswith("cuda") or requested == "mps")
    return DeviceChoice(requested, "float16" if use_half else "float32", note, name)


def is_out_of_memory(exc: BaseException) -> bool:
    """A torch out-of-memory error on CUDA or MPS (MPS raises a plain RuntimeError)."""
    import torch

    if isinstance(exc, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "mps backend out of memory" in text)


_DEVICE_ERROR_MARKS = ("cuda error", "no kernel image", "cudnn", "cublas", "cuda driver", "device-side assert",
                       "not compiled with cuda", "found no nvidia driver", "mps backend", "hip error")


def is_device_error(exc: BaseException) -> bool:
    """A failure of the GPU, its driver or the torch build, not of the data being loaded."""
    if is_out_of_memory(exc):
        return True
    name = type(exc).__name__
    if name in ("AcceleratorError", "CudaError"):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, AssertionError)) and any(mark in text for mark in _DEVICE_ERROR_MARKS)


def device_error(exc: BaseException, what: str) -> Exception:
    """The typed error for a device failure while doing ``what``: out of memory stays
    :class:`OutOfMemory`, anything else a :class:`SettingsError` (the device setting) saying that the
    GPU failed, not the model file."""
    from gmi_desktop.core.errors import OutOfMemory, SettingsError

    if is_out_of_memory(exc):
        return OutOfMemory(what)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SettingsError(None, f"the GPU failed while {what}: {first}",
                         "this is the GPU, its driver or the torch build, not the model file; "
                         'update the NVIDIA driver or set device = "cpu"')


def release_memory() -> None:
    """Give cached accelerator memory back after a model is dropped."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and _mps_available():
        mps.empty_cache()


def free_memory_bytes(device: DeviceChoice) -> int | None:
    """Free accelerator memory now (CUDA: ``mem_get_info``; MPS: the recommended working set minus
    what is allocated); None on the CPU."""
    import torch

    if device.is_cuda:
        free, _total = torch.cuda.mem_get_info(torch.device(device.device))
        return int(free)
    if device.device == "mps":
        mps = getattr(torch, "mps", None)
        if mps is not None and hasattr(mps, "recommended_max_memory"):
            return int(mps.recommended_max_memory() - mps.current_allocated_memory())
    return None
