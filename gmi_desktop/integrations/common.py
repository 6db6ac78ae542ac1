"""What every shell integration shares: the command a file manager runs, the icon, the marker.

Every file we write carries :data:`MARKER`; uninstall removes a file only when it still carries
it, and install never overwrites a file without it. Folders we had to create are recorded in a
small manifest (in our data folder) so uninstall can remove them again when they are empty, and
nothing we made is left behind.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from gmi_desktop.core.errors import UserInputError
from gmi_desktop.store import paths
from gmi_desktop.store.atomic import atomic_write_bytes
from gmi_desktop.store.resources import resources_dir

APP_ID = "gmi-desktop"
APP_NAME = "GMI Desktop"
VERB = "Find best model"
VERB_ID = "GMIDesktop.FindBestModel"
MARKER = "gmi-desktop-managed"
IMAGE_MIME_TYPES = ("image/png", "image/jpeg", "image/webp")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class IntegrationError(UserInputError):
    """A shell integration cannot be written or removed (a path we cannot use, a broken file)."""


@dataclass(frozen=True)
class Item:
    """One integration file or registry key and what happened to it.

    ``state``: "installed" (written now), "unchanged" (already ours and current), "removed",
    "absent", "present" (ours and current), "outdated" (ours, another command or version),
    "foreign" (someone else's file is there: left alone), "problem" (``detail`` says why)."""

    what: str
    path: str
    state: str
    detail: str = ""


def launch_command() -> list[str]:
    """The argv prefix a file manager runs, followed by the image paths: ``... open FILE...``."""
    if getattr(sys, "frozen", False):  # a PyInstaller bundle: the executable is the app
        windowed = Path(sys.executable).with_name(f"{APP_NAME}.exe")
        if sys.platform == "win32" and windowed.exists():  # no console window for a menu click
            return [os.fspath(windowed), "open"]
        return [sys.executable, "open"]
    return [sys.executable, "-m", "gmi_desktop", "open"]


def icon_svg() -> bytes:
    path = resources_dir() / "icons" / f"{APP_ID}.svg"
    try:
        return path.read_bytes()
    except OSError as exc:
        raise IntegrationError(path, f"the application icon cannot be read ({exc.strerror or exc})",
                               "reinstall GMI Desktop") from exc


def check_command(command: list[str]) -> None:
    for arg in command:
        if not arg or any(c in arg for c in "\n\r\0"):
            raise IntegrationError(None, f"cannot put {arg!r} on a file manager's command line",
                                   "install GMI Desktop in a folder whose path has no line breaks")


# -- files we own --------------------------------------------------------------------------------
def is_ours(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return MARKER.encode() in handle.read(1 << 20)
    except OSError:
        return False


def file_state(path: Path, content: bytes) -> str:
    if not os.path.lexists(path):
        return "absent"
    if not is_ours(path):
        return "foreign"
    try:
        return "present" if path.read_bytes() == content else "outdated"
    except OSError:
        return "outdated"


def write_file(what: str, path: Path, content: bytes, manifest: "Manifest", executable: bool = False) -> Item:
    """Write ``content`` at ``path`` unless a file we did not write is there."""
    state = file_state(path, content)
    if state == "foreign":
        return Item(what, os.fspath(path), "foreign")
    mode_ok = not executable or (path.exists() and os.stat(path).st_mode & stat.S_IXUSR)
    if state == "present" and mode_ok:
        return Item(what, os.fspath(path), "unchanged")
    manifest.make_dirs(path.parent)
    atomic_write_bytes(path, content)
    os.chmod(path, 0o755 if executable else 0o644)
    return Item(what, os.fspath(path), "installed")


def remove_file(what: str, path: Path) -> Item:
    if not os.path.lexists(path):
        return Item(what, os.fspath(path), "absent")
    if not is_ours(path):
        return Item(what, os.fspath(path), "foreign")
    path.unlink()
    return Item(what, os.fspath(path), "removed")


class Manifest:
    """Folders (and files such as a new ``uca.xml``) that install created, so uninstall can
    remove them again. Kept as JSON in the data folder; gone after a full uninstall."""

    def __init__(self, path: Path | None = None):
        self.path = path or paths.data_dir() / "shell-integration.json"
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        self.created_dirs: list[str] = [d for d in data.get("created_dirs", []) if isinstance(d, str)]
        self.created_files: list[str] = [f for f in data.get("created_files", []) if isinstance(f, str)]

    def make_dirs(self, folder: Path) -> None:
        missing = []
        while not folder.exists():
            missing.append(folder)
            folder = folder.parent
        for new in reversed(missing):
            new.mkdir()
            if os.fspath(new) not in self.created_dirs:
                self.created_dirs.append(os.fspath(new))

    def created_file(self, path: Path) -> None:
        if os.fspath(path) not in self.created_files:
            self.created_files.append(os.fspath(path))

    def save(self) -> None:
        if not self.created_dirs and not self.created_files:
            self.path.unlink(missing_ok=True)
            return
        data = {"created_dirs": self.created_dirs, "created_files": self.created_files}
        atomic_write_bytes(self.path, json.dumps(data, indent=1).encode())

    def remove_empty_dirs(self) -> None:
        """Remove the folders install created, deepest first, where they are empty now."""
        for folder in sorted(self.created_dirs, key=lambda d: d.count(os.sep), reverse=True):
            try:
                os.rmdir(folder)
            except FileNotFoundError:
                pass
            except OSError:
                continue  # something else lives there now: it stays, and so does its record
            self.created_dirs.remove(folder)
