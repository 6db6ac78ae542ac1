"""Use cases behind ``gmi-desktop bench --synthetic`` and ``gmi-desktop demo`` (the toy's pick
rates are :func:`evaluation.toy.pick_rates`)."""

from __future__ import annotations

import os
from pathlib import Path

from gmi_desktop.evaluation.benchmark_format import write_benchmark
from gmi_desktop.evaluation.report import remove_report
from gmi_desktop.evaluation.synthetic import SyntheticWorld, make_world, world_specifications

DEMO_WORLD = {"n_seeds": 3}


def write_synthetic_benchmark(
    out_dir: str | os.PathLike[str], seed: int = 0, own_prompts: bool = False, **overrides
) -> tuple[Path, SyntheticWorld]:
    """Generate a synthetic world and write it in the benchmark format (docs/benchmark-format.md).
    A benchmark written there before is replaced and its results in ``results/`` removed; a
    folder holding anything else is refused (``BenchmarkFormatError``)."""
    world = make_world(seed, own_prompts=own_prompts, **overrides)
    cfg = world.config
    description = (
        f"synthetic GMI benchmark (seed {seed}, {'own' if own_prompts else 'shared'} prompt sets): "
        f"{cfg.n_models} models x {cfg.n_spec_prompts} spec prompts, {cfg.n_task_prompts} held-out task "
        f"prompts x {cfg.n_seeds} seeds per model"
    )
    extra = {"synthetic": {"seed": seed, "config": {k: v for k, v in vars(cfg).items()}}}
    folder = write_benchmark(
        out_dir, world_specifications(world), world.tasks,
        description=description, task_prompts=world.task_prompts, extra=extra,
    )
    if (folder / "results").is_dir():
        remove_report(folder / "results")
    return folder, world
