"""Builders of small, real specifications and spec files for store/evaluation tests."""

from __future__ import annotations

import numpy as np

from gmi_desktop.core.spec import Specification, SpecRecipe, prompt_set_digest


def make_spec(
    seed: int = 0,
    *,
    n: int = 6,
    dim: int = 8,
    text_dim: int = 5,
    pixels: bool = True,
    model_id: str | None = None,
    encoder_id: str = "test-encoder",
    popularity: float | None = 12.0,
) -> Specification:
    rng = np.random.default_rng(seed)
    prompts = tuple(f"prompt {seed}-{i} ✓" for i in range(n))
    z = rng.standard_normal((n, dim))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    model_id = model_id or f"model-{seed}"
    recipe = SpecRecipe(
        checkpoint_sha256=f"{seed:064x}",
        encoder_id=encoder_id,
        prompt_set_digest=prompt_set_digest(prompts),
        generation={"steps": 20, "cfg": 7.5, "seed": seed},
    )
    return Specification(
        model_id=model_id,
        image_features=z,
        prompt_features=rng.standard_normal((n, text_dim)),
        prompts=prompts,
        recipe=recipe,
        display_name=f"Model {seed}",
        pixel_features=rng.random((n, 12)) if pixels else None,
        popularity=popularity,
    )
