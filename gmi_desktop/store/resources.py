"""Where the application's shipped ``resources/`` folder is, without torch.

``GMI_RESOURCES_DIR`` overrides it (tests and portable installs point it at their own folder);
otherwise the copy shipped inside the package (``importlib.resources``: ``gmi_desktop/resources``
in a wheel), then the source checkout's ``resources/`` beside the package.
"""

from __future__ import annotations

import os
from importlib import resources as _importlib_resources
from pathlib import Path


def resources_dir() -> Path:
    override = os.environ.get("GMI_RESOURCES_DIR")
    if override:
        return Path(override).expanduser()
    packaged = _importlib_resources.files("gmi_desktop") / "resources"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "resources"
