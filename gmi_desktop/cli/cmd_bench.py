"""``gmi-desktop bench``: the paper's evaluation protocol on a benchmark folder (docs/evaluation.md).

    gmi-desktop bench FEATURES_DIR [--out DIR] [--methods M ...] [--gamma G] [--images-per-query T]
                                   [--no-sweep] [--no-plots]
    gmi-desktop bench --toy example-2.1 [--draws D] [--seed S] [--gamma G]
    gmi-desktop bench --synthetic OUT_DIR [--seed S] [--own-prompts]
    gmi-desktop bench --weighting-study [--seeds 0-9] [--gammas G ...] [--out DIR]
    gmi-desktop bench --zoo DIR [--seeds 0-9] [--random-models N] [--groups G] [--gamma G] [--out DIR]
    gmi-desktop bench --images DIR [--gamma G] [--out DIR]

Each mode is one entry of :data:`MODES`: the options that apply to it and the function that runs
it. An option given outside its mode is an error (exit 2), never silently ignored. A new mode is
its flag in the ``mode`` group of :func:`register` (options default to None), its options in
:data:`OPTION_FLAGS`, and one :data:`MODES` entry. Gamma and the
identification method come from the settings chain (defaults < settings.toml < ``GMI_GAMMA`` /
``GMI_METHOD`` < ``--gamma``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gmi_desktop.core.errors import UserInputError


@dataclass(frozen=True)
class Mode:
    """One way to run ``bench``: how the user picks it, which options apply, what runs it."""

    flag: str
    options: frozenset[str]
    run: Callable[[argparse.Namespace], int]


# argparse dest -> the option as the user types it (for error messages)
OPTION_FLAGS = {
    "features_dir": "FEATURES_DIR", "out": "--out", "methods": "--methods", "gamma": "--gamma",
    "images_per_query": "--images-per-query", "no_sweep": "--no-sweep", "no_plots": "--no-plots",
    "seed": "--seed", "draws": "--draws", "own_prompts": "--own-prompts", "seeds": "--seeds",
    "gammas": "--gammas", "random_models": "--random-models", "groups": "--groups",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="evaluate identification methods on a benchmark (top-k accuracy, rank, plots)",
        description="Run the paper's evaluation protocol (top-k accuracy, average rank, confusion "
        "matrices, gamma sweep) for every identification method on a benchmark folder.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Methods: download, rkme-basic, rkme-clip, rkme-concat, proposal:paper, "
        "proposal:clamped, proposal:softmax ('proposal' = the default weighting). Gamma and method "
        "default to the settings (GMI_GAMMA, GMI_METHOD, settings.toml).",
    )
    p.add_argument("features_dir", nargs="?", type=Path, help="benchmark folder (docs/benchmark-format.md)")
    p.add_argument("--out", type=Path, help="where to write results.json, table.md and PNGs "
                   "(default: FEATURES_DIR/results; with --weighting-study: print only)")
    p.add_argument("--methods", nargs="+", metavar="M", help="methods to run (default: all)")
    p.add_argument("--gamma", type=float, help="RBF kernel width for unit-norm features (default: the "
                   "gamma setting, else core.kernels.DEFAULT_GAMMA)")
    p.add_argument("--images-per-query", type=int, metavar="T", help="images pooled per query (A.2; default 1)")
    p.add_argument("--no-sweep", action="store_true", default=None, help="skip the gamma sweep")
    p.add_argument("--no-plots", action="store_true", default=None, help="skip the PNG plots (and remove old ones)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--toy", choices=["example-2.1"], help="how often each method picks the right model "
                      "on the paper's toy, over many seeded draws")
    mode.add_argument("--synthetic", type=Path, metavar="OUT_DIR", help="write a synthetic benchmark there")
    mode.add_argument("--weighting-study", action="store_true", default=None,
                      help="measure the prompt weightings on synthetic worlds (docs/evaluation.md)")
    mode.add_argument("--zoo", type=Path, metavar="DIR",
                      help="the whole path (scan, specifications, interrogator, all methods) on a zoo of tiny "
                      "random checkpoints in DIR, made there first if missing (docs/zoo-benchmark.md)")
    mode.add_argument("--images", type=Path, metavar="DIR",
                      help="every method on your own models' images: one folder per model, named like its "
                      "checkpoint, prompts in <image>.txt or the image metadata (docs/zoo-benchmark.md)")
    p.add_argument("--seed", type=int, help="seed of the synthetic world or of the toy's draws (default 0)")
    p.add_argument("--draws", type=int, help="toy: number of draws (default 1000)")
    p.add_argument("--own-prompts", action="store_true", default=None,
                   help="synthetic: each model adds prompts of its own to the default set (A.5)")
    p.add_argument("--seeds", help="world seeds of the weighting study / image seeds of the zoo's test images, "
                   "e.g. 0-9 or 0,3,5 (default 0-9)")
    p.add_argument("--random-models", type=int, metavar="N", help="zoo part 1: unrelated random models (default 8)")
    p.add_argument("--groups", type=int, metavar="G", help="zoo part 2: groups of three prompt-shifted models "
                   "(default 3)")
    p.add_argument("--gammas", type=float, nargs="+", metavar="G",
                   help="weighting study: gammas to average over (default: the gamma setting)")
    p.set_defaults(func=run)


def run(args) -> int:
    name = next((m for m in MODES if m != "features_dir" and getattr(args, m, None)), "features_dir")
    mode = MODES[name]
    given = [dest for dest in OPTION_FLAGS if getattr(args, dest, None) is not None]
    for dest in given:
        if dest not in mode.options:
            where = "a FEATURES_DIR" if name == "features_dir" else mode.flag
            raise UserInputError(None, f"{OPTION_FLAGS[dest]} does not apply to bench with {where}",
                                 "options there: " + (", ".join(OPTION_FLAGS[o] for o in sorted(mode.options)
                                                               if o != "features_dir") or "none"))
    if name == "features_dir" and args.features_dir is None:
        raise UserInputError(None, "give a FEATURES_DIR, or one of --toy, --synthetic, --weighting-study, --zoo, "
                             "--images")
    return mode.run(args)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def show_progress(event) -> None:
    """One stderr line per :class:`core.progress.Progress` event of a job."""
    count = f"[{event.done + 1}/{event.total}] " if event.total and event.done < event.total else ""
    _say(count + (event.message or event.stage))


def _settings(args):
    """Gamma and method from the settings chain, ``--gamma`` last; validated."""
    from gmi_desktop.core.kernels import DEFAULT_GAMMA
    from gmi_desktop.evaluation.benchmark import check_gamma, parse_methods
    from gmi_desktop.store.settings import load_settings

    flag = getattr(args, "gamma", None)
    settings = load_settings(gamma=None if flag is None else check_gamma(flag, "--gamma"))
    gamma = check_gamma(settings.gamma or DEFAULT_GAMMA, "gamma (settings: GMI_GAMMA or settings.toml)")
    try:
        method = parse_methods([settings.method])[0]
    except UserInputError as exc:
        raise UserInputError(None, f"method setting (GMI_METHOD or settings.toml): {exc.reason}", exc.hint) from None
    return gamma, method


def _non_negative(value: int | None, flag: str, default: int) -> int:
    value = default if value is None else value
    if value < 0:
        raise UserInputError(None, f"{flag} must be 0 or more, got {value}")
    return value


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


def _evaluate(args) -> int:
    from gmi_desktop.core.progress import run as run_job
    from gmi_desktop.evaluation.benchmark import markdown_table, parse_methods, run_benchmark
    from gmi_desktop.evaluation.benchmark_format import load_benchmark
    from gmi_desktop.evaluation.report import write_report

    methods = parse_methods(args.methods)
    images_per_query = 1 if args.images_per_query is None else args.images_per_query
    if images_per_query < 1:
        raise UserInputError(None, "--images-per-query must be at least 1")
    gamma, yours = _settings(args)
    bench = load_benchmark(args.features_dir)
    out = _output_folder(args.out or (args.features_dir / "results"))
    _say(f"loaded {len(bench.specs)} specifications and {bench.tasks.n_images} task images from {args.features_dir}")
    for skipped in bench.skipped:
        _say(str(skipped))
    sweep = [] if args.no_sweep else [m for m in dict.fromkeys(("rkme-clip", yours)) if m in methods]
    report = run_job(run_benchmark(bench.specs, bench.tasks, methods=methods, gamma=gamma,
                                   images_per_query=images_per_query, sweep_methods=sweep), show_progress)
    for note in report.notes:
        _say(note)
    written = write_report(report, out, title=str(bench.manifest.get("description", "")), plots=not args.no_plots)
    _say(f"wrote {len(written)} files to {out}")
    print(markdown_table(report), end="")
    return 0


TOY_DRAWS = 1000


def format_toy(rates, gamma: float, seed: int) -> str:
    """The toy's pick rates as text: what was drawn, then one row per method."""
    from gmi_desktop.evaluation.toy import PAPER_USER_RANGE

    draws = rates[0].draws
    lo, hi = PAPER_USER_RANGE
    lines = [
        "Example 2.1 (paper §2.2): f1(p) = (cos p*pi, sin p*pi), f2(p) = (sin p*pi, cos p*pi).",
        f"Each of {draws} draws (seed {seed}): 55 default prompts p ~ U(-1, 1) shared by both models,",
        f"one user image made by f1 (even draws) or f2 (odd draws) for a prompt p ~ U({lo:g}, {hi:g}),",
        "the paper's range. Both models draw the same circle, so their image sets differ only by the",
        "chance of the draw; for the same prompt their images differ (they coincide only at p = 1/4).",
        f"Scores: squared RKHS distances (lower = better), RBF kernel, gamma = {gamma:g}.",
        "",
        f"  {'method':<76}{'right':>7}{'wrong':>7}{'tied':>6}",
    ]
    for r in rates:
        lines.append(f"  {r.label:<76}{r.right / draws:>7.1%}{r.wrong / draws:>7.1%}{r.tied / draws:>6.1%}")
    return "\n".join(lines) + "\n"


