"""The catalog's record types: what a scan learned about a file (:class:`FileFacts`), a catalog
row (:class:`FileRecord`), a library folder (:class:`Root`), the columns a rescan compares
(:class:`KnownFile`) and what :meth:`~gmi_desktop.store.catalog.Catalog.prune` removed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from gmi_desktop.core.checkpoint_kinds import Status, describe_kind, status_error
from gmi_desktop.core.errors import UserInputError
from gmi_desktop.store.hashing import StatKey


@dataclass(frozen=True)
class Root:
    id: int
    path: Path
    added_at: float
    offline_since: float | None = None  # set by a scan that found the folder absent


class KnownFile(NamedTuple):
    """The few columns a scan compares for every listed file (no metadata decoded)."""

    id: int
    key: StatKey
    status: str
    sha256: str | None
    reason: str
    kind: str | None
    sidecar_sig: str


@dataclass(frozen=True)
class FileFacts:
    """What a scan learned about one path (from its stat, the header probe and the sidecars)."""

    path: Path
    key: StatKey
    status: Status
    reason: str = ""
    file_format: str | None = None
    family: str | None = None
    variant: str | None = None
    kind: str | None = None
    display_name: str | None = None
    base_model: str | None = None
    download_count: int | None = None
    preview_path: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    header_len: int = 0
    tensor_count: int = 0
    sidecar_sig: str = ""  # names, sizes and mtimes of the sidecar files read with it

    @property
    def name(self) -> str:
        return self.display_name or self.path.stem

    @property
    def size(self) -> int:
        return self.key.size

    @property
    def kind_text(self) -> str:
        """The family in the users' words (``SDXL``, ``SD 1.x inpaint``), else the kind (``lora``)."""
        return describe_kind(self.family, self.variant, self.kind)

    def error(self) -> UserInputError | None:
        """The typed error for this file's status (``None`` when ok)."""
        return status_error(self.status, self.path, self.reason, self.kind)


@dataclass(frozen=True, kw_only=True)
class FileRecord(FileFacts):
    """One row of the catalog: the file's facts, where it belongs, and its content hashes (``None``
    until hashed). ``status`` is ``offline`` while the file's library folder cannot be reached."""

    id: int
    root_id: int | None
    sha256: str | None = None
    autov2: str | None = None
    autov1: str | None = None
    tensor_sha256: str | None = None
    seen_generation: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0

    def status_text(self, copies: int = 0) -> str:
        """``status: reason``, plus ``(duplicate, N copies)`` when the content is held N > 1 times."""
        if not self.reason or self.reason.startswith(f"{self.status}:"):
            text = self.reason or str(self.status)
        else:
            text = f"{self.status}: {self.reason}"
        if copies > 1 and self.status != Status.MISSING:
            text += f" (duplicate, {copies} copies)"
        return text


@dataclass(frozen=True)
class PruneResult:
    removed_files: list[Path]
    removed_spec_paths: list[str]
    deleted_specs: int = 0  # spec files deleted (by the library service, inside the spec store)
    problems: list = field(default_factory=list)  # spec files that could not be deleted
