"""Faults the library met on real inputs: stalled preallocated downloads, a scan killed with its
workers running, folders named like model files, headers too large to parse in every worker, an
unplugged library folder, moves counted as gone, catalogs that cannot be opened."""

from __future__ import annotations

import hashlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gmi_desktop.core.errors import CatalogError
from gmi_desktop.core.progress import run
from gmi_desktop.services import library_read
from gmi_desktop.services.library import Library
from gmi_desktop.services.watch import LibraryWatcher
from gmi_desktop.store.catalog import Catalog
from gmi_desktop.store.probe import probe
from tests.support.checkpoint_files import header_bytes
from tests.support.library_files import write_checkpoint, write_lora
from tests.support.privileges import run_without_permission_override

ROOT = Path(__file__).resolve().parents[1]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stalled_download(path: Path, seed: int) -> bytes:
    """A download that reserved its full size, wrote its header and the first third of its data,
    then stalled (aria2's default ``--file-allocation=prealloc``). Returns the finished bytes."""
    write_checkpoint(path, "sd1", seed=seed)
    finished = path.read_bytes()
    cut = probe(path).header_len + (len(finished) - probe(path).header_len) // 3
    with open(path, "r+b") as handle:
        handle.seek(cut)
        handle.write(b"\0" * (len(finished) - cut))
    return finished


