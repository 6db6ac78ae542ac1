"""Where the application keeps things: platformdirs locations, portable mode, ``GMI_*`` overrides.

In order, first match wins, for each location on its own:

1. ``GMI_DATA_DIR`` (catalog, specifications), ``GMI_CONFIG_DIR`` (settings.toml) and
   ``GMI_CACHE_DIR`` (downloaded weights, interrogator label caches, previews, the demo library):
   tests and installers redirect everything with them.
2. **Portable mode**: a file named ``portable.txt`` beside the app (a frozen app: beside its
   executable; a checkout or an unpacked source tree: the repository root, where ``specs_cache/``
   is). Then everything lives beside it: ``data/``, ``config/``, ``cache/``, and the
   specifications in ``specs_cache/`` (a USB stick carries the app with its specifications).
   The file's content does not matter.
3. The user's platformdirs folders (``~/.local/share/gmi-desktop`` and so on).

Directories are created on first use.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "gmi-desktop"
APP_AUTHOR = "gmi"
PORTABLE_MARKER = "portable.txt"
PORTABLE_FOLDERS = {"data": "data", "config": "config", "cache": "cache"}
PORTABLE_SPECS = "specs_cache"


def app_root() -> Path:
    """The folder the app runs from: beside the executable when frozen, else the repository root."""
    if getattr(sys, "frozen", False):
        return Path(sys.executable).resolve().parent
    return Path(__file__).resolve().parents[2]


def portable_root() -> Path | None:
    """The folder holding ``portable.txt`` when portable mode is on, else None."""
    root = app_root()
    return root if (root / PORTABLE_MARKER).is_file() else None


def _resolve(env: str, kind: str) -> Path:
    override = os.environ.get(env)
    portable = portable_root()
    if override:
        path = Path(override).expanduser()
    elif portable is not None:
        path = portable / PORTABLE_FOLDERS[kind]
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
    """The user's specifications: ``<data>/specs``, or ``specs_cache/`` beside a portable app
    (unless ``GMI_DATA_DIR`` says otherwise)."""
    portable = portable_root()
    if portable is not None and not os.environ.get("GMI_DATA_DIR"):
        path = portable / PORTABLE_SPECS
    else:
        path = data_dir() / "specs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def catalog_path() -> Path:
    return data_dir() / "catalog.sqlite3"


def settings_path() -> Path:
    return config_dir() / "settings.toml"


def locations() -> dict[str, Path]:
    """Every place the app writes to, by name (the settings dialog and ``--help`` texts show them)."""
    return {"data": data_dir(), "specifications": specs_dir(), "config": config_dir(),
            "settings file": settings_path(), "cache": cache_dir()}
