"""Builders of synthetic specifications and queries for the core tests (seeded)."""

from __future__ import annotations

import numpy as np

from gmi_desktop.core.kernels import l2_normalize
from gmi_desktop.core.spec import Requirement, SpecRecipe, Specification, prompt_set_digest


def make_prompt_set(rng, n, dt, tag="default"):
    prompts = tuple(f"{tag} prompt {i}" for i in range(n))
    return prompts, rng.standard_normal((n, dt)).astype(np.float32)


def make_spec(rng, model_id, d=12, prompt_set=None, n=6, dt=10, pixels=0, popularity=None, z=None):
    """A spec with unit-norm image features; ``prompt_set=(prompts, Q)`` shares a prompt set."""
    prompts, q = prompt_set if prompt_set is not None else make_prompt_set(rng, n, dt, tag=model_id)
    n = len(prompts)
    if z is None:
        z = l2_normalize(rng.standard_normal((n, d)))
    recipe = SpecRecipe(f"sha-{model_id}", "test-encoder", prompt_set_digest(prompts))
    pix = rng.uniform(0, 1, (n, pixels)) if pixels else None
    return Specification(model_id, z, q, prompts, recipe, pixel_features=pix, popularity=popularity)


def make_query(rng, t=1, d=12, dt=10, pixels=0):
    pix = rng.uniform(0, 1, (t, pixels)) if pixels else None
    return Requirement(l2_normalize(rng.standard_normal((t, d))), rng.standard_normal((t, dt)), pix)


def mixed_specs(rng, d=12, dt=10, pixels=12):
    """Models sharing a default prompt set of 7, others with their own sets of 7 and of 4 prompts
    (A.5), and a second shared set of 4: every layout branch of the index."""
    default = make_prompt_set(rng, 7, dt)
    small = make_prompt_set(rng, 4, dt, tag="small")
    specs = [make_spec(rng, f"shared{i}", d, default, pixels=pixels, popularity=float(i)) for i in range(5)]
    specs += [make_spec(rng, f"own{i}", d, None, n=7, dt=dt, pixels=pixels) for i in range(3)]
    specs += [make_spec(rng, f"own4_{i}", d, None, n=4, dt=dt, pixels=pixels) for i in range(2)]
    specs += [make_spec(rng, f"small{i}", d, small, pixels=pixels) for i in range(2)]
    order = rng.permutation(len(specs))
    return [specs[i] for i in order]
