"""The settings dialog: one form over every field of ``store/settings.py: Settings``.

Fields are listed from the dataclass itself, so a setting added there appears here. Only the
fields the user changed are written (``save_settings`` keeps the file's other keys; ``GMI_*``
environment variables still win). Changing a field of the specification recipe warns that
specifications will be rebuilt, and how many.
"""

from __future__ import annotations

import dataclasses
import html
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QLabel, QLineEdit,
    QPlainTextEdit, QScrollArea, QSpinBox, QVBoxLayout, QWidget,
)

from gmi_desktop.core.errors import SettingsError
from gmi_desktop.store import paths
from gmi_desktop.store.settings import MINIMUM, Settings, load_settings, save_settings

CHOICES = {
    "device": ("auto", "cpu", "cuda", "mps"),
    "interrogator_mode": ("fast", "classic", "best", "negative"),
    "method": ("proposal", "rkme_clip", "rkme_concat", "rkme_basic", "download"),
    # engine.pipelines.SCHEDULER_NAMES (the GUI may not import engine; an unknown name is refused there)
    "scheduler": ("dpmpp_2m", "dpmpp_2m_karras", "euler", "euler_a", "ddim", "pndm", "heun", "unipc"),
}
# Fields that change the specification recipe: a change rebuilds the specifications.
RECIPE = {"steps", "resolution", "scheduler", "guidance_scale", "seed", "clip_model", "clip_pretrained", "clip_weights"}
LABELS = {"low_vram": "Low-VRAM mode", "top_k": "Top-k (models shown)", "gamma": "Gamma (0 = default)", "resolution": "Resolution (0 = native)"}


def where_text() -> str:
    """The data, specification, config and cache locations, and whether portable mode is on."""
    rows = "".join(f"{name.capitalize()}: {html.escape(str(path))}<br>" for name, path in paths.locations().items())
    root = paths.portable_root()
    if root is not None:
        mode = (f"<b>Portable mode: on</b> ({html.escape(str(root / paths.PORTABLE_MARKER))} exists): everything "
                "lives beside the app, specifications in specs_cache/.")
    else:
        mode = (f"Portable mode: off. Put an empty {paths.PORTABLE_MARKER} in {html.escape(str(paths.app_root()))} "
                "to keep everything beside the app (GMI_DATA_DIR, GMI_CONFIG_DIR, GMI_CACHE_DIR still win).")
    return rows + mode


def _label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


class SettingsDialog(QDialog):
    settings_saved = Signal(object)  # the new Settings

    def __init__(self, settings: Settings, parent: QWidget | None = None, *, built_specs: int = 0):
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        self.built_specs = built_specs
        self.editors: dict[str, tuple[QWidget, Any]] = {}
        form = QFormLayout()
        for field in dataclasses.fields(Settings):
            if field.name == "extra":
                continue
            value = getattr(settings, field.name)
            editor = self._editor(field.name, value)
            editor.setAccessibleName(_label(field.name))
            self.editors[field.name] = (editor, value)
            form.addRow(_label(field.name) + (" *" if field.name in RECIPE else ""), editor)
        self.where = QLabel(where_text())
        self.where.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.where.setWordWrap(True)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.addLayout(form)
        layout.addWidget(QLabel("* part of the specification recipe: changing it rebuilds specifications."))
        layout.addWidget(self.where)
        scroll = QScrollArea()
        scroll.setWidget(body)
        scroll.setWidgetResizable(True)
        self.warning = QLabel("")
        self.warning.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        outer = QVBoxLayout(self)
        outer.addWidget(scroll, 1)
        outer.addWidget(self.warning)
        outer.addWidget(self.buttons)
        self.resize(560, 640)

    def _editor(self, name: str, value: Any) -> QWidget:
        if isinstance(value, bool):
            editor = QCheckBox()
            editor.setChecked(value)
            editor.toggled.connect(self._changed)
        elif isinstance(value, int):
            editor = QSpinBox()
            editor.setRange(MINIMUM.get(name, 0), 2**31 - 1)
            editor.setValue(value)
            editor.valueChanged.connect(self._changed)
        elif isinstance(value, float):
            editor = QDoubleSpinBox()
            editor.setRange(0.0, 1e6)
            editor.setDecimals(3)
            editor.setValue(value)
            editor.valueChanged.connect(self._changed)
        elif isinstance(value, tuple):
            editor = QPlainTextEdit("\n".join(value))
            editor.setPlaceholderText("one folder per line")
            editor.setFixedHeight(70)
            editor.textChanged.connect(self._changed)
        elif name in CHOICES:
            editor = QComboBox()
            editor.setEditable(True)
            editor.addItems(list(dict.fromkeys((value, *CHOICES[name]))))
            editor.setCurrentText(value)
            editor.currentTextChanged.connect(self._changed)
        else:
            editor = QLineEdit(str(value))
            editor.textChanged.connect(self._changed)
        return editor

    @staticmethod
    def _value(editor: QWidget) -> Any:
        if isinstance(editor, QCheckBox):
            return editor.isChecked()
        if isinstance(editor, (QSpinBox, QDoubleSpinBox)):
            return editor.value()
        if isinstance(editor, QPlainTextEdit):
            return tuple(line.strip() for line in editor.toPlainText().splitlines() if line.strip())
        if isinstance(editor, QComboBox):
            return editor.currentText().strip()
        return editor.text().strip()

    def changes(self) -> dict[str, Any]:
        out = {}
        for name, (editor, original) in self.editors.items():
            value = self._value(editor)
            if value != original:
                out[name] = value
        return out

    def set_value(self, name: str, value: Any) -> None:
        """Set a field's editor (keyboard users and tests)."""
        editor = self.editors[name][0]
        if isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
            editor.setValue(value)
        elif isinstance(editor, QPlainTextEdit):
            editor.setPlainText("\n".join(value))
        elif isinstance(editor, QComboBox):
            editor.setCurrentText(str(value))
        else:
            editor.setText(str(value))

    def _changed(self, *_args: Any) -> None:
        recipe = sorted(set(self.changes()) & RECIPE)
        if recipe:
            count = f"the {self.built_specs} specifications built so far" if self.built_specs else "every specification"
            self.warning.setText(f"Changing {', '.join(recipe)} rebuilds {count} (the old ones stay usable until then).")
        else:
            self.warning.setText("")

    def save(self) -> None:
        changes = self.changes()
        try:
            if changes:
                save_settings(changes)
            settings = load_settings()
        except SettingsError as exc:
            self.warning.setText(str(exc))
            return
        self.settings_saved.emit(settings)
        self.accept()
