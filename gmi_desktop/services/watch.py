"""Watch mode: keep the catalog current while files are created, moved and deleted.

:class:`LibraryWatcher` is a plain object. The file-system observer (``watchdog``, imported
lazily) only *queues* raw events from its own thread; all work happens in :meth:`poll`, called by
the owner (a worker thread through :meth:`run`, or a test with an injected clock):

* events are coalesced per path and debounced: a path is looked at only ``debounce_s`` after its
  last event;
* a file must then keep the same stat key ``(device, inode, size, mtime_ns)`` for ``stable_s``
  before it is probed; a file still being copied keeps changing and stays deferred, and a file
  the probe finds shorter than its header declares is recorded ``incomplete`` and never hashed;
* what is gone is tombstoned; a move is processed as one when its destination has settled (the
  source's tombstone collapses into the destination, hash and specification kept); a folder moved
  or copied in is walked once no file below it is still settling; a sidecar (``.civitai.info``,
  ``.cm-info.json``, preview image) appearing, changing or deleted re-reads the model beside it;
* when the observer cannot start or dies (inotify watch limit: ``ENOSPC``; ``EMFILE``), the
  watcher falls back to a full rescan every ``poll_interval_s`` and says so with a ``fallback``
  event;
* a catalog that cannot be written (locked by another program past the busy timeout, disk full)
  is a ``problem`` event, and the paths are looked at again later: watch mode goes on.

Every outcome is one :class:`~gmi_desktop.core.progress.Progress` event, handed to ``on_event``
and returned by :meth:`poll`: ``stage`` says what happened ("updated": recorded, ``message`` = its
status; "deferred": still changing; "removed": tombstoned; "fallback": watching failed, polling
now; "rescanned"; "problem"), ``item`` the path (empty for the library as a whole).
Create the watcher, its :class:`Library` and catalog in the thread that calls :meth:`poll` or
:meth:`run` (a SQLite connection stays in its thread); other threads read the catalog through
their own connection.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmi_desktop.core.checkpoint_kinds import Status
from gmi_desktop.core.progress import Progress, ProgressSink, run
from gmi_desktop.services.library import Library
from gmi_desktop.services.library_walk import MODEL_SUFFIXES, checkpoint_dirs, is_text, models_beside_sidecar
from gmi_desktop.store.hashing import StatKey, stat_key


def _event(stage: str, path: Path | None = None, message: str = "") -> Progress:
    return Progress(stage, item=os.fspath(path) if path is not None else "", message=message)


@dataclass
class _Pending:
    last_event: float
    key: StatKey | None = None
    stable_since: float = 0.0
    told_deferred: bool = False
    moved_from: list[Path] = field(default_factory=list)


def _default_observer() -> Any:
    from watchdog.observers import Observer

    return Observer()


class LibraryWatcher:
    def __init__(self, library: Library, *, debounce_s: float = 1.5, stable_s: float = 2.0,
                 poll_interval_s: float = 300.0, clock: Callable[[], float] = time.monotonic,
                 observer_factory: Callable[[], Any] = _default_observer,
                 on_event: ProgressSink | None = None, hashing: bool = True):
        self.library = library
        self.debounce_s, self.stable_s, self.poll_interval_s = debounce_s, stable_s, poll_interval_s
        self.clock = clock
        self.on_event = on_event
        self.hashing = hashing
        self.mode = "stopped"  # "watching" | "polling" | "stopped"
        self._observer_factory = observer_factory
        self._observer: Any = None
        self._raw: queue.SimpleQueue[tuple[str, float, str | None]] = queue.SimpleQueue()
        self._pending: dict[Path, _Pending] = {}
        self._last_rescan = 0.0

    # -- lifecycle ------------------------------------------------------------------------------
    def folders(self) -> list[Path]:
        return [f for root in self.library.folders() if root.path.is_dir() for f, _ in checkpoint_dirs(root.path)]

    def start(self) -> str:
        """Start watching the library's checkpoint folders; returns the mode it ended in."""
        self._last_rescan = self.clock()
        observer = None
        try:
            observer = self._observer_factory()
            handler = _make_handler(self.notify)
            for folder in self.folders():
                observer.schedule(handler, os.fspath(folder), recursive=True)
            observer.start()
        except OSError as exc:
            if observer is not None:  # folders whose watch did start must not keep it (and its thread)
                observer.stop()
            self._fall_back(exc)
            return self.mode
        self._observer = observer
        self.mode = "watching"
        return self.mode

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        self.mode = "stopped"

    def run(self, stop_event: threading.Event, tick_s: float = 0.5) -> None:
        """Start, then :meth:`poll` every ``tick_s`` until ``stop_event`` is set; then stop."""
        if self.mode == "stopped":
            self.start()
        try:
            while not stop_event.wait(tick_s):
                self.poll()
        finally:
            self.stop()

    def _fall_back(self, exc: OSError) -> None:
        self.mode = "polling"
        self._emit([], _event(
            "fallback", None,
            f"cannot watch the library folders ({exc.strerror or exc}); rescanning every "
            f"{self.poll_interval_s:g} s instead",
        ))

    # -- events ---------------------------------------------------------------------------------
    def notify(self, path: str | os.PathLike[str], kind: str = "modified", dest: str | os.PathLike[str] | None = None) -> None:
        """Queue a raw event, stamped now (thread-safe; the observer calls this from its thread).
        ``kind`` is informational: every event means "look at this path again"; a move means
        "look at ``dest`` when it has settled, together with ``path``"."""
        now = self.clock()
        if kind == "moved" and dest is not None:
            self._raw.put((os.fspath(dest), now, os.fspath(path)))
        else:
            self._raw.put((os.fspath(path), now, None))

    def pending(self) -> list[Path]:
        self._drain()
        return sorted(self._pending)

    def _drain(self) -> None:
        while True:
            try:
                raw, stamp, source = self._raw.get_nowait()
            except queue.Empty:
                return
            path = Path(raw)
            entry = self._pending.setdefault(path, _Pending(stamp))
            entry.last_event = max(entry.last_event, stamp)
            if source is not None:
                earlier = self._pending.pop(Path(source), None)  # e.g. "x.part" renamed when done
                entry.moved_from += [Path(source), *(earlier.moved_from if earlier else [])]

    def poll(self) -> list[Progress]:
        """Do the work that is due now; returns what happened."""
        events: list[Progress] = []
        if self.mode == "watching" and self._observer is not None and not self._observer.is_alive():
            self._observer = None
            self._fall_back(OSError("the file-system observer stopped"))
        elif self.mode == "watching" and self._observer is not None and not all(
                e.is_alive() for e in getattr(self._observer, "emitters", ())):
            # inotify ends the watch of a folder that was deleted or unmounted; one that comes back
            # would never be watched again
            self.stop()
            self._fall_back(OSError("stopped watching a library folder (deleted or unmounted)"))
        self._drain()
        now = self.clock()
        if self.mode == "polling" and now - self._last_rescan >= self.poll_interval_s:
            self._last_rescan = now
            try:
                summary = run(self.library.scan(hashing=self.hashing))
            except sqlite3.Error as exc:  # tried again at the next interval
                self._emit(events, _event("problem", None, f"cannot update the catalog ({exc}); will retry"))
            else:
                self._emit(events, _event("rescanned", None,
                                              f"{summary.seen} files, {summary.probed} new or changed"))
        ready: list[Path] = []
        for path, entry in list(self._pending.items()):
            if now - entry.last_event < self.debounce_s:
                continue
            if not os.path.lexists(path) or os.path.isdir(path):
                if os.path.isdir(path) and any(path in other.parents for other in self._pending):
                    continue  # files inside it are still settling: they go first, the folder after
                ready.append(path)
                continue
            try:
                key = stat_key(os.stat(path))
            except OSError:
                ready.append(path)  # vanished in between: refresh tombstones it
                continue
            if key != entry.key:
                entry.key, entry.stable_since = key, now
                if not entry.told_deferred:
                    entry.told_deferred = True
                    self._emit(events, _event("deferred", path, "waiting until the file stops changing"))
            elif now - entry.stable_since >= self.stable_s:
                ready.append(path)
        sources: list[Path] = []
        for path in ready:
            sources += self._pending.pop(path).moved_from
        wanted = [p for p in ready if not os.path.isfile(p) or p.suffix.lower() in MODEL_SUFFIXES] + sources
        if wanted:
            self._refresh(wanted, events)
        described = sorted({m for p in ready if not os.path.isdir(p) for m in models_beside_sidecar(p)} - set(wanted))
        if described:  # a sidecar appeared, changed or went: the model's name, preview or downloads may have
            self._refresh(described, events)
        return events

    def _refresh(self, paths: list[Path], events: list[Progress]) -> None:
        try:
            summary = run(self.library.refresh(paths, hashing=self.hashing))
        except sqlite3.Error as exc:  # catalog locked past the busy timeout, disk full, ...
            now = self.clock()
            for path in paths:  # looked at again after the debounce
                self._pending.setdefault(path, _Pending(now))
            self._emit(events, _event("problem", None, f"cannot update the catalog ({exc}); will retry"))
            return
        moved_from = {old for old, _ in summary.moved}
        for old in summary.tombstoned:
            if old not in moved_from:
                self._emit(events, _event("removed", old, "missing"))
        for old, new in summary.moved:
            self._emit(events, _event("updated", new, f"moved from {old}"))
        for path in paths:
            if not is_text(os.fspath(path)):
                continue  # cannot be in the catalog; the scan reports its name
            record = self.library.catalog.get(path)
            if record is not None and record.status != Status.MISSING:
                self._emit(events, _event("updated", path, str(record.status)))
        for problem in summary.problems:
            self._emit(events, _event("problem", problem.path, problem.reason))

    def _emit(self, events: list[Progress], event: Progress) -> None:
        events.append(event)
        if self.on_event is not None:
            self.on_event(event)


def _make_handler(notify: Callable[..., None]) -> Any:
    from watchdog.events import FileSystemEventHandler

    class _Handler(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            if event.is_directory and event.event_type == "modified":
                return  # a folder's entries changed; the files themselves report that
            if event.event_type in ("created", "modified", "deleted", "closed"):
                notify(event.src_path, event.event_type)
            elif event.event_type == "moved":
                notify(event.src_path, "moved", event.dest_path)

    return _Handler()
