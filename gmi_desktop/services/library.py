"""The model library: library folders, scanning into the catalog, hashing, pruning.

Scanning and hashing are *generator functions* (the one protocol of :mod:`gmi_desktop.core.progress`):
each ``yield`` hands out a :class:`~gmi_desktop.core.progress.Progress` (stage "listing", "probing"
or "hashing"; ``item`` the file; bytes while hashing) and is the point where a worker may pause, a
``cancel`` callable is checked between steps, and the generator's return value is the
:class:`ScanSummary`. :func:`~gmi_desktop.core.progress.run` drives one to completion without Qt.

A scan is mark-and-sweep on the stat key ``(device, inode, size, mtime_ns)``:

1. *list*: walk the folders, stat every model file (no file is opened); a library folder that is
   absent (an unplugged drive) is marked offline: its files are kept and read as ``offline``;
2. *classify*: a file whose key equals the catalog's is unchanged and only marked seen; a new or
   changed file (or one whose sidecars changed: a ``.civitai.info`` or preview added) gets the
   header probe (the header bytes only), its sidecars and the still-being-written check
   (:mod:`~gmi_desktop.services.library_read`), and its hash is reset to pending; a new path with
   the key of an already-hashed file (a rename on the same disk, or a hard link) reuses that hash
   without reading;
3. *sweep*: files of the scanned roots not seen are tombstoned (status ``missing``), except under
   folders that could not be read; a tombstone whose content reappeared elsewhere is dropped (a
   move; the specification is keyed by the content hash and stays);
4. *hash* (optional here, or later via :meth:`Library.hash_pending`): full SHA-256, AutoV2,
   AutoV1 and tensor-data hash of each usable checkpoint still pending.

A batch never stops on one bad file: it is recorded with a status and reason, and the scan goes on.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from gmi_desktop.core.checkpoint_kinds import UNREADABLE, Status
from gmi_desktop.core.errors import IncompleteFile, UserInputError
from gmi_desktop.core.progress import CancelFn, Progress, check_cancel, run
from gmi_desktop.services.library_read import (
    STILL_WRITTEN,
    VANISHED,
    default_workers,
    facts_from,
    read_many,
    recently_modified,
    still_written,
)
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
from gmi_desktop.store import paths
from gmi_desktop.store.catalog import Catalog, FileFacts, FileRecord, PruneResult, Root
from gmi_desktop.store.hashing import iter_hash_file, stat_key
from gmi_desktop.store.probe import UNREADABLE_PREFIX, probe
from gmi_desktop.store.sidecars import read_sidecars

__all__ = ["Library", "ScanSummary", "Problem", "run"]

BATCH = 256
CHANGED_SINCE_SCAN = "changed since it was scanned (still being written?); the next scan reads it again"
HASH_EVENT_BYTES = 64 * 1024 * 1024  # a hashing event (progress, pause/cancel point) at least this often
NEEDS_ATTENTION = (Status.INVALID, Status.UNSUPPORTED, Status.INCOMPLETE)  # counted as problems


@dataclass
class ScanSummary:
    """What one scan (or refresh, or hashing pass) did. ``tombstoned`` holds the files that are
    gone, not those that moved (``moved``: ``(old, new)``); ``offline`` the library folders that
    could not be reached; ``counts`` the statuses of the scanned folders' files afterwards."""

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
    offline: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    counts: dict[Status, int] = field(default_factory=dict)
    needs_attention: list[Path] = field(default_factory=list)  # invalid, unsupported or incomplete files

    @property
    def problem_count(self) -> int:
        """Problems reported on the way plus the files that need the user's attention and were
        not among them."""
        flagged = {p.path for p in self.problems}
        return len(self.problems) + sum(1 for p in self.needs_attention if p not in flagged)

    def describe(self) -> str:
        """The one-line account of the scan, in the status words the table uses."""
        parts = [f"{self.seen} files: {self.probed} new or changed, {self.unchanged} unchanged, {self.hashed} hashed"]
        by_status = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n)
        if by_status:
            parts.append(by_status)
        parts.append(f"{len(self.tombstoned)} gone, {len(self.moved)} moved")
        if self.offline:
            parts.append(f"{len(self.offline)} library folder{'s' if len(self.offline) != 1 else ''} offline")
        parts.append(f"{self.problem_count} problem{'' if self.problem_count == 1 else 's'}")
        return "; ".join(parts)


