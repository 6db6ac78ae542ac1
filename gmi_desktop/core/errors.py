"""Typed errors. The core raises them; the GUI shows the message inline, the CLI prints one line.

Every :class:`UserInputError` carries the offending ``path`` (when there is one), a ``reason``
(what happened) and a ``hint`` (what the user can do). ``str(err)`` is the one-line message.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path


class GMIError(Exception):
    """Base class of every error this application raises on purpose."""


class Cancelled(GMIError):
    """Long work was cancelled by the user; nothing was half-written."""


class UserInputError(GMIError):
    """Something the user gave us (a file, a setting, a folder) cannot be used.

    ``reason`` says what is wrong, ``hint`` what to do about it.
    """

    default_hint = ""

    def __init__(self, path: str | PathLike[str] | None, reason: str, hint: str | None = None):
        self.path = Path(path) if path is not None else None
        self.reason = reason
        self.hint = self.default_hint if hint is None else hint
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = f"{self.path}: " if self.path is not None else ""
        tail = f" ({self.hint})" if self.hint else ""
        return f"{where}{self.reason}{tail}"

    def __reduce__(self):  # keep pickling (multiprocessing, Qt queues) working
        return (type(self), (self.path, self.reason, self.hint))


class NotAnImage(UserInputError):
    default_hint = "use a PNG, JPEG or WebP image"


class NotACheckpoint(UserInputError):
    """A readable file that is not a Stable Diffusion checkpoint (a LoRA, a VAE, ...)."""


class UnsupportedCheckpoint(UserInputError):
    """A checkpoint we recognise but will not load (pickles, unknown families)."""


class CorruptCheckpoint(UserInputError):
    """Recognised as a checkpoint but broken (truncated, bad header, bad offsets)."""

    default_hint = "re-download or re-copy the file"


class IncompleteFile(CorruptCheckpoint):
    """The file is still being written (size or mtime changing, or shorter than its header
    declares); try again when it is stable. A :class:`CorruptCheckpoint` to whoever only needs to
    know the file cannot be loaded now."""

    default_hint = "wait until the copy or download finishes"


class SpecFormatError(UserInputError):
    """A specification file is unreadable, of another format version, or has wrong shapes."""

    default_hint = "delete the file or rebuild the specification"


class WeightsUnavailable(UserInputError):
    """Model weights (CLIP, BLIP, ...) are neither on disk nor downloadable."""


class SettingsError(UserInputError):
    default_hint = "fix or delete the settings file"


class OutOfMemory(GMIError):
    """The device ran out of memory even after every fallback was tried."""

    def __init__(self, what: str, tried: list[str] | None = None):
        self.what = what
        self.tried = list(tried or [])
        tried_txt = f" after trying {', '.join(self.tried)}" if self.tried else ""
        super().__init__(
            f"out of memory while {what}{tried_txt}; close other GPU programs, lower the "
            "resolution or batch size, or switch the device to CPU in the settings"
        )


class RequirementError(UserInputError):
    """A query (requirement) cannot be scored: wrong shapes, missing features for the method,
    or features from another encoder than the specifications'."""

    default_hint = "encode the query with the same encoder as the specifications"


class CorruptWeights(WeightsUnavailable):
    """Model weights were found but cannot be loaded (truncated, not a state dict, wrong model)."""

    default_hint = "delete the file so it can be fetched again, or point the setting at a good copy"


class CatalogError(UserInputError):
    """The model catalog (SQLite) cannot be used: written by a newer version, or damaged."""

    default_hint = "update GMI Desktop, or point GMI_DATA_DIR at another folder"


class UnreadableFile(UserInputError):
    """A file the operating system will not give us (vanished, permission denied, I/O error), or
    one whose library folder is not reachable (an unplugged drive)."""

    default_hint = "check that the file exists and that you may read it"
