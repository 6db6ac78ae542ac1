"""Ranked results (rank, name, score bar, completeness, match badge, closest spec thumbnails, file
actions) and the preview strip (generations beside the reference, seed shown and changeable)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QUrl, Qt, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication, QImage, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QProgressBar, QPushButton, QSpinBox, QTableWidget,
    QTableWidgetItem, QVBoxLayout, QWidget,
)

from gmi_desktop.gui.query import fit, thumbnail

COLUMNS = ("#", "Model", "Score", "Spec", "Match", "Closest spec images")
SPEC_THUMB = 40
PREVIEW = 128


def score_share(scores: list[float | None]) -> list[int]:
    """Scores (ascending = better) as 0..100 bars: the best 100, the worst 0 (all 100 when equal)."""
    known = [s for s in scores if s is not None]
    if not known:
        return [0] * len(scores)
    best, worst = min(known), max(known)
    span = worst - best
    return [0 if s is None else (100 if span <= 0 else int(round(100 * (worst - s) / span))) for s in scores]


def badge(model: Any) -> str:
    kinds = {e.kind for e in model.evidence}
    if "exact" in kinds:
        return "exact match from metadata"
    if "same_name" in kinds:
        return "same name"
    return ""


class ResultsView(QWidget):
    """The ranked list; the selected model's file actions below it."""

    preview_requested = Signal(object)  # a RankedModel

    def __init__(self) -> None:
        super().__init__()
        self.models: list[Any] = []
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setAccessibleName("Ranked models")
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(SPEC_THUMB + 6)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(1, QHeaderView.Stretch)
        header.setSectionResizeMode(0, QHeaderView.ResizeToContents)
        for column, width in ((2, 110), (3, 56), (4, 170), (5, 4 * (SPEC_THUMB + 6) + 10)):
            header.resizeSection(column, width)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.title = QLabel("<b>Ranked models</b>")
        self.notes = QLabel("Drop an image above: your models are ranked by how well they can make images like it.")
        self.notes.setWordWrap(True)
        self.open_folder = QPushButton("Open folder")
        self.copy_path = QPushButton("Copy path")
        self.copy_hash = QPushButton("Copy hash")
        self.preview_one = QPushButton("Preview this model")
        self.open_folder.clicked.connect(self._open_folder)
        self.copy_path.clicked.connect(lambda: self._copy("path"))
        self.copy_hash.clicked.connect(lambda: self._copy("sha256"))
        self.preview_one.clicked.connect(lambda: self.selected() and self.preview_requested.emit(self.selected()))
        actions = QHBoxLayout()
        for button in (self.open_folder, self.copy_path, self.copy_hash, self.preview_one):
            actions.addWidget(button)
        actions.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.notes)
        layout.addWidget(self.table, 1)
        layout.addLayout(actions)
        self._selection_changed()

    def show_identification(self, identification: Any, top: int = 10) -> None:
        """The metadata matches first (labelled), then the ``top`` best of the content ranking
        (the ``top_k`` setting)."""
        ranked = list(identification.ranking)[:top]
        listed = {m.sha256 for m in ranked}
        extra = [m for m in identification.metadata_matches if m.sha256 not in listed]
        self.models = extra + ranked
        shares = score_share([m.score for m in self.models])
        self.table.setRowCount(0)
        self.table.setRowCount(len(self.models))
        for row, (model, share) in enumerate(zip(self.models, shares)):
            rank = QTableWidgetItem("" if model.score is None else str(model.rank))
            rank.setTextAlignment(Qt.AlignCenter)
            self.table.setItem(row, 0, rank)
            name = QTableWidgetItem(model.name)
            name.setToolTip(str(model.path) if model.path else model.name)
            self.table.setItem(row, 1, name)
            bar = QProgressBar()
            bar.setRange(0, 100)
            bar.setValue(share)
            bar.setFormat("no spec" if model.score is None else f"{model.score:.4g}")
            bar.setAccessibleName(f"score of {model.name}")
            self.table.setCellWidget(row, 2, bar)
            self.table.setItem(row, 3, QTableWidgetItem(f"{model.completeness:.0%}"))
            match = QTableWidgetItem(badge(model))
            match.setToolTip("\n".join(e.detail for e in model.evidence))
            self.table.setItem(row, 4, match)
            self.table.setCellWidget(row, 5, _thumb_row(model.closest))
        notes = list(identification.notes) + ([identification.missing] if identification.missing else [])
        self.notes.setText("\n".join(notes))
        if self.models:
            self.table.selectRow(0)

    def names(self) -> list[str]:
        return [m.name for m in self.models]

    def selected(self) -> Any:
        rows = self.table.selectionModel().selectedRows()
        return self.models[rows[0].row()] if rows and rows[0].row() < len(self.models) else None

    def _selection_changed(self) -> None:
        model = self.selected()
        for button in (self.open_folder, self.copy_path):
            button.setEnabled(bool(model and model.path))
        self.copy_hash.setEnabled(bool(model and model.sha256))
        self.preview_one.setEnabled(bool(model and model.path))

    def _copy(self, what: str) -> None:
        model = self.selected()
        value = getattr(model, what, None) if model else None
        if value:
            QGuiApplication.clipboard().setText(str(value))

    def _open_folder(self) -> None:
        model = self.selected()
        if model and model.path:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(model.path).parent)))


