"""``gmi-desktop integrate install|uninstall|status|render`` and ``gmi-desktop open IMAGE...``.

``integrate`` adds "Find best model" to the file manager's right-click menu of PNG, JPEG and WebP
images, for this user (Linux: desktop entry, icon, Dolphin, Nautilus, Thunar; Windows: a registry
verb under HKCU; macOS: a Finder Quick Action). ``render`` writes another platform's files into a
folder (packagers, and to look at them). ``open`` is what those menu entries run: it hands the
images to the running window, or starts it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path, PureWindowsPath

from gmi_desktop.cli.progress import printable


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "integrate", help="add or remove 'Find best model' in the file manager's right-click menu",
        description="Per user, no administrator rights. install is idempotent; uninstall removes only "
                    "what install wrote; status says what is there.")
    parser.add_argument("action", choices=("install", "uninstall", "status", "render"))
    parser.add_argument("--exe", metavar="PROGRAM",
                        help="the program the menu runs (default: this installation); it is run as "
                             "'PROGRAM open IMAGE...'")
    parser.add_argument("--platform", choices=("linux", "windows", "macos"),
                        help="render: whose files to write (default: this one)")
    parser.add_argument("--out", metavar="FOLDER", help="render: where to write them")
    parser.set_defaults(func=main)

    opener = subparsers.add_parser(
        "open", help="show images in the running window (or start it): what the right-click menu runs",
        description="Hand IMAGEs to the running GMI Desktop window (which comes to the front and "
                    "identifies them), or start it if none is running.")
    opener.add_argument("images", nargs="*", metavar="IMAGE")
    opener.set_defaults(func=open_main)


def _command(args: argparse.Namespace) -> list[str]:
    from gmi_desktop.integrations.common import launch_command

    if not args.exe:
        return launch_command()
    exe = args.exe if os.path.isabs(args.exe) or PureWindowsPath(args.exe).is_absolute() else os.path.abspath(args.exe)
    return [exe, "open"]


def main(args: argparse.Namespace) -> int:
    from gmi_desktop.core.errors import UserInputError
    from gmi_desktop.integrations import shell

    command = _command(args)
    if args.action == "render":
        if not args.out:
            raise UserInputError(None, "render needs --out FOLDER")
        platform = args.platform or shell.current_platform()
        for path in shell.render(platform, command, Path(args.out)):
            print(printable(os.fspath(path)))
        return 0
    if args.platform and args.platform != shell.current_platform():
        raise UserInputError(None, f"cannot {args.action} the {args.platform} integration on {shell.current_platform()}",
                             "use render --out FOLDER to write its files")
    items = {"install": lambda: shell.install(command), "uninstall": shell.uninstall,
             "status": lambda: shell.status(command)}[args.action]()
    for item in items:
        detail = f" ({item.detail})" if item.detail else ""
        print(f"{item.state:<10} {item.what}: {printable(item.path)}{detail}")
    foreign = [i for i in items if i.state == "foreign"]
    if foreign:
        print("left alone: files of the same name that gmi-desktop did not write", file=sys.stderr)
    return 1 if any(i.state == "problem" for i in items) else 0


def open_main(args: argparse.Namespace) -> int:
    from gmi_desktop.integrations.launch import open_images

    return open_images(args.images)
