"""``gmi-desktop specs export PACK [--models NAME...]`` and ``gmi-desktop specs import PACK``.

Spec packs (:mod:`gmi_desktop.store.specpack`) share specifications between users: export writes
the specifications of this library's checkpoints; import verifies every entry and adds the
acceptable ones (one line per entry on stdout; each refused entry one line on stderr, exit 2).
"""

from __future__ import annotations

import argparse
import sys

from gmi_desktop.cli.progress import printable
from gmi_desktop.core.errors import UserInputError
from gmi_desktop.engine.host import ModelHost
from gmi_desktop.services.spec_models import list_models
from gmi_desktop.store import paths
from gmi_desktop.store.catalog import Catalog
from gmi_desktop.store.settings import load_settings
from gmi_desktop.store.specfile import SpecStore
from gmi_desktop.store.specpack import export_pack, import_pack


def register(subparsers) -> None:
    parser = subparsers.add_parser("specs", help="export or import spec packs",
                                   description="Share specifications: a spec pack holds specifications keyed "
                                               "by checkpoint SHA-256 and recipe digest.")
    sub = parser.add_subparsers(dest="specs_command", metavar="ACTION")
    export = sub.add_parser("export", help="write this library's specifications into a pack")
    export.add_argument("pack", metavar="PACK", help="the pack file to write (a .zip)")
    export.add_argument("--models", nargs="+", metavar="MODEL",
                        help="only these models (file name, or a prefix of the SHA-256)")
    export.set_defaults(func=main_export)
    imp = sub.add_parser("import", help="add the specifications of a pack (verified) to this library")
    imp.add_argument("pack", metavar="PACK", help="the pack file to read")
    imp.set_defaults(func=main_import)
    parser.set_defaults(func=lambda args: parser.print_help(sys.stderr) or 2)


def main_export(args: argparse.Namespace) -> int:
    folder = paths.specs_dir()
    store = SpecStore(folder)
    for skipped in store.skipped:
        print(printable(str(skipped)), file=sys.stderr)
    with Catalog() as catalog:
        present = {r.sha256: r for r in catalog.files() if r.sha256 and r.status != "missing"}
    specs = [s for s in store.specs if s.recipe.checkpoint_sha256 in present]
    if args.models:
        wanted = [m.lower() for m in args.models]

        def chosen(spec) -> bool:
            record = present[spec.recipe.checkpoint_sha256]
            return any(spec.recipe.checkpoint_sha256.startswith(w) or record.path.stem.lower() == w
                       or record.name.lower() == w for w in wanted)

        specs = [s for s in specs if chosen(s)]
    if not specs:
        raise UserInputError(None, "no specification to export", "build them first: gmi-desktop build-specs")
    written = export_pack(args.pack, specs)
    for spec in written:
        name = present[spec.recipe.checkpoint_sha256].name
        print(f"exported: {printable(name)} ({spec.recipe.checkpoint_sha256[:12]}, {spec.n_images} images)")
    print(f"{len(written)} specifications written to {printable(str(args.pack))}", file=sys.stderr)
    return 0


def main_import(args: argparse.Namespace) -> int:
    settings = load_settings()
    encoder = ModelHost(settings).encoder_id  # known without loading anything
    store = paths.specs_dir()
    with Catalog() as catalog:  # the recipe this installation builds for each library checkpoint
        expected = {m.sha256: m.digest for m in list_models(catalog, settings, encoder, store) if m.sha256 and m.digest}
    result = import_pack(args.pack, store, encoder_id=encoder, expected=expected)
    with Catalog() as catalog:
        for decision in result.of("imported"):
            sha = decision.spec.recipe.checkpoint_sha256
            if catalog.find_by_hash(sha) and decision.path is not None:
                catalog.set_spec_ref(sha, decision.path)
    for decision in result.decisions:
        stream = sys.stderr if decision.action == "refused" else sys.stdout
        print(printable(str(decision)), file=stream)
    refused = result.of("refused")
    print(f"{len(result.of('imported'))} imported, {len(result.of('kept'))} kept (local is as complete), "
          f"{len(refused)} refused", file=sys.stderr)
    return 2 if refused else 0
