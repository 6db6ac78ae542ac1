"""``gmi-desktop`` command line: argparse over the services; results on stdout, the rest on stderr.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser
whose ``func(args) -> int`` does the work; :data:`SUBCOMMANDS` is the table of them. ``--debug``
is accepted before or after the subcommand. A :class:`UserInputError` prints one line and exits 2;
any other error exits 1 (traceback with ``--debug``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from gmi_desktop import __version__
from gmi_desktop.core.errors import Cancelled, GMIError, UserInputError

SUBCOMMANDS = (
    "gmi_desktop.cli.cmd_demo",
    "gmi_desktop.cli.cmd_bench",
    "gmi_desktop.cli.cmd_scan",
    "gmi_desktop.cli.cmd_build_specs",
    "gmi_desktop.cli.cmd_identify",
    "gmi_desktop.cli.cmd_specs",
    "gmi_desktop.cli.cmd_integrate",
    "gmi_desktop.cli.cmd_watch",
    "gmi_desktop.gui.command",  # the desktop app (a face of its own; imports nothing heavy)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gmi-desktop",
        description="Find which of your local Stable Diffusion checkpoints can make images like a reference image.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # subcommand not built yet
            raise
        module.register(sub)
    for subparser in sub.choices.values():  # `gmi-desktop scan --debug` as well as `--debug scan`
        if "--debug" not in subparser._option_string_actions:
            subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except UserInputError as exc:
        print(f"gmi-desktop: error: {exc}", file=sys.stderr)
        return 2
    except Cancelled:
        print("gmi-desktop: cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("gmi-desktop: interrupted", file=sys.stderr)
        return 130
    except GMIError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"gmi-desktop: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the CLI's last line of defence
        if args.debug:
            traceback.print_exc()
        else:
            print(f"gmi-desktop: internal error: {type(exc).__name__}: {exc} (rerun with --debug)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
