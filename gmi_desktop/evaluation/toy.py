"""Example 2.1 of the paper: two models the image-only baseline (Eq. 2) cannot tell apart.

``f1: p -> (cos p*pi, sin p*pi)`` and ``f2: p -> (sin p*pi, cos p*pi)``, default prompts
``p ~ U(-1, 1)``. Both trace the whole unit circle, so their image *distributions* are the same
and Eq. 2 can only pick one by the chance of which prompts were drawn. For a prompt ``p`` the two
images differ (``f2(p) = f1(1/2 - p)``, a reflection across the diagonal), which is what the
prompt-weighted score (Eq. 9) sees. The user's prompts come from the paper's range ``U(0, 0.5)``
(written "U(0.5, 0)" there); at its midpoint ``p = 1/4`` the two models make the same image, so
queries near it are hard for every method.

:func:`example_2_1` is one draw; :func:`pick_rates` counts, over many seeded draws, how often each
method scores the model that made the user's image lowest. ``sampling="grid"`` replaces the random
default prompts by a grid the reflection maps onto itself (``p_k = -3/4 + 2k/n``, wrapped into
[-1, 1)): the two image sets are then identical and Eq. 2 ties exactly, which tests use.

A prompt ``p`` is encoded as the unit vector ``(cos p*pi, sin p*pi)``, so ``cos(q_i, q_tau) =
cos(pi (p_i - p_tau))``: close prompts get large weights, as for CLIP text features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gmi_desktop.core.kernels import DEFAULT_GAMMA, rkme_distance, uniform_weights
from gmi_desktop.core.reduced_set import reduce_sets
from gmi_desktop.core.scores import DEFAULT_TEMPERATURE, WEIGHTINGS, score_proposal, score_rkme_clip
from gmi_desktop.core.spec import Requirement, SpecRecipe, Specification, prompt_set_digest

PAPER_USER_RANGE = (0.0, 0.5)
# A tie is "cannot tell apart" when the two scores differ by less than this (relative).
TIE_TOLERANCE = 1e-9


def f1(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.stack([np.cos(p * np.pi), np.sin(p * np.pi)], axis=-1)


def f2(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.stack([np.sin(p * np.pi), np.cos(p * np.pi)], axis=-1)


def encode_prompt(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.stack([np.cos(p * np.pi), np.sin(p * np.pi)], axis=-1)


def example_2_1(
    seed: int | Sequence[int] = 0,
    n: int = 55,
    n_query: int = 1,
    user_range: tuple[float, float] = PAPER_USER_RANGE,
    true_model: int = 0,
    sampling: str = "uniform",
) -> tuple[list[Specification], Requirement, int]:
    """One draw ``([spec_f1, spec_f2], requirement, true_index)``: both specs share ``n`` default
    prompts ``p ~ U(-1, 1)`` (``sampling="grid"``: the symmetric grid of the module docstring);
    the requirement holds ``n_query`` images made by model ``true_model`` for prompts drawn from
    ``U(user_range)``, each paired with its own prompt feature. Everything drawn from ``seed``."""
    if true_model not in (0, 1):
        raise ValueError("true_model must be 0 (f1) or 1 (f2)")
    rng = np.random.default_rng(seed)
    if sampling == "grid":
        p = (-0.75 + 2.0 * np.arange(n) / n + 1.0) % 2.0 - 1.0
    elif sampling == "uniform":
        p = rng.uniform(-1.0, 1.0, size=n)
    else:
        raise ValueError(f"sampling must be 'grid' or 'uniform', got {sampling!r}")
    prompts = tuple(f"p={v:.6f}" for v in p)
    q = encode_prompt(p)
    specs = []
    for name, f in (("f1", f1), ("f2", f2)):
        recipe = SpecRecipe(
            checkpoint_sha256=f"toy-{name}", encoder_id="toy-circle", prompt_set_digest=prompt_set_digest(prompts)
        )
        specs.append(Specification(name, f(p), q, prompts, recipe, display_name=f"Example 2.1 {name}"))
    p_tau = rng.uniform(user_range[0], user_range[1], size=n_query)
    make = f1 if true_model == 0 else f2
    req = Requirement(image_features=make(p_tau), prompt_features=encode_prompt(p_tau))
    return specs, req, true_model


TOY_METHODS = (
    ("rkme-clip", "RKME-CLIP, Eq. 2 on a reduced set of 1 point (the benchmarked baseline)"),
    ("rkme-clip-full", "RKME-CLIP, Eq. 2 on all {n} spec images (no reduced set)"),
    ("proposal:paper", "Proposal, Eq. 9 as written (weights cos(q_i, q_tau) / N)"),
    ("proposal:clamped", "Proposal, weights max(cos, 0) renormalised"),
    ("proposal:softmax", "Proposal, weights softmax(cos / {temperature}) (the default)"),
)


@dataclass(frozen=True)
class PickRate:
    """How often one method scored the true model lowest (``right``), the other one (``wrong``), or
    both the same (``tied``, relative difference under :data:`TIE_TOLERANCE`) over ``draws``."""

    method: str
    label: str
    right: int
    wrong: int
    tied: int

    @property
    def draws(self) -> int:
        return self.right + self.wrong + self.tied

    @property
    def right_share(self) -> float:
        return self.right / self.draws if self.draws else 0.0


def _verdicts(score_true: np.ndarray, score_other: np.ndarray) -> tuple[int, int, int]:
    scale = np.maximum(np.maximum(np.abs(score_true), np.abs(score_other)), 1e-300)
    tied = np.abs(score_true - score_other) <= TIE_TOLERANCE * scale
    right = ~tied & (score_true < score_other)
    return int(right.sum()), int((~tied & ~right).sum()), int(tied.sum())


def draw_scores(
    draws: int = 1000, seed: int = 0, gamma: float = DEFAULT_GAMMA, n: int = 55,
    user_range: tuple[float, float] = PAPER_USER_RANGE,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Scores ``(draws, 2)`` of f1 and f2 per method of :data:`TOY_METHODS`, and the true model
    per draw. Draw d is :func:`example_2_1` with seed ``(seed, d)`` and one user image, made by f1
    for even d and by f2 for odd d. The size-1 reduced sets of all draws are built in one batch;
    each equals the one :func:`core.scores.score_rkme_clip` builds (tested)."""
    if draws < 1:
        raise ValueError("draws must be at least 1")
    worlds = [example_2_1((seed, d), n=n, user_range=user_range, true_model=d % 2) for d in range(draws)]
    scores: dict[str, np.ndarray] = {m: np.empty((draws, 2)) for m, _ in TOY_METHODS}
    c, b = reduce_sets(np.stack([s.image_features for specs, _r, _t in worlds for s in specs]), 1, gamma)
    for d, (specs, req, _true) in enumerate(worlds):
        query, weights = req.image_features, uniform_weights(len(req.image_features))
        for m, spec in enumerate(specs):
            scores["rkme-clip"][d, m] = rkme_distance(c[2 * d + m], b[2 * d + m], query, weights, gamma)
            scores["rkme-clip-full"][d, m] = score_rkme_clip(spec, req, gamma, reduced_size=None)
            for w in WEIGHTINGS:
                scores[f"proposal:{w}"][d, m] = score_proposal(spec, req, gamma, weighting=w)
    return scores, np.arange(draws) % 2


def pick_rates(
    draws: int = 1000, seed: int = 0, gamma: float = DEFAULT_GAMMA, n: int = 55,
    user_range: tuple[float, float] = PAPER_USER_RANGE,
) -> list[PickRate]:
    """How often each method of :data:`TOY_METHODS` picks the right model over ``draws`` draws
    (:func:`draw_scores`)."""
    scores, true = draw_scores(draws, seed, gamma, n, user_range)
    rows = np.arange(draws)
    out = []
    for method, label in TOY_METHODS:
        s = scores[method]
        out.append(PickRate(method, label.format(n=n, temperature=f"{DEFAULT_TEMPERATURE:g}"),
                            *_verdicts(s[rows, true], s[rows, 1 - true])))
    return out
