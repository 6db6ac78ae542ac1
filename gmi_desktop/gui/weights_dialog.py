"""The weights dialog: what will be downloaded and how big, a progress bar and a working Cancel,
and how to point at local copies instead (Settings -> Clip weights / Blip weights).

It drives ``Backend.download_weights`` (``services/weights.py``) through the generic worker;
``outcome`` after it closes: "downloaded", "cancelled" (nothing half-written is kept) or "later".
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout

from gmi_desktop.core.progress import Progress
from gmi_desktop.gui.worker import Worker


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def describe_needs(needs: list[Any]) -> str:
    lines = ["<b>Identifying images needs model weights this computer does not have yet:</b><ul>"]
    for need in needs:
        how = "will be downloaded" if need.downloadable else f"cannot be downloaded: {need.reason}"
        lines.append(f"<li>{need.what} — about {need.size_text} ({how})</li>")
    lines.append("</ul>They are downloaded once into the Hugging Face cache and reused by every run.")
    return "".join(lines)


LOCAL = ("Have copies already? Cancel, then point Settings → <i>Clip weights</i> (the CLIP "
         "<code>.safetensors</code> file) and <i>Blip weights</i> (the BLIP model folder) at them; "
         "docs/models.md says where they come from.")


class WeightsDialog(QDialog):
    """See the module docstring. ``downloaded`` carries the resolved weights."""

    downloaded = Signal(object)

    def __init__(self, backend: Any, needs: list[Any], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Download model weights")
        self.backend = backend
        self.needs = list(needs)
        self.worker: Worker | None = None
        self.outcome = "later"
        self.events: list[Progress] = []
        self.text = QLabel(describe_needs(self.needs))
        self.text.setWordWrap(True)
        local = QLabel(LOCAL)
        local.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setValue(0)
        self.bar.setAccessibleName("Download progress")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.download_button = QPushButton("Download")
        self.download_button.setDefault(True)
        self.download_button.setEnabled(any(n.downloadable for n in self.needs))
        self.download_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.download_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
        layout.addWidget(local)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addLayout(buttons)
        self.resize(560, 300)

    @property
    def running(self) -> bool:
        return self.worker is not None and self.worker.is_running()

    def start(self) -> None:
        if self.running:
            return
        self.download_button.setEnabled(False)
        self.status.setText("Starting the download…")
        self.worker = Worker(self.backend.download_weights, self.needs, name="weights")
        self.worker.progress.connect(self._progress)
        self.worker.returned.connect(self._done)
        self.worker.cancelled.connect(self._cancelled)
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._finished)
        self.worker.start()

    def _progress(self, event: Progress) -> None:
        self.events.append(event)
        count = max(event.total, 1)
        part = event.bytes_done / event.bytes_total if event.bytes_total else 0.0
        self.bar.setValue(int(1000 * min(1.0, (event.done + part) / count)))
        size = f": {_mb(event.bytes_done)} of {_mb(event.bytes_total)}" if event.bytes_total else ""
        self.status.setText((event.message or event.item) + size)

    def _done(self, resolved: Any) -> None:
        self.bar.setValue(1000)
        self.outcome = "downloaded"
        self.status.setText("Downloaded.")
        self.downloaded.emit(resolved)
        self.accept()

    def _cancelled(self) -> None:
        self.outcome = "cancelled"
        self.status.setText("Cancelled: nothing half-downloaded was kept.")

    def _finished(self) -> None:
        if self.outcome == "cancelled":
            QDialog.reject(self)

    def _failed(self, exc: BaseException) -> None:
        self.status.setText(f"The download failed: {exc}")
        self.download_button.setEnabled(True)
        self.download_button.setText("Try again")

    def cancel(self) -> None:
        """Cancel a running download (the dialog closes when it has stopped), or close."""
        if self.running:
            self.cancel_button.setEnabled(False)
            self.status.setText("Cancelling…")
            self.worker.cancel()
        else:
            self.reject()

    def reject(self) -> None:  # Escape and the window's close button cancel a running download too
        if self.running:
            self.cancel()
            return
        super().reject()

    def stop(self, timeout: float = 30.0) -> None:
        if self.worker is not None:
            self.worker.stop(timeout)
