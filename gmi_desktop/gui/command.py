"""``gmi-desktop gui``: the subcommand that opens a desktop window (registered by cli/main.py).

It always opens a new window. ``gmi-desktop open`` (what ``make run``, the desktop entry and the
right-click menu run) goes through the single-instance check first and hands over to a window
that is already running; that check lives in ``integrations`` (the gui layer may not import it),
so this command stays the plain window for ``--demo`` and development.
Nothing heavy at import time: ``gmi-desktop --help`` must stay fast.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("gui", aliases=["app"], help="open a new desktop window (`gmi-desktop open` reuses a running one)",
                                   description="Open a new GMI Desktop window. To bring up the running window "
                                               "instead of a second one, use `gmi-desktop open` (what `make run` does).")
    parser.add_argument("--demo", action="store_true",
                        help="start with the demo library of tiny random models (offline, no downloads)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from gmi_desktop.gui.app import run

    return run(demo=args.demo)
