"""What the library panel and the builder bar say, as plain data (no Qt): testable wording.

A row joins a catalog record with its specification state; duplicates (the same content in two
files) point at the first copy by path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmi_desktop.core.checkpoint_kinds import FAMILY_NAMES, VARIANT_NAMES
from gmi_desktop.core.progress import Progress


@dataclass(frozen=True)
class LibraryRow:
    key: str  # sha256, or the path while the file is not hashed
    path: Path
    name: str
    family: str  # shown text ("SD 1.x", "lora", ...)
    family_key: str  # for the family filter ("sd1", "other")
    autov2: str
    preview: str | None
    status: str
    state: str  # queued | building | coarse | ready | failed | skipped | duplicate | hashing | <file status>


def family_text(record: Any) -> str:
    if not record.family:
        return record.kind or "-"
    name = FAMILY_NAMES.get(record.family, record.family)
    if record.variant in (None, "normal"):
        return name
    return f"{name} {VARIANT_NAMES.get(record.variant, record.variant)}"


def spec_text(status: Any) -> tuple[str, str]:
    """(state, text) of a services.specs.ModelSpecStatus."""
    state = status.state
    if state == "building":
        return state, f"building {status.images_done} of {status.images_total}"
    if state == "coarse":
        return state, f"coarse spec ({status.images_done} of {status.images_total} images)"
    if state in {"failed", "skipped"}:
        return state, f"{state}: {status.reason}" if status.reason else state
    return state, state


def make_rows(snapshot: Any) -> list[LibraryRow]:
    primary: dict[str, Any] = {}
    for sha, group in snapshot.copies.items():
        primary[sha] = min(group, key=lambda r: str(r.path))
    rows = []
    for record in snapshot.records:
        key = record.sha256 or str(record.path)
        if record.status != "ok":
            reason = record.reason or record.status
            text = reason if reason.startswith(f"{record.status}:") else f"{record.status}: {reason}"
            state = record.status
        elif record.sha256 in primary and primary[record.sha256].path != record.path:
            state, text = "duplicate", f"duplicate of {primary[record.sha256].name}"
        elif key in snapshot.spec_states:
            state, text = spec_text(snapshot.spec_states[key])
        elif record.sha256 is None:
            state, text = "hashing", "waiting for its hash"
        else:
            state, text = "queued", "queued"
        rows.append(LibraryRow(key, Path(record.path), record.name, family_text(record),
                               record.family or "other", (record.autov2 or "").upper(), record.preview_path,
                               text, state))
    return rows


def build_line(event: Progress) -> str:
    """The builder bar's line for a build event (the service's own sentence when it has one)."""
    if event.message:
        return event.message
    where = f" {event.item}" if event.item else ""
    count = f" image {event.done} of {event.total}" if event.total else ""
    return f"{event.stage}{where}{count}"
