"""``gmi-desktop open IMAGE...``: what the right-click menu, "Open With" and the desktop entry run.

The first launch becomes the primary and opens the window with its images; every later one hands
its images to that window, which comes to the front and identifies them, and exits
(:mod:`gmi_desktop.integrations.single_instance`). Only the primary imports the GUI.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from gmi_desktop.core.errors import GMIError, UserInputError
from gmi_desktop.integrations.single_instance import Primary, claim


def open_images(images: Sequence[str | os.PathLike[str]]) -> int:
    primary = claim(images)
    if primary is None:
        return 0  # the running window has them
    try:
        return run_window(primary)
    finally:
        primary.close()


def bring_to_front(window: Any) -> None:
    """Un-minimise, raise and activate ``window`` (the window manager may only flash it)."""
    from PySide6.QtCore import Qt

    window.setWindowState((window.windowState() & ~Qt.WindowState.WindowMinimized) | Qt.WindowState.WindowActive)
    window.show()
    window.raise_()
    window.activateWindow()


def connect_window(primary: Primary, window: Any) -> None:
    """Images handed over by later launches (or Finder) bring ``window`` to the front and go
    where dropped files go (``take_items``: checked, then identified; a PDF or a folder gets its
    message); a launch without images only brings the window to the front."""
    def received(paths: list[str]) -> None:
        bring_to_front(window)
        if paths:
            window.take_items(list(paths))

    primary.paths_received.connect(received)


def run_window(primary: Primary) -> int:
    """Open the desktop window as the primary instance and run the event loop."""
    try:
        from gmi_desktop.gui.app import create_window, display_problem
    except ImportError as exc:
        raise GMIError(f"the desktop window is not available in this installation ({exc})") from exc
    problem = display_problem()
    if problem:
        raise UserInputError(None, problem)
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("GMI Desktop")
    app.setOrganizationName("gmi")
    primary.listen()
    primary.watch_file_open_events(app)
    window = create_window()
    connect_window(primary, window)
    window.show()
    QTimer.singleShot(0, window.start)
    if primary.initial_paths:
        QTimer.singleShot(0, lambda: window.take_items(list(primary.initial_paths)))
    return app.exec()
