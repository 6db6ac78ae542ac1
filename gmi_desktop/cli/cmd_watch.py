"""``gmi-desktop watch [--images FOLDER]``: keep specifications current as models arrive (headless).

Watches the library folders: a new or changed checkpoint is probed and hashed once it stops
changing and its specification is built (coarse first, then full); removed ones are marked
missing. With ``--images``, every new image in that folder is identified and the result written
beside it as ``<image>.gmi.json``. One line on stderr for each thing worth knowing (queued,
specification usable, identified, problems). Ctrl+C or SIGTERM stop it cleanly: the build stops
between images (its progress is kept and resumed next time), no file is left half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

from gmi_desktop.cli.progress import printable
from gmi_desktop.core.errors import UserInputError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "watch", help="keep specifications current as models arrive; optionally identify new images",
        description="Watch the library folders (those known to the catalog and in the settings): "
                    "build the specification of each new or changed checkpoint, and optionally "
                    "identify every new image in a folder. Stop with Ctrl+C.")
    parser.add_argument("folders", nargs="*", metavar="FOLDER", help="library folders to add before watching")
    parser.add_argument("--images", metavar="FOLDER", help="identify new images in FOLDER; results beside "
                                                          "them as <image>.gmi.json")
    parser.add_argument("--no-build", action="store_true", help="keep the catalog current, build nothing")
    parser.add_argument("--new-only", action="store_true",
                        help="build only models that arrive while watching (default: also the missing ones)")
    parser.add_argument("--quick", action="store_true", help="coarse specifications only")
    parser.set_defaults(func=main)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl+C and SIGTERM set ``stop`` (the work stops at its next safe point) instead of raising
    in the middle of a write; the previous handlers come back afterwards."""
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, lambda *_: stop.set())
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(args: argparse.Namespace) -> int:
    from gmi_desktop.services.library import Library
    from gmi_desktop.services.watch_mode import WatchMode
    from gmi_desktop.store.catalog import Catalog
    from gmi_desktop.store.settings import load_settings

    for folder in [*args.folders, *([args.images] if args.images else [])]:
        if not os.path.isdir(folder):
            raise UserInputError(folder, "no such folder" if not os.path.exists(folder) else "not a folder")
    settings = load_settings()
    stop = threading.Event()
    with Catalog() as catalog:
        library = Library(catalog)
        for folder in args.folders:
            library.add_folder(folder)
        for folder in settings.library_folders:
            catalog.add_root(folder)
        if not catalog.roots():
            raise UserInputError(None, "no library folders yet", "run: gmi-desktop watch FOLDER")
        builder = identifier = None
        if not args.no_build or args.images:
            from gmi_desktop.engine.host import ModelHost

            host = ModelHost(settings)
            if not args.no_build:
                from gmi_desktop.services.specs import SpecBuilder

                builder = SpecBuilder(settings, host, catalog=catalog)
            if args.images:
                from gmi_desktop.services.identify import Identifier

                identifier = Identifier(settings, host, catalog=catalog)
        mode = WatchMode(library, builder, identifier=identifier, images_dir=args.images,
                         catch_up=not args.new_only, quick=args.quick,
                         on_notice=lambda n: print(f"{n.kind}: {printable(n.message)}", file=sys.stderr, flush=True))
        with stop_on_signals(stop):
            mode.run(stop)
    print("stopped", file=sys.stderr)
    return 0
