"""Run the paper's evaluation protocol (§4.1) for every method on a benchmark (evaluation/benchmark_format.py).

Methods are named ``download``, ``rkme-basic``, ``rkme-clip``, ``rkme-concat`` and
``proposal:<weighting>`` (``paper`` = Eq. 9 exactly, ``clamped``, ``softmax``). A method that
needs data the benchmark lacks (RKME-Basic without pixels) is left out with a note.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from gmi_desktop.core.errors import UserInputError
from gmi_desktop.core.index import SpecIndex
from gmi_desktop.core.kernels import DEFAULT_GAMMA
from gmi_desktop.core.progress import CancelFn, Job, Progress, check_cancel
from gmi_desktop.core.scores import DEFAULT_WEIGHTING, WEIGHTINGS
from gmi_desktop.core.spec import Requirement, Specification
from gmi_desktop.evaluation.metrics import (
    EvaluationResult,
    GammaPoint,
    TaskSet,
    evaluate_scores,
    gamma_grid,
    gamma_sweep,
)

BASELINES = ("download", "rkme-basic", "rkme-clip", "rkme-concat")
ALL_METHODS = BASELINES + tuple(f"proposal:{w}" for w in WEIGHTINGS)
# Unit-norm features have squared distances in [0, 4]; at gamma 1e4 the kernel of any two features
# farther apart than cosine 0.995 is below float32's range, so larger widths only overflow.
MAX_GAMMA = 1e4


def check_gamma(gamma: float, what: str = "gamma") -> float:
    """``gamma`` as a float if ``0 < gamma <= MAX_GAMMA``, else a one-line UserInputError."""
    value = float(gamma)
    if not (math.isfinite(value) and 0 < value <= MAX_GAMMA):
        raise UserInputError(None, f"{what} must be a number > 0 and at most {MAX_GAMMA:g}, got {gamma!r}",
                             "unit-norm features need gamma between about 0.1 and 100 (default "
                             f"{DEFAULT_GAMMA:g})")
    return value


class UnknownMethod(UserInputError):
    default_hint = "methods: " + ", ".join(ALL_METHODS)


def parse_methods(names: Sequence[str] | None) -> tuple[str, ...]:
    """Validate method names; ``proposal`` alone means the default weighting."""
    if not names:
        return ALL_METHODS
    out = []
    for name in names:
        name = f"proposal:{DEFAULT_WEIGHTING}" if name == "proposal" else name
        if name not in ALL_METHODS:
            raise UnknownMethod(None, f"unknown method {name!r}")
        if name not in out:
            out.append(name)
    return tuple(out)


def split_method(name: str) -> tuple[str, str | None]:
    base, _, weighting = name.partition(":")
    return base, (weighting or None)


@dataclass
class BenchmarkReport:
    """Everything ``gmi-desktop bench`` writes: per-method results and gamma sweeps."""

    model_ids: tuple[str, ...]
    n_images: int
    images_per_query: int
    gamma: float
    results: list[EvaluationResult]
    sweeps: dict[str, list[GammaPoint]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def result(self, method: str) -> EvaluationResult:
        return next(r for r in self.results if r.method == method)

    def to_dict(self) -> dict:
        return {
            "model_ids": list(self.model_ids),
            "n_images": self.n_images,
            "images_per_query": self.images_per_query,
            "gamma": self.gamma,
            "results": [r.to_dict() for r in self.results],
            "gamma_sweeps": {m: [asdict(p) for p in pts] for m, pts in self.sweeps.items()},
            "notes": list(self.notes),
        }


def build_requirements(tasks: TaskSet, images_per_query: int, with_pixels: bool) -> tuple[list[Requirement], np.ndarray]:
    """One Requirement per query (each image keeps its own pseudo-prompt, A.2) and the truths."""
    queries = tasks.queries(images_per_query)
    if not queries:
        raise UserInputError(None, f"no query of {images_per_query} images can be formed from the tasks")
    reqs = [
        Requirement(
            image_features=tasks.image_features[q],
            prompt_features=tasks.prompt_features[q],
            pixel_features=tasks.pixel_features[q] if with_pixels else None,
        )
        for q in queries
    ]
    true = np.array([tasks.true_model[q[0]] for q in queries], dtype=np.int64)
    return reqs, true


def score_methods(index: SpecIndex, reqs: Sequence[Requirement], methods: Sequence[str]) -> dict[str, np.ndarray]:
    """(queries, models) score matrices of several methods; each query image is prepared once
    for all proposal weightings (the image term does not depend on the weighting)."""
    rows: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    proposals = [m for m in methods if split_method(m)[0] == "proposal"]
    for req in reqs:
        prepared = index.prepare_image(req) if proposals else None
        for method in methods:
            base, weighting = split_method(method)
            if base == "proposal":
                scores = index.score(req, "proposal", weighting=weighting, prepared=prepared)
            else:
                scores = index.score(req, base.replace("-", "_"))
            rows[method].append(np.asarray(scores, dtype=np.float64))
    return {m: np.stack(r) for m, r in rows.items()}


def evaluate_methods(index: SpecIndex, reqs, true, methods: Sequence[str], images_per_query: int,
                     model_ids: Sequence[str]) -> list[EvaluationResult]:
    matrices = score_methods(index, reqs, methods)
    out = []
    for method in methods:
        base, weighting = split_method(method)
        out.append(evaluate_scores(
            matrices[method], true, method=method, images_per_query=images_per_query,
            gamma=None if base == "download" else index.gamma, weighting=weighting, model_ids=model_ids,
        ))
    return out


def has_pixels(specs: Sequence[Specification], tasks: TaskSet) -> bool:
    return tasks.pixel_features is not None and all(s.pixel_features is not None for s in specs)


def run_benchmark(
    specs: Sequence[Specification],
    tasks: TaskSet,
    *,
    methods: Sequence[str] | None = None,
    gamma: float = DEFAULT_GAMMA,
    images_per_query: int = 1,
    sweep_methods: Sequence[str] | None = None,
    sweep_gammas: Sequence[float] | None = None,
    cancel: CancelFn | None = None,
) -> Job[BenchmarkReport]:
    """Evaluate each method; sweep gamma for ``sweep_methods`` (default: RKME-CLIP + the default
    proposal). A job (``core.progress``): yields a ``Progress`` per step ("scoring", then "sweep"
    once per method and gamma), returns the :class:`BenchmarkReport`."""
    gamma = check_gamma(gamma)
    chosen = parse_methods(methods)
    notes: list[str] = []
    pixels = has_pixels(specs, tasks)
    if "rkme-basic" in chosen and not pixels:
        chosen = tuple(m for m in chosen if m != "rkme-basic")
        notes.append("rkme-basic left out: the benchmark has no pixel features")
    if not chosen:
        raise UserInputError(None, "nothing to run: " + "; ".join(notes), "choose other --methods")
    if sweep_methods is None:
        sweep_methods = [m for m in ("rkme-clip", f"proposal:{DEFAULT_WEIGHTING}") if m in chosen]
    sweep_methods = parse_methods(sweep_methods) if sweep_methods else ()
    grid = tuple(check_gamma(g, "a sweep gamma") for g in sweep_gammas) if sweep_gammas else gamma_grid(tasks.image_features)
    model_ids = tuple(s.model_id for s in specs)
    reqs, true = build_requirements(tasks, images_per_query, pixels and "rkme-basic" in chosen)
    total = 1 + len(sweep_methods) * len(grid)
    yield Progress("scoring", 0, total, message=f"{len(specs)} models, {len(reqs)} queries of {images_per_query} "
                   f"image(s), gamma {gamma:g}: scoring " + ", ".join(chosen))
    index = SpecIndex(specs, gamma=gamma)
    results = evaluate_methods(index, reqs, true, chosen, images_per_query, model_ids)
    indexes = {gamma: index}
    sweeps: dict[str, list[GammaPoint]] = {}
    done = 1
    for method in sweep_methods:
        points = []
        for g in grid:
            check_cancel(cancel)
            yield Progress("sweep", done, total, item=method, message=f"gamma sweep of {method}: gamma {g:g} "
                           f"({len(points) + 1}/{len(grid)})")
            if g not in indexes:
                indexes[g] = SpecIndex(specs, gamma=g)
            points.extend(gamma_sweep(lambda x, m=method: evaluate_methods(
                indexes[x], reqs, true, [m], images_per_query, model_ids)[0], [g]))
            done += 1
        sweeps[method] = points
    yield Progress("done", total, total, message="benchmark done")
    notes += tie_notes(results, sweeps)
    return BenchmarkReport(model_ids, tasks.n_images, images_per_query, gamma, results, sweeps, notes)


def tie_notes(results: Sequence[EvaluationResult], sweeps: dict[str, list[GammaPoint]]) -> list[str]:
    """A note per method whose true model tied with another model: §4.1's rank counts such ties in
    the true model's favour, so the accuracy shown there is optimistic."""
    def share(x: float) -> str:
        return "<0.1%" if x < 0.001 else f"{x:.1%}"

    notes = []
    for r in results:
        if r.tied_share > 0:
            notes.append(f"{r.method}: the true model ties with another model in {share(r.tied_share)} of the "
                         "queries (ranked in its favour, as in the paper: its accuracy is optimistic)")
    for method, points in sweeps.items():
        tied = [p for p in points if p.tied_share > 0]
        if tied:
            notes.append(f"{method} gamma sweep: the true model ties with another model at gamma "
                         + ", ".join(f"{p.gamma:g} ({share(p.tied_share)})" for p in tied))
    return notes


