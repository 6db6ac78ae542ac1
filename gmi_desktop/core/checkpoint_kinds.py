"""The kinds of Stable Diffusion checkpoint GMI Desktop knows, which of them it can generate with,
and the one vocabulary of a model file's status.

One table, shared by the header probe (``store``: what counts as an ``ok`` checkpoint) and the
generation engine (``engine``: which shipped config folder loads it), so the two cannot drift apart.
:class:`Status` is the only set of status words: the probe, the catalog, the scan, the CLI and the
GUI all use it, and :func:`status_error` is the only mapping from a status to its typed error.
"""

from __future__ import annotations

from enum import StrEnum
from os import PathLike

from gmi_desktop.core.errors import (
    CorruptCheckpoint,
    IncompleteFile,
    NotACheckpoint,
    UnreadableFile,
    UnsupportedCheckpoint,
    UserInputError,
)

FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sdxl_refiner": "SDXL refiner"}
VARIANT_NAMES = {
    "normal": "text-to-image",
    "inpaint": "inpainting",
    "depth": "depth-to-image",
    "instruct_pix2pix": "InstructPix2Pix",
}

# (family, variant) -> the config folder under resources/diffusers/ the engine loads it with.
# Depth checkpoints are absent on purpose: they need a MiDaS depth model and a depth map per image.
GENERATION_CONFIGS = {
    ("sd1", "normal"): "sd1",
    ("sd1", "inpaint"): "sd1_inpaint",
    ("sd2", "normal"): "sd2",
    ("sd2", "inpaint"): "sd2_inpaint",
    ("sdxl", "normal"): "sdxl",
    ("sdxl", "inpaint"): "sdxl_inpaint",
    ("sdxl_refiner", "normal"): "sdxl_refiner",
}

SUPPORTED: dict[str, frozenset[str]] = {
    family: frozenset(v for (f, v) in GENERATION_CONFIGS if f == family) for family in FAMILY_NAMES
}


class Status(StrEnum):
    """What a model file is to GMI Desktop. A ``str``: ``Status.OK == "ok"``."""

    OK = "ok"  # a Stable Diffusion checkpoint we can use
    SKIPPED = "skipped"  # something else (``kind`` says what: lora, vae, ...), or unreadable (kind "unreadable")
    UNSUPPORTED = "unsupported"  # a model we will not load (pickles, other architectures, depth)
    INVALID = "invalid"  # recognised format, but broken
    INCOMPLETE = "incomplete"  # shorter than its header declares, or still being written
    MISSING = "missing"  # catalog only: the file is gone (kept until pruned)
    OFFLINE = "offline"  # catalog only: its library folder cannot be reached (an unplugged drive)


UNREADABLE = "unreadable"  # the ``kind`` of a skipped file the operating system would not let us read

_ERRORS: dict[Status, tuple[type[UserInputError], str | None]] = {
    Status.SKIPPED: (NotACheckpoint, "pick a full Stable Diffusion checkpoint"),
    Status.UNSUPPORTED: (UnsupportedCheckpoint, None),
    Status.INVALID: (CorruptCheckpoint, None),
    Status.INCOMPLETE: (IncompleteFile, "wait until the copy or download finishes; if the file stays "
                                        "this size, re-download it"),
    Status.MISSING: (UnreadableFile, "scan the library again if it was moved"),
    Status.OFFLINE: (UnreadableFile, "connect the drive that holds it"),
}


def status_error(status: str, path: str | PathLike[str] | None, reason: str,
                 kind: str | None = None) -> UserInputError | None:
    """The typed error for a file in ``status`` (``None`` for ``ok``): the one mapping."""
    status = Status(status)
    if status is Status.OK:
        return None
    if status is Status.SKIPPED and kind == UNREADABLE:
        return UnreadableFile(path, reason)
    cls, hint = _ERRORS[status]
    return cls(path, reason, hint)


def describe_kind(family: str | None, variant: str | None, kind: str | None) -> str:
    """A file's family in the users' words: ``SDXL``, ``SD 1.x inpaint``, or its kind (``lora``)."""
    if not family:
        return kind or "-"
    name = FAMILY_NAMES.get(family, family)
    return name if variant in (None, "normal") else f"{name} {variant}"
