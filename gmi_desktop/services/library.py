"""The model library: library folders, scanning into the catalog, hashing, pruning.

Scanning and hashing are *generator functions* in the superqt style: each ``yield`` hands out a
:class:`ScanEvent` (progress, and the point where a worker may pause or cancel), and the
generator's return value is the summary. :func:`run` drives one to completion without Qt.

A scan is mark-and-sweep on the stat key ``(device, inode, size, mtime_ns)``:

1. *list*: walk the folders, stat every model file (no file is opened);
2. *classify*: a file whose key equals the catalog's is unchanged and only marked seen; a new or
   changed file (or one whose sidecars changed: a ``.civitai.info`` or preview added) gets the
   header probe (the header bytes only) and its sidecars, and its hash is reset to
   pending; a new path with the key of an already-hashed file (a rename on the same disk, or a hard
   link) reuses that hash without reading;
3. *sweep*: files of the scanned roots not seen are tombstoned (status ``missing``), except under
   folders that could not be read; a tombstone whose content reappeared elsewhere is dropped (a
   move; the specification is keyed by the content hash and stays);
4. *hash* (optional here, or later via :meth:`Library.hash_pending`): full SHA-256, AutoV2,
   AutoV1 and tensor-data hash of each usable checkpoint still pending.

A batch never stops on one bad file: it is recorded with a status and reason, and the scan goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gmi_desktop.core.errors import Cancelled, IncompleteFile, UserInputError
from gmi_desktop.services.library_read import default_workers, read_many
from gmi_desktop.services.library_walk import (
    MODEL_SUFFIXES,
    NOT_TEXT,
    Candidate,
    Problem,
    WalkReport,
    checkpoint_dirs,
    folder_key,
    is_text,
    sidecar_signature,
    walk,
)
from gmi_desktop.store.catalog import Catalog, FileFacts, PruneResult, Root
from gmi_desktop.store.hashing import iter_hash_file, stat_key
from gmi_desktop.store.probe import ProbeResult, probe
from gmi_desktop.store.sidecars import SidecarInfo, read_sidecars

STATUS_OF_PROBE = {"ok": "ok", "not_checkpoint": "skipped", "unsupported": "unsupported", "invalid": "invalid",
                   "incomplete": "incomplete", "unreadable": "skipped"}
UNREADABLE_PREFIX = "unreadable: "  # re-probed on every scan (a chmod does not change the stat key)
BATCH = 256
CHANGED_SINCE_SCAN = "changed since it was scanned (still being written?); the next scan reads it again"
HASH_EVENT_BYTES = 64 * 1024 * 1024  # a hashing event (progress, pause/cancel point) at least this often
T = TypeVar("T")


@dataclass(frozen=True)
class ScanEvent:
    """Progress: ``phase`` is "listing", "probing" or "hashing"; ``total`` 0 when unknown."""

    phase: str
    done: int
    total: int
    path: Path | None = None
    bytes_done: int = 0  # hashing: bytes of the current file read so far
    bytes_total: int = 0  # hashing: size of the current file (already on the event that starts it)


@dataclass
class ScanSummary:
    roots: list[Path] = field(default_factory=list)
    folders: list[tuple[Path, str]] = field(default_factory=list)  # (folder scanned, layout)
    seen: int = 0
    unchanged: int = 0
    probed: int = 0
    reused_hashes: int = 0
    hashed: int = 0
    tombstoned: list[Path] = field(default_factory=list)
    moved: list[tuple[Path, Path]] = field(default_factory=list)
    vanished: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def run(gen: Generator[Any, None, T], on_event: Callable[[Any], None] | None = None) -> T:
    """Drive a progress generator to its end and return its return value."""
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)


def _every(steps: Generator[tuple[int, int], None, T], every: int,
           make: Callable[[int, int], ScanEvent]) -> Generator[ScanEvent, None, T]:
    """Re-yield ``(done, total)`` byte progress as events, one per ``every`` bytes."""
    mark = every
    while True:
        try:
            done, total = next(steps)
        except StopIteration as stop:
            return stop.value
        if done >= mark:
            mark = done + every
            yield make(done, total)


def _check(cancel: Callable[[], bool] | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("scan cancelled")


class Library:
    """Library folders and their files, kept in a :class:`Catalog`. ``probe_fn``, ``hash_fn`` and
    ``sidecars_fn`` are the real readers by default (``hash_fn`` is a generator function like
    :func:`iter_hash_file`); tests wrap them to count reads. New and changed
    files are read in ``workers`` processes once there are ``parallel_min`` of them."""

    def __init__(self, catalog: Catalog, *, probe_fn: Callable[[Path], ProbeResult] = probe,
                 hash_fn: Callable[..., Any] = iter_hash_file, sidecars_fn: Callable[..., Any] = read_sidecars,
                 workers: int | None = None, parallel_min: int = 200):
        self.catalog = catalog
        self.workers = default_workers() if workers is None else workers
        self.parallel_min = parallel_min
        self._probe = probe_fn
        self._hash = hash_fn
        self._sidecars = sidecars_fn

    # -- library folders ------------------------------------------------------------------------
    def add_folder(self, path: str | os.PathLike[str]) -> Root:
        folder = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
        if not is_text(os.fspath(folder)):
            raise UserInputError(folder, NOT_TEXT)
        if not folder.exists():
            raise UserInputError(folder, "no such folder")
        if not folder.is_dir():
            raise UserInputError(folder, "not a folder", "give the folder that holds your checkpoints")
        return self.catalog.add_root(folder)

    def remove_folder(self, path: str | os.PathLike[str]) -> bool:
        return self.catalog.remove_root(path)

    def folders(self) -> list[Root]:
        return self.catalog.roots()

    def prune(self) -> PruneResult:
        """Forget tombstoned files and the specification references no present file needs."""
        return self.catalog.prune()

    # -- scanning -------------------------------------------------------------------------------
    def scan(self, roots: Iterable[Root] | None = None, *, hashing: bool = True,
             cancel: Callable[[], bool] | None = None) -> Generator[ScanEvent, None, ScanSummary]:
        """Scan ``roots`` (default: every library folder); see the module docstring."""
        roots = list(dict.fromkeys(self.catalog.roots() if roots is None else roots))  # each once
        summary = ScanSummary(roots=[r.path for r in roots])
        generation = self.catalog.next_generation()
        report = WalkReport()
        visited: dict[tuple[int, int], Path] = {}
        found: list[tuple[Candidate, int]] = []
        absent_roots: list[Path] = []
        tops: list[tuple[Path, int]] = []
        for root in roots:
            if not root.path.is_dir():
                report.problems.append(Problem(root.path, "library folder not found (unplugged drive?)"))
                absent_roots.append(root.path)
                continue
            for folder, layout in checkpoint_dirs(root.path):
                summary.folders.append((folder, layout))
                tops.append((folder, root.id))
        # Real folders first, then the folders symbolic links lead to (in the order met).
        links: list[tuple[Path, int]] = []
        while tops or links:
            top, root_id = tops.pop(0) if tops else links.pop(0)
            met: list[Path] = []
            for candidate in walk(top, report, visited, met):
                found.append((candidate, root_id))
                if len(found) % 1000 == 0:
                    _check(cancel)
                    yield ScanEvent("listing", len(found), 0, candidate.path)
            links += [(link, root_id) for link in met]
        yield ScanEvent("listing", len(found), len(found))
        summary.seen = len(found)

        yield from self._update(found, generation, summary, cancel)

        skip = [*report.unreadable, *absent_roots]
        stale = self.catalog.unseen(generation, [r.id for r in roots])
        gone = [(i, p) for i, p in stale if not any(p == s or s in p.parents for s in skip)]
        return (yield from self._finish(summary, gone, report, hashing, cancel))

    def refresh(self, paths: Iterable[str | os.PathLike[str]], *, hashing: bool = True,
                cancel: Callable[[], bool] | None = None) -> Generator[ScanEvent, None, ScanSummary]:
        """Update just ``paths`` (files or folders inside the library folders; others are ignored):
        what exists is listed and classified like in :meth:`scan`, what is gone is tombstoned."""
        summary = ScanSummary()
        generation = self.catalog.next_generation()
        report = WalkReport()
        folders = [(folder, root) for root in self.catalog.roots() for folder, _ in checkpoint_dirs(root.path)]
        found: list[tuple[Candidate, int]] = []
        gone: list[tuple[int, Path]] = []
        for raw in paths:
            path = Path(os.path.abspath(os.fspath(raw)))
            if not is_text(os.fspath(path)):
                continue  # never catalogued (the scan reports it)
            owner = next((root for folder, root in folders if path == folder or folder in path.parents), None)
            if owner is None:
                continue
            if not os.path.lexists(path):
                gone += self.catalog.present_under(path)
                continue
            candidates = self._candidates_at(path, report)
            found += [(c, owner.id) for c in candidates]
        summary.seen = len(found)
        yield from self._update(found, generation, summary, cancel)
        return (yield from self._finish(summary, gone, report, hashing, cancel))

    def _finish(self, summary, gone, report, hashing, cancel):
        """Sweep: tombstone what is gone, collapse moves; then hash what is pending."""
        self.catalog.tombstone(i for i, _ in gone)
        summary.tombstoned = [p for _, p in gone]
        summary.moved = self.catalog.collapse_moves()
        summary.problems = report.problems + summary.problems
        if hashing:
            hashed = yield from self.hash_pending(cancel=cancel)
            summary.hashed = hashed.hashed
            summary.moved += hashed.moved
            summary.problems += hashed.problems
        return summary

    def _candidates_at(self, path: Path, report: WalkReport) -> list[Candidate]:
        try:
            if path.is_dir():
                if (path / "model_index.json").is_file():
                    return [Candidate(path, folder_key(path, os.stat(path)), True, sidecar_signature(path, True))]
                return list(walk(path, report, {}))
            if path.suffix.lower() in MODEL_SUFFIXES and not path.name.startswith("._"):
                return [Candidate(path, stat_key(os.stat(path)), False, sidecar_signature(path))]
        except OSError as exc:
            report.problems.append(Problem(path, f"cannot read: {exc.strerror or exc}"))
        return []

    def _update(self, found, generation, summary, cancel):
        """Mark unchanged files seen; probe and record new and changed ones."""
        known = self.catalog.file_keys()
        by_key = {row.key: row.sha256 for row in known.values() if row.sha256}
        unchanged: dict[int, list[int]] = {}  # root id -> unchanged file ids
        changed: list[tuple[Candidate, int]] = []
        for candidate, root_id in found:
            row = known.get(os.fspath(candidate.path))
            if (row is not None and row.key == candidate.key and row.sidecar_sig == candidate.sidecars
                    and row.status != "missing"
                    and not row.reason.startswith(UNREADABLE_PREFIX)):
                unchanged.setdefault(root_id, []).append(row.id)
            else:
                changed.append((candidate, root_id))
        for root_id, ids in unchanged.items():
            self.catalog.mark_seen(ids, generation, root_id)
        summary.unchanged = sum(map(len, unchanged.values()))
        yield from self._classify(changed, by_key, generation, summary, cancel)

    def _classify(self, changed, by_key, generation, summary, cancel):
        batch: list[tuple[FileFacts, int | None, str | None]] = []
        reads = read_many([c.path for c, _ in changed], probe_fn=self._probe, sidecars_fn=self._sidecars,
                          workers=self.workers, parallel_min=self.parallel_min)
        try:
            for index, (candidate, root_id) in enumerate(changed):
                _check(cancel)
                result, info = next(reads)
                facts = facts_from(candidate, result, info)
                if facts is None:
                    summary.vanished.append(candidate.path)
                    summary.problems.append(Problem(candidate.path, "vanished before it could be read"))
                    continue
                if info is not None:  # a sidecar that was ignored: the user may want to fix it
                    summary.problems += [Problem(candidate.path, text) for text in info.problems]
                sha = by_key.get(candidate.key) if facts.status == "ok" and not candidate.is_folder else None
                summary.reused_hashes += sha is not None
                batch.append((facts, root_id, sha))
                summary.probed += 1
                if len(batch) >= BATCH:
                    self.catalog.record_files(batch, generation)
                    batch = []
                yield ScanEvent("probing", index + 1, len(changed), candidate.path)
        finally:
            reads.close()  # stops worker processes early on cancel
        self.catalog.record_files(batch, generation)

    # -- hashing --------------------------------------------------------------------------------
    def hash_pending(self, *, cancel: Callable[[], bool] | None = None) -> Generator[ScanEvent, None, ScanSummary]:
        """Hash every usable checkpoint whose content hash is pending. A file whose stat key moved
        since it was probed, or that keeps changing while hashed, is marked ``incomplete`` (its new
        key makes the next scan read it again); :class:`Cancelled` leaves nothing half-done."""
        summary = ScanSummary()
        pending = self.catalog.pending_hashes()
        done_by_key: dict = {}  # hard links: one inode hashed once
        for index, record in enumerate(pending):
            _check(cancel)
            yield ScanEvent("hashing", index, len(pending), record.path, 0, record.size)
            try:
                if stat_key(os.stat(record.path)) != record.key:
                    self.catalog.set_status(record.id, "incomplete", CHANGED_SINCE_SCAN)
                    summary.problems.append(Problem(record.path, CHANGED_SINCE_SCAN))
                    continue
                hashes = done_by_key.get(record.key)
                if hashes is None:
                    steps = self._hash(record.path, tensor_offset=record.header_len or None, cancel=cancel)
                    hashes = yield from _every(steps, HASH_EVENT_BYTES, lambda d, t: ScanEvent(
                        "hashing", index, len(pending), record.path, d, t))
            except IncompleteFile as exc:
                self.catalog.set_status(record.id, "incomplete", exc.reason)
                summary.problems.append(Problem(record.path, exc.reason))
                continue
            except OSError as exc:
                summary.problems.append(Problem(record.path, f"cannot hash: {exc.strerror or exc}"))
                continue
            done_by_key[record.key] = hashes
            if self.catalog.record_hashes(record.id, hashes):
                summary.hashed += 1
        if pending:
            yield ScanEvent("hashing", len(pending), len(pending))
        summary.moved = self.catalog.collapse_moves()
        return summary


def facts_from(candidate: Candidate, result: ProbeResult, info: SidecarInfo | None) -> FileFacts | None:
    """Catalog facts from a probe and the sidecars; ``None`` when the file vanished before being read."""
    key = candidate.key
    if result.status == "unreadable":
        if not os.path.lexists(candidate.path):
            return None
        return FileFacts(os.fspath(candidate.path), key, "skipped", UNREADABLE_PREFIX + result.reason)
    if not candidate.is_folder and (result.device, result.inode, result.size, result.mtime_ns) != key:
        # Changed between listing and reading: still being written. Keep the listing key so the
        # next scan sees a different key and reads it again.
        return FileFacts(os.fspath(candidate.path), key, "incomplete",
                         "the file changed while it was being read (still being copied?)",
                         file_format=result.file_format)
    return FileFacts(
        path=os.fspath(candidate.path), key=key, status=STATUS_OF_PROBE.get(result.status, "invalid"),
        reason=result.reason, file_format=result.file_format, family=result.family, variant=result.variant,
        kind=result.kind, display_name=info.display_name if info else None,
        base_model=info.base_model if info else None, download_count=info.download_count if info else None,
        preview_path=os.fspath(info.preview_path) if info and info.preview_path else None,
        metadata=dict(result.metadata), header_len=result.header_len, tensor_count=result.tensor_count,
        sidecar_sig=candidate.sidecars,
    )
