"""Watch mode, driven deterministically: events queued with ``notify`` (or by the real watchdog
observer), time from an injected clock."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from gmi_desktop.core.progress import run
from gmi_desktop.services.library import Library
from gmi_desktop.services.watch import LibraryWatcher
from gmi_desktop.store.catalog import Catalog
from tests.support.library_files import Counting, write_checkpoint, write_lora


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FailingObserver:
    """Stands in for the OS refusing more watches: inotify's ENOSPC, as watchdog raises it from
    ``start()`` when ``fs.inotify.max_user_watches`` is exhausted (not reproducible safely here)."""

    def schedule(self, *args, **kwargs):
        return None

    def start(self):
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    def stop(self):
        return None


@pytest.fixture
def setup(tmp_path):
    folder = tmp_path / "models"
    write_checkpoint(folder / "existing.safetensors", "sd1", seed=1)
    counting = Counting()
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    library = Library(catalog, probe_fn=counting.probe, hash_fn=counting.hash, sidecars_fn=counting.read_sidecars)
    library.add_folder(folder)
    run(library.scan())
    clock = Clock()
    events = []
    watcher = LibraryWatcher(library, debounce_s=1.5, stable_s=2.0, poll_interval_s=60, clock=clock,
                             on_event=events.append)
    yield folder, library, counting, clock, watcher, events
    watcher.stop()
    catalog.close()


def _kinds(events):
    return [(e.stage, Path(e.item).name if e.item else None, e.message) for e in events]


def test_created_file_is_debounced_then_checked_for_stability_then_recorded(setup):
    folder, library, counting, clock, watcher, events = setup
    new = write_checkpoint(folder / "new.safetensors", "sdxl", seed=2)
    for _ in range(5):  # a burst of events for one path is coalesced
        watcher.notify(new, "modified")
        clock.advance(0.5)
    assert watcher.poll() == []  # 0 s since the last event: still inside the debounce window
    clock.advance(1.5)
    assert _kinds(watcher.poll()) == [("deferred", "new.safetensors", "waiting until the file stops changing")]
    clock.advance(2.0)
    assert _kinds(watcher.poll()) == [("updated", "new.safetensors", "ok")]
    record = library.catalog.get(new)
    assert record.family == "sdxl" and record.sha256 == hashlib.sha256(new.read_bytes()).hexdigest()
    assert counting.probes["new.safetensors"] == 1 and counting.hashes["new.safetensors"] == 1
    assert watcher.pending() == []


def test_growing_file_is_deferred_until_stable_and_never_hashed_half_written(setup):
    folder, library, counting, clock, watcher, events = setup
    source = write_checkpoint(folder.parent / "source.safetensors", "sd1", seed=3).read_bytes()
    target = folder / "downloading.safetensors"
    step = len(source) // 4
    for part in range(4):
        with open(target, "ab") as handle:
            handle.write(source[part * step:(part + 1) * step])
        os.utime(target, ns=(time.time_ns(), 10**18 + part))  # distinct mtimes even on coarse clocks
        watcher.notify(target, "modified")
        clock.advance(1.6)  # past the debounce, so stability is what holds it back
        watcher.poll()
        assert library.catalog.get(target) is None
    with open(target, "ab") as handle:
        handle.write(source[4 * step:])
    watcher.notify(target, "modified")
    clock.advance(1.6)
    watcher.poll()
    clock.advance(2.0)
    watcher.poll()
    assert counting.probes["downloading.safetensors"] == 1
    assert counting.hashes["downloading.safetensors"] == 1
    assert library.catalog.get(target).sha256 == hashlib.sha256(source).hexdigest()
    assert [e.stage for e in events].count("deferred") == 1


def test_stalled_partial_copy_is_recorded_incomplete_and_not_hashed(setup):
    folder, library, counting, clock, watcher, events = setup
    source = write_checkpoint(folder.parent / "source.safetensors", "sd1", seed=4).read_bytes()
    target = folder / "stalled.safetensors"
    target.write_bytes(source[: len(source) // 3])
    watcher.notify(target, "created")
    clock.advance(1.6)
    watcher.poll()
    clock.advance(2.0)
    assert _kinds(watcher.poll()) == [("updated", "stalled.safetensors", "incomplete")]
    assert counting.hashes["stalled.safetensors"] == 0


def test_deleted_and_moved_files(setup):
    folder, library, counting, clock, watcher, events = setup
    existing = folder / "existing.safetensors"
    sha = library.catalog.get(existing).sha256
    (folder / "sub").mkdir()
    moved = folder / "sub" / "renamed.safetensors"
    os.rename(existing, moved)
    watcher.notify(existing, "moved", moved)
    clock.advance(1.6)
    watcher.poll()
    clock.advance(2.0)
    watcher.poll()
    assert library.catalog.get(moved).sha256 == sha
    assert library.catalog.get(existing) is None  # the tombstone collapsed into the move
    assert counting.hashes["renamed.safetensors"] == 0
    assert _kinds(events) == [("deferred", "renamed.safetensors", "waiting until the file stops changing"),
                              ("updated", "renamed.safetensors", f"moved from {existing}"),
                              ("updated", "renamed.safetensors", "ok")]
    os.remove(moved)
    watcher.notify(moved, "deleted")
    clock.advance(1.6)
    assert _kinds(watcher.poll()) == [("removed", "renamed.safetensors", "missing")]
    assert library.catalog.get(moved).status == "missing"


def test_folder_copied_in_waits_for_the_files_still_being_written_inside_it(setup):
    """A copier that sets the full size first (Windows Explorer, preallocating downloaders): the
    header is valid at once while the data is still being written. The folder's own event must not
    get its files probed and hashed before their own events have settled."""
    folder, library, counting, clock, watcher, events = setup
    sub = folder / "copied"
    copy = write_checkpoint(sub / "copy.safetensors", "sd1", seed=7)
    watcher.notify(sub, "created")
    watcher.notify(copy, "created")
    for step in range(4):
        clock.advance(1.0)
        with open(copy, "r+b") as handle:  # the copier writes on
            handle.seek(-8, os.SEEK_END)
            handle.write(bytes([step]) * 8)
        watcher.notify(copy, "modified")
        watcher.poll()
        assert counting.probes["copy.safetensors"] == 0 and counting.hashes["copy.safetensors"] == 0
    clock.advance(1.6)
    watcher.poll()
    clock.advance(2.0)
    watcher.poll()
    record = library.catalog.get(copy)
    assert record.status == "ok" and record.sha256 == hashlib.sha256(copy.read_bytes()).hexdigest()
    assert counting.hashes["copy.safetensors"] == 1
    watcher.poll()  # now the folder: everything in it is recorded already, nothing is read again
    assert watcher.pending() == []
    assert counting.probes["copy.safetensors"] == 1 and counting.hashes["copy.safetensors"] == 1


def test_folder_deleted_tombstones_everything_below_it(setup):
    folder, library, counting, clock, watcher, events = setup
    sub = folder / "sdxl"
    write_checkpoint(sub / "a.safetensors", "sdxl", seed=5)
    write_checkpoint(sub / "deeper" / "b.safetensors", "sdxl", seed=6)
    run(library.scan())
    for path in (sub / "deeper" / "b.safetensors", sub / "a.safetensors"):
        path.unlink()
    (sub / "deeper").rmdir()
    sub.rmdir()
    watcher.notify(sub, "deleted")
    clock.advance(1.6)
    removed = sorted(Path(e.item).name for e in watcher.poll() if e.stage == "removed")
    assert removed == ["a.safetensors", "b.safetensors"]
    assert library.catalog.get(folder / "existing.safetensors").status == "ok"


def test_real_observer_reports_created_and_deleted_files(setup):
    folder, library, counting, clock, watcher, events = setup
    assert watcher.start() == "watching"
    new = write_checkpoint(folder / "fresh.safetensors", "sd2", seed=7)
    write_lora(folder / "style_lora.safetensors")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not {new, folder / "style_lora.safetensors"} <= set(watcher.pending()):
        time.sleep(0.05)
    clock.advance(1.6)
    watcher.poll()
    clock.advance(2.0)
    watcher.poll()
    assert library.catalog.get(new).family == "sd2"
    assert library.catalog.get(folder / "style_lora.safetensors").status == "skipped"
    new.unlink()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and new not in watcher.pending():
        time.sleep(0.05)
    clock.advance(1.6)
    watcher.poll()
    assert library.catalog.get(new).status == "missing"


def test_a_watched_folder_that_goes_away_falls_back_to_rescans(setup):
    """inotify ends the watch of a deleted (or unmounted) folder and watchdog stops that emitter
    while the observer lives on: without noticing, a folder that comes back is never watched."""
    import shutil

    folder, library, counting, clock, watcher, events = setup
    assert watcher.start() == "watching"
    emitter = next(iter(watcher._observer.emitters))
    shutil.rmtree(folder)
    emitter.join(10)
    assert not emitter.is_alive()
    watcher.poll()
    assert watcher.mode == "polling"
    assert events[-1].stage == "fallback" and "stopped watching" in events[-1].message
    write_checkpoint(folder / "back.safetensors", "sd1", seed=3)  # the drive is back
    clock.advance(60)
    assert _kinds(watcher.poll())[-1] == ("rescanned", None, "1 files, 1 new or changed")
    assert library.catalog.get(folder / "back.safetensors").status == "ok"


def test_watch_limit_falls_back_to_periodic_rescans_and_says_so(setup):
    folder, library, counting, clock, _, events = setup
    watcher = LibraryWatcher(library, poll_interval_s=60, clock=clock, observer_factory=FailingObserver,
                             on_event=events.append)
    assert watcher.start() == "polling"
    assert events[0].stage == "fallback" and "inotify watch limit reached" in events[0].message
    assert "rescanning every 60 s" in events[0].message
    write_checkpoint(folder / "unwatched.safetensors", "sd1", seed=8)
    clock.advance(30)
    assert watcher.poll() == []
    clock.advance(30)
    assert _kinds(watcher.poll()) == [("rescanned", None, "2 files, 1 new or changed")]
    assert library.catalog.get(folder / "unwatched.safetensors").status == "ok"


def test_watch_limit_hit_by_the_second_folder_releases_the_first_folder_s_watch(tmp_path):
    """The real observer: the first folder's emitter starts (thread, inotify watches), the second
    hits the limit. Falling back must stop the first, or its thread and watches stay for good."""
    from watchdog.observers import Observer
    from watchdog.observers.inotify import InotifyEmitter

    first, second = tmp_path / "a", tmp_path / "b"
    write_checkpoint(first / "one.safetensors", "sd1", seed=1)
    write_checkpoint(second / "two.safetensors", "sd1", seed=2)

    class LimitedEmitter(InotifyEmitter):
        def on_thread_start(self):
            if self.watch.path == os.fspath(second):
                raise OSError(errno.ENOSPC, "inotify watch limit reached")
            super().on_thread_start()

    with Catalog(tmp_path / "catalog.sqlite3") as catalog:
        library = Library(catalog)
        library.add_folder(first)
        library.add_folder(second)
        made = []

        def factory():
            observer = Observer()
            observer._emitter_class = LimitedEmitter
            made.append(observer)
            return observer

        watcher = LibraryWatcher(library, observer_factory=factory)
        assert watcher.start() == "polling"
        emitters = [t for t in threading.enumerate() if isinstance(t, InotifyEmitter)]
        assert emitters == [] and made[0].emitters == set()
        watcher.stop()


def test_observer_dying_later_also_falls_back(setup):
    folder, library, counting, clock, watcher, events = setup
    watcher.start()
    watcher._observer.stop()
    watcher._observer.join(5)
    watcher.poll()
    assert watcher.mode == "polling" and events[-1].stage == "fallback"


def test_sidecar_appearing_later_rereads_the_model_beside_it(setup):
    folder, library, counting, clock, watcher, events = setup
    model = folder / "existing.safetensors"
    assert library.catalog.get(model).download_count is None
    info = folder / "existing.civitai.info"
    info.write_text(json.dumps({"id": 7, "modelId": 3, "name": "v1.0", "baseModel": "SD 1.5",
                                "stats": {"downloadCount": 4242}, "model": {"name": "Existing"}}))
    watcher.notify(info, "created")
    clock.advance(1.6)
    watcher.poll()
    clock.advance(2.0)
    assert _kinds(watcher.poll()) == [("updated", "existing.safetensors", "ok")]
    record = library.catalog.get(model)
    assert record.download_count == 4242 and record.base_model == "SD 1.5"
    assert counting.hashes["existing.safetensors"] == 1  # content unchanged: not hashed again


def test_sidecar_deleted_rereads_the_model_beside_it(setup):
    folder, library, counting, clock, watcher, events = setup
    model = folder / "existing.safetensors"
    info = folder / "existing.civitai.info"
    info.write_text(json.dumps({"stats": {"downloadCount": 4242}, "model": {"name": "Existing"}}))
    run(library.scan())
    assert library.catalog.get(model).name == "Existing"
    info.unlink()
    watcher.notify(info, "deleted")
    clock.advance(1.6)
    assert _kinds(watcher.poll()) == [("updated", "existing.safetensors", "ok")]
    record = library.catalog.get(model)
    assert record.download_count is None and record.name == "existing"


def test_a_file_named_with_bytes_that_are_not_utf8_does_not_break_the_watcher(setup):
    folder, library, counting, clock, watcher, events = setup
    bad = os.fsdecode(os.fsencode(folder) + b"/caf\xe9.safetensors")
    write_checkpoint(Path(bad), "sd1", seed=13)
    watcher.notify(bad, "created")
    good = write_checkpoint(folder / "good.safetensors", "sd1", seed=14)
    watcher.notify(good, "created")
    clock.advance(1.6)
    watcher.poll()
    clock.advance(2.0)
    assert _kinds(watcher.poll()) == [("updated", "good.safetensors", "ok")]
    assert watcher.pending() == []


def test_catalog_busy_or_failing_is_a_problem_event_and_the_file_is_retried(tmp_path):
    """Another program holding the catalog's write lock past the busy timeout (or a full disk) must
    not end watch mode: the watcher says so and tries the file again later."""
    import sqlite3

    folder = tmp_path / "models"
    folder.mkdir()
    db = tmp_path / "catalog.sqlite3"
    with Catalog(db, busy_timeout_s=0.05) as catalog:
        library = Library(catalog)
        library.add_folder(folder)
        clock, events = Clock(), []
        watcher = LibraryWatcher(library, debounce_s=1.5, stable_s=2.0, clock=clock, on_event=events.append)
        new = write_checkpoint(folder / "new.safetensors", "sd1", seed=15)
        watcher.notify(new, "created")
        clock.advance(1.6)
        watcher.poll()
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        clock.advance(2.0)
        happened = _kinds(watcher.poll())
        assert happened[-1][0] == "problem" and "database is locked" in happened[-1][2]
        assert watcher.pending() == [new]
        blocker.execute("ROLLBACK")
        blocker.close()
        for _ in range(3):
            clock.advance(2.0)
            watcher.poll()
        assert library.catalog.get(new).status == "ok" and watcher.pending() == []


def test_run_loop_in_a_worker_thread_with_real_time(tmp_path):
    """The way the app uses it: the watcher (and its catalog connection) lives in a worker thread;
    another connection reads the catalog meanwhile (WAL)."""
    folder = tmp_path / "models"
    folder.mkdir()
    db = tmp_path / "catalog.sqlite3"
    with Catalog(db) as catalog:
        Library(catalog).add_folder(folder)
    stop, started = threading.Event(), threading.Event()
    modes = []

    def worker():
        with Catalog(db) as catalog:
            watcher = LibraryWatcher(Library(catalog), debounce_s=0.05, stable_s=0.1)
            modes.append(watcher.start())
            started.set()
            watcher.run(stop, tick_s=0.02)
            modes.append(watcher.mode)

    thread = threading.Thread(target=worker)
    thread.start()
    assert started.wait(10)
    path = write_checkpoint(folder / "live.safetensors", "sd1", seed=9)
    record = None
    with Catalog(db) as reader:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (record is None or record.sha256 is None):
            time.sleep(0.05)
            record = reader.get(path)
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and modes == ["watching", "stopped"]
    assert record is not None and record.status == "ok"
    assert record.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_written_as_part_file_then_renamed(setup):
    folder, library, counting, clock, watcher, events = setup
    part = folder / "juggernaut.safetensors.part"
    data = write_checkpoint(folder.parent / "src.safetensors", "sdxl", seed=12).read_bytes()
    for piece in (data[: len(data) // 2], data[len(data) // 2:]):
        with open(part, "ab") as handle:
            handle.write(piece)
        watcher.notify(part, "modified")
        clock.advance(0.5)
    final = folder / "juggernaut.safetensors"
    os.rename(part, final)
    watcher.notify(part, "moved", final)
    assert watcher.pending() == [final]  # the .part entry was handed over to the final name
    clock.advance(1.6)
    watcher.poll()
    clock.advance(2.0)
    assert _kinds(watcher.poll()) == [("updated", "juggernaut.safetensors", "ok")]
    assert counting.probes["juggernaut.safetensors.part"] == 0
    assert library.catalog.get(final).sha256 == hashlib.sha256(data).hexdigest()
