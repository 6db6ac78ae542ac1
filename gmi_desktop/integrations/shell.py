"""Install, remove, inspect or render the "Find best model" shell integration of one platform."""

from __future__ import annotations

import os
import plistlib
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from gmi_desktop.integrations import linux, macos, windows
from gmi_desktop.integrations.common import APP_ID, VERB, IntegrationError, Item, icon_svg
from gmi_desktop.store.atomic import atomic_write_bytes

PLATFORMS = ("linux", "windows", "macos")


def current_platform() -> str:
    if sys.platform == "win32":
        return "windows"
    if sys.platform == "darwin":
        return "macos"
    return "linux"


def install(command: list[str]) -> list[Item]:
    platform = current_platform()
    if platform == "windows":
        return windows.install(command)
    if platform == "macos":
        return macos.install(command)
    return linux.install(command)


def uninstall() -> list[Item]:
    platform = current_platform()
    if platform == "windows":
        return windows.uninstall()
    if platform == "macos":
        return macos.uninstall()
    return linux.uninstall()


def status(command: list[str]) -> list[Item]:
    platform = current_platform()
    if platform == "windows":
        return windows.status(command)
    if platform == "macos":
        return macos.status(command)
    return linux.status(command)


def rendered(platform: str, command: list[str]) -> dict[str, bytes]:
    """The files of ``platform``'s integration, ``{relative path: bytes}`` (for packagers and
    for looking at them): on Windows the registry as .reg files."""
    if platform == "linux":
        action = linux.thunar_action(command)
        return {
            f"{APP_ID}.desktop": linux.desktop_entry(command).encode(),
            f"{APP_ID}.svg": icon_svg(),
            f"kio-servicemenu/{APP_ID}-find-best-model.desktop": linux.dolphin_menu(command).encode(),
            f"nautilus-script/{VERB}": linux.nautilus_script(command).encode(),
            "thunar-uca-action.xml": ET.tostring(action, encoding="unicode").encode(),
        }
    if platform == "windows":
        return {
            f"{APP_ID}-context-menu.reg": windows.render_reg(windows.registry_keys(command, windows.default_icon(command))),
            f"{APP_ID}-context-menu-remove.reg": windows.render_unreg(),
        }
    if platform == "macos":
        files = {"Info.plist": plistlib.dumps(macos.app_info_plist(), sort_keys=True)}
        files.update({f"{macos.WORKFLOW}/{name}": data for name, data in macos.quick_action_files(command).items()})
        return files
    raise IntegrationError(None, f"unknown platform {platform!r}", f"use one of: {', '.join(PLATFORMS)}")


def render(platform: str, command: list[str], out: Path) -> list[Path]:
    written = []
    for name, data in rendered(platform, command).items():
        path = out / name
        atomic_write_bytes(path, data)
        os.chmod(path, 0o755 if name.startswith(("nautilus-script/", "kio-servicemenu/")) else 0o644)
        written.append(path)
    return written
