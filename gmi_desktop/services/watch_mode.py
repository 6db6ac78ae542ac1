"""Watch mode: keep specifications current while models arrive, and identify images as they appear.

:class:`WatchMode` composes three existing pieces and adds only the glue:

* :class:`~gmi_desktop.services.watch.LibraryWatcher` notices new, changed, moved and removed
  checkpoints, waits until a file stops changing, probes and hashes it once (a file still being
  copied is deferred; what is gone is tombstoned);
* every new or changed usable checkpoint (by content SHA-256) is **queued** and handed to
  :meth:`SpecBuilder.build <gmi_desktop.services.specs.SpecBuilder.build>` first (progressive:
  a coarse specification for each, then full ones); the build runs one event at a time between
  polls, and is restarted (it resumes from disk) when more models arrive;
* an optional **images** folder: each new image, once its size and time stop changing, is
  identified (:class:`~gmi_desktop.services.identify.Identifier`) and the result written beside
  it, atomically, as ``<image>.gmi.json``; an image whose result is current is left alone, so a
  restart does not repeat work.

Everything that deserves a person's attention is a :class:`Notice` ("queued", "usable" when a
model's specification can be used for identification, "failed", "removed", "identified",
"problem"). :meth:`run` stops at a ``threading.Event`` (the CLI sets it on Ctrl+C / SIGTERM):
the build is cancelled between images (its progress is on disk), result files are written
whole or not at all. Create the mode in the thread that runs it (the catalog's connection stays
in its thread).
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmi_desktop.core.errors import Cancelled, UserInputError
from gmi_desktop.core.progress import CancelFn, Progress, run
from gmi_desktop.services.library import Library
from gmi_desktop.services.watch import LibraryWatcher
from gmi_desktop.store.atomic import atomic_write_bytes
from gmi_desktop.store.hashing import StatKey, stat_key

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
RESULT_SUFFIX = ".gmi.json"
RESULT_FORMAT = "gmi-identification/1"
USABLE_STATES = ("coarse", "ready")


@dataclass(frozen=True)
class Notice:
    """``kind``: "queued", "usable", "failed", "removed", "identified", "problem", "info"."""

    kind: str
    message: str
    path: Path | None = None
    data: Any = None


def result_path(image: Path) -> Path:
    return image.with_name(image.name + RESULT_SUFFIX)


def jsonable(value: Any) -> Any:
    """Dataclasses (their shown fields: one left out of the repr, such as an identification's
    reusable ranking state, is internal), paths, tuples and numpy scalars as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if getattr(value, "ndim", None) == 0:  # numpy scalar
        return value.item()
    return str(value)


def _key_json(key: StatKey) -> dict:
    return {"size": key[2], "mtime_ns": key[3]}


