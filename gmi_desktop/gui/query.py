"""The query area (drop, paste or open images; thumbnails and the metadata found) and the prompt bar
(the editable pseudo-prompt, debounced re-ranking, the way back, the method selector)."""

from __future__ import annotations

import itertools
from html import escape
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QMimeData, QSize, Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication, QImage, QImageReader, QKeySequence, QPixmap
from PySide6.QtWidgets import (
    QComboBox, QFileDialog, QFrame, QHBoxLayout, QLabel, QLineEdit, QPushButton, QScrollArea, QSizePolicy,
    QToolButton, QVBoxLayout, QWidget,
)

from gmi_desktop.store import paths

THUMB = 80
METHOD_NAMES = {
    "proposal": "Proposal (prompt-weighted, Eq. 9)",
    "rkme_clip": "RKME-CLIP (baseline)",
    "rkme_concat": "RKME-Concat (baseline)",
    "rkme_basic": "RKME-Basic (pixels, baseline)",
    "download": "Download count (baseline)",
}
IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.webp *.bmp *.gif *.tif *.tiff);;All files (*)"
_PASTES = itertools.count(1)


def pixel_ratio() -> float:
    """Device pixels per logical pixel of the screen (2 on a high-DPI screen or QT_SCALE_FACTOR=2)."""
    app = QGuiApplication.instance()
    return float(app.devicePixelRatio()) if app is not None else 1.0


def thumbnail(path: str | Path, size: int = THUMB) -> QPixmap | None:
    """The image at ``path`` fitted into ``size`` x ``size`` logical pixels, read at the screen's
    pixel density (sharp on high-DPI screens); None when it cannot be read."""
    ratio = pixel_ratio()
    reader = QImageReader(str(path))
    reader.setAutoTransform(True)
    full = reader.size()
    if full.isValid() and full.width() > 0 and full.height() > 0:
        reader.setScaledSize(full.scaled(QSize(round(size * ratio), round(size * ratio)), Qt.KeepAspectRatio))
    image = reader.read()
    if image.isNull():
        return None
    pixmap = QPixmap.fromImage(image)
    pixmap.setDevicePixelRatio(ratio)
    return pixmap


def fit(pixmap: QPixmap, size: int) -> QPixmap:
    """``pixmap`` scaled to fit ``size`` x ``size`` logical pixels at the screen's pixel density."""
    ratio = pixel_ratio()
    scaled = pixmap.scaled(round(size * ratio), round(size * ratio), Qt.KeepAspectRatio, Qt.SmoothTransformation)
    scaled.setDevicePixelRatio(ratio)
    return scaled


def items_from_mime(mime: QMimeData) -> list[str]:
    """Paths/URLs carried by a drop or the clipboard (image data is handled by the caller)."""
    if mime.hasUrls():
        return [u.toLocalFile() if u.isLocalFile() else u.toString() for u in mime.urls()]
    if mime.hasText():
        return [line for line in mime.text().splitlines() if line.strip()]
    return []


class QueryPanel(QFrame):
    """Accepts drops; ``items_given(list[str])`` carries what the user gave (paths or URLs)."""

    items_given = Signal(list)

    def __init__(self) -> None:
        super().__init__()
        self.setAcceptDrops(True)
        self.setFrameShape(QFrame.StyledPanel)
        self.setFocusPolicy(Qt.StrongFocus)
        self.setAccessibleName("Query images: drop, paste or open")
        self.hint = QLabel("Drop one or more images here, paste one (Ctrl+V), or open them.")
        self.hint.setWordWrap(True)
        self.open_button = QPushButton("Open images…")
        self.open_button.clicked.connect(self.open_dialog)
        self.paste_button = QPushButton("Paste")
        self.paste_button.clicked.connect(self.paste)
        self.thumbs = QHBoxLayout()
        self.thumbs.setAlignment(Qt.AlignLeft)
        strip = QWidget()
        strip.setLayout(self.thumbs)
        scroll = QScrollArea()
        scroll.setWidget(strip)
        scroll.setWidgetResizable(True)
        scroll.setFixedHeight(THUMB + 28)
        scroll.setFrameShape(QFrame.NoFrame)
        self.metadata = QLabel("")
        self.metadata.setWordWrap(True)
        self.metadata.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setObjectName("dropMessage")
        self.message.setStyleSheet("color: palette(highlight);")
        buttons = QHBoxLayout()
        buttons.addWidget(self.hint, 1)
        buttons.addWidget(self.paste_button)
        buttons.addWidget(self.open_button)
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(scroll)
        layout.addWidget(self.metadata)
        layout.addWidget(self.message)

    # -- input ----------------------------------------------------------------------------------
    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt API
        if event.matches(QKeySequence.Paste):
            self.paste()
        elif event.key() in (Qt.Key_Return, Qt.Key_Enter, Qt.Key_Space):
            self.open_dialog()
        else:
            super().keyPressEvent(event)

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt API
        mime = event.mimeData()
        if mime.hasUrls() or mime.hasImage() or mime.hasText():
            event.acceptProposedAction()

    def dragMoveEvent(self, event) -> None:  # noqa: N802
        event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        self.take_mime(event.mimeData())
        event.acceptProposedAction()

    def take_mime(self, mime: QMimeData) -> None:
        items = items_from_mime(mime)
        if not items and mime.hasImage():
            items = [str(self._save_pasted(QImage(mime.imageData())))]
        self.items_given.emit(items)

    def paste(self) -> None:
        self.take_mime(QGuiApplication.clipboard().mimeData())

    def open_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Open query images", "", IMAGE_FILTER)
        if files:
            self.items_given.emit(files)

    @staticmethod
    def _save_pasted(image: QImage) -> Path:
        folder = paths.cache_dir() / "pasted"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"pasted-{int(time.time())}-{next(_PASTES)}.png"
        image.save(str(path), "PNG")
        return path

    # -- output ---------------------------------------------------------------------------------
    def show_message(self, text: str) -> None:
        self.message.setText(text)

    def show_images(self, images: list[Path]) -> None:
        while self.thumbs.count():
            widget = self.thumbs.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        for path in images:
            label = QLabel()
            pixmap = thumbnail(path)
            if pixmap is not None:
                label.setPixmap(pixmap)
            label.setToolTip(str(path))
            label.setAccessibleName(f"query image {path.name}")
            self.thumbs.addWidget(label)

    def show_metadata(self, identification: Any) -> None:
        lines = []
        for query in identification.queries:
            meta = query.metadata
            if meta is None:
                lines.append(f"<b>{escape(query.path.name)}</b>: no generation metadata")
                continue
            found = [f"{name}: {escape(value)}" for name, value in _metadata_fields(meta)]
            lines.append(f"<b>{escape(query.path.name)}</b>: " + ("; ".join(found) if found else "no generation metadata"))
        self.metadata.setText("<br>".join(lines))


