"""Watch-mode notices in the desktop app: a tray message where a system tray exists, otherwise
the :attr:`TrayNotifier.fallback` signal (the window shows it in its status line). Vanilla GNOME
has no tray, so nothing may depend on one.

    notifier = TrayNotifier(window.windowIcon())
    notifier.fallback.connect(window.statusBar().showMessage)
    WatchMode(..., on_notice=notifier.show)      # on the GUI thread (queue it from a worker)
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QSystemTrayIcon

# the notices worth interrupting a person for; the rest only reach the status line
TRAY_KINDS = ("usable", "identified", "failed")


class TrayNotifier(QObject):
    fallback = Signal(str)

    def __init__(self, icon: QIcon | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.tray: QSystemTrayIcon | None = None
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.tray = QSystemTrayIcon(icon or QIcon(), self)
            self.tray.setToolTip("GMI Desktop: watching for new models")
            self.tray.show()

    def show(self, notice: Any) -> bool:
        """Show a :class:`~gmi_desktop.services.watch_mode.Notice`; True when it went to the tray."""
        if self.tray is not None and notice.kind in TRAY_KINDS and self.tray.supportsMessages():
            self.tray.showMessage("GMI Desktop", notice.message, QSystemTrayIcon.MessageIcon.Information, 8000)
            return True
        self.fallback.emit(notice.message)
        return False

    def close(self) -> None:
        if self.tray is not None:
            self.tray.hide()
            self.tray = None
