"""``gmi-desktop build-specs [--models NAME...] [--device D] [--quick]``: build specifications.

Every usable checkpoint of the library gets a specification (coarse ones for all first, then full
ones); ``--models`` limits the build to those files / names / hashes, ``--quick`` stops after the
coarse pass. A progress line (model, image n/N, images/s, ETA) goes to stderr, one line per model
with its state to stdout. Interrupting (Ctrl+C) loses at most the running batch: run it again to go
on. Exit 0 when every model is built, 1 when some failed, 2 on bad input.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from gmi_desktop.cli.progress import printable
from gmi_desktop.core.progress import Progress, run
from gmi_desktop.services.specs import BuildSummary, ModelSpecStatus, SpecBuilder
from gmi_desktop.store.settings import load_settings


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build-specs", help="build the specifications of the library's checkpoints",
        description="Generate images from the prompt set with every checkpoint of the library, encode them "
                    "and store its specification: coarse ones for all models first, then full ones. Resumes "
                    "where an interrupted build stopped.")
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="only these checkpoints (path, file name, display name or SHA-256 prefix)")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: the settings')")
    parser.add_argument("--quick", action="store_true", help="coarse specifications only (11 of 55 images)")
    parser.set_defaults(func=main)


class BuildProgress:
    """One line on a terminal, rewritten in place (at most 10 times a second); elsewhere a line per
    model event and at most one progress line every 5 seconds."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0
        self.drawn = False

    def __call__(self, event: Progress) -> None:
        now = time.monotonic()
        text = printable(event.message or f"{event.stage} {event.item}")
        if event.data is not None or event.stage in ("loading", "failed", "saved"):
            if self.tty:
                self._draw(text)
            else:
                print(text, file=self.stream, flush=True)
            self.last = now
            return
        if now - self.last < (0.1 if self.tty else 5.0):
            return
        self.last = now
        if self.tty:
            self._draw(text)
        else:
            print(text, file=self.stream, flush=True)

    def _draw(self, text: str) -> None:
        self.stream.write("\r\033[K" + text[:200])
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _line(status: ModelSpecStatus) -> str:
    reason = f"  {status.reason}" if status.reason else ""
    return f"{status.state:<8} {status.images_done:>4}/{status.images_total:<4} {printable(status.name)}{reason}"


def print_summary(summary: BuildSummary, out: TextIO) -> None:
    for status in summary.ready + summary.coarse + summary.failed + summary.skipped:
        print(_line(status), file=out)
    rate = f" ({summary.images_per_second:.2f} images/s)" if summary.images else ""
    print(f"{len(summary.ready)} ready, {len(summary.coarse)} coarse, {len(summary.failed)} failed, "
          f"{len(summary.skipped)} skipped; {summary.images} images generated{rate}", file=out)


def main(args) -> int:
    settings = load_settings(device=args.device)
    from gmi_desktop.engine.host import ModelHost

    with ModelHost(settings) as host:
        builder = SpecBuilder(settings, host)
        progress = BuildProgress(sys.stderr)
        try:
            summary = run(builder.build(args.models, quick=args.quick), progress)
        finally:
            progress.close()
    print_summary(summary, sys.stdout)
    return 1 if summary.failed else 0
