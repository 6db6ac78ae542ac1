"""macOS: "Open With" through the bundle's ``CFBundleDocumentTypes`` and a Finder Quick Action.

The app bundle's Info.plist (written by the PyInstaller spec from :func:`app_info_plist`) declares
PNG, JPEG and WebP as documents it can view (``LSHandlerRank`` Alternate: listed, never made the
default); Finder then sends the files as open-document Apple Events, which Qt delivers as
``QFileOpenEvent`` (see :mod:`gmi_desktop.integrations.single_instance`).

The Quick Action is an Automator service, ``~/Library/Services/Find best model.workflow``: an
Info.plist (``NSServices``: Finder, image files) and ``document.wflow`` with one "Run Shell Script"
action that passes the selection as arguments to ``... open``. Both are plists, rendered here and
round-tripped with :mod:`plistlib` by the tests (no Mac in CI: they were not clicked on one).
"""

from __future__ import annotations

import plistlib
import shlex
import sys
from pathlib import Path

from gmi_desktop import __version__
from gmi_desktop.integrations.common import (
    APP_NAME, MARKER, VERB, IntegrationError, Item, Manifest, check_command, file_state, remove_file,
    write_file,
)

BUNDLE_ID = "io.github.gmi-desktop"
IMAGE_UTIS = ("public.png", "public.jpeg", "org.webmproject.webp")
WORKFLOW = f"{VERB}.workflow"


def document_types() -> list[dict]:
    return [{
        "CFBundleTypeName": "Image",
        "CFBundleTypeRole": "Viewer",
        "LSHandlerRank": "Alternate",
        "LSItemContentTypes": list(IMAGE_UTIS),
    }]


def app_info_plist(version: str = __version__) -> dict:
    """The Info.plist keys of the app bundle (PyInstaller's ``BUNDLE(info_plist=...)``)."""
    return {
        "CFBundleName": APP_NAME,
        "CFBundleDisplayName": APP_NAME,
        "CFBundleIdentifier": BUNDLE_ID,
        "CFBundleShortVersionString": version,
        "CFBundleVersion": version,
        "CFBundlePackageType": "APPL",
        "CFBundleDocumentTypes": document_types(),
        "LSApplicationCategoryType": "public.app-category.graphics-design",
        "LSMinimumSystemVersion": "11.0",
        "NSHighResolutionCapable": True,
        "NSRequiresAquaSystemAppearance": False,
    }


def shell_script(command: list[str]) -> str:
    check_command(command)
    return f'exec {" ".join(shlex.quote(a) for a in command)} -- "$@"\n'


def quick_action_files(command: list[str]) -> dict[str, bytes]:
    """``{path inside the .workflow bundle: bytes}``."""
    info = {
        "NSServices": [{
            "NSMenuItem": {"default": VERB},
            "NSMessage": "runWorkflowAsService",
            "NSRequiredContext": {"NSApplicationIdentifier": "com.apple.finder"},
            "NSSendFileTypes": ["public.image"],
        }],
        "GMIDesktopManaged": MARKER,
    }
    action = {
        "AMAccepts": {"Container": "List", "Optional": True, "Types": ["com.apple.cocoa.path"]},
        "AMActionVersion": "2.0.3",
        "AMApplication": ["Automator"],
        "AMProvides": {"Container": "List", "Types": ["com.apple.cocoa.string"]},
        "ActionBundlePath": "/System/Library/Automator/Run Shell Script.action",
        "ActionName": "Run Shell Script",
        "ActionParameters": {
            "COMMAND_STRING": shell_script(command),
            "CheckedForUserDefaultShell": True,
            "inputMethod": 1,  # pass the input as arguments ("$@"), not on stdin
            "shell": "/bin/sh",
            "source": "",
        },
        "BundleIdentifier": "com.apple.RunShellScript",
        "CFBundleVersion": "2.0.3",
        "Class Name": "RunShellScriptAction",
        "InputUUID": "6E1D6E52-1C4B-4F3F-9B0B-3A5A1D2B7C01",
        "OutputUUID": "6E1D6E52-1C4B-4F3F-9B0B-3A5A1D2B7C02",
        "UUID": "6E1D6E52-1C4B-4F3F-9B0B-3A5A1D2B7C03",
        "UnlocalizedApplications": ["Automator"],
        "isViewVisible": True,
    }
    document = {
        "AMApplicationBuild": "523",
        "AMApplicationVersion": "2.10",
        "AMDocumentVersion": "2",
        "actions": [{"action": action}],
        "connectors": {},
        "workflowMetaData": {
            "serviceInputTypeIdentifier": "com.apple.Automator.fileSystemObject.image",
            "serviceOutputTypeIdentifier": "com.apple.Automator.nothing",
            "serviceProcessesInput": 0,
            "workflowTypeIdentifier": "com.apple.Automator.servicesMenu",
        },
        "GMIDesktopManaged": MARKER,
    }
    return {
        "Contents/Info.plist": plistlib.dumps(info, sort_keys=True),
        "Contents/document.wflow": plistlib.dumps(document, sort_keys=True),
    }


def services_dir() -> Path:
    return Path.home() / "Library" / "Services"


def _require_macos() -> None:
    if sys.platform != "darwin":
        raise IntegrationError(None, "Finder Quick Actions exist only on macOS",
                               "use `gmi-desktop integrate render --platform macos` to write the files")


def install(command: list[str], folder: Path | None = None, manifest: Manifest | None = None) -> list[Item]:
    if folder is None:
        _require_macos()
    folder = folder or services_dir()
    manifest = manifest or Manifest()
    try:
        return [write_file(f"Quick Action {name}", folder / WORKFLOW / name, content, manifest)
                for name, content in quick_action_files(command).items()]
    finally:
        manifest.save()


def uninstall(folder: Path | None = None, manifest: Manifest | None = None) -> list[Item]:
    if folder is None:
        _require_macos()
    folder = folder or services_dir()
    manifest = manifest or Manifest()
    try:
        items = [remove_file(f"Quick Action {name}", folder / WORKFLOW / name) for name in quick_action_files(["x"])]
        manifest.remove_empty_dirs()
        return items
    finally:
        manifest.save()


def status(command: list[str], folder: Path | None = None) -> list[Item]:
    if folder is None:
        _require_macos()
    folder = folder or services_dir()
    return [Item(f"Quick Action {name}", str(folder / WORKFLOW / name), file_state(folder / WORKFLOW / name, content))
            for name, content in quick_action_files(command).items()]

