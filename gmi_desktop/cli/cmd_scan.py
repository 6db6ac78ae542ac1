"""``gmi-desktop scan [FOLDER...] [--json] [--no-hash]``: scan library folders into the catalog.

Given folders are added as library folders first; without any, the library folders already known
(and those in the settings) are scanned. The table (or JSON) goes to stdout, progress and problems
to stderr. Exit 0 when the scan completed, even if files were skipped; 2 on a bad folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import unicodedata
from pathlib import Path

from gmi_desktop.core.errors import UserInputError
from gmi_desktop.cli.progress import ScanProgress, printable
from gmi_desktop.services.library import Library, ScanSummary, run
from gmi_desktop.store import paths
from gmi_desktop.store.catalog import Catalog, FileRecord
from gmi_desktop.store.classify import FAMILY_NAMES
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


def copies_of(groups: list[list[FileRecord]]) -> dict[str, int]:
    """``sha256 -> copies`` for content held by two separate files or more. Hard links and
    symbolic links to one file share its (device, inode): they are one copy on disk."""
    counts = {group[0].sha256: len({r.key[:2] for r in group}) for group in groups}
    return {sha: n for sha, n in counts.items() if n > 1}


def status_text(record: FileRecord, duplicates: dict[str, int]) -> str:
    if not record.reason or record.reason.startswith(f"{record.status}:"):
        text = record.reason or record.status
    else:
        text = f"{record.status}: {record.reason}"
    if record.sha256 and duplicates.get(record.sha256, 0) > 1 and record.status != "missing":
        text += f" (duplicate, {duplicates[record.sha256]} copies)"
    return text


def family_text(record: FileRecord) -> str:
    if not record.family:
        return record.kind or "-"
    name = FAMILY_NAMES.get(record.family, record.family)
    return name if record.variant in (None, "normal") else f"{name} {record.variant}"


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


def render_table(records: list[FileRecord], duplicates: dict[str, int]) -> str:
    rows = [("NAME", "FAMILY", "AUTOV2", "STATUS")]
    for r in records:
        name = _fit(printable(r.name), NAME_WIDTH)
        rows.append((name, printable(family_text(r)), r.autov2 or "-", printable(status_text(r, duplicates))))
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
        },
        "problems": [{"path": _valid_text(os.fspath(p.path)), "reason": p.reason} for p in summary.problems],
    }


def delete_spec_files(spec_paths: list[str]) -> int:
    """Delete pruned specification files, but only ours: files inside the app's specs folder."""
    ours = paths.specs_dir().resolve()
    deleted = 0
    for name in spec_paths:
        path = Path(name).resolve()
        if path.parent != ours and ours not in path.parents:
            continue
        try:
            path.unlink()
            deleted += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            print(f"problem: {printable(os.fspath(path))}: cannot delete: {exc.strerror or exc}", file=sys.stderr)
    return deleted


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
        progress = ScanProgress(sys.stderr)
        try:
            summary = run(library.scan(roots, hashing=not args.no_hash), progress)
        finally:
            progress.close()
        pruned = library.prune() if args.prune else None
        root_ids = {r.id for r in roots}
        records = [r for r in catalog.files() if r.root_id in root_ids]
        duplicates = copies_of(catalog.duplicates())
    for problem in summary.problems:
        print(f"problem: {printable(os.fspath(problem.path))}: {printable(problem.reason)}", file=sys.stderr)
    print(
        f"{summary.seen} files: {summary.probed} new or changed, {summary.unchanged} unchanged, "
        f"{summary.hashed} hashed, {len(summary.tombstoned)} gone, {len(summary.problems)} problems",
        file=sys.stderr,
    )
    if pruned is not None:
        deleted = delete_spec_files(pruned.removed_spec_paths)
        print(f"pruned: {len(pruned.removed_files)} missing files forgotten, {deleted} specifications deleted",
              file=sys.stderr)
    if args.json:
        print(json.dumps(to_json(records, duplicates, summary), indent=2, ensure_ascii=False))
    else:
        print(render_table(records, duplicates))
    return 0
