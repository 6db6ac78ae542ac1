"""The spec-builder bar: start, pause/resume, cancel, progress with images/s and ETA, the device."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from gmi_desktop.core.progress import Progress
from gmi_desktop.gui.rows import build_line

STATE_WORDS = {
    "idle": "Specifications: not building",
    "running": "Building specifications",
    "paused": "Paused (what is built is kept)",
    "waiting": "Waiting for your query…",
    "cancelled": "Build stopped (what is built is kept; start resumes)",
    "done": "Specifications up to date",
    "failed": "Build failed",
}


class BuilderBar(QWidget):
    start_requested = Signal()
    pause_requested = Signal()
    resume_requested = Signal()
    cancel_requested = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.start = QPushButton("Build specifications")
        self.pause = QPushButton("Pause")
        self.cancel = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setMaximumWidth(240)
        self.progress.setAccessibleName("Specification build progress")
        self.line = QLabel(STATE_WORDS["idle"])
        self.device = QLabel("")
        self.start.clicked.connect(self.start_requested)
        self.pause.clicked.connect(self._pause_clicked)
        self.cancel.clicked.connect(self.cancel_requested)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.start, self.pause, self.cancel, self.progress):
            layout.addWidget(widget)
        layout.addWidget(self.line, 1)
        layout.addWidget(self.device)
        self.state = "idle"
        self.set_state("idle")

    def _pause_clicked(self) -> None:
        if self.state == "paused":
            self.resume_requested.emit()
        else:
            self.pause_requested.emit()

    def set_state(self, state: str, detail: str = "") -> None:
        self.state = state
        active = state in {"running", "waiting", "paused"}
        self.start.setEnabled(not active)
        self.pause.setEnabled(active)
        self.pause.setText("Resume" if state == "paused" else "Pause")
        self.cancel.setEnabled(active)
        if state != "running" or detail:
            self.line.setText(STATE_WORDS.get(state, state) + (f": {detail}" if detail else ""))

    def show_progress(self, event: Progress) -> None:
        if event.total:
            self.progress.setRange(0, event.total)
            self.progress.setValue(min(event.done, event.total))
        self.line.setText(build_line(event))

    def set_device(self, text: str) -> None:
        self.device.setText(text)