def toy_verdict(rates) -> str:
    """One computed sentence on what the toy shows (not a fixed claim)."""
    by = {r.method: r for r in rates}
    base, best = by["rkme-clip"], max((r for r in rates if r.method.startswith("proposal")), key=lambda r: r.right)
    return (f"The image-only baseline picks the right model in {base.right_share:.1%} of the draws (a coin "
            f"flip is 50%); the prompt-weighted score in up to {best.right_share:.1%} ({best.method}).")


def _toy(args) -> int:
    from gmi_desktop.evaluation.toy import pick_rates

    gamma, _method = _settings(args)
    seed = _non_negative(args.seed, "--seed", 0)
    draws = TOY_DRAWS if args.draws is None else args.draws
    if not 1 <= draws <= 100_000:
        raise UserInputError(None, f"--draws must be between 1 and 100000, got {draws}")
    rates = pick_rates(draws, seed=seed, gamma=gamma)
    print(format_toy(rates, gamma, seed) + "\n" + toy_verdict(rates))
    return 0


def _synthetic(args) -> int:
    from gmi_desktop.evaluation.demo import write_synthetic_benchmark

    seed = _non_negative(args.seed, "--seed", 0)
    folder, world = write_synthetic_benchmark(_output_folder(args.synthetic), seed=seed,
                                              own_prompts=bool(args.own_prompts))
    print(f"wrote a synthetic benchmark to {folder}: {len(world.model_ids)} models, "
          f"{world.tasks.n_images} task images")
    return 0


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
    from gmi_desktop.core.progress import run as run_job
    from gmi_desktop.evaluation.benchmark import check_gamma
    from gmi_desktop.evaluation.weighting_study import run_weighting_study, study_markdown
    from gmi_desktop.store.atomic import atomic_write_bytes

    gammas = [check_gamma(g, "--gammas") for g in args.gammas] if args.gammas else [_settings(args)[0]]
    seeds = _parse_seeds("0-9" if args.seeds is None else args.seeds)
    out = _output_folder(args.out) if args.out else None
    study = run_job(run_weighting_study(seeds, gammas=gammas), show_progress)
    text = study_markdown(study)
    if out is not None:
        atomic_write_bytes(out / "weighting-study.md", text.encode("utf-8"))
        atomic_write_bytes(out / "weighting-study.json", study.to_json().encode("utf-8"))
    print(text, end="")
    return 0