def result_is_current(image: Path, key: StatKey) -> bool:
    """True when ``<image>.gmi.json`` was made from this very file (same size and time)."""
    try:
        data = json.loads(result_path(image).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("image", {}).get("stat") == _key_json(key)


class ImageFolder:
    """New images in one folder (not its subfolders), each handed out once it stopped changing
    for ``stable_s``. Listing the folder on every poll keeps this free of an observer thread."""

    def __init__(self, folder: Path, *, stable_s: float = 2.0, clock: Callable[[], float] = time.monotonic):
        self.folder = Path(folder)
        self.stable_s = stable_s
        self.clock = clock
        self._changing: dict[Path, tuple[StatKey, float]] = {}
        self._done: dict[Path, StatKey] = {}

    def done(self, image: Path, key: StatKey) -> None:
        self._done[image] = key

    def ready(self) -> list[tuple[Path, StatKey]]:
        now = self.clock()
        found: list[tuple[Path, StatKey]] = []
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return []
        present = set()
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            try:
                if not entry.is_file():
                    continue
                key = stat_key(os.stat(entry.path))
            except OSError:
                continue
            path = Path(entry.path)
            present.add(path)
            if self._done.get(path) == key:
                continue
            if result_is_current(path, key):
                self._done[path] = key
                continue
            seen = self._changing.get(path)
            if seen is None or seen[0] != key:
                self._changing[path] = (key, now)
            elif now - seen[1] >= self.stable_s:
                found.append((path, key))
        for gone in set(self._changing) - present:
            del self._changing[gone]
        for gone in set(self._done) - present:
            del self._done[gone]
        return sorted(found)


class WatchMode:
    """Library watcher + spec builder (+ images folder and identifier). See the module docstring.

    ``builder``: a :class:`~gmi_desktop.services.specs.SpecBuilder` (or None: watch only);
    ``identifier``: an :class:`~gmi_desktop.services.identify.Identifier`, needed with
    ``images_dir``; ``catch_up``: also build the specifications still missing for models that
    were there before (new arrivals always go first); ``quick``: coarse specifications only.
    """

    def __init__(self, library: Library, builder: Any = None, *, identifier: Any = None,
                 images_dir: Path | None = None, catch_up: bool = True, quick: bool = False,
                 debounce_s: float = 1.5, stable_s: float = 2.0, poll_interval_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, observer_factory: Callable[[], Any] | None = None,
                 on_notice: Callable[[Notice], None] | None = None):
        if images_dir is not None and identifier is None:
            raise ValueError("an images folder needs an identifier")
        options: dict[str, Any] = {"observer_factory": observer_factory} if observer_factory else {}
        self.library = library
        self.builder = builder
        self.identifier = identifier
        self.catch_up = catch_up
        self.quick = quick
        self.on_notice = on_notice
        self.notices: deque[Notice] = deque(maxlen=1000)  # the latest, for a face to show
        self.queued: list[str] = []  # SHA-256 of new or changed models, in arrival order
        self.watcher = LibraryWatcher(library, debounce_s=debounce_s, stable_s=stable_s,
                                      poll_interval_s=poll_interval_s, clock=clock, on_event=self._on_watch_event, **options)
        self.images = ImageFolder(images_dir, stable_s=stable_s, clock=clock) if images_dir is not None else None
        self._job: Generator[Progress, None, Any] | None = None
        self._job_for: tuple[str, ...] | None = None
        self._want_build = builder is not None and catch_up
        self._usable_told: set[tuple[str, str]] = set()
        self._cancel: CancelFn | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, scan: bool = True) -> str:
        """Start watching; with ``scan``, first catch up with what changed while nobody watched."""
        if scan:
            summary = run(self.library.scan(hashing=True, cancel=self._cancel))
            self._notify(Notice("info", f"library: {summary.seen} files, {summary.probed} new or changed"))
            for problem in summary.problems:
                self._notify(Notice("problem", f"{problem.path}: {problem.reason}", problem.path))
        mode = self.watcher.start()
        where = ", ".join(os.fspath(f) for f in self.watcher.folders()) or "no library folder"
        self._notify(Notice("info", f"watching {where} ({mode})"))
        if self.images is not None:
            self._notify(Notice("info", f"identifying new images in {self.images.folder}"))
        return mode

    def stop(self) -> None:
        """Stop the build between images (its progress stays on disk) and the watcher."""
        self._close_job()
        self.watcher.stop()

    def run(self, stop: threading.Event, tick_s: float = 0.25, scan: bool = True) -> None:
        """Start, then work until ``stop`` is set; always stops cleanly."""
        self._cancel = stop.is_set
        try:
            self.start(scan)
            while not stop.is_set():
                if not self.poll():
                    stop.wait(tick_s)
        except Cancelled:
            pass
        finally:
            self.stop()

    # -- one round of work ------------------------------------------------------------------------
    def poll(self) -> bool:
        """Look at what changed, identify the images that are ready, advance the build by one
        event. Returns True when there is more work right now (call again without waiting)."""
        self.watcher.poll()
        if self.images is not None:
            for image, key in self.images.ready():
                self._identify(image, key)
        return self._advance_build()

    def _on_watch_event(self, event: Progress) -> None:
        """A watcher event (``stage`` "updated", "removed", "problem", "fallback", ...; ``item`` the
        path, ``message`` the detail)."""
        path = Path(event.item) if event.item else None
        if event.stage == "updated" and path is not None:
            record = self.library.catalog.get(path)
            if record is None or record.status != "ok" or not record.sha256 or self.builder is None:
                return
            if record.sha256 in self.queued:
                return
            status = self.builder.statuses().get(record.sha256)
            if status is not None and status.state in ("ready", "skipped"):
                return  # a move or another copy of a model whose specification is complete
            self.queued.append(record.sha256)
            self._want_build = True
            self._notify(Notice("queued", f"{record.name}: queued for its specification", path, record.sha256))
        elif event.stage == "removed":
            self._notify(Notice("removed", f"{path}: gone (kept in the catalog as missing)", path))
        elif event.stage in ("problem", "fallback"):
            where = f"{path}: " if path else ""
            self._notify(Notice("problem", f"{where}{event.message}", path))

    # -- building ---------------------------------------------------------------------------------
    def _advance_build(self) -> bool:
        if self.builder is None:
            return False
        wanted = tuple(self.queued)
        if self._job is not None and wanted != self._job_for:
            self._close_job()  # more models arrived: start again with them first (resumes from disk)
            self._want_build = True
        if self._job is None:
            if not self._want_build:
                return False
            self._want_build = False
            models = None if self.catch_up else list(wanted)
            if models == []:
                return False
            self._job = self.builder.build(models, quick=self.quick, cancel=self._cancel, first=list(wanted))
            self._job_for = wanted
        try:
            event = next(self._job)
        except StopIteration:
            self._job = None
            self.queued = [s for s in self.queued if s not in self._job_for]  # built (or failed): no longer new
            return False
        except UserInputError as exc:
            self._job = None
            self._notify(Notice("problem", f"specification build: {exc}"))
            return False
        self._on_build_event(event)
        return True

    def _on_build_event(self, event: Progress) -> None:
        status = event.data
        state = getattr(status, "state", None)
        if state is None:
            return
        if event.stage == "failed" or state == "failed":
            self._notify(Notice("failed", f"{status.name}: specification failed: {status.reason}", None, status))
        elif event.stage == "saved" and state in USABLE_STATES and (status.sha256, state) not in self._usable_told:
            self._usable_told.add((status.sha256, state))
            how = "complete" if state == "ready" else f"coarse, {status.images_done}/{status.images_total} images"
            self._notify(Notice("usable", f"{status.name}: specification usable ({how})", None, status))

    def _close_job(self) -> None:
        if self._job is not None:
            self._job.close()
            self._job = None

    # -- images -----------------------------------------------------------------------------------
    def _identify(self, image: Path, key: StatKey) -> None:
        try:
            result = run(self.identifier.identify([image], cancel=self._cancel))
        except UserInputError as exc:  # not an image after all, truncated...: again when it changes
            self.images.done(image, key)
            self._notify(Notice("problem", f"{image}: {exc.reason}", image))
            return
        try:
            now_key = stat_key(os.stat(image))
        except OSError:
            return  # gone meanwhile: no result for a file that is not there
        if now_key != key:
            return  # changed while we looked: it is looked at again once stable
        record = {"format": RESULT_FORMAT, "image": {"path": os.fspath(image), "stat": _key_json(key)},
                  "identification": jsonable(result)}
        atomic_write_bytes(result_path(image), json.dumps(record, indent=1, ensure_ascii=False).encode("utf-8"))
        self.images.done(image, key)
        best = result.ranking[0].name if getattr(result, "ranking", None) else "no model ranked"
        self._notify(Notice("identified", f"{image.name}: best model {best}", image, result))

    def _notify(self, notice: Notice) -> None:
        self.notices.append(notice)
        if self.on_notice is not None:
            self.on_notice(notice)

