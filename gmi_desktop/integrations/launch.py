"""``gmi-desktop open IMAGE...``: what the right-click menu and "Open With" run.

The first launch becomes the primary and starts the window with its images; every later one
hands its images to that window and exits (:mod:`gmi_desktop.integrations.single_instance`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from gmi_desktop.core.errors import GMIError
from gmi_desktop.integrations.single_instance import Primary, claim


def open_images(images: Sequence[str | os.PathLike[str]]) -> int:
    primary = claim(images)
    if primary is None:
        return 0  # the running window has them
    try:
        return run_window(primary)
    finally:
        primary.close()


def run_window(primary: Primary) -> int:
    """Start the desktop window as the primary instance: it shows ``primary.initial_paths`` and
    connects ``primary.paths_received`` (bring to front + identify)."""
    try:
        from gmi_desktop.gui.app import run_primary
    except ImportError as exc:
        raise GMIError(f"the desktop window is not available in this installation ({exc})") from exc
    return run_primary(primary)
