"""The real main window on a real catalog (no models needed): library panel, drops, prompt
debounce, settings, geometry, first run, the entry command."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QMimeData, QUrl  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402

from gmi_desktop.gui.app import NO_DISPLAY, display_problem  # noqa: E402
from gmi_desktop.gui.backend import Backend  # noqa: E402
from gmi_desktop.gui.drops import MAX_QUERY_IMAGES, check_drop  # noqa: E402
from gmi_desktop.gui.main_window import MainWindow  # noqa: E402
from gmi_desktop.store.settings import Settings, load_settings  # noqa: E402
from tests.support.library_files import write_checkpoint, write_lora  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "diffusers", "open_clip", "transformers")


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width`` x ``height`` (no pixel data: what a header read sees)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def real_png(path: Path, size: int = 32) -> Path:
    image = QImage(size, size, QImage.Format_RGB888)
    image.fill(0x3366AA)
    assert image.save(str(path), "PNG")
    return path


@pytest.fixture
def make_window(qtbot, tmp_path):
    made = []

    def make(settings: Settings | None = None, *, start: bool = True, **backend_kw) -> MainWindow:
        backend = Backend(settings or Settings(), scan_workers=1, **backend_kw)
        window = MainWindow(backend, state_path=tmp_path / "window.ini")
        window.ask = lambda title, text: True
        qtbot.addWidget(window)
        made.append(window)
        window.show()
        if start:
            window.start()
        return window

    yield make
    for window in made:
        window.shutdown(30)


def test_entry_module_imports_no_heavy_library():
    code = ("import sys, gmi_desktop.gui.app, gmi_desktop.gui.main_window; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_no_display_is_one_line(tmp_path):
    assert display_problem({}, "linux") == NO_DISPLAY
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, "linux") is None
    assert display_problem({}, "win32") is None
    env = {k: v for k, v in os.environ.items() if k not in {"DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"}}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-m", "gmi_desktop", "gui"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"gmi-desktop: error: {NO_DISPLAY}"]
    assert proc.stdout == ""


def test_library_panel_from_a_real_scan(qtbot, make_window, tmp_path):
    folder = tmp_path / "models"
    write_checkpoint(folder / "alpha.safetensors", seed=1)
    write_checkpoint(folder / "beta.safetensors", "sdxl", seed=2)
    write_lora(folder / "style-lora.safetensors")
    (folder / "copy").mkdir()
    (folder / "copy" / "alpha-copy.safetensors").write_bytes((folder / "alpha.safetensors").read_bytes())
    window = make_window(Settings(library_folders=(str(folder),)))
    window.rescan()
    panel = window.library
    qtbot.waitUntil(lambda: panel.status_of("alpha-copy") == "duplicate of alpha", timeout=60000)
    assert sorted(panel.visible_names()) == ["alpha", "alpha-copy", "beta", "style-lora"]
    assert panel.status_of("alpha-copy") == "duplicate of alpha"
    assert panel.status_of("style-lora").startswith("skipped")
    row = next(r for r in panel.model.rows if r.name == "beta")
    assert row.family == "SDXL" and len(row.autov2) == 10
    panel.filter.setText("bet")
    assert panel.visible_names() == ["beta"]
    panel.filter.setText("")
    panel.family.setCurrentIndex(panel.family.findData("sdxl"))
    assert panel.visible_names() == ["beta"]
    panel.family.setCurrentIndex(panel.family.findData("other"))
    assert panel.visible_names() == ["style-lora"]


def test_every_bad_drop_has_its_message(qtbot, make_window, tmp_path):
    window = make_window()
    folder = tmp_path / "a-folder"
    folder.mkdir()
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n%%EOF\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    huge = png_header(tmp_path / "huge.png", 40000, 40000)
    assert "image is too large (12000 x 12000 pixels)" in check_drop([str(png_header(tmp_path / "big.png", 12000, 12000))]).message()
    many = [str(real_png(tmp_path / "one.png"))] * 500
    cases = {
        str(folder): "a folder, not an image",
        str(pdf): "a PDF document, not an image",
        str(empty): "an empty file (0 bytes)",
        str(huge): "image is too large",
        "https://example.com/cat.png": "a web address, not a file",
    }
    for item, expected in cases.items():
        mime = QMimeData()
        url = QUrl(item) if item.startswith("http") else QUrl.fromLocalFile(item)
        mime.setUrls([url])
        window.query.take_mime(mime)
        assert expected in window.query.message.text(), (item, window.query.message.text())
        assert window.query_images == []
    window.query.items_given.emit(many)
    assert "500 files at once" in window.query.message.text()
    assert window.query_images == []
    assert check_drop([str(tmp_path / "nope.png")]).problems == [f"{tmp_path / 'nope.png'}: no such file "
                                                                 "(use a PNG, JPEG or WebP image)"]
    assert len(check_drop([str(real_png(tmp_path / f"i{i}.png")) for i in range(MAX_QUERY_IMAGES)]).images) == MAX_QUERY_IMAGES


def test_pasted_image_becomes_a_query_file(qtbot, make_window, tmp_path):
    window = make_window()
    seen = []
    window.query.items_given.connect(seen.append)
    mime = QMimeData()
    image = QImage(20, 10, QImage.Format_RGB888)
    image.fill(0x102030)
    mime.setImageData(image)
    window.query.take_mime(mime)
    assert len(seen) == 1 and len(seen[0]) == 1
    assert QImage(seen[0][0]).size().width() == 20


def test_prompt_edits_are_debounced(qtbot, make_window):
    window = make_window()
    bar = window.prompt
    bar.show_prompt("a cat", "interrogator")
    fired = []
    bar.prompt_edited.connect(fired.append)
    bar.edit.setFocus()
    for char in " on a sofa":
        qtbot.keyClick(bar.edit, char)
    assert fired == []
    qtbot.waitUntil(lambda: fired == ["a cat on a sofa"], timeout=5000)
    qtbot.keyClick(bar.edit, "!")
    qtbot.keyClick(bar.edit, "\r")  # Enter re-ranks at once
    assert fired[-1] == "a cat on a sofa!"
    qtbot.wait(bar.timer.interval() + 100)
    assert fired == ["a cat on a sofa", "a cat on a sofa!"]


def test_settings_dialog_saves_and_warns(qtbot, make_window):
    from gmi_desktop.gui.settings_dialog import SettingsDialog

    window = make_window()
    dialog = SettingsDialog(window.backend.settings, window, built_specs=7)
    qtbot.addWidget(dialog)
    saved = []
    dialog.settings_saved.connect(saved.append)
    dialog.set_value("steps", 12)
    assert "rebuilds the 7 specifications" in dialog.warning.text()
    dialog.set_value("low_vram", True)
    dialog.set_value("library_folders", ("/a", "/b"))
    dialog.save()
    assert saved and saved[0].steps == 12 and saved[0].low_vram is True
    assert load_settings() == saved[0]
    assert load_settings().library_folders == ("/a", "/b")
    dialog2 = SettingsDialog(load_settings(), window)
    qtbot.addWidget(dialog2)
    dialog2.set_value("device", "")
    dialog2.set_value("steps", 12)
    assert dialog2.changes() == {"device": ""}


def test_geometry_and_splitters_are_restored(qtbot, tmp_path):
    state = tmp_path / "window.ini"
    first = MainWindow(Backend(Settings()), state_path=state)
    qtbot.addWidget(first)
    first.show()
    first.resize(720, 560)  # the offscreen screen is 800 x 800
    qtbot.waitUntil(lambda: first.width() == 720, timeout=5000)
    first.splitter.setSizes([220, 480])
    sizes = first.splitter.sizes()
    first.close()
    second = MainWindow(Backend(Settings()), state_path=state)
    qtbot.addWidget(second)
    second.show()
    qtbot.waitUntil(lambda: second.width() == 720 and second.height() == 560, timeout=5000)
    assert second.splitter.sizes() == sizes
    second.shutdown()


def test_first_run_offers_folders_and_demo(qtbot, make_window, tmp_path, monkeypatch):
    from gmi_desktop.gui.first_run import FirstRunDialog, known_installs

    home = tmp_path / "home"
    (home / "ComfyUI").mkdir(parents=True)
    (home / "stable-diffusion-webui").mkdir()
    assert [ui for ui, _ in known_installs(home)] == ["AUTOMATIC1111", "ComfyUI"]
    window = make_window(Settings(allow_downloads=False))
    qtbot.waitUntil(lambda: bool(getattr(window, "first_run", None)) and window.first_run.isVisible(),
                    timeout=30000)
    dialog = FirstRunDialog(Settings(allow_downloads=False), window, home=home)
    qtbot.addWidget(dialog)
    assert dialog.weights_missing and "Downloads are off" in dialog.weights.text()
    assert dialog.folders() == [str(home / "stable-diffusion-webui"), str(home / "ComfyUI")]
    assert dialog.demo_button.isVisible() is False or dialog.demo_button.text() == "Try the demo library"
    online = FirstRunDialog(Settings(), window, home=home)
    qtbot.addWidget(online)
    assert not online.weights_missing and "downloaded once" in online.weights.text()
    window.first_run.reject()


def test_builder_bar_states(qtbot, make_window):
    window = make_window()
    bar = window.builder
    assert bar.start.isEnabled() and not bar.pause.isEnabled()
    bar.set_state("running")
    assert not bar.start.isEnabled() and bar.pause.isEnabled() and bar.cancel.isEnabled()
    bar.set_state("paused")
    assert bar.pause.text() == "Resume"
    bar.set_state("done", "3 images at 1.50 images/s")
    assert "1.50 images/s" in bar.line.text()


def test_keyboard_paste_and_tab_order(qtbot, make_window, tmp_path):
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication

    from PySide6.QtWidgets import QApplication

    window = make_window(start=False)  # started, an empty library opens the first-run dialog, which takes the focus
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=5000)
    seen = []
    window.query.items_given.connect(seen.append)
    window.query.setFocus()
    qtbot.waitUntil(lambda: window.query.hasFocus(), timeout=5000)
    QGuiApplication.clipboard().setText(str(real_png(tmp_path / "clip.png")))
    qtbot.keyClick(window.query, Qt.Key_V, Qt.ControlModifier)
    assert seen == [[str(tmp_path / "clip.png")]]
    window.prompt.show_prompt("a cat", "interrogator")  # the prompt field is enabled once there is a query
    window.query.setFocus()
    order = []
    for _ in range(40):  # Tab through the window from the drop area
        qtbot.keyClick(QApplication.focusWidget(), Qt.Key_Tab)
        order.append(QApplication.focusWidget())
        if order[-1] is window.results.table:
            break
    assert window.prompt.edit in order and order[-1] is window.results.table
    assert order.index(window.prompt.edit) < order.index(window.results.table)


def test_status_wording_and_live_updates(qtbot, make_window):
    from types import SimpleNamespace

    from gmi_desktop.gui.rows import LibraryRow, spec_text

    status = lambda state, done=0, total=0, reason="": SimpleNamespace(  # noqa: E731
        sha256="abc", state=state, images_done=done, images_total=total, reason=reason)
    assert spec_text(status("building", 3, 11)) == ("building", "building 3 of 11")
    assert spec_text(status("coarse", 11, 55)) == ("coarse", "coarse spec (11 of 55 images)")
    assert spec_text(status("failed", reason="out of memory")) == ("failed", "failed: out of memory")
    assert spec_text(status("ready", 55, 55)) == ("ready", "ready")
    window = make_window()
    model = window.library.model
    model.set_rows([LibraryRow("abc", Path("/m/a.safetensors"), "a", "SD 1.x", "sd1", "0123456789", None, "queued", "queued"),
                    LibraryRow("abc", Path("/m/b.safetensors"), "b", "SD 1.x", "sd1", "0123456789", None,
                               "duplicate of a", "duplicate")])
    model.update_spec(status("building", 2, 11))
    assert window.library.status_of("a") == "building 2 of 11"
    assert window.library.status_of("b") == "duplicate of a"
