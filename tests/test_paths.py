"""store/paths.py: platformdirs by default, portable mode beside the app, GMI_* env vars first."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gmi_desktop.store import paths

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_env(monkeypatch):
    for key in ("GMI_DATA_DIR", "GMI_CONFIG_DIR", "GMI_CACHE_DIR"):
        monkeypatch.delenv(key)


def test_app_root_is_the_checkout_or_beside_a_frozen_executable(monkeypatch, tmp_path):
    assert paths.app_root() == ROOT and (ROOT / "specs_cache").is_dir()
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "GMI Desktop.exe"))
    assert paths.app_root() == tmp_path


def test_portable_marker_puts_everything_beside_the_app(no_env, monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "app_root", lambda: tmp_path)
    assert paths.portable_root() is None
    assert not paths.data_dir().is_relative_to(tmp_path)  # platformdirs (XDG_* point into a temp dir)
    (tmp_path / paths.PORTABLE_MARKER).write_text("")
    assert paths.portable_root() == tmp_path
    where = paths.locations()
    assert where["data"] == tmp_path / "data" and where["config"] == tmp_path / "config"
    assert where["cache"] == tmp_path / "cache" and where["specifications"] == tmp_path / "specs_cache"
    assert paths.catalog_path() == tmp_path / "data" / "catalog.sqlite3"
    assert paths.settings_path() == tmp_path / "config" / "settings.toml"
    assert all(p.is_dir() for name, p in where.items() if name != "settings file")


def test_env_vars_win_over_portable_mode(no_env, monkeypatch, tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    (app / paths.PORTABLE_MARKER).write_text("portable")
    monkeypatch.setattr(paths, "app_root", lambda: app)
    monkeypatch.setenv("GMI_DATA_DIR", str(tmp_path / "elsewhere"))
    assert paths.data_dir() == tmp_path / "elsewhere"
    assert paths.specs_dir() == tmp_path / "elsewhere" / "specs"
    assert paths.config_dir() == app / "config" and paths.cache_dir() == app / "cache"