def _zoo(args) -> int:
    from gmi_desktop.cli.bench_zoo import run_zoo
    from gmi_desktop.evaluation.benchmark import check_gamma

    gamma = None if args.gamma is None else check_gamma(args.gamma, "--gamma")
    return run_zoo(args.zoo, _non_negative(args.random_models, "--random-models", 8),
                   _non_negative(args.groups, "--groups", 3), _parse_seeds("0-9" if args.seeds is None else args.seeds),
                   gamma, args.out, _output_folder, _say)


def _images(args) -> int:
    from gmi_desktop.cli.bench_zoo import run_images
    from gmi_desktop.evaluation.benchmark import check_gamma

    gamma = None if args.gamma is None else check_gamma(args.gamma, "--gamma")
    return run_images(args.images, gamma, args.out, _output_folder, _say)


MODES: dict[str, Mode] = {
    "features_dir": Mode("FEATURES_DIR", frozenset(
        {"features_dir", "out", "methods", "gamma", "images_per_query", "no_sweep", "no_plots"}), _evaluate),
    "toy": Mode("--toy", frozenset({"gamma", "seed", "draws"}), _toy),
    "synthetic": Mode("--synthetic", frozenset({"seed", "own_prompts"}), _synthetic),
    "weighting_study": Mode("--weighting-study", frozenset({"seeds", "gammas", "out"}), _weighting_study),
    "zoo": Mode("--zoo", frozenset({"seeds", "random_models", "groups", "gamma", "out"}), _zoo),
    "images": Mode("--images", frozenset({"gamma", "out"}), _images),
}
