"""Use cases behind ``gmi-desktop bench --toy`` / ``--synthetic`` and ``gmi-desktop demo``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gmi_desktop.core.kernels import DEFAULT_GAMMA
from gmi_desktop.core.scores import WEIGHTINGS, score_proposal, score_rkme_clip
from gmi_desktop.evaluation.benchmark_format import write_benchmark
from gmi_desktop.evaluation.synthetic import SyntheticWorld, make_world, world_specifications
from gmi_desktop.evaluation.toy import example_2_1

# A tie is "cannot tell apart" when the two scores differ by less than this (relative).
TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class ToyRow:
    method: str
    score_f1: float
    score_f2: float

    @property
    def separates(self) -> bool:
        scale = max(abs(self.score_f1), abs(self.score_f2), 1e-300)
        return abs(self.score_f1 - self.score_f2) > TIE_TOLERANCE * scale

    @property
    def picks(self) -> str:
        if not self.separates:
            return "tie"
        return "f1" if self.score_f1 < self.score_f2 else "f2"


def toy_example_2_1(true_model: int = 0, gamma: float = DEFAULT_GAMMA, seed: int = 0) -> list[ToyRow]:
    """Scores of f1 and f2 by the baseline (Eq. 2, full embedding) and the proposal (Eq. 9 and
    the normalised weightings) for a user whose images come from ``true_model``."""
    specs, req, _true = example_2_1(seed=seed, true_model=true_model)
    rows = [ToyRow("RKME-CLIP (Eq. 2)", *(score_rkme_clip(s, req, gamma, reduced_size=None) for s in specs))]
    for weighting in WEIGHTINGS:
        label = "Proposal (Eq. 9)" if weighting == "paper" else f"Proposal ({weighting})"
        rows.append(ToyRow(label, *(score_proposal(s, req, gamma, weighting=weighting) for s in specs)))
    return rows


DEMO_WORLD = {"n_seeds": 3}


def write_synthetic_benchmark(
    out_dir: str | os.PathLike[str], seed: int = 0, own_prompts: bool = False, **overrides
) -> tuple[Path, SyntheticWorld]:
    """Generate a synthetic world and write it in the benchmark format (docs/benchmark-format.md)."""
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
    return folder, world