def _finish(path: Path, finished: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.write(finished)


def test_a_stalled_preallocated_download_is_not_hashed_until_it_is_written(tmp_path):
    models = tmp_path / "models"
    target = models / "downloading.safetensors"
    finished = _stalled_download(target, seed=3)
    lib = Library(Catalog(tmp_path / "catalog.sqlite3"))
    lib.add_folder(models)
    summary = run(lib.scan())
    record = lib.catalog.get(target)
    assert (record.status, record.sha256) == ("incomplete", None)  # was: ok, with a wrong hash
    assert "zeros" in record.reason and summary.hashed == 0 and summary.problem_count == 1
    again = run(lib.scan())  # nothing changed: still held, and looked at again (not trusted by key)
    assert again.probed == 1 and lib.catalog.get(target).status == "incomplete"
    _finish(target, finished)
    run(lib.scan())
    record = lib.catalog.get(target)
    assert (record.status, record.sha256) == ("ok", _sha(target))


def test_a_download_with_its_aria2_control_file_beside_it_waits_for_it_to_go(tmp_path):
    models = tmp_path / "models"
    target = write_checkpoint(models / "model.safetensors", "sd1", seed=4)  # tail already written
    marker = models / "model.safetensors.aria2"
    marker.write_bytes(b"\0\1aria2 control")
    lib = Library(Catalog(tmp_path / "catalog.sqlite3"))
    lib.add_folder(models)
    run(lib.scan())
    record = lib.catalog.get(target)
    assert (record.status, record.sha256) == ("incomplete", None)
    assert "download in progress (model.safetensors.aria2 beside it)" in record.reason
    marker.unlink()  # aria2 removes it when the download is complete; the file itself is unchanged
    run(lib.scan())
    assert (lib.catalog.get(target).status, lib.catalog.get(target).sha256) == ("ok", _sha(target))


def test_hashing_later_checks_again_that_the_file_is_not_still_being_written(tmp_path):
    models = tmp_path / "models"
    target = write_checkpoint(models / "model.safetensors", "sd1", seed=5)
    lib = Library(Catalog(tmp_path / "catalog.sqlite3"))
    lib.add_folder(models)
    run(lib.scan(hashing=False))
    assert lib.catalog.get(target).status == "ok"
    (models / "model.safetensors.aria2").write_bytes(b"control")  # a re-download started in place
    run(lib.hash_pending())
    assert (lib.catalog.get(target).status, lib.catalog.get(target).sha256) == ("incomplete", None)


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _NoObserver:
    emitters = ()

    def schedule(self, *a, **k):
        pass

    def start(self):
        pass

    def stop(self):
        pass

    def join(self, timeout=None):
        pass

    def is_alive(self):
        return True


def test_watch_mode_holds_a_stalled_download_until_the_writer_finishes(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    lib = Library(Catalog(tmp_path / "catalog.sqlite3"))
    lib.add_folder(models)
    clock = _Clock()
    watcher = LibraryWatcher(lib, debounce_s=1, stable_s=2, clock=clock, observer_factory=_NoObserver)
    watcher.start()
    target = models / "slow.safetensors"
    finished = _stalled_download(target, seed=6)
    watcher.notify(target, "created")
    for _ in range(4):  # the writer pauses for longer than the stability wait
        clock.now += 1.5
        watcher.poll()
    record = lib.catalog.get(target)
    assert (record.status, record.sha256) == ("incomplete", None)
    _finish(target, finished)
    watcher.notify(target, "modified")
    for _ in range(4):
        clock.now += 1.5
        watcher.poll()
    assert (lib.catalog.get(target).status, lib.catalog.get(target).sha256) == ("ok", _sha(target))
    marker = models / "slow.safetensors.aria2"
    marker.write_bytes(b"x")
    watcher.notify(marker, "created")
    for _ in range(4):
        clock.now += 1.5
        watcher.poll()
    assert lib.catalog.get(target).status == "incomplete"  # the marker beside it is a sidecar event
    marker.unlink()
    watcher.notify(marker, "deleted")
    for _ in range(4):
        clock.now += 1.5
        watcher.poll()
    assert lib.catalog.get(target).status == "ok"
    watcher.stop()


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        found |= {int(p) for p in text.split()}
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path(f"/proc/self/task/{os.getpid()}/children").exists(),
                    reason="reads /proc to find the workers")
def test_killing_a_scan_ends_its_workers_and_its_stdout(tmp_path):
    """``kill -9`` mid-probe: the spawn workers (and the resource tracker) must not outlive the scan
    holding its stdout open, or whatever reads ``scan --json`` never sees end-of-file."""
    folder = tmp_path / "many"
    folder.mkdir()
    entries, begin = {}, 0
    for i in range(4000):  # a slow header to parse: the workers are still busy when we kill
        entries[f"model.diffusion_model.block.{i}.weight"] = {"dtype": "F16", "shape": [8],
                                                              "data_offsets": [begin, begin + 16]}
        begin += 16
    raw = header_bytes(entries)
    first = folder / "m0000.safetensors"
    first.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\1" * begin)
    for i in range(1, 1200):  # hard links: 1 200 paths to probe, one file on disk
        os.link(first, folder / f"m{i:04d}.safetensors")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    scan = subprocess.Popen([sys.executable, "-m", "gmi_desktop.cli.main", "scan", "--json", "--no-hash",
                             str(folder)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        workers: set[int] = set()
        while len(workers) < 2 and scan.poll() is None and time.monotonic() < deadline:
            workers = _children(scan.pid)  # the resource tracker and at least one worker
            time.sleep(0.01)
        time.sleep(0.1)
        workers |= _children(scan.pid)
        assert scan.poll() is None and len(workers) >= 2, "the scan ended before its workers were seen"
        scan.send_signal(signal.SIGKILL)  # mid-probe
        scan.wait(10)
        ready, _, _ = select.select([scan.stdout], [], [], 15)
        assert ready and scan.stdout.read() == b"", "stdout did not reach end-of-file"
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in workers if _alive(p)], "workers outlived the killed scan"
    finally:
        for pid in workers if "workers" in locals() else ():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        scan.kill()
        scan.stdout.close()


def test_a_folder_named_like_a_model_file_gets_a_status(tmp_path):
    models = tmp_path / "models"
    (models / "weird.safetensors").mkdir(parents=True)
    (models / "weird.safetensors" / "readme.txt").write_text("unpacked by mistake")
    write_lora(models / "detail.safetensors")
    lib = Library(Catalog(tmp_path / "catalog.sqlite3"))
    lib.add_folder(models)
    summary = run(lib.scan())
    record = lib.catalog.get(models / "weird.safetensors")
    assert record is not None and record.status == "skipped"
    assert record.status_text() == ("skipped: a directory without model_index.json (named like a model "
                                    "file), not a model")
    assert summary.seen == 2
    run(lib.refresh([models / "weird.safetensors"]))  # watch mode lists it the same way
    assert lib.catalog.get(models / "weird.safetensors").status == "skipped"


def test_long_headers_are_parsed_by_the_scanning_process_not_by_every_worker(tmp_path, monkeypatch):
    """A scan's memory must not grow with its workers: a header longer than
    WORKER_HEADER_BYTES is handed back by the worker and parsed here, one at a time."""
    big_meta = {"ss_tag_frequency": "x" * (library_read.WORKER_HEADER_BYTES + 1024)}
    paths = [write_checkpoint(tmp_path / f"m{i}.safetensors", "sd1", seed=30 + i,
                              metadata=big_meta if i % 2 else None) for i in range(6)]
    here = []
    real = library_read.read_one
    monkeypatch.setattr(library_read, "read_one", lambda path, *a, **k: here.append(path.name) or real(path, *a, **k))
    reads = list(library_read.read_many(paths, workers=2, parallel_min=2))
    assert [r[0].status for r in reads] == ["ok"] * 6
    assert sorted(here) == ["m1.safetensors", "m3.safetensors", "m5.safetensors"]
    assert library_read.read_one(paths[1], max_header=library_read.WORKER_HEADER_BYTES) is None


def test_moves_are_not_counted_as_gone_and_attention_files_are_problems(tmp_path):
    models = tmp_path / "models"
    for i in range(3):
        write_checkpoint(models / f"m{i}.safetensors", "sd1", seed=40 + i)
    (models / "old.ckpt").write_bytes(b"\x80\x02}q\x00.")
    lib = Library(Catalog(tmp_path / "catalog.sqlite3"))
    lib.add_folder(models)
    first = run(lib.scan())
    assert first.counts["unsupported"] == 1 and first.problem_count == 1  # the pickle needs attention
    (models / "sub").mkdir()
    os.rename(models / "m0.safetensors", models / "sub" / "m0.safetensors")  # rename
    (models / "other").mkdir()
    (models / "other" / "m1.safetensors").write_bytes((models / "m1.safetensors").read_bytes())  # copy+delete
    os.remove(models / "m1.safetensors")
    os.remove(models / "m2.safetensors")  # really gone
    summary = run(lib.scan())
    assert summary.tombstoned == [models / "m2.safetensors"]
    assert sorted(old.name for old, _ in summary.moved) == ["m0.safetensors", "m1.safetensors"]
    assert "1 gone, 2 moved" in summary.describe()


def test_remove_folder_from_the_command_line(tmp_path, capsys):
    from gmi_desktop.cli.main import main

    keep, drop = tmp_path / "keep", tmp_path / "drop"
    write_checkpoint(keep / "a.safetensors", "sd1", seed=50)
    write_checkpoint(drop / "b.safetensors", "sd1", seed=51)
    assert main(["scan", "--no-hash", str(keep), str(drop)]) == 0
    capsys.readouterr()
    assert main(["remove-folder", str(tmp_path / "nowhere")]) == 2
    assert "not a library folder" in capsys.readouterr().err
    assert main(["remove-folder", str(drop)]) == 0
    assert f"removed library folder: {drop}" in capsys.readouterr().err
    assert main(["scan", "--no-hash"]) == 0
    out = capsys.readouterr().out
    assert "a " in out and "b " not in out.replace("a ", "")
    with Catalog() as catalog:
        assert [r.path for r in catalog.roots()] == [keep]
        assert catalog.get(drop / "b.safetensors") is None


def test_catalog_errors_say_what_to_do_about_their_cause(tmp_path):
    blocker = tmp_path / "data-is-a-file"
    blocker.write_text("")
    with pytest.raises(CatalogError) as info:
        Catalog(blocker / "catalog.sqlite3")
    assert "is a file where a folder should be" in info.value.hint
    folder = tmp_path / "catalog-is-a-folder.sqlite3"
    folder.mkdir()
    with pytest.raises(CatalogError) as info:
        Catalog(folder)
    assert "is a folder where the catalog file should be" in info.value.hint
    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(CatalogError) as info:
        Catalog(damaged)
    assert "damaged" in info.value.hint
    locked_dir = tmp_path / "locked"
    locked_dir.mkdir()
    os.chmod(locked_dir, 0o500)
    hints = tmp_path / "hint.txt"

    def open_denied():
        try:
            Catalog(locked_dir / "catalog.sqlite3")
        except CatalogError as exc:
            hints.write_text(exc.hint)

    try:
        assert run_without_permission_override(open_denied) == 0
    finally:
        os.chmod(locked_dir, 0o700)
    assert hints.read_text().startswith(f"you may not write to {locked_dir}")
    for hint in (hints.read_text(),):
        assert "update GMI Desktop" not in hint