def _metadata_fields(meta: Any) -> list[tuple[str, str]]:
    """(label, value) pairs of an ImageMetadata for display."""
    out = [("from", str(getattr(meta, "summary", "") or getattr(meta, "generator", "")))]
    for ref in getattr(meta, "models", ()) or ():
        model = " ".join(p for p in (ref.name or "", f"[{ref.hash}]" if ref.hash else "") if p)
        if model:
            out.append(("model", model))
    prompt = getattr(meta, "prompt", "") or ""
    if prompt:
        out.append(("prompt", prompt if len(prompt) <= 160 else prompt[:157] + "..."))
    return [(k, v) for k, v in out if v]


class PromptBar(QWidget):
    """The pseudo-prompt, editable. ``prompt_edited(text)`` fires ``debounce_ms`` after the last
    keystroke (at once on Enter); ``reset_requested`` goes back to the generated/embedded prompt."""

    prompt_edited = Signal(str)
    reset_requested = Signal()
    method_changed = Signal(str)

    def __init__(self, methods: tuple[str, ...], debounce_ms: int = 300) -> None:
        super().__init__()
        self.edit = QLineEdit()
        self.edit.setPlaceholderText("Pseudo-prompt (generated from the image; edit it to re-rank)")
        self.edit.setAccessibleName("Pseudo-prompt")
        self.edit.setEnabled(False)
        self.source = QLabel("")
        self.reset = QToolButton()
        self.reset.setText("Use generated prompt")
        self.reset.setEnabled(False)
        self.reset.clicked.connect(self.reset_requested)
        self.method = QComboBox()
        self.method.setAccessibleName("Ranking method")
        for key in methods:
            self.method.addItem(METHOD_NAMES.get(key, key), key)
        self.method.currentIndexChanged.connect(lambda _i: self.method_changed.emit(self.method.currentData()))
        self.timer = QTimer(self, singleShot=True, interval=debounce_ms)
        self.timer.timeout.connect(self._fire)
        self.edit.textEdited.connect(lambda _t: self.timer.start())
        self.edit.returnPressed.connect(self._fire)
        row = QHBoxLayout()
        row.addWidget(QLabel("Prompt:"))
        row.addWidget(self.edit, 1)
        row.addWidget(self.reset)
        row2 = QHBoxLayout()
        row2.addWidget(self.source, 1)
        row2.addWidget(QLabel("Method:"))
        row2.addWidget(self.method)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addLayout(row2)
        self.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Fixed)

    def _fire(self) -> None:
        self.timer.stop()
        self.prompt_edited.emit(self.edit.text())

    def set_method(self, method: str) -> None:
        index = self.method.findData(method)
        if index >= 0 and index != self.method.currentIndex():
            self.method.blockSignals(True)
            self.method.setCurrentIndex(index)
            self.method.blockSignals(False)

    def show_prompt(self, text: str, source: str) -> None:
        """Show the prompt ranked with (not while the user is typing a newer one)."""
        if not self.timer.isActive() and self.edit.text() != text:
            self.edit.setText(text)
        self.edit.setEnabled(True)
        words = {"user": "your prompt", "metadata": "the prompt embedded in the image",
                 "interrogator": "generated from the image (interrogator)"}
        self.source.setText(f"Prompt: {words.get(source, 'none yet')}" if source else "")
        self.reset.setEnabled(source == "user")
