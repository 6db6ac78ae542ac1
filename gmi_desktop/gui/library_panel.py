"""The library panel: every checkpoint with family, AutoV2 hash, preview and status; sortable and
filterable by name and family."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QSize, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QTableView, QVBoxLayout, QWidget,
)

from gmi_desktop.core.checkpoint_kinds import FAMILY_NAMES
from gmi_desktop.gui.query import thumbnail
from gmi_desktop.gui.rows import LibraryRow, spec_text

COLUMNS = ("", "Name", "Family", "AutoV2", "Status")
PREVIEW = 40


class LibraryModel(QAbstractTableModel):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[LibraryRow] = []
        self._index: dict[str, list[int]] = {}
        self._pixmaps: dict[str, QPixmap | None] = {}

    def set_rows(self, rows: list[LibraryRow]) -> None:
        self.beginResetModel()
        self.rows = list(rows)
        self._index = {}
        for i, row in enumerate(self.rows):
            self._index.setdefault(row.key, []).append(i)
        self.endResetModel()

    def update_spec(self, status: Any) -> None:
        """A ModelSpecStatus from a build event: update that model's rows (not its duplicates)."""
        state, text = spec_text(status)
        for i in self._index.get(status.sha256, []):
            row = self.rows[i]
            if row.state in {"duplicate"} or row.state not in {"queued", "building", "coarse", "ready", "failed",
                                                                "skipped", "hashing"}:
                continue
            self.rows[i] = LibraryRow(row.key, row.path, row.name, row.family, row.family_key, row.autov2,
                                      row.preview, text, state)
            self.dataChanged.emit(self.index(i, 4), self.index(i, 4))

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802
        return len(COLUMNS)

    def headerData(self, section: int, orientation, role: int = Qt.DisplayRole):  # noqa: N802
        if orientation == Qt.Horizontal and role == Qt.DisplayRole:
            return COLUMNS[section]
        return None

    def _pixmap(self, path: str | None) -> QPixmap | None:
        if not path:
            return None
        if path not in self._pixmaps:
            self._pixmaps[path] = thumbnail(path, PREVIEW)
        return self._pixmaps[path]

    def data(self, index: QModelIndex, role: int = Qt.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        column = index.column()
        if role == Qt.DisplayRole:
            return ("", row.name, row.family, row.autov2 or "-", row.status)[column]
        if role == Qt.DecorationRole and column == 0:
            return self._pixmap(row.preview)
        if role == Qt.ToolTipRole:
            return f"{row.path}\n{row.status}"
        if role == Qt.UserRole:  # sort key of the status column: by state
            return (row.state, row.name.lower()) if column == 4 else None
        if role == Qt.UserRole + 1:
            return row.family_key
        return None


class FamilyFilter(QSortFilterProxyModel):
    """Filters by text (name, family, hash, status) and by family."""

    def __init__(self) -> None:
        super().__init__()
        self.family = ""
        self.setFilterCaseSensitivity(Qt.CaseInsensitive)
        self.setFilterKeyColumn(-1)
        self.setSortCaseSensitivity(Qt.CaseInsensitive)

    def set_family(self, family: str) -> None:
        if hasattr(self, "beginFilterChange"):  # Qt >= 6.10 (invalidateFilter is deprecated there)
            self.beginFilterChange()
            self.family = family
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:
            self.family = family
            self.invalidateFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex) -> bool:  # noqa: N802
        if self.family:
            index = self.sourceModel().index(source_row, 0, source_parent)
            if self.sourceModel().data(index, Qt.UserRole + 1) != self.family:
                return False
        return super().filterAcceptsRow(source_row, source_parent)


class LibraryPanel(QWidget):
    """The table, a filter field and a family selector. ``add_folder`` asks for a library folder."""

    add_folder_requested = Signal()
    rescan_requested = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.model = LibraryModel()
        self.proxy = FamilyFilter()
        self.proxy.setSourceModel(self.model)
        self.filter = QLineEdit(placeholderText="Filter by name, family, hash")
        self.filter.setClearButtonEnabled(True)
        self.filter.textChanged.connect(self.proxy.setFilterFixedString)
        self.family = QComboBox()
        self.family.addItem("All families", "")
        self.family.currentIndexChanged.connect(lambda _i: self.proxy.set_family(self.family.currentData() or ""))
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(1, Qt.AscendingOrder)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(PREVIEW + 4)
        self.table.setIconSize(QSize(PREVIEW, PREVIEW))
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.Fixed)
        header.resizeSection(0, PREVIEW + 8)
        header.resizeSection(1, 170)
        header.resizeSection(2, 70)
        header.resizeSection(3, 90)
        header.setStretchLastSection(True)
        self.summary = QLabel("Reading the library…")
        self.summary.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(self.filter, 1)
        top.addWidget(self.family)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        title = QLabel("<b>Library</b>")
        layout.addWidget(title)
        layout.addLayout(top)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.summary)

    def set_rows(self, rows: list[LibraryRow], note: str = "") -> None:
        self.model.set_rows(rows)
        families = sorted({r.family_key for r in rows if r.family_key != "other"})
        current = self.family.currentData()
        self.family.blockSignals(True)
        self.family.clear()
        self.family.addItem("All families", "")
        for key in families:
            self.family.addItem(FAMILY_NAMES.get(key, key), key)
        self.family.addItem("Other files", "other")
        index = max(0, self.family.findData(current))
        self.family.setCurrentIndex(index)
        self.family.blockSignals(False)
        self.proxy.set_family(self.family.currentData() or "")
        usable = sum(r.state in {"queued", "building", "coarse", "ready", "failed", "hashing"} for r in rows)
        ready = sum(r.state == "ready" for r in rows)
        text = f"{len(rows)} files, {usable} checkpoints, {ready} with a full specification"
        self.summary.setText(text + (f" — {note}" if note else ""))

    def visible_names(self) -> list[str]:
        return [self.proxy.index(i, 1).data() for i in range(self.proxy.rowCount())]

    def status_of(self, name: str) -> str | None:
        for row in self.model.rows:
            if row.name == name:
                return row.status
        return None
