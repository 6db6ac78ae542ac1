"""Screenshots of the app's main states for the README, taken offscreen on tiny real models.

States: ``empty`` (a fresh window), ``first-run`` (the welcome dialog), ``building`` (the spec
builder running over a small library), ``ranked`` (a dropped image, its ranked models and a
preview beside the reference). Models are tiny random checkpoints of the real SD 1.x layout with
a tiny CLIP (tests/support), so the pictures are noise: they show the window, not a result.

Run: ``QT_QPA_PLATFORM=offscreen python tools/screenshots.py [--out docs/images]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = (1280, 800)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    tmp = Path(tempfile.mkdtemp(prefix="gmi-shots-"))
    for name in ("data", "config", "cache"):
        os.environ[f"GMI_{name.upper()}_DIR"] = str(tmp / name)

    from PySide6.QtGui import QGuiApplication
    from PySide6.QtTest import QTest
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    QGuiApplication.primaryScreen()

    from gmi_desktop.core.progress import run
    from gmi_desktop.gui.backend import Backend
    from gmi_desktop.gui.first_run import FirstRunDialog
    from gmi_desktop.gui.main_window import MainWindow
    from gmi_desktop.store.settings import Settings
    from tests.support.image_metadata import a1111_parameters, base_image, write_png_text
    from tests.support.spec_build import tiny_checkpoints, tiny_probe, tiny_resources, tiny_settings
    from tests.support.tiny_clip import register_tiny_clip

    args.out.mkdir(parents=True, exist_ok=True)

    def wait(condition, timeout_s: float = 600) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise SystemExit("timed out")
            QTest.qWait(20)

    def shoot(widget, name: str) -> None:
        QTest.qWait(100)
        path = args.out / f"gui-{name}.png"
        widget.grab().save(str(path))
        print(path)

    empty = MainWindow(Backend(Settings()), state_path=tmp / "empty.ini")
    empty.ask = lambda title, text: True
    empty.resize(*SIZE)
    empty.show()
    shoot(empty, "empty")
    dialog = FirstRunDialog(Settings(allow_downloads=False), empty)
    dialog.add_folder(Path.home() / "stable-diffusion-webui" / "models" / "Stable-diffusion")
    dialog.show()
    shoot(dialog, "first-run")
    dialog.close()
    empty.shutdown()
    empty.close()

    register_tiny_clip()
    checkpoints = tiny_checkpoints(tmp / "models", (1, 2, 3))
    os.environ["GMI_RESOURCES_DIR"] = str(tiny_resources(tmp / "resources"))
    lib = tmp / "library"
    lib.mkdir()
    for index, path in enumerate(checkpoints):
        (lib / f"tiny-model-{index + 1}.safetensors").symlink_to(path)
    settings = tiny_settings(library_folders=(str(lib),), batch_size=1)
    backend = Backend(settings, probe_fn=tiny_probe)
    run(backend.scan())
    window = MainWindow(backend, state_path=tmp / "window.ini")
    window.ask = lambda title, text: True
    window.resize(*SIZE)
    window.show()
    window.start()
    saved = []
    window.lane.build_progress.connect(lambda e: e.stage == "saved" and saved.append(e))
    window.start_build()
    wait(lambda: len(saved) >= 1)
    shoot(window, "building")
    wait(lambda: len(saved) >= 3)  # a coarse specification for every model is enough to rank
    window.lane.cancel_build()
    wait(lambda: window.builder.state == "cancelled")
    window.reload_library()
    query = write_png_text(tmp / "query.png", {"parameters": a1111_parameters("a photo of a red cat")},
                           base_image(3, (256, 256)))
    window.take_items([str(query)])
    wait(lambda: window.identification is not None)
    window.results.table.selectRow(0)
    window.results.preview_one.click()
    wait(lambda: len(window.previews) == 1)
    shoot(window, "ranked")
    window.shutdown()
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
