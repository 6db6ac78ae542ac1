"""Linux shell integration: a desktop entry, its icon, and "Find best model" in Dolphin, Nautilus
and Thunar — all per user, under the XDG folders.

* ``$XDG_DATA_HOME/applications/gmi-desktop.desktop``: the app, "Open With" for PNG/JPEG/WebP
  (``Exec=... %F``); ``update-desktop-database`` refreshes the MIME cache when it is installed.
* ``$XDG_DATA_HOME/icons/hicolor/scalable/apps/gmi-desktop.svg``: the icon.
* ``$XDG_DATA_HOME/kio/servicemenus/gmi-desktop-find-best-model.desktop``: KDE Dolphin's service
  menu (KDE Frameworks >= 5.85 require it to be executable).
* ``$XDG_DATA_HOME/nautilus/scripts/Find best model``: GNOME Files' Scripts menu; Nautilus passes
  the selection one path per line in ``NAUTILUS_SCRIPT_SELECTED_FILE_PATHS``.
* ``$XDG_CONFIG_HOME/Thunar/uca.xml``: a custom action merged in beside the user's own, found
  again by its unique id.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from gmi_desktop.integrations.common import (
    APP_ID, APP_NAME, IMAGE_MIME_TYPES, IMAGE_SUFFIXES, MARKER, VERB, IntegrationError, Item, Manifest,
    check_command, file_state, icon_svg, remove_file, write_file,
)
from gmi_desktop.store.atomic import atomic_write_bytes

THUNAR_ID = f"{MARKER}-find-best-model"
COMMENT = "Find which of your Stable Diffusion checkpoints can make images like this one"
# characters that force quoting in a desktop entry's Exec key (Desktop Entry Specification 1.5)
_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


@dataclass(frozen=True)
class Places:
    data_home: Path
    config_home: Path

    @classmethod
    def from_env(cls) -> "Places":
        home = Path.home()
        data = os.environ.get("XDG_DATA_HOME") or home / ".local" / "share"
        config = os.environ.get("XDG_CONFIG_HOME") or home / ".config"
        return cls(Path(data), Path(config))

    @property
    def desktop_entry(self) -> Path:
        return self.data_home / "applications" / f"{APP_ID}.desktop"

    @property
    def icon(self) -> Path:
        return self.data_home / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg"

    @property
    def dolphin(self) -> Path:
        return self.data_home / "kio" / "servicemenus" / f"{APP_ID}-find-best-model.desktop"

    @property
    def nautilus(self) -> Path:
        return self.data_home / "nautilus" / "scripts" / VERB

    @property
    def thunar(self) -> Path:
        return self.config_home / "Thunar" / "uca.xml"


# -- quoting ---------------------------------------------------------------------------------------
def exec_arg(arg: str) -> str:
    """One argument of an ``Exec`` key, as the file must hold it: quoted when it holds a reserved
    character (``"`` `` ` `` ``$`` ``\\`` escaped inside the quotes), ``%`` doubled, and then the
    string-level escape of every backslash."""
    if any(c in _RESERVED for c in arg):
        arg = '"' + "".join("\\" + c if c in '"`$\\' else c for c in arg) + '"'
    return arg.replace("%", "%%").replace("\\", "\\\\")


def exec_line(command: list[str]) -> str:
    check_command(command)
    return " ".join(exec_arg(a) for a in command) + " %F"


# -- file contents ---------------------------------------------------------------------------------
def desktop_entry(command: list[str]) -> str:
    mime = "".join(f"{m};" for m in IMAGE_MIME_TYPES)
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Version=1.4\n"
        f"Name={APP_NAME}\n"
        "GenericName=Checkpoint finder\n"
        f"Comment={COMMENT}\n"
        f"Exec={exec_line(command)}\n"
        f"Icon={APP_ID}\n"
        "Terminal=false\n"
        "Categories=Graphics;Viewer;\n"
        f"MimeType={mime}\n"
        "Keywords=Stable Diffusion;checkpoint;model;identify;\n"
        "StartupNotify=true\n"
        f"X-GMI-Managed={MARKER}\n"
    )


def dolphin_menu(command: list[str]) -> str:
    mime = "".join(f"{m};" for m in IMAGE_MIME_TYPES)
    return (
        "[Desktop Entry]\n"
        "Type=Service\n"
        f"MimeType={mime}\n"
        "Actions=gmiFindBestModel;\n"
        "X-KDE-Priority=TopLevel\n"
        f"X-GMI-Managed={MARKER}\n"
        "\n"
        "[Desktop Action gmiFindBestModel]\n"
        f"Name={VERB}\n"
        f"Icon={APP_ID}\n"
        f"Exec={exec_line(command)}\n"
    )


def nautilus_script(command: list[str]) -> str:
    check_command(command)
    argv = " ".join(shlex.quote(a) for a in command)
    return (
        "#!/bin/sh\n"
        f"# {VERB} ({APP_NAME}; {MARKER}): written by `gmi-desktop integrate install`,\n"
        "# removed by `gmi-desktop integrate uninstall`.\n"
        "# Nautilus lists the selected local files one per line; split on line breaks only, no globbing.\n"
        "IFS='\n'\n"
        "set -f\n"
        'if [ -n "$NAUTILUS_SCRIPT_SELECTED_FILE_PATHS" ]; then\n'
        f"  exec {argv} -- $NAUTILUS_SCRIPT_SELECTED_FILE_PATHS\n"
        "fi\n"
        f'exec {argv} -- "$@"\n'
    )


def thunar_command(command: list[str]) -> str:
    """A Thunar command line: Thunar substitutes ``%F`` (and ``%%``) and runs it with ``/bin/sh
    -c``, so: POSIX single quotes, every ``%`` doubled, then ``%F``."""
    check_command(command)
    return " ".join(shlex.quote(a).replace("%", "%%") for a in command) + " %F"


def thunar_action(command: list[str]) -> ET.Element:
    action = ET.Element("action")
    patterns = ";".join(f"*{s};*{s.upper()}" for s in IMAGE_SUFFIXES)
    fields = [("icon", APP_ID), ("name", VERB), ("submenu", ""), ("unique-id", THUNAR_ID),
              ("command", thunar_command(command)), ("description", COMMENT), ("range", "*"),
              ("patterns", patterns), ("image-files", None)]
    action.text = "\n\t"
    for i, (tag, text) in enumerate(fields):
        child = ET.SubElement(action, tag)
        if text is not None:
            child.text = text
        child.tail = "\n" if i == len(fields) - 1 else "\n\t"
    action.tail = "\n"
    return action


# -- Thunar's uca.xml --------------------------------------------------------------------------
def _read_uca(path: Path) -> ET.Element | None:
    if not path.exists():
        return None
    parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True))
    try:
        root = ET.fromstring(path.read_bytes(), parser=parser)
    except (OSError, ET.ParseError) as exc:
        raise IntegrationError(path, f"Thunar's custom actions file cannot be read ({exc})",
                               "fix or move the file, then run the command again; it was left as it is") from exc
    if root.tag != "actions":
        raise IntegrationError(path, "not a Thunar custom actions file (no <actions> element)",
                               "fix or move the file; it was left as it is")
    return root


def _ours(root: ET.Element) -> list[ET.Element]:
    return [a for a in root.findall("action") if (a.findtext("unique-id") or "").strip() == THUNAR_ID]


def _write_uca(path: Path, root: ET.Element) -> None:
    body = ET.tostring(root, encoding="unicode")
    atomic_write_bytes(path, ('<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n").encode("utf-8"))


def merge_thunar(path: Path, command: list[str], manifest: Manifest) -> Item:
    root = _read_uca(path)
    mine = thunar_action(command)
    if root is None:
        root = ET.Element("actions")
        root.text = "\n"
        manifest.make_dirs(path.parent)
        manifest.created_file(path)
    else:
        current = _ours(root)
        if len(current) == 1 and ET.tostring(current[0]) == ET.tostring(mine):
            return Item("Thunar custom action", os.fspath(path), "unchanged")
        for old in current:
            root.remove(old)
        children = list(root)
        if children and not (children[-1].tail or "").endswith("\n"):
            children[-1].tail = (children[-1].tail or "") + "\n"
        elif not children and not root.text:
            root.text = "\n"
    root.append(mine)
    _write_uca(path, root)
    return Item("Thunar custom action", os.fspath(path), "installed")


def unmerge_thunar(path: Path, manifest: Manifest) -> Item:
    root = _read_uca(path)
    current = _ours(root) if root is not None else []
    if not current:
        return Item("Thunar custom action", os.fspath(path), "absent")
    for old in current:
        root.remove(old)
    if os.fspath(path) in manifest.created_files and not root.findall("action"):
        path.unlink()
        manifest.created_files.remove(os.fspath(path))
    else:
        _write_uca(path, root)
    return Item("Thunar custom action", os.fspath(path), "removed")


def thunar_state(path: Path, command: list[str]) -> str:
    root = _read_uca(path)
    current = _ours(root) if root is not None else []
    if not current:
        return "absent"
    return "present" if ET.tostring(current[0]) == ET.tostring(thunar_action(command)) else "outdated"


# -- install / uninstall / status ------------------------------------------------------------------
def _files(places: Places, command: list[str]) -> list[tuple[str, Path, bytes, bool]]:
    return [
        ("desktop entry", places.desktop_entry, desktop_entry(command).encode(), False),
        ("icon", places.icon, icon_svg(), False),
        ("Dolphin service menu", places.dolphin, dolphin_menu(command).encode(), True),
        ("Nautilus script", places.nautilus, nautilus_script(command).encode(), True),
    ]


def _update_desktop_database(folder: Path) -> None:
    tool = shutil.which("update-desktop-database")
    if tool and folder.is_dir():
        subprocess.run([tool, "-q", os.fspath(folder)], check=False, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def install(command: list[str], places: Places | None = None, manifest: Manifest | None = None) -> list[Item]:
    places = places or Places.from_env()
    manifest = manifest or Manifest()
    items = []
    try:
        apps = places.desktop_entry.parent
        cache = apps / "mimeinfo.cache"
        had_cache = cache.exists()
        for what, path, content, executable in _files(places, command):
            items.append(write_file(what, path, content, manifest, executable))
        if not had_cache and shutil.which("update-desktop-database"):
            manifest.created_file(cache)
        _update_desktop_database(apps)
        try:
            items.append(merge_thunar(places.thunar, command, manifest))
        except IntegrationError as exc:
            items.append(Item("Thunar custom action", os.fspath(places.thunar), "problem", exc.reason))
    finally:
        manifest.save()
    return items


def uninstall(places: Places | None = None, manifest: Manifest | None = None) -> list[Item]:
    places = places or Places.from_env()
    manifest = manifest or Manifest()
    items = []
    try:
        for what, path in (("desktop entry", places.desktop_entry), ("icon", places.icon),
                           ("Dolphin service menu", places.dolphin), ("Nautilus script", places.nautilus)):
            items.append(remove_file(what, path))
        apps = places.desktop_entry.parent
        cache = apps / "mimeinfo.cache"
        if os.fspath(cache) in manifest.created_files:  # derived data that was not there before
            cache.unlink(missing_ok=True)
            manifest.created_files.remove(os.fspath(cache))
        else:
            _update_desktop_database(apps)
        try:
            items.append(unmerge_thunar(places.thunar, manifest))
        except IntegrationError as exc:
            items.append(Item("Thunar custom action", os.fspath(places.thunar), "problem", exc.reason))
        manifest.remove_empty_dirs()
    finally:
        manifest.save()
    return items


def status(command: list[str], places: Places | None = None) -> list[Item]:
    places = places or Places.from_env()
    items = [Item(what, os.fspath(path), file_state(path, content)) for what, path, content, _ in _files(places, command)]
    try:
        items.append(Item("Thunar custom action", os.fspath(places.thunar), thunar_state(places.thunar, command)))
    except IntegrationError as exc:
        items.append(Item("Thunar custom action", os.fspath(places.thunar), "problem", exc.reason))
    return items