def markdown_table(report: BenchmarkReport, title: str = "") -> str:
    """Table 1 / Table 2 shape: Top-1..Top-8 accuracy and the average rank per method."""
    ks = sorted(report.results[0].topk) if report.results else []
    head = "| Method | " + " | ".join(f"Top-{k}" for k in ks) + " | Avg. rank |"
    rule = "|---|" + "---:|" * (len(ks) + 1)
    lines = [f"### {title}", ""] if title else []
    lines += [head, rule]
    for r in report.results:
        cells = " | ".join(f"{r.topk[k]:.3f}" for k in ks)
        lines.append(f"| {display_name(r.method)} | {cells} | {r.average_rank:.3f} |")
    lines.append("")
    lines.append(
        f"{len(report.model_ids)} models, {report.results[0].n_queries if report.results else 0} queries "
        f"of {report.images_per_query} image(s), gamma = {report.gamma:g}."
    )
    return "\n".join(lines) + "\n"


def display_name(method: str) -> str:
    base, weighting = split_method(method)
    names = {"download": "Download", "rkme-basic": "RKME-Basic", "rkme-clip": "RKME-CLIP",
             "rkme-concat": "RKME-Concat", "proposal": "Proposal"}
    label = names.get(base, base)
    return f"{label} ({weighting})" if weighting else label


__all__ = [
    "ALL_METHODS", "BASELINES", "MAX_GAMMA", "BenchmarkReport", "UnknownMethod", "build_requirements", "check_gamma",
    "display_name", "evaluate_methods", "markdown_table", "parse_methods", "run_benchmark", "score_methods",
]
