"""Where the application keeps things: platformdirs locations with ``GMI_*`` overrides.

``GMI_DATA_DIR`` (catalog, specifications), ``GMI_CONFIG_DIR`` (settings.toml) and
``GMI_CACHE_DIR`` (downloaded weights, interrogator label caches, previews) redirect everything,
for tests and portable installs. Directories are created on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "gmi-desktop"
APP_AUTHOR = "gmi"


def _resolve(env: str, kind: str) -> Path:
    override = os.environ.get(env)
    if override:
        path = Path(override).expanduser()
    else:
        import platformdirs

        path = Path(getattr(platformdirs, f"user_{kind}_dir")(APP_NAME, APP_AUTHOR))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    return _resolve("GMI_DATA_DIR", "data")


def config_dir() -> Path:
    return _resolve("GMI_CONFIG_DIR", "config")


def cache_dir() -> Path:
    return _resolve("GMI_CACHE_DIR", "cache")


def specs_dir() -> Path:
    path = data_dir() / "specs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def catalog_path() -> Path:
    return data_dir() / "catalog.sqlite3"


def settings_path() -> Path:
    return config_dir() / "settings.toml"
