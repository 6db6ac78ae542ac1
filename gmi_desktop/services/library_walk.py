"""Finding model files under library folders: known UI layouts, a recursive ``os.scandir`` walk.

The walk follows symbolic links (people link model folders from other drives) and remembers every
folder it entered by ``(st_dev, st_ino)``, so a symlink loop or a second link to the same folder is
reported once as a :class:`Problem` instead of being walked forever. An unreadable folder is a
problem too, never fatal; its path is kept so that the sweep does not tombstone the files it could
not see.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gmi_desktop.store.hashing import StatKey, stat_key
from gmi_desktop.store.probe import MODEL_SUFFIXES
from gmi_desktop.store.sidecars import PREVIEW_EXTENSIONS

# (UI name, checkpoint folder relative to the UI's root). A root that contains any of these is a
# UI install: only its checkpoint folders are scanned, not its venv, outputs and LoRAs.
KNOWN_LAYOUTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("AUTOMATIC1111/Forge", ("models", "Stable-diffusion")),
    ("ComfyUI", ("models", "checkpoints")),
    ("ComfyUI", ("models", "diffusers")),
    ("InvokeAI 3", ("models", "sd-1", "main")),
    ("InvokeAI 3", ("models", "sd-2", "main")),
    ("InvokeAI 3", ("models", "sdxl", "main")),
    ("InvokeAI 3", ("models", "sdxl-refiner", "main")),
    ("SwarmUI", ("Models", "Stable-Diffusion")),
    ("Stability Matrix", ("Models", "StableDiffusion")),
    ("Stability Matrix", ("Data", "Models", "StableDiffusion")),
)
# Files other tools leave beside a model (see store/sidecars.py, and a download manager's
# in-progress marker), longest ending first.
SIDECAR_ENDINGS = (".civitai.info", ".cm-info.json", ".preview.png", ".preview.jpg", ".preview.jpeg",
                   ".preview.webp", ".aria2", ".png", ".jpg", ".jpeg", ".webp")
# Files download managers keep beside a download until it is finished: "<file><marker>" (aria2).
IN_PROGRESS_MARKERS = (".aria2",)
INVOKEAI_MARKER = "invokeai.yaml"  # InvokeAI 4+ keeps every model under models/<id>/
NOT_TEXT = "the name is not valid UTF-8 text; rename it"


def is_text(name: str) -> bool:
    """False for a name holding bytes that are not UTF-8 (Python keeps them as lone surrogates):
    the catalog stores paths as text and cannot hold it."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Problem:
    path: Path
    reason: str


@dataclass(frozen=True)
class Candidate:
    """A model file (or diffusers folder) found by the walk, with its stat key at listing time."""

    path: Path
    key: StatKey
    is_folder: bool = False
    sidecars: str = ""  # signature of the sidecar files beside it (see sidecar_signature)


@dataclass
class WalkReport:
    problems: list[Problem] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)  # folders (or broken links) whose contents we could not see
    folders: int = 0


def checkpoint_dirs(root: Path) -> list[tuple[Path, str]]:
    """The folders to scan for ``root``: a known UI's checkpoint folders, else ``root`` itself."""
    found = [(root.joinpath(*parts), ui) for ui, parts in KNOWN_LAYOUTS if root.joinpath(*parts).is_dir()]
    if not found and (root / INVOKEAI_MARKER).is_file() and (root / "models").is_dir():
        found = [(root / "models", "InvokeAI")]
    return found or [(root, "folder")]


def sidecar_names(model_name: str, is_folder: bool = False) -> list[str]:
    """The names :func:`gmi_desktop.store.sidecars.read_sidecars` looks for beside a model, and a
    download manager's in-progress marker (its coming or going makes the model be read again)."""
    stem = model_name if is_folder else os.path.splitext(model_name)[0]
    markers = [] if is_folder else [f"{model_name}{marker}" for marker in IN_PROGRESS_MARKERS]
    return [f"{stem}.cm-info.json", f"{stem}.civitai.info", *(f"{stem}.preview{ext}" for ext in PREVIEW_EXTENSIONS),
            *(f"{stem}{ext}" for ext in PREVIEW_EXTENSIONS), *markers]


def _signature(parts: list[tuple[str, os.stat_result]]) -> str:
    return ";".join(f"{name}:{st.st_size}:{st.st_mtime_ns}" for name, st in parts if stat.S_ISREG(st.st_mode))


def sidecar_signature(model: Path, is_folder: bool = False) -> str:
    """``name:size:mtime_ns`` of each sidecar file beside ``model``: a rescan re-reads a model
    whose signature changed even if the model file itself did not."""
    parts = []
    for name in sidecar_names(model.name, is_folder):
        try:
            parts.append((name, os.stat(model.with_name(name))))
        except OSError:
            continue
    return _signature(parts)


