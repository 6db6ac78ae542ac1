"""First run: pick library folders (known UI installs are offered), learn what will be downloaded,
or try the demo library of tiny random models (offline, clearly labelled)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog, QFileDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout,
)

# (UI, folder under the home directory); a folder is offered when it exists.
KNOWN_INSTALLS = (
    ("AUTOMATIC1111", "stable-diffusion-webui"),
    ("Forge", "stable-diffusion-webui-forge"),
    ("ComfyUI", "ComfyUI"),
    ("ComfyUI", "comfy/ComfyUI"),
    ("InvokeAI", "invokeai"),
    ("SwarmUI", "SwarmUI"),
    ("Stability Matrix", "StabilityMatrix"),
    ("Stability Matrix", ".local/share/StabilityMatrix"),
    ("Stability Matrix", "AppData/Roaming/StabilityMatrix"),
)
DOWNLOADS = ("Identifying an image needs two models: OpenAI CLIP ViT-L/14 (about 1.7 GB) to compare "
             "images and the BLIP caption model (about 1.9 GB) to write a prompt for your image. ")
ONLINE = DOWNLOADS + "They are downloaded once, on first use, with progress and a cancel button."
OFFLINE = (DOWNLOADS + "Downloads are off and no local copies are set, so identification cannot run "
           "yet: put the files on this computer and point Settings → Clip weights / Blip weights at "
           "them (docs/models.md says where they come from).")
DEMO = ("Offline, or just curious? The demo makes a library of tiny random checkpoints on this "
        "computer (a minute, no downloads) and shows the whole flow: scan, build, drop, rank, edit, "
        "preview. Its rankings say nothing about real models.")


def known_installs(home: Path | None = None) -> list[tuple[str, Path]]:
    """The UI installs found in the usual places under ``home``."""
    home = Path(home or os.path.expanduser("~"))
    found = []
    for ui, relative in KNOWN_INSTALLS:
        folder = home / relative
        if folder.is_dir():
            found.append((ui, folder))
    return found


class FirstRunDialog(QDialog):
    """``choice`` after it closes: "folders" (with ``folders()``), "demo" or "later"."""

    def __init__(self, settings: Any, parent=None, *, home: Path | None = None):
        super().__init__(parent)
        self.setWindowTitle("Welcome to GMI Desktop")
        self.choice = "later"
        intro = QLabel("<b>Which of your Stable Diffusion checkpoints can make images like yours?</b><br>"
                       "Pick the folders that hold your checkpoints.")
        intro.setWordWrap(True)
        self.list = QListWidget()
        self.list.setAccessibleName("Library folders")
        for ui, folder in known_installs(home):
            self._add(folder, f"{ui}: {folder}")
        add = QPushButton("Add folder…")
        add.clicked.connect(self._pick)
        downloads_off = not settings.allow_downloads and not settings.clip_weights
        self.weights = QLabel(OFFLINE if downloads_off else ONLINE)
        self.weights.setWordWrap(True)
        self.weights_missing = downloads_off
        demo_text = QLabel(DEMO)
        demo_text.setWordWrap(True)
        self.demo_button = QPushButton("Try the demo library")
        self.demo_button.clicked.connect(lambda: self._finish("demo"))
        self.use_button = QPushButton("Use these folders")
        self.use_button.setDefault(True)
        self.use_button.clicked.connect(lambda: self._finish("folders"))
        later = QPushButton("Later")
        later.clicked.connect(lambda: self._finish("later"))
        buttons = QHBoxLayout()
        buttons.addWidget(self.demo_button)
        buttons.addStretch(1)
        buttons.addWidget(later)
        buttons.addWidget(self.use_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.list, 1)
        layout.addWidget(add, 0, Qt.AlignLeft)
        layout.addWidget(self.weights)
        layout.addWidget(demo_text)
        layout.addLayout(buttons)
        self.resize(620, 460)

    def _add(self, folder: Path, text: str | None = None) -> None:
        item = QListWidgetItem(text or str(folder))
        item.setData(Qt.UserRole, str(folder))
        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
        item.setCheckState(Qt.Checked)
        self.list.addItem(item)

    def add_folder(self, folder: str | Path) -> None:
        self._add(Path(folder))

    def _pick(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a library folder")
        if folder:
            self.add_folder(folder)

    def folders(self) -> list[str]:
        return [self.list.item(i).data(Qt.UserRole) for i in range(self.list.count())
                if self.list.item(i).checkState() == Qt.Checked]

    def _finish(self, choice: str) -> None:
        self.choice = choice
        self.accept()
