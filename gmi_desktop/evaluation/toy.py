"""Example 2.1 of the paper: two models the plain RKME baseline (Eq. 2) cannot tell apart.

``f1: p -> (cos p*pi, sin p*pi)`` and ``f2: p -> (sin p*pi, cos p*pi)`` with default prompts
``p ~ U(-1, 1)``. Both trace the whole unit circle, so their image *distributions* are the same and
Eq. 2 gives them (nearly) equal scores. The user wants images for prompts in a sub-range; there the
two models differ (``f2(p) = f1(1/2 - p)``, a reflection across the diagonal). The paper writes the
range as "U(0.5, 0)"; ``[0, 0.5]`` is mapped onto itself by that reflection (both models then cover
the same quarter arc), so the default here is ``[-0.5, 0]``, where the two arcs are disjoint.

Default prompts: ``sampling="grid"`` takes ``n`` evenly spaced quantiles of U(-1, 1) offset by 1/4,
``p_k = -3/4 + 2k/n`` (wrapped into [-1, 1)). The reflection ``p -> 1/2 - p`` maps that grid onto
itself, so the two image *sets* are identical and Eq. 2 scores tie exactly, as the paper argues for
the distributions. ``sampling="uniform"`` draws i.i.d. U(-1, 1) prompts instead (ties then hold
only up to sampling noise).

A prompt ``p`` is encoded as the unit vector ``(cos p*pi, sin p*pi)``, so ``cos(q_i, q_tau) =
cos(pi (p_i - p_tau))``: prompts that are close get large weights, as for CLIP text features.
"""

from __future__ import annotations

import numpy as np

from gmi_desktop.core.spec import Requirement, SpecRecipe, Specification, prompt_set_digest


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
    seed: int = 0,
    n: int = 55,
    n_query: int = 5,
    user_range: tuple[float, float] = (-0.5, 0.0),
    true_model: int = 0,
    sampling: str = "grid",
) -> tuple[list[Specification], Requirement, int]:
    """``([spec_f1, spec_f2], requirement, true_index)``: both specs share ``n`` default prompts from
    U(-1, 1) (``sampling``: "grid" or "uniform", see the module docstring); the requirement holds
    ``n_query`` images made by model ``true_model`` for prompts
    drawn from ``user_range``, each paired with its own prompt feature."""
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