def _every(steps: Generator[Progress, None, object], every: int, make) -> Generator[Progress, None, object]:
    """Re-yield a hash's byte progress as scan events, one per ``every`` bytes."""
    mark = every
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            return stop.value
        if step.bytes_done >= mark:
            mark = step.bytes_done + every
            yield make(step.bytes_done, step.bytes_total)


def _recheck(row) -> bool:
    """Files read again by every scan even when their key did not change: unreadable ones (a chmod
    does not change the key) and ones that looked still written (a download may finish in place)."""
    return (row.kind == UNREADABLE or row.reason.startswith(UNREADABLE_PREFIX)  # the latter: catalogs before v4
            or (row.status == Status.INCOMPLETE and row.reason.startswith(STILL_WRITTEN)))


class Library:
    """Library folders and their files, kept in a :class:`Catalog`. ``probe_fn``, ``hash_fn`` and
    ``sidecars_fn`` are the real readers by default (``hash_fn`` is a generator function like
    :func:`iter_hash_file`); tests wrap them to count reads. New and changed
    files are read in ``workers`` processes once there are ``parallel_min`` of them."""

    def __init__(self, catalog: Catalog, *, probe_fn=probe, hash_fn=iter_hash_file, sidecars_fn=read_sidecars,
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
        """Forget a library folder and its files (content hashes and specifications stay until
        :meth:`prune`); ``False`` when it was not a library folder."""
        return self.catalog.remove_root(path)

    def folders(self) -> list[Root]:
        return self.catalog.roots()

    def files(self, roots: Iterable[Root] | None = None) -> list[FileRecord]:
        """The catalogued files of ``roots`` (default: every library folder), by path."""
        if roots is None:
            return self.catalog.files()
        ids = {r.id for r in roots}
        return [r for r in self.catalog.files() if r.root_id in ids]

    def prune(self, *, delete_specs: bool = True) -> PruneResult:
        """Forget tombstoned files and the specification references no present file needs; with
        ``delete_specs``, delete those specification files too, but only inside our spec store."""
        pruned = self.catalog.prune()
        if not delete_specs:
            return pruned
        deleted, problems = delete_spec_files(pruned.removed_spec_paths)
        return replace(pruned, deleted_specs=deleted, problems=problems)

    # -- scanning -------------------------------------------------------------------------------
    def scan(self, roots: Iterable[Root] | None = None, *, hashing: bool = True,
             cancel: CancelFn | None = None) -> Generator[Progress, None, ScanSummary]:
        """Scan ``roots`` (default: every library folder); see the module docstring."""
        roots = list(dict.fromkeys(self.catalog.roots() if roots is None else roots))  # each once
        summary = ScanSummary(roots=[r.path for r in roots])
        generation = self.catalog.next_generation()
        report = WalkReport()
        visited: dict[tuple[int, int], Path] = {}
        found: list[tuple[Candidate, int]] = []
        tops: list[tuple[Path, int]] = []
        for root in roots:
            reachable = root.path.is_dir()
            self.catalog.set_offline(root.id, not reachable)
            if not reachable:
                report.problems.append(Problem(root.path, "library folder not found (unplugged drive?); "
                                                          "its files are kept and shown offline"))
                summary.offline.append(root.path)
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
                    check_cancel(cancel, "scan cancelled")
                    yield Progress("listing", len(found), 0, os.fspath(candidate.path))
            links += [(link, root_id) for link in met]
        yield Progress("listing", len(found), len(found))
        summary.seen = len(found)

        yield from self._update(found, generation, summary, cancel)

        skip = [*report.unreadable, *summary.offline]
        stale = self.catalog.unseen(generation, [r.id for r in roots if r.path not in summary.offline])
        gone = [(i, p) for i, p in stale if not any(p == s or s in p.parents for s in skip)]
        summary = yield from self._finish(summary, gone, report, hashing, cancel)
        self._count(summary, roots)
        return summary

    def refresh(self, paths: Iterable[str | os.PathLike[str]], *, hashing: bool = True,
                cancel: CancelFn | None = None) -> Generator[Progress, None, ScanSummary]:
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
        summary.moved = self.catalog.collapse_moves()
        summary.problems = report.problems + summary.problems
        if hashing:
            hashed = yield from self.hash_pending(cancel=cancel)
            summary.hashed = hashed.hashed
            summary.moved += hashed.moved
            summary.problems += hashed.problems
        moved_from = {old for old, _ in summary.moved}
        summary.tombstoned = [p for _, p in gone if p not in moved_from]
        return summary

    def _count(self, summary: ScanSummary, roots: list[Root]) -> None:
        ids = [r.id for r in roots]
        summary.counts = self.catalog.status_counts(ids)
        summary.needs_attention = self.catalog.paths_with_status(NEEDS_ATTENTION, ids)

    def _candidates_at(self, path: Path, report: WalkReport) -> list[Candidate]:
        try:
            if path.is_dir():
                if (path / "model_index.json").is_file():
                    return [Candidate(path, folder_key(path, os.stat(path)), True, sidecar_signature(path, True))]
                if path.suffix.lower() in MODEL_SUFFIXES:
                    return [Candidate(path, stat_key(os.stat(path)), True)]
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
                    and row.status != Status.MISSING and not _recheck(row)):
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
                check_cancel(cancel, "scan cancelled")
                read = next(reads)
                facts = facts_from(candidate, read)
                if facts is None:
                    summary.vanished.append(candidate.path)
                    summary.problems.append(Problem(candidate.path, VANISHED))
                    continue
                info = read[1]
                if info is not None:  # a sidecar that was ignored: the user may want to fix it
                    summary.problems += [Problem(candidate.path, text) for text in info.problems]
                sha = by_key.get(candidate.key) if facts.status == Status.OK and not candidate.is_folder else None
                summary.reused_hashes += sha is not None
                batch.append((facts, root_id, sha))
                summary.probed += 1
                if len(batch) >= BATCH:
                    self.catalog.record_files(batch, generation)
                    batch = []
                yield Progress("probing", index + 1, len(changed), os.fspath(candidate.path))
        finally:
            reads.close()  # stops worker processes early on cancel
        self.catalog.record_files(batch, generation)

    # -- hashing --------------------------------------------------------------------------------
    def hash_pending(self, *, cancel: CancelFn | None = None) -> Generator[Progress, None, ScanSummary]:
        """Hash every usable checkpoint whose content hash is pending. A file whose stat key moved
        since it was probed, or that keeps changing while hashed, is marked ``incomplete`` (its new
        key makes the next scan read it again); so is one that now looks still written (checked
        before hashing, and again after hashing a recently modified file).
        :class:`~gmi_desktop.core.errors.Cancelled` leaves nothing half-done."""
        summary = ScanSummary()
        pending = self.catalog.pending_hashes()
        done_by_key: dict = {}  # hard links: one inode hashed once
        for index, record in enumerate(pending):
            check_cancel(cancel, "scan cancelled")
            item = os.fspath(record.path)
            yield Progress("hashing", index, len(pending), item, 0, record.size)
            try:
                if stat_key(os.stat(record.path)) != record.key:
                    self._hold(record, CHANGED_SINCE_SCAN, summary)
                    continue
                writing = still_written(record.path, record.header_len, record.size)
                if writing:
                    self._hold(record, writing, summary)
                    continue
                hashes = done_by_key.get(record.key)
                if hashes is None:
                    steps = self._hash(record.path, tensor_offset=record.header_len or None, cancel=cancel)
                    hashes = yield from _every(steps, HASH_EVENT_BYTES, lambda d, t: Progress(
                        "hashing", index, len(pending), item, d, t))
                if recently_modified(record.key):  # may have been written to while we read it
                    writing = still_written(record.path, record.header_len, record.size)
                    if writing or stat_key(os.stat(record.path)) != record.key:
                        self._hold(record, writing or CHANGED_SINCE_SCAN, summary)
                        continue
            except IncompleteFile as exc:
                self._hold(record, exc.reason, summary)
                continue
            except OSError as exc:
                summary.problems.append(Problem(record.path, f"cannot hash: {exc.strerror or exc}"))
                continue
            done_by_key[record.key] = hashes
            if self.catalog.record_hashes(record.id, hashes):
                summary.hashed += 1
        if pending:
            yield Progress("hashing", len(pending), len(pending))
        summary.moved = self.catalog.collapse_moves()
        return summary

    def _hold(self, record: FileRecord, reason: str, summary: ScanSummary) -> None:
        self.catalog.set_status(record.id, Status.INCOMPLETE, reason)
        summary.problems.append(Problem(record.path, reason))


def delete_spec_files(spec_paths: list[str]) -> tuple[int, list[Problem]]:
    """Delete pruned specification files, but only ours: files inside the app's specs folder.
    Returns how many were deleted and what could not be."""
    ours = paths.specs_dir().resolve()
    deleted, problems = 0, []
    for name in spec_paths:
        path = Path(name).resolve()
        if path.parent != ours and ours not in path.parents:
            continue
        try:
            path.unlink()
            deleted += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            problems.append(Problem(path, f"cannot delete: {exc.strerror or exc}"))
    return deleted, problems
