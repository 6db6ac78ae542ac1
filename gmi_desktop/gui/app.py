"""The desktop app's entry: ``gmi-desktop gui`` (``make run``) and ``python -m gmi_desktop.gui``.

Importing this module loads PySide6, ``core`` and ``store`` only: the window shows before the
catalog is read and long before torch is imported (on the GPU lane, for the first model job).
"""

from __future__ import annotations

import os
import sys

from gmi_desktop.core.errors import UserInputError

NO_DISPLAY = "no display: the GMI Desktop window needs a graphical session (the command line works: gmi-desktop --help)"


def display_problem(env: dict[str, str] | None = None, platform: str | None = None) -> str | None:
    """Why no window can open here, or None. Only Linux/BSD need a display server variable."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if platform.startswith(("linux", "freebsd", "openbsd")):
        if not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY") or env.get("QT_QPA_PLATFORM")):
            return NO_DISPLAY
    return None


def create_window(*, demo: bool = False, backend=None):
    """The main window over the user's settings (shown by the caller)."""
    from gmi_desktop.gui.backend import Backend
    from gmi_desktop.gui.main_window import MainWindow
    from gmi_desktop.store.settings import load_settings

    return MainWindow(backend or Backend(load_settings()), demo=demo)


def run(argv: list[str] | None = None, *, demo: bool = False) -> int:
    """Open the window and run the event loop; returns the exit status."""
    problem = display_problem()
    if problem:
        raise UserInputError(None, problem)
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName("GMI Desktop")
    app.setOrganizationName("gmi")
    window = create_window()
    window.show()
    QTimer.singleShot(0, window.start_demo if demo else window.start)
    return app.exec()
