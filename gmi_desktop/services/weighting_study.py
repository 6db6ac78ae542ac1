"""Choosing the default prompt weighting by evidence (docs/evaluation.md).

For every world seed, both scenarios (one shared default prompt set; every model with its own
prompt set, A.5) and single- and multi-image queries (A.2), run the evaluation protocol for
RKME-CLIP (reference) and the proposal with each weighting. The recommendation is the weighting
with the lowest average rank averaged over all settings (ties: higher top-1), i.e. the one that
costs a user the least effort across the situations the app meets.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gmi_desktop.core.evaluation import evaluate_scores
from gmi_desktop.core.index import SpecIndex
from gmi_desktop.core.kernels import DEFAULT_GAMMA
from gmi_desktop.core.scores import WEIGHTINGS
from gmi_desktop.core.synthetic import make_world, world_specifications
from gmi_desktop.services.benchmark import build_requirements, display_name, score_all

SCENARIOS = {"shared prompts": False, "own prompts (A.5)": True}
STUDY_METHODS = ("rkme-clip",) + tuple(f"proposal:{w}" for w in WEIGHTINGS)


@dataclass
class StudyCell:
    scenario: str
    images_per_query: int
    method: str
    top1: list[float] = field(default_factory=list)
    top4: list[float] = field(default_factory=list)
    average_rank: list[float] = field(default_factory=list)

    def mean(self, metric: str) -> float:
        return float(np.mean(getattr(self, metric)))

    def std(self, metric: str) -> float:
        return float(np.std(getattr(self, metric)))


@dataclass
class WeightingStudy:
    seeds: list[int]
    gamma: float
    images_per_query: tuple[int, ...]
    cells: list[StudyCell]

    def cell(self, scenario: str, t: int, method: str) -> StudyCell:
        return next(c for c in self.cells if (c.scenario, c.images_per_query, c.method) == (scenario, t, method))

    def recommended(self) -> str:
        """The weighting with the lowest mean average rank over all settings (ties: top-1)."""
        def key(weighting: str):
            cells = [c for c in self.cells if c.method == f"proposal:{weighting}"]
            return (np.mean([c.mean("average_rank") for c in cells]), -np.mean([c.mean("top1") for c in cells]))

        return min(WEIGHTINGS, key=key)

    def to_json(self) -> str:
        data = {
            "seeds": self.seeds, "gamma": self.gamma, "images_per_query": list(self.images_per_query),
            "recommended": self.recommended(), "cells": [c.__dict__ for c in self.cells],
        }
        return json.dumps(data, indent=1) + "\n"


def run_weighting_study(
    seeds: Sequence[int],
    *,
    gamma: float = DEFAULT_GAMMA,
    images_per_query: Sequence[int] = (1, 3),
    methods: Sequence[str] = STUDY_METHODS,
    world_overrides: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> WeightingStudy:
    say = progress or (lambda _m: None)
    cells: dict[tuple, StudyCell] = {}
    for scenario, own in SCENARIOS.items():
        for seed in seeds:
            world = make_world(seed, own_prompts=own, **(world_overrides or {}))
            index = SpecIndex.from_specs(world_specifications(world))
            for t in images_per_query:
                reqs, true = build_requirements(world.tasks, t, with_pixels=False)
                say(f"{scenario}, seed {seed}, {t} image(s) per query: {len(reqs)} queries")
                for method in methods:
                    res = evaluate_scores(score_all(index, reqs, method, gamma), true, method=method)
                    cell = cells.setdefault((scenario, t, method), StudyCell(scenario, t, method))
                    cell.top1.append(res.top1)
                    cell.top4.append(res.topk[4])
                    cell.average_rank.append(res.average_rank)
    return WeightingStudy(list(seeds), gamma, tuple(images_per_query), list(cells.values()))


def study_markdown(study: WeightingStudy) -> str:
    lines = [
        f"Seeds {study.seeds[0]}..{study.seeds[-1]} ({len(study.seeds)} worlds), gamma = {study.gamma:g}; "
        "mean ± std over seeds.",
        "",
        "| Scenario | Images/query | Method | Top-1 | Top-4 | Avg. rank |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for c in study.cells:
        lines.append(
            f"| {c.scenario} | {c.images_per_query} | {display_name(c.method)} | "
            f"{c.mean('top1'):.3f} ± {c.std('top1'):.3f} | {c.mean('top4'):.3f} ± {c.std('top4'):.3f} | "
            f"{c.mean('average_rank'):.2f} ± {c.std('average_rank'):.2f} |"
        )
    lines += ["", f"Recommended default weighting: **{study.recommended()}** "
              "(lowest average rank over all settings)."]
    return "\n".join(lines) + "\n"
