"""``gmi-desktop bench``: the paper's evaluation protocol on a benchmark folder (docs/evaluation.md).

    gmi-desktop bench FEATURES_DIR [--out DIR] [--methods M ...] [--gamma G] [--images-per-query T]
    gmi-desktop bench --toy example-2.1
    gmi-desktop bench --synthetic OUT_DIR [--seed S] [--own-prompts]
    gmi-desktop bench --weighting-study [--seeds 0-9] [--out DIR]
    gmi-desktop bench --zoo DIR [--seeds 0-9] [--random-models N] [--groups G] [--out DIR]
    gmi-desktop bench --images DIR [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from gmi_desktop.core.errors import UserInputError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="evaluate identification methods on a benchmark (top-k accuracy, rank, plots)",
        description="Run the paper's evaluation protocol (top-k accuracy, average rank, confusion "
        "matrices, gamma sweep) for every identification method on a benchmark folder.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Methods: download, rkme-basic, rkme-clip, rkme-concat, proposal:paper, "
        "proposal:clamped, proposal:softmax ('proposal' = the default weighting).",
    )
    p.add_argument("features_dir", nargs="?", type=Path, help="benchmark folder (docs/benchmark-format.md)")
    p.add_argument("--out", type=Path, help="where to write results.json, table.md and PNGs "
                   "(default: FEATURES_DIR/results)")
    p.add_argument("--methods", nargs="+", metavar="M", help="methods to run (default: all)")
    p.add_argument("--gamma", type=float, help="RBF kernel width for unit-norm features (default: core.kernels.DEFAULT_GAMMA)")
    p.add_argument("--images-per-query", type=int, default=1, metavar="T", help="images pooled per query (A.2)")
    p.add_argument("--no-sweep", action="store_true", help="skip the gamma sweep")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--toy", choices=["example-2.1"], help="print both methods' scores on the paper's toy")
    mode.add_argument("--synthetic", type=Path, metavar="OUT_DIR", help="write a synthetic benchmark there")
    mode.add_argument("--weighting-study", action="store_true",
                      help="measure the prompt weightings on synthetic worlds (docs/evaluation.md)")
    mode.add_argument("--zoo", type=Path, metavar="DIR",
                      help="the whole path (scan, specifications, interrogator, all methods) on a zoo of tiny "
                      "random checkpoints in DIR, made there first if missing (docs/zoo-benchmark.md)")
    mode.add_argument("--images", type=Path, metavar="DIR",
                      help="every method on your own models' images: one folder per model, named like its "
                      "checkpoint, prompts in <image>.txt or the image metadata (docs/zoo-benchmark.md)")
    p.add_argument("--random-models", type=int, default=8, metavar="N", help="zoo part 1: unrelated random models")
    p.add_argument("--groups", type=int, default=3, metavar="G", help="zoo part 2: groups of three prompt-shifted models")
    p.add_argument("--seed", type=int, default=0, help="synthetic world seed (with --synthetic)")
    p.add_argument("--own-prompts", action="store_true", help="synthetic: each model adds prompts of its own to the default set (A.5)")
    p.add_argument("--seeds", default="0-9", help="world seeds of the weighting study / image seeds of the zoo's "
                   "test images, e.g. 0-9 or 0,3,5")
    p.add_argument("--gammas", type=float, nargs="+", metavar="G",
                   help="weighting study: gammas to average over (default: --gamma or the core default)")
    p.set_defaults(func=run)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _output_folder(path: Path) -> Path:
    """``path`` created as a folder to write results into, or a UserInputError saying why not."""
    hint = "choose another output folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserInputError(path, "exists and is not a folder", hint) from None
    except OSError as exc:
        raise UserInputError(path, f"cannot create the output folder: {exc.strerror or exc}", hint) from None
    return path


def run(args) -> int:
    if args.toy:
        print(format_toy(), end="")
        return 0
    if args.synthetic:
        from gmi_desktop.evaluation.demo import write_synthetic_benchmark

        if args.seed < 0:
            raise UserInputError(None, f"--seed must be 0 or more, got {args.seed}")

        folder, world = write_synthetic_benchmark(
            _output_folder(args.synthetic), seed=args.seed, own_prompts=args.own_prompts
        )
        print(f"wrote a synthetic benchmark to {folder}: {len(world.model_ids)} models, "
              f"{world.tasks.n_images} task images")
        return 0
    if args.weighting_study:
        return _weighting_study(args)
    if args.zoo:
        from gmi_desktop.cli.bench_zoo import run_zoo

        return run_zoo(args, _parse_seeds(args.seeds), _output_folder, _progress)
    if args.images:
        from gmi_desktop.cli.bench_zoo import run_images

        return run_images(args, _output_folder, _progress)
    if args.features_dir is None:
        raise UserInputError(None, "give a FEATURES_DIR, or one of --toy, --synthetic, --weighting-study")
    return _bench(args)


def _bench(args) -> int:
    from gmi_desktop.core.kernels import DEFAULT_GAMMA
    from gmi_desktop.evaluation.report import write_report
    from gmi_desktop.evaluation.benchmark import markdown_table, parse_methods, run_benchmark
    from gmi_desktop.evaluation.benchmark_format import load_benchmark

    methods = parse_methods(args.methods)
    if args.images_per_query < 1:
        raise UserInputError(None, "--images-per-query must be at least 1")
    gamma = DEFAULT_GAMMA if args.gamma is None else args.gamma
    if not (gamma > 0 and math.isfinite(gamma)):
        raise UserInputError(None, f"--gamma must be a finite number > 0, got {gamma}")
    bench = load_benchmark(args.features_dir)
    out = _output_folder(args.out or (args.features_dir / "results"))
    _progress(f"loaded {len(bench.specs)} specifications and {bench.tasks.n_images} task images from {args.features_dir}")
    for skipped in bench.skipped:
        _progress(str(skipped))
    report = run_benchmark(
        bench.specs, bench.tasks, methods=methods, gamma=gamma, images_per_query=args.images_per_query,
        sweep_methods=[] if args.no_sweep else None, progress=_progress,
    )
    for note in report.notes:
        _progress(note)
    written = write_report(report, out, title=str(bench.manifest.get("description", "")), plots=not args.no_plots)
    _progress(f"wrote {len(written)} files to {out}")
    print(markdown_table(report), end="")
    return 0


def format_toy() -> str:
    from gmi_desktop.core.kernels import DEFAULT_GAMMA
    from gmi_desktop.evaluation.demo import toy_example_2_1

    lines = [
        "Example 2.1 (paper §2.2): f1(p) = (cos p*pi, sin p*pi), f2(p) = (sin p*pi, cos p*pi).",
        "Both models draw the whole unit circle for the default prompts p ~ U(-1, 1), so their image",
        "sets are identical; for the user's prompts (p in [-0.5, 0]) they draw different arcs.",
        f"Scores are squared RKHS distances (lower = better), RBF kernel, gamma = {DEFAULT_GAMMA:g}.",
        "",
    ]
    for true_model, name in ((0, "f1"), (1, "f2")):
        lines.append(f"User images made by {name}:")
        lines.append(f"  {'method':<22}{'score f1':>12}{'score f2':>12}  verdict")
        for row in toy_example_2_1(true_model):
            if row.separates:
                verdict = f"separates f1/f2, picks {row.picks} ({'right' if row.picks == name else 'wrong'})"
            else:
                verdict = "cannot tell f1 from f2 (equal scores)"
            lines.append(f"  {row.method:<22}{row.score_f1:>12.6f}{row.score_f2:>12.6f}  {verdict}")
        lines.append("")
    return "\n".join(lines)


def _parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, dash, hi = part.partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
    except ValueError as exc:
        raise UserInputError(None, f"--seeds must look like 0-9 or 0,3,5; got {text!r}") from exc
    if not seeds:
        raise UserInputError(None, f"--seeds {text!r} names no seed")
    if len(set(seeds)) != len(seeds):
        raise UserInputError(None, f"--seeds {text!r} names a seed twice (it would count twice)")
    return seeds


def _weighting_study(args) -> int:
    from gmi_desktop.core.kernels import DEFAULT_GAMMA
    from gmi_desktop.evaluation.weighting_study import run_weighting_study, study_markdown

    gammas = args.gammas or [DEFAULT_GAMMA if args.gamma is None else args.gamma]
    if not all(g > 0 and math.isfinite(g) for g in gammas):
        raise UserInputError(None, "gammas must be finite numbers > 0")
    out = _output_folder(args.out) if args.out else None
    study = run_weighting_study(_parse_seeds(args.seeds), gammas=gammas, progress=_progress)
    text = study_markdown(study)
    if out is not None:
        from gmi_desktop.store.atomic import atomic_write_bytes

        atomic_write_bytes(out / "weighting-study.md", text.encode("utf-8"))
        atomic_write_bytes(out / "weighting-study.json", study.to_json().encode("utf-8"))
    print(text, end="")
    return 0
