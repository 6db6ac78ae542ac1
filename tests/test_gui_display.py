"""High-DPI and palette: the window paints at twice the pixels under QT_SCALE_FACTOR=2 with sharp
thumbnails, and the results follow the application palette (no hard-coded light colours)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtGui import QColor, QImage, QPalette  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from gmi_desktop.gui.results import ResultsView  # noqa: E402
from gmi_desktop.services.identify_types import Identification, RankedModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys
from pathlib import Path
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QApplication
from gmi_desktop.gui.backend import Backend
from gmi_desktop.gui.main_window import MainWindow
from gmi_desktop.gui.query import THUMB
from gmi_desktop.store.settings import Settings

app = QApplication([])
image = QImage(400, 300, QImage.Format_RGB888)
image.fill(0x3366AA)
reference = Path(sys.argv[1]) / "reference.png"
image.save(str(reference))
window = MainWindow(Backend(Settings()), state_path=Path(sys.argv[1]) / "window.ini")
window.resize(900, 640)
window.show()
window.query.show_images([reference])
app.processEvents()
shot = window.grab()
thumbs = [l.pixmap() for l in window.query.findChildren(type(window.status_line)) if not l.pixmap().isNull()]
painted = shot.toImage()
print(json.dumps({"ratio": app.devicePixelRatio(), "shot_ratio": shot.devicePixelRatio(),
                  "shot": [shot.width(), shot.height()], "window": [window.width(), window.height()],
                  "colours": len({painted.pixel(x, y) for x in range(0, painted.width(), 7) for y in range(0, painted.height(), 7)}),
                  "thumbs": [[t.width(), t.height(), t.devicePixelRatio()] for t in thumbs], "THUMB": THUMB}))
window.shutdown(10)
"""


def test_window_paints_at_scale_factor_two_with_sharp_thumbnails(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QT_SCALE_FACTOR": "2", "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["ratio"] == 2.0 and got["shot_ratio"] == 2.0
    assert got["shot"] == [2 * got["window"][0], 2 * got["window"][1]]
    assert got["colours"] > 5  # something was painted, not a blank buffer
    assert got["thumbs"], "the query thumbnail is missing"
    for width, height, ratio in got["thumbs"]:  # read at device pixels: 80 logical = 160 physical
        assert ratio == 2.0 and width == 2 * got["THUMB"] and height == round(2 * got["THUMB"] * 300 / 400)


def _colours(image: QImage) -> Counter:
    return Counter(image.pixelColor(x, y).name() for x in range(image.width()) for y in range(image.height()))


def _lightness(name: str) -> int:
    return QColor(name).lightness()


def test_results_follow_a_dark_palette(qtbot):
    app = QApplication.instance()
    view = ResultsView()
    qtbot.addWidget(view)
    view.resize(900, 300)
    view.show()
    models = tuple(RankedModel(i + 1, f"{i:064x}", f"model-{i}", Path(f"/m/{i}.safetensors"), "sd1", 0.1 * (i + 1), 1.0)
                   for i in range(3))
    view.show_identification(Identification((), "a red house", "user", "proposal", models, ()))
    bar = view.table.cellWidget(1, 2)  # a half-full score bar: groove and chunk
    light_bar, light_table = _colours(bar.grab().toImage()), _colours(view.table.viewport().grab().toImage())
    original = app.palette()
    dark = QPalette(original)
    for role, colour in ((QPalette.Window, "#202124"), (QPalette.Base, "#181818"), (QPalette.AlternateBase, "#262626"),
                         (QPalette.Text, "#e8e8e8"), (QPalette.WindowText, "#e8e8e8"), (QPalette.Button, "#2a2a2a"),
                         (QPalette.ButtonText, "#e8e8e8"), (QPalette.Highlight, "#3d7bd9"),
                         (QPalette.HighlightedText, "#ffffff")):
        dark.setColor(role, QColor(colour))
    app.setPalette(dark)
    try:
        qtbot.wait(10)
        dark_bar, dark_table = _colours(bar.grab().toImage()), _colours(view.table.viewport().grab().toImage())
    finally:
        app.setPalette(original)
    # the most common colour (the bar's groove, the table's background) follows the palette's Base
    assert _lightness(light_bar.most_common(1)[0][0]) > 200 and _lightness(light_table.most_common(1)[0][0]) > 200
    assert dark_bar.most_common(1)[0][0] == "#181818" and dark_table.most_common(1)[0][0] == "#181818"
    # light pixels left in the dark bar are only its text (drawn in the palette's light text colours)
    assert sum(n for c, n in dark_bar.items() if _lightness(c) > 200) < 0.1 * sum(dark_bar.values())
    assert "#3d7bd9" in dark_table  # the selected row uses the palette's highlight
