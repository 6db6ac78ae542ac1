"""Watch mode on real files, the real watchdog observer, the real spec builder on tiny pipelines."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from gmi_desktop.cli.cmd_watch import stop_on_signals
from gmi_desktop.engine.host import ModelHost
from gmi_desktop.services.library import Library
from gmi_desktop.services.specs import SpecBuilder
from gmi_desktop.services.watch_mode import WatchMode
from gmi_desktop.store.catalog import Catalog
from gmi_desktop.store.hashing import iter_hash_file, stat_key
from gmi_desktop.store.resources import resources_dir
from tests.support.spec_build import tiny_checkpoints, tiny_probe, tiny_resources, tiny_settings
from tests.support.tiny_clip import register_tiny_clip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    register_tiny_clip()
    folder = tmp_path_factory.mktemp("tiny")
    (checkpoint,) = tiny_checkpoints(folder, (7,))
    prompts = folder / "prompts"  # ten prompts: a coarse specification is 2 images, a full one 10
    prompts.mkdir()
    shipped = resources_dir() / "prompts"
    default = [line for line in (shipped / "default.txt").read_text().splitlines() if line and not line.startswith("#")]
    (prompts / "default.txt").write_text("\n".join(default[:10]) + "\n")
    shutil.copy(shipped / "evaluation.txt", prompts / "evaluation.txt")
    return checkpoint, tiny_resources(folder / "resources", prompts)


class HashLog:
    """The real hash, recording each call with the file's stat key at that moment."""

    def __init__(self):
        self.calls: list[tuple[Path, tuple]] = []

    def __call__(self, path, **kw):
        self.calls.append((Path(path), stat_key(os.stat(path))))
        return iter_hash_file(path, **kw)


@pytest.fixture
def setup(tiny, tmp_path, monkeypatch):
    checkpoint, resources = tiny
    monkeypatch.setenv("GMI_RESOURCES_DIR", str(resources))
    library_dir = tmp_path / "library"
    library_dir.mkdir()
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    hashes = HashLog()
    library = Library(catalog, probe_fn=tiny_probe, hash_fn=hashes)
    library.add_folder(library_dir)
    settings = tiny_settings()
    builder = SpecBuilder(settings, ModelHost(settings), catalog=catalog, store_dir=tmp_path / "specs")
    yield checkpoint, library_dir, library, builder, hashes
    catalog.close()


