"""``gmi-desktop gui``: the subcommand that opens the desktop app (registered by cli/main.py).

Nothing heavy at import time: ``gmi-desktop --help`` must stay fast.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("gui", aliases=["app"], help="open the desktop app (what `make run` does)",
                                   description="Open the GMI Desktop window.")
    parser.add_argument("--demo", action="store_true",
                        help="start with the demo library of tiny random models (offline, no downloads)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gmi_desktop.gui.app import run

    return run(demo=args.demo)
