"""Choosing the default prompt weighting by evidence (docs/evaluation.md).

For every world seed, both scenarios (one shared default prompt set; models that add their own
prompts, A.5), single- and multi-image queries (A.2) and every gamma asked for, run the
evaluation protocol for RKME-CLIP (reference) and the proposal with each weighting.

The recommendation is the weighting with the lowest average rank averaged over all scenarios,
query sizes and gammas (ties: higher top-1) — the one that costs a user the least effort across
the situations the app meets. For single-image queries in the A.5 scenario we also record how
many of a method's mistakes went to a model whose own prompts are about the query's topic
(against the share expected if mistakes ignored prompts). The decoy scenario isolates winning
"from its prompts alone": one extra model whose prompt texts paraphrase the task prompts but
whose images are ordinary; it never made a task image, so every query it wins is a mistake.

Reproducibility: worlds are seeded and a rerun on one machine gives the same bytes (also with
another BLAS thread count). Across machines it need not: ``SpecIndex`` scores in float32, whose
last bits depend on the CPU's BLAS kernels, and a query whose true model is within ~2e-7 of
another model's score can change rank by one (docs/evaluation.md, "Reproducibility").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gmi_desktop.core.index import SpecIndex
from gmi_desktop.core.kernels import DEFAULT_GAMMA
from gmi_desktop.core.progress import CancelFn, Job, Progress, check_cancel
from gmi_desktop.core.scores import WEIGHTINGS
from gmi_desktop.evaluation.benchmark import build_requirements, check_gamma, display_name, evaluate_methods
from gmi_desktop.evaluation.synthetic import make_world, prompt_driven_share, world_specifications

SCENARIOS = {
    "shared prompts": {},
    "own prompts (A.5)": {"own_prompts": True},
    "shared + decoy": {"decoy": True},
}
STUDY_METHODS = ("rkme-clip",) + tuple(f"proposal:{w}" for w in WEIGHTINGS)


@dataclass
class StudyCell:
    """One (scenario, images per query, gamma, method): one value per world seed."""

    scenario: str
    images_per_query: int
    gamma: float
    method: str
    top1: list[float] = field(default_factory=list)
    top4: list[float] = field(default_factory=list)
    average_rank: list[float] = field(default_factory=list)
    prompt_driven: list[float] = field(default_factory=list)
    prompt_driven_expected: list[float] = field(default_factory=list)
    decoy_top1: list[float] = field(default_factory=list)

    def mean(self, metric: str) -> float:
        values = getattr(self, metric)
        return float(np.mean(values)) if values else float("nan")

    def std(self, metric: str) -> float:
        values = getattr(self, metric)
        return float(np.std(values)) if values else float("nan")


@dataclass
class WeightingStudy:
    seeds: list[int]
    gammas: tuple[float, ...]
    images_per_query: tuple[int, ...]
    cells: list[StudyCell]

    def recommended(self) -> str:
        """The weighting with the lowest mean average rank over all settings (ties: top-1)."""

        def key(weighting: str):
            cells = [c for c in self.cells if c.method == f"proposal:{weighting}"]
            return (np.mean([c.mean("average_rank") for c in cells]), -np.mean([c.mean("top1") for c in cells]))

        return min(WEIGHTINGS, key=key)

    def to_json(self) -> str:
        data = {
            "seeds": self.seeds, "gammas": list(self.gammas), "images_per_query": list(self.images_per_query),
            "recommended": self.recommended(), "cells": [c.__dict__ for c in self.cells],
        }
        return json.dumps(data, indent=1, allow_nan=False) + "\n"


def run_weighting_study(
    seeds: Sequence[int],
    *,
    gammas: Sequence[float] = (DEFAULT_GAMMA,),
    images_per_query: Sequence[int] = (1, 3),
    methods: Sequence[str] = STUDY_METHODS,
    world_overrides: dict | None = None,
    cancel: CancelFn | None = None,
) -> Job[WeightingStudy]:
    """The study as a job (``core.progress``): one ``Progress`` per (scenario, seed, gamma, query
    size), returning the :class:`WeightingStudy`."""
    gammas = [check_gamma(g) for g in gammas]
    cells: dict[tuple, StudyCell] = {}
    total, done = len(SCENARIOS) * len(seeds) * len(gammas) * len(images_per_query), 0
    for scenario, setting in SCENARIOS.items():
        own, decoy = setting.get("own_prompts", False), setting.get("decoy", False)
        for seed in seeds:
            world = make_world(seed, **setting, **(world_overrides or {}))
            specs = world_specifications(world)
            for gamma in gammas:
                index = SpecIndex(specs, gamma=gamma)
                for t in images_per_query:
                    reqs, true = build_requirements(world.tasks, t, with_pixels=False)
                    queries = world.tasks.queries(t)
                    check_cancel(cancel)
                    yield Progress("study", done, total, item=scenario, message=f"{scenario}, seed {seed}, "
                                   f"gamma {gamma:g}, {t} image(s) per query: {len(reqs)} queries")
                    done += 1
                    for res in evaluate_methods(index, reqs, true, methods, t, world.model_ids):
                        key = (scenario, t, float(gamma), res.method)
                        cell = cells.setdefault(key, StudyCell(*key))
                        cell.top1.append(res.top1)
                        cell.top4.append(res.topk[4])
                        cell.average_rank.append(res.average_rank)
                        if decoy:
                            cell.decoy_top1.append(float(np.mean(res.predicted == len(specs) - 1)))
                        if own and t == 1:
                            hit, expected = prompt_driven_share(world, res.predicted, queries)
                            cell.prompt_driven.append(hit)
                            cell.prompt_driven_expected.append(expected)
    return WeightingStudy(list(seeds), tuple(float(g) for g in gammas), tuple(images_per_query), list(cells.values()))


def study_markdown(study: WeightingStudy) -> str:
    seeds = study.seeds
    contiguous = seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    named = f"{seeds[0]}..{seeds[-1]}" if contiguous and len(seeds) > 2 else ", ".join(map(str, seeds))
    lines = [
        f"World seeds {named} ({len(seeds)} worlds); mean ± std over seeds. "
        "Prompt-driven: share of wrong top-1 picks that went to a model whose own prompts are about "
        "the query's topic (expected share if mistakes ignored prompts in brackets). Decoy wins: "
        "share of queries where the decoy (prompts like the queries, unrelated images, never the "
        "true model) ranks first.",
        "",
        "| Scenario | Images/query | gamma | Method | Top-1 | Top-4 | Avg. rank | Prompt-driven / decoy wins |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for c in study.cells:
        driven = ""
        if c.prompt_driven:
            driven = f"{c.mean('prompt_driven'):.2f} ({c.mean('prompt_driven_expected'):.2f})"
        elif c.decoy_top1:
            driven = f"{c.mean('decoy_top1'):.3f}"
        lines.append(
            f"| {c.scenario} | {c.images_per_query} | {c.gamma:g} | {display_name(c.method)} | "
            f"{c.mean('top1'):.3f} ± {c.std('top1'):.3f} | {c.mean('top4'):.3f} ± {c.std('top4'):.3f} | "
            f"{c.mean('average_rank'):.2f} ± {c.std('average_rank'):.2f} | {driven} |"
        )
    lines += ["", f"Recommended default weighting: **{study.recommended()}** "
              "(lowest average rank averaged over all scenarios, query sizes and gammas)."]
    return "\n".join(lines) + "\n"
