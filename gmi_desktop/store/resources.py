"""Where the application's shipped ``resources/`` folder is, without torch (prompt sets, configs).

The same search as :func:`gmi_desktop.engine.sd_configs.resources_dir`: ``GMI_RESOURCES_DIR``
(tests and portable installs point it at their own folder), then the copy shipped inside the
package (``importlib.resources``: ``gmi_desktop/resources`` in a wheel, or a frozen app's bundle),
then the source checkout's ``resources/`` beside the package. A candidate counts when it holds the
shipped tokenizer (every complete copy does).
"""

from __future__ import annotations

import os
import sys
from importlib import resources as _importlib_resources
from pathlib import Path

from gmi_desktop.core.errors import UserInputError

_MARKER = Path("diffusers") / "clip_tokenizer" / "vocab.json"


def candidates() -> list[Path]:
    found = [Path(str(_importlib_resources.files("gmi_desktop"))) / "resources"]
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        found += [Path(frozen) / "gmi_desktop" / "resources", Path(frozen) / "resources"]
    found.append(Path(__file__).resolve().parents[2] / "resources")
    return found


def resources_dir() -> Path:
    override = os.environ.get("GMI_RESOURCES_DIR")
    if override:
        return Path(override).expanduser()
    looked = candidates()
    for folder in looked:
        if (folder / _MARKER).is_file():
            return folder
    raise UserInputError(looked[0], "the application's resources folder is missing "
                                    f"(looked in {', '.join(str(c) for c in looked)})",
                         "reinstall GMI Desktop, or set GMI_RESOURCES_DIR to a copy of its resources/ folder")