def _listed_signature(name: str, is_folder: bool, listed: dict[str, os.DirEntry]) -> str:
    parts = []
    for sidecar in sidecar_names(name, is_folder):
        entry = listed.get(sidecar)
        if entry is not None:
            try:
                parts.append((sidecar, entry.stat()))
            except OSError:
                continue
    return _signature(parts)


def models_beside_sidecar(path: Path) -> list[Path]:
    """The model files (or diffusers folder) a sidecar file belongs to; empty if it is none."""
    name = path.name.lower()
    ending = next((e for e in SIDECAR_ENDINGS if name.endswith(e)), None)
    if ending is None:
        return []
    stem = path.name[: len(path.name) - len(ending)]
    found = [path.with_name(stem + suffix) for suffix in sorted(MODEL_SUFFIXES)]
    found.append(path.with_name(stem))
    return [p for p in found if p.exists()]


def folder_key(folder: Path, st: os.stat_result) -> StatKey:
    """A stat key for a diffusers folder: the folder's identity, the total size of the files one
    level inside its component folders and their newest mtime (a swapped UNet changes it)."""
    size, newest = 0, st.st_mtime_ns
    with os.scandir(folder) as top:
        entries = list(top)
    for entry in entries:
        try:
            if entry.is_dir():
                with os.scandir(entry.path) as inner:
                    for item in inner:
                        if item.is_file():
                            ist = item.stat()
                            size += ist.st_size
                            newest = max(newest, ist.st_mtime_ns)
            elif entry.is_file():
                est = entry.stat()
                size += est.st_size
                newest = max(newest, est.st_mtime_ns)
        except OSError:
            continue  # a part vanished or is unreadable; the probe reports the folder's state
    return (st.st_dev, st.st_ino, size, newest)


def _entry_stat(entry: os.DirEntry) -> os.stat_result:
    """The entry's stat with a real device and inode: on Windows ``DirEntry.stat()`` leaves them
    at 0, and a key without them would never match the probe's ``fstat``."""
    st = entry.stat()
    return st if st.st_ino else os.stat(entry.path)


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.ENOENT:
        return "vanished while listing"
    return f"cannot read: {exc.strerror or exc}"


def walk(top: Path, report: WalkReport, visited: dict[tuple[int, int], Path],
         links: list[Path] | None = None) -> Iterator[Candidate]:
    """Yield model files and diffusers folders under ``top`` (depth first, names sorted).

    With ``links``, symbolic links to folders are not entered but appended to it, for the caller
    to walk after every real folder: a folder reached both ways is then catalogued at its real
    path, whichever sorts first."""
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError as exc:
            report.problems.append(Problem(folder, _reason(exc)))
            report.unreadable.append(folder)
            continue
        seen_as = visited.get((st.st_dev, st.st_ino))
        if seen_as is not None:
            loop = seen_as == folder or seen_as in folder.parents
            what = f"symlink loop back to {seen_as}" if loop else f"same folder as {seen_as}, scanned once"
            report.problems.append(Problem(folder, what))
            continue
        visited[(st.st_dev, st.st_ino)] = folder
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            report.problems.append(Problem(folder, _reason(exc)))
            report.unreadable.append(folder)
            continue
        report.folders += 1
        listed = {e.name: e for e in entries}
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            if not is_text(entry.name):
                if entry.is_dir() or os.path.splitext(entry.name)[1].lower() in MODEL_SUFFIXES:
                    report.problems.append(Problem(path, NOT_TEXT))
                continue
            try:
                is_dir = entry.is_dir()
                if is_dir:
                    if entry.name.startswith("."):
                        continue
                    if os.path.isfile(os.path.join(entry.path, "model_index.json")):
                        dst = _entry_stat(entry)
                        yield Candidate(path, folder_key(path, dst), True, _listed_signature(entry.name, True, listed))
                    elif os.path.splitext(entry.name)[1].lower() in MODEL_SUFFIXES:
                        # a folder named like a model file: listed (and skipped with a reason), not entered
                        yield Candidate(path, stat_key(_entry_stat(entry)), True)
                    elif links is not None and entry.is_symlink():
                        links.append(path)
                    else:
                        subfolders.append(path)
                    continue
                if os.path.splitext(entry.name)[1].lower() not in MODEL_SUFFIXES or entry.name.startswith("._"):
                    # "._name": macOS AppleDouble metadata beside each file copied to FAT/exFAT
                    if entry.is_symlink() and not os.path.exists(entry.path):  # a linked drive unplugged?
                        report.problems.append(Problem(path, "broken symbolic link"))
                        report.unreadable.append(path)
                    continue
                yield Candidate(path, stat_key(_entry_stat(entry)), False, _listed_signature(entry.name, False, listed))
            except OSError as exc:
                if entry.is_symlink() and exc.errno == errno.ENOENT:
                    report.problems.append(Problem(path, "broken symbolic link"))
                    report.unreadable.append(path)  # its target may come back: no tombstone
                else:
                    report.problems.append(Problem(path, _reason(exc)))
        stack.extend(reversed(subfolders))
