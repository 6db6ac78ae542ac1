"""``gmi-desktop identify IMAGE... [--prompt TEXT] [--method M] [--top K] [--json]``.

Results on stdout (metadata matches with their evidence, then the ranking), progress on stderr.
With weights missing the metadata match is still printed and one ``missing:`` line on stderr
says what is missing and how to get it; the exit status is 2 only when nothing at all could be
reported, or for bad input (one line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from gmi_desktop.cli.progress import printable
from gmi_desktop.core.errors import UserInputError
from gmi_desktop.core.index import METHODS
from gmi_desktop.core.progress import Progress, run
from gmi_desktop.engine.host import ModelHost
from gmi_desktop.services.identify import Identification, Identifier, RankedModel
from gmi_desktop.store.classify import FAMILY_NAMES
from gmi_desktop.store.settings import load_settings


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "identify", help="rank your checkpoints by how well they make images like these",
        description="Read the images' generation metadata (exact and same-name matches with the library), "
                    "then rank every checkpoint with a specification by content. Results on stdout, "
                    "progress on stderr.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="query image files (PNG, JPEG, WebP, ...)")
    parser.add_argument("--prompt", help="the prompt to score with (default: the one embedded in the image, "
                                         "else the interrogator's pseudo-prompt)")
    parser.add_argument("--method", help=f"scoring method: {', '.join(METHODS)} (default: the settings', proposal)")
    parser.add_argument("--top", type=int, metavar="K",
                        help="show the K best models (default: the top_k setting, 10)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(func=main)


class _Progress:
    """One plain line per stage change on stderr (identify is short; no in-place redraw)."""

    def __init__(self, stream):
        self.stream = stream
        self.last = None

    def __call__(self, event: Progress) -> None:
        key = (event.stage, event.item)
        if key == self.last or event.stage == "reading":  # reading is quick; a bad image stays one line
            return
        self.last = key
        parts = [p for p in (event.message, event.item) if p]
        if event.bytes_total:
            parts.append(f"{event.bytes_done * 100 // event.bytes_total}%")
        print(f"{event.stage}: {printable(', '.join(parts))}" if parts else event.stage, file=self.stream)


def _family(model: RankedModel) -> str:
    return FAMILY_NAMES.get(model.family, model.family or "-") if model.family else "-"


def _model_json(model: RankedModel) -> dict:
    return {
        "rank": model.rank, "name": model.name, "sha256": model.sha256,
        "path": os.fspath(model.path) if model.path else None, "family": model.family, "score": model.score,
        "completeness": model.completeness, "exact": model.exact,
        "evidence": [{"kind": e.kind, "detail": e.detail} for e in model.evidence],
        "closest": [os.fspath(p) for p in model.closest],
    }


def to_json(result: Identification, top: int) -> dict:
    return {
        "queries": [{
            "path": os.fspath(q.path), "prompt": q.prompt, "prompt_source": q.prompt_source,
            "metadata": None if q.metadata is None else {
                "generator": q.metadata.generator, "source": q.metadata.source, "prompt": q.metadata.prompt,
                "negative_prompt": q.metadata.negative_prompt,
                "models": [{"name": m.name, "hash": m.hash, "hash_kind": m.hash_kind, "field": m.field}
                           for m in q.metadata.models]},
        } for q in result.queries],
        "pseudo_prompt": result.pseudo_prompt, "prompt_source": result.prompt_source, "method": result.method,
        "metadata_matches": [_model_json(m) for m in result.metadata_matches],
        "ranking": [_model_json(m) for m in result.ranking[:top]],
        "missing": result.missing, "notes": list(result.notes),
    }


def render(result: Identification, top: int) -> str:
    lines = []
    for q in result.queries:
        if q.metadata is not None:
            lines.append(f"metadata: {printable(q.path.name)}: {q.metadata.summary}")
    for m in result.metadata_matches:
        label = "exact match" if m.exact else "same name"
        lines.append(f"{label}: {printable(m.name)} ({printable(os.fspath(m.path))})")
        lines += [f"  {e.kind}: {printable(e.detail)}" for e in m.evidence]
    if result.pseudo_prompt:
        lines.append(f"prompt ({result.prompt_source}): {printable(result.pseudo_prompt)}")
    if result.ranking:
        rows = [("RANK", "MODEL", "FAMILY", "SCORE", "SPEC", "")]
        for m in result.ranking[:top]:
            badge = "exact match" if m.exact else ("same name" if m.evidence else "")
            rows.append((str(m.rank), printable(m.name), _family(m), f"{m.score:.4f}",
                         f"{round(100 * m.completeness)}%", badge))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines.append(f"method: {result.method}")
        lines += ["  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:5])).rstrip() + ("  " + r[5] if r[5] else "")
                  for r in rows]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    if args.top is not None and args.top < 1:
        raise UserInputError(None, f"--top must be at least 1, got {args.top}")
    if args.method is not None and args.method not in METHODS:
        raise UserInputError(None, f"unknown method {args.method!r}", f"use one of {', '.join(METHODS)}")
    settings = load_settings()
    if args.top is None:
        args.top = settings.top_k
    host = ModelHost(settings)
    try:
        result = run(Identifier(settings, host).identify(args.images, prompt=args.prompt, method=args.method),
                     _Progress(sys.stderr))
    finally:
        host.close()
    for note in result.notes:
        print(f"note: {printable(note)}", file=sys.stderr)
    if result.missing:
        print(f"missing: {printable(result.missing)}", file=sys.stderr)
    if args.json:
        print(json.dumps(to_json(result, args.top), indent=2, ensure_ascii=False))
    else:
        text = render(result, args.top)
        if text:
            print(text)
    if not result.ranking and not result.metadata_matches and result.missing:
        return 2
    return 0