def pump(mode: WatchMode, seconds: float, until=None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not mode.poll():
            time.sleep(0.02)
        if until is not None and until():
            return
    assert until is None, "timed out"


def kinds(notices) -> list[str]:
    return [n.kind for n in notices]


def test_a_slow_copy_is_hashed_once_after_it_completes_then_built(setup):
    checkpoint, library_dir, library, builder, hashes = setup
    notices = []
    mode = WatchMode(library, builder, debounce_s=0.2, stable_s=1.0, quick=True, on_notice=notices.append)
    mode.start()
    try:
        data = checkpoint.read_bytes()
        dest = library_dir / "arrived.safetensors"
        chunks = 4
        with open(dest, "wb") as handle:
            for i in range(chunks):  # pauses longer than the debounce, shorter than the settling time
                handle.write(data[i * len(data) // chunks:(i + 1) * len(data) // chunks])
                handle.flush()
                pump(mode, 0.5)
                assert hashes.calls == [], f"hashed while still being copied (chunk {i + 1})"
        final_key = stat_key(os.stat(dest))
        pump(mode, 30, until=lambda: "queued" in kinds(notices))
        assert hashes.calls == [(dest, final_key)]  # once, on the complete file
        sha = hashlib.sha256(data).hexdigest()
        assert library.catalog.get(dest).sha256 == sha
        assert mode.queued == [sha]
        assert builder.statuses()[sha].state in ("queued", "building")
        pump(mode, 300, until=lambda: "usable" in kinds(notices))
        usable = [n for n in notices if n.kind == "usable"]
        assert usable[0].data.sha256 == sha and usable[0].data.state == "coarse"
        assert len(hashes.calls) == 1
    finally:
        mode.stop()


def test_removed_checkpoint_is_tombstoned(setup):
    checkpoint, library_dir, library, builder, _ = setup
    shutil.copy(checkpoint, library_dir / "gone.safetensors")
    notices = []
    mode = WatchMode(library, None, debounce_s=0.1, stable_s=0.2, on_notice=notices.append)
    mode.start()  # the first scan catalogues it
    try:
        assert library.catalog.get(library_dir / "gone.safetensors").status == "ok"
        (library_dir / "gone.safetensors").unlink()
        pump(mode, 30, until=lambda: "removed" in kinds(notices))
        assert library.catalog.get(library_dir / "gone.safetensors").status == "missing"
    finally:
        mode.stop()


def test_stop_mid_build_leaves_nothing_half_written_and_resumes(setup, tmp_path):
    checkpoint, library_dir, library, builder, _ = setup
    shutil.copy(checkpoint, library_dir / "m.safetensors")
    stop = threading.Event()
    seen = []
    mode = WatchMode(library, builder, quick=True)
    original = mode._on_build_event

    def on_build_event(event):  # Ctrl+C arrives while the second batch of images is generated
        seen.append(event.stage)
        if seen.count("generating") == 1:
            stop.set()
        original(event)

    mode._on_build_event = on_build_event
    mode.run(stop, tick_s=0.05)
    assert "generating" in seen and mode.watcher.mode == "stopped"
    specs = tmp_path / "specs"
    assert not [p for p in specs.rglob("*") if p.name.endswith(".tmp")]
    sha = next(iter(builder.statuses()))
    assert builder.statuses()[sha].images_done > 0  # the finished batch was kept
    notices = []
    again = WatchMode(library, builder, quick=True, on_notice=notices.append)
    again.start()
    try:
        pump(again, 300, until=lambda: "usable" in kinds(notices))
    finally:
        again.stop()


def test_sigterm_and_ctrl_c_set_the_stop_event_instead_of_raising():
    stop = threading.Event()
    with stop_on_signals(stop):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        stop.clear()
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.wait(5)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def png_bytes(seed: int) -> bytes:
    """A PNG carrying an A1111 prompt (so identification needs no caption model)."""
    import io

    import numpy as np
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a red house by a lake\nSteps: 2, Sampler: Euler, Seed: 1, Size: 64x64")
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def test_images_folder_each_new_image_identified_once_when_complete(setup, tmp_path):
    import json

    from gmi_desktop.core.progress import run
    from gmi_desktop.services.identify import Identifier

    checkpoint, library_dir, library, builder, _ = setup
    shutil.copy(checkpoint, library_dir / "m.safetensors")
    images = tmp_path / "images"
    images.mkdir()
    notices = []
    identifier = Identifier(builder.settings, builder.host, catalog=library.catalog, store_dir=builder.store_dir)
    mode = WatchMode(library, None, identifier=identifier, images_dir=images, debounce_s=0.1, stable_s=0.6,
                     on_notice=notices.append)
    mode.start()
    try:
        run(builder.build(quick=True))  # the model's (coarse) specification
        sha = next(iter(builder.statuses()))
        data = png_bytes(1)
        image = images / "new render.png"
        with open(image, "wb") as handle:  # arrives in two parts, as a browser download does
            handle.write(data[: len(data) // 2])
            handle.flush()
            pump(mode, 0.4)
            assert not (images / "new render.png.gmi.json").exists()
            handle.write(data[len(data) // 2:])
        (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        (images / "notes.txt").write_text("not an image")
        pump(mode, 120, until=lambda: "identified" in kinds(notices) and "problem" in kinds(notices))
        result = json.loads((images / "new render.png.gmi.json").read_text())
        assert result["format"] == "gmi-identification/1"
        assert result["image"]["stat"] == {"size": len(data), "mtime_ns": os.stat(image).st_mtime_ns}
        found = result["identification"]
        assert found["ranking"][0]["sha256"] == sha
        assert found["pseudo_prompt"] == "a red house by a lake" and found["prompt_source"] == "metadata"
        assert "state" not in found
        assert not (images / "broken.png.gmi.json").exists()
        assert [n.path.name for n in notices if n.kind == "problem"] == ["broken.png"]
        pump(mode, 1.0)
        assert kinds(notices).count("identified") == 1  # once, not on every poll
        assert sorted(p.name for p in images.iterdir()) == ["broken.png", "new render.png",
                                                            "new render.png.gmi.json", "notes.txt"]
    finally:
        mode.stop()
    again = []  # a restart leaves a current result alone
    mode = WatchMode(library, None, identifier=identifier, images_dir=images, stable_s=0.2, on_notice=again.append)
    mode.start(scan=False)
    try:
        pump(mode, 1.0)
        assert "identified" not in kinds(again)
    finally:
        mode.stop()


def test_cli_watch_stops_cleanly_on_sigterm(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    library_dir = tmp_path / "library"
    library_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "gmi_desktop", "watch", str(library_dir), "--no-build"],
                            stderr=subprocess.PIPE, env=env)
    os.set_blocking(proc.stderr.fileno(), False)
    err = b""
    deadline = time.monotonic() + 120
    while b"info: watching" not in err:
        assert time.monotonic() < deadline and proc.poll() is None, err.decode(errors="replace")
        err += proc.stderr.read() or b""
        time.sleep(0.05)
    (library_dir / "notes.txt").write_text("a file appears while watching")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    os.set_blocking(proc.stderr.fileno(), True)
    err += proc.stderr.read()
    assert err.decode().rstrip().endswith("stopped"), err.decode(errors="replace")


def test_a_moved_model_with_a_complete_specification_is_not_queued_again(setup):
    from gmi_desktop.core.progress import run

    checkpoint, library_dir, library, builder, hashes = setup
    shutil.copy(checkpoint, library_dir / "m.safetensors")
    notices = []
    mode = WatchMode(library, builder, debounce_s=0.1, stable_s=0.3, catch_up=False, on_notice=notices.append)
    mode.start()
    try:
        run(builder.build(quick=False))  # complete ("ready")
        (library_dir / "sub").mkdir()
        os.rename(library_dir / "m.safetensors", library_dir / "sub" / "renamed.safetensors")
        pump(mode, 30, until=lambda: library.catalog.get(library_dir / "sub" / "renamed.safetensors") is not None)
        pump(mode, 1.0)
        assert "queued" not in kinds(notices) and mode.queued == []
        assert len(hashes.calls) == 1  # the first scan's; the rename reused it
    finally:
        mode.stop()
