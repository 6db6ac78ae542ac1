"""First run with the model weights missing: the dialog offers the demo library (the zoo of tiny
random models), and the demo runs the whole flow in the real window — scan, build, drop, rank."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from gmi_desktop.gui.backend import Backend  # noqa: E402
from gmi_desktop.gui.main_window import MainWindow  # noqa: E402
from gmi_desktop.store.settings import Settings  # noqa: E402


def test_first_run_without_weights_offers_the_demo_and_it_completes(qtbot, tmp_path, monkeypatch):
    for name in ("GMI_RESOURCES_DIR", "GMI_DATA_DIR", "GMI_CONFIG_DIR", "GMI_CACHE_DIR"):
        monkeypatch.setenv(name, __import__("os").environ.get(name, ""))  # the demo repoints them; restored after
    backend = Backend(Settings(allow_downloads=False), scan_workers=1,
                      demo_options={"random_models": 2, "groups": 1, "group_size": 2})
    window = MainWindow(backend, state_path=tmp_path / "window.ini")
    window.ask = lambda title, text: True
    qtbot.addWidget(window)
    try:
        window.show()
        window.start()
        qtbot.waitUntil(lambda: bool(getattr(window, "first_run", None)) and window.first_run.isVisible(),
                        timeout=60000)
        dialog = window.first_run
        assert dialog.weights_missing and "Downloads are off" in dialog.weights.text()
        assert "demo" in dialog.demo_button.text().lower()
        dialog.demo_button.click()

        qtbot.waitUntil(lambda: window.demo and len(window.library.model.rows) == 4, timeout=300000)
        assert "DEMO" in window.windowTitle()
        qtbot.waitUntil(lambda: window.builder.state == "done", timeout=600000)
        assert {row.state for row in window.library.model.rows} == {"ready"}

        from gmi_desktop.services.zoo import load_zoo
        from tests.support.image_metadata import base_image

        zoo = load_zoo(__import__("pathlib").Path(window.backend.settings.library_folders[0]).parent)
        query = tmp_path / "query.png"
        base_image(5, (64, 64)).save(query)
        ranked = []
        window.identified.connect(ranked.append)
        window.take_items([str(query)])
        qtbot.waitUntil(lambda: bool(ranked), timeout=300000)
        assert len(ranked[0].ranking) == len(zoo.models) == window.results.table.rowCount()
        assert ranked[0].prompt_source == "interrogator" and window.prompt.edit.text()
    finally:
        window.shutdown(120)
