"""``gmi-desktop scan [FOLDER...] [--json] [--no-hash] [--prune]``: scan library folders into the
catalog; ``gmi-desktop remove-folder FOLDER... [--prune]``: stop scanning a library folder.

Given folders are added as library folders first; without any, the library folders already known
(and those in the settings) are scanned. The table (or JSON) goes to stdout, progress and problems
to stderr. Exit 0 when the scan completed, even if files were skipped; 2 on a bad folder. What a
file's status, family and copies are is decided by the library service and the catalog; this
module only lays them out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata

from gmi_desktop.cli.progress import ProgressLine, printable
from gmi_desktop.core.errors import UserInputError
from gmi_desktop.core.progress import run
from gmi_desktop.services.library import Library, ScanSummary
from gmi_desktop.store.catalog import Catalog, FileRecord, PruneResult
from gmi_desktop.store.settings import load_settings

NAME_WIDTH = 48


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "scan", help="scan folders of checkpoints into the library",
        description="Add FOLDERs as library folders (or take the known ones) and scan them: a table "
                    "of name, family, AutoV2 hash and status on stdout, progress on stderr.")
    parser.add_argument("folders", nargs="*", metavar="FOLDER", help="folders to add and scan")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-hash", action="store_true", help="list and classify only; hash later")
    parser.add_argument("--prune", action="store_true",
                        help="after the scan, forget files that are gone and delete the specifications "
                             "that no remaining file needs")
    parser.set_defaults(func=main)
    remove = subparsers.add_parser(
        "remove-folder", help="stop scanning a library folder and forget its files",
        description="Remove FOLDERs from the library: their files are forgotten (the files on disk "
                    "are not touched). Specifications stay until --prune (here or with scan).")
    remove.add_argument("folders", nargs="+", metavar="FOLDER", help="library folders to remove")
    remove.add_argument("--prune", action="store_true",
                        help="also delete the specifications that no remaining file needs")
    remove.set_defaults(func=remove_main)


def display_width(text: str) -> int:
    """Terminal columns of ``text``: East Asian wide characters take two, combining marks none."""
    if text.isascii():
        return len(text)
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def _fit(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns, with "…" where it was cut."""
    if display_width(text) <= width:
        return text
    while display_width(text) > width - 1:
        text = text[:-1]
    return text + "…"


def render_table(records: list[FileRecord], copies: dict[str, int]) -> str:
    rows = [("NAME", "FAMILY", "AUTOV2", "STATUS")]
    for r in records:
        name = _fit(printable(r.name), NAME_WIDTH)
        status = r.status_text(copies.get(r.sha256, 0) if r.sha256 else 0)
        rows.append((name, printable(r.kind_text), r.autov2 or "-", printable(status)))
    widths = [max(display_width(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell + " " * (widths[i] - display_width(cell)) for i, cell in enumerate(row[:3])) + "  " + row[3]
        for row in rows
    )


def _valid_text(text: str) -> str:
    """A name holding bytes that are not UTF-8 (lone surrogates) with those written as ``\\udcXX``."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def to_json(records: list[FileRecord], duplicates: dict[str, int], summary: ScanSummary) -> dict:
    return {
        "files": [
            {
                "path": os.fspath(r.path), "name": r.name, "status": r.status, "reason": r.reason,
                "family": r.family, "variant": r.variant, "kind": r.kind, "file_format": r.file_format,
                "size": r.size, "sha256": r.sha256, "autov2": r.autov2, "autov1": r.autov1,
                "tensor_sha256": r.tensor_sha256, "base_model": r.base_model,
                "download_count": r.download_count, "preview_path": r.preview_path,
                "duplicates": duplicates.get(r.sha256, 0) if r.sha256 else 0,
            }
            for r in records
        ],
        "summary": {
            "roots": [os.fspath(p) for p in summary.roots],
            "folders": [{"path": os.fspath(p), "layout": layout} for p, layout in summary.folders],
            "seen": summary.seen, "unchanged": summary.unchanged, "probed": summary.probed,
            "hashed": summary.hashed, "reused_hashes": summary.reused_hashes,
            "tombstoned": [os.fspath(p) for p in summary.tombstoned],
            "moved": [[os.fspath(a), os.fspath(b)] for a, b in summary.moved],
            "offline": [os.fspath(p) for p in summary.offline],
            "counts": {str(status): n for status, n in summary.counts.items()},
            "problem_count": summary.problem_count,
        },
        "problems": [{"path": _valid_text(os.fspath(p.path)), "reason": p.reason} for p in summary.problems],
    }


def _print_prune(pruned: PruneResult) -> None:
    for problem in pruned.problems:
        print(f"problem: {printable(os.fspath(problem.path))}: {printable(problem.reason)}", file=sys.stderr)
    print(f"pruned: {len(pruned.removed_files)} missing files forgotten, {pruned.deleted_specs} "
          "specifications deleted", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    for folder in args.folders:  # validate every argument before changing anything
        if not os.path.isdir(folder):
            reason = "no such folder" if not os.path.exists(folder) else "not a folder"
            raise UserInputError(folder, reason)
    with Catalog() as catalog:
        library = Library(catalog)
        if args.folders:
            roots = [library.add_folder(folder) for folder in args.folders]
        else:
            for folder in load_settings().library_folders:
                catalog.add_root(folder)  # not validated: an unplugged drive is reported by the scan
            roots = catalog.roots()
        if not roots:
            raise UserInputError(None, "no library folders yet", "run: gmi-desktop scan FOLDER")
        progress = ProgressLine(sys.stderr)
        try:
            summary = run(library.scan(roots, hashing=not args.no_hash), progress)
        finally:
            progress.close()
        pruned = library.prune() if args.prune else None
        records = library.files(roots)
        copies = catalog.copies()
    for problem in summary.problems:
        print(f"problem: {printable(os.fspath(problem.path))}: {printable(problem.reason)}", file=sys.stderr)
    print(summary.describe(), file=sys.stderr)
    if pruned is not None:
        _print_prune(pruned)
    if args.json:
        print(json.dumps(to_json(records, copies, summary), indent=2, ensure_ascii=False))
    else:
        print(render_table(records, copies))
    return 0


def remove_main(args: argparse.Namespace) -> int:
    with Catalog() as catalog:
        library = Library(catalog)
        known = {os.fspath(r.path) for r in library.folders()}
        unknown = [f for f in args.folders if os.path.normpath(os.path.abspath(os.path.expanduser(f))) not in known]
        if unknown:  # nothing is removed unless every argument is a library folder
            raise UserInputError(unknown[0], "not a library folder",
                                 f"the library folders are: {', '.join(sorted(known)) or 'none'}")
        for folder in args.folders:
            library.remove_folder(folder)
            print(f"removed library folder: {printable(folder)}", file=sys.stderr)
        in_settings = {os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(f))))
                       for f in load_settings().library_folders}
        for folder in args.folders:
            if os.path.normpath(os.path.abspath(os.path.expanduser(folder))) in in_settings:
                print(f"note: {printable(folder)} is listed in the settings' library_folders; remove it "
                      "there too, or the next scan adds it again", file=sys.stderr)
        if args.prune:
            _print_prune(library.prune())
    return 0
