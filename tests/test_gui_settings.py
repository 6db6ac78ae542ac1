"""The top-k setting in the results view and the settings dialog; the locations and portable mode
the dialog shows."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from gmi_desktop.gui.backend import Backend  # noqa: E402
from gmi_desktop.gui.main_window import MainWindow  # noqa: E402
from gmi_desktop.gui.settings_dialog import SettingsDialog  # noqa: E402
from gmi_desktop.services.identify_types import Identification, RankedModel  # noqa: E402
from gmi_desktop.store import paths  # noqa: E402
from gmi_desktop.store.settings import Settings, load_settings  # noqa: E402


@pytest.fixture
def window(qtbot, tmp_path):
    made = MainWindow(Backend(Settings(top_k=3), scan_workers=1), state_path=tmp_path / "window.ini")
    qtbot.addWidget(made)
    made.show()
    yield made
    made.shutdown(30)


def ranking(count: int) -> Identification:
    models = tuple(RankedModel(i + 1, f"{i:064x}", f"model-{i}", Path(f"/m/model-{i}.safetensors"), "sd1",
                               0.1 * (i + 1), 1.0) for i in range(count))
    return Identification((), "a red house", "user", "proposal", models, ())


def test_results_show_top_k_and_the_dialog_changes_it(qtbot, window):
    window._identified(ranking(12))
    assert window.results.names() == ["model-0", "model-1", "model-2"]
    dialog = SettingsDialog(window.backend.settings, window)
    qtbot.addWidget(dialog)
    editor = dialog.editors["top_k"][0]
    assert editor.value() == 3 and editor.minimum() == 1
    dialog.set_value("top_k", 0)  # the spin box refuses values under 1
    assert editor.value() == 1
    dialog.set_value("top_k", 5)
    assert dialog.changes() == {"top_k": 5} and dialog.warning.text() == ""  # not part of the recipe
    dialog.settings_saved.connect(window.apply_settings)
    dialog.save()
    assert load_settings().top_k == 5 and window.backend.settings.top_k == 5
    window._identified(ranking(12))
    assert window.results.table.rowCount() == 5


def test_dialog_shows_locations_and_portable_mode(qtbot, window, monkeypatch, tmp_path):
    dialog = SettingsDialog(window.backend.settings, window)
    qtbot.addWidget(dialog)
    text = dialog.where.text()
    assert str(paths.data_dir()) in text and str(paths.specs_dir()) in text and str(paths.cache_dir()) in text
    assert "Portable mode: off" in text and paths.PORTABLE_MARKER in text
    for key in ("GMI_DATA_DIR", "GMI_CONFIG_DIR", "GMI_CACHE_DIR"):
        monkeypatch.delenv(key)
    monkeypatch.setattr(paths, "app_root", lambda: tmp_path)
    (tmp_path / paths.PORTABLE_MARKER).write_text("")
    portable = SettingsDialog(window.backend.settings, window)
    qtbot.addWidget(portable)
    assert "Portable mode: on" in portable.where.text() and str(tmp_path / "specs_cache") in portable.where.text()