def _thumb_row(paths: tuple[Path, ...]) -> QWidget:
    widget = QWidget()
    layout = QHBoxLayout(widget)
    layout.setContentsMargins(2, 1, 2, 1)
    for path in paths[:4]:
        pixmap = thumbnail(path, SPEC_THUMB)
        if pixmap is not None:
            label = QLabel()
            label.setPixmap(pixmap)
            label.setToolTip(str(path))
            layout.addWidget(label)
    layout.addStretch(1)
    return widget


def pil_to_pixmap(image: Any) -> QPixmap:
    """A PIL image (from a worker) as a pixmap; only called on the GUI thread."""
    rgb = image.convert("RGB")
    data = rgb.tobytes("raw", "RGB")
    qimage = QImage(data, rgb.width, rgb.height, 3 * rgb.width, QImage.Format_RGB888).copy()
    return QPixmap.fromImage(qimage)


class PreviewStrip(QWidget):
    """The reference image and a generated preview per model, with the seed."""

    generate_requested = Signal()
    cancel_requested = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setAccessibleName("Preview seed")
        self.generate = QPushButton("Generate previews")
        self.generate.clicked.connect(self.generate_requested)
        self.cancel = QPushButton("Cancel")
        self.cancel.setEnabled(False)
        self.cancel.clicked.connect(self.cancel_requested)
        self.status = QLabel("")
        self.row = QHBoxLayout()
        self.row.setAlignment(Qt.AlignLeft)
        self.tiles: dict[str, QLabel] = {}
        controls = QHBoxLayout()
        controls.addWidget(QLabel("<b>Previews</b>"))
        controls.addWidget(QLabel("Seed:"))
        controls.addWidget(self.seed)
        controls.addWidget(self.generate)
        controls.addWidget(self.cancel)
        controls.addWidget(self.status, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addLayout(self.row)

    def clear(self, reference: Path | None = None) -> None:
        while self.row.count():
            widget = self.row.takeAt(0).widget()
            if widget is not None:
                widget.deleteLater()
        self.tiles = {}
        if reference is not None:
            self._tile("reference", thumbnail(reference, PREVIEW), "reference")

    def _tile(self, key: str, pixmap: QPixmap | None, caption: str) -> QLabel:
        box = QWidget()
        layout = QVBoxLayout(box)
        layout.setContentsMargins(2, 2, 2, 2)
        picture = QLabel()
        picture.setFixedSize(PREVIEW, PREVIEW)
        picture.setAlignment(Qt.AlignCenter)
        if pixmap is not None:
            picture.setPixmap(fit(pixmap, PREVIEW))
        text = QLabel(caption)
        text.setWordWrap(True)
        text.setMaximumWidth(PREVIEW)
        layout.addWidget(picture)
        layout.addWidget(text)
        self.row.addWidget(box)
        self.tiles[key] = picture
        return picture

    def add_preview(self, key: str, image: Any, caption: str) -> None:
        self._tile(key, pil_to_pixmap(image), caption)

    def set_busy(self, busy: bool, text: str = "") -> None:
        self.generate.setEnabled(not busy)
        self.cancel.setEnabled(busy)
        self.status.setText(text)
