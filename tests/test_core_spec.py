"""Specification / Requirement validation and the prompt-set digest."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from gmi_desktop.core.errors import RequirementError, SpecFormatError
from gmi_desktop.core.spec import SPEC_FORMAT_VERSION, Requirement, SpecRecipe, Specification, prompt_set_digest

PROMPTS = ("a cat", "a dog", "ein Hund, gemalt")


def _recipe(prompts=PROMPTS, **kw):
    return SpecRecipe("0" * 64, "clip-test", prompt_set_digest(prompts), **kw)


def _spec(z=None, q=None, prompts=PROMPTS, **kw):
    z = np.ones((3, 4)) if z is None else z
    q = np.eye(3, 5) if q is None else q
    return Specification("m", z, q, prompts, kw.pop("recipe", _recipe(prompts)), **kw)


def test_digest_is_sha256_of_canonical_json_and_order_sensitive():
    expected = hashlib.sha256('["a cat","a dog","ein Hund, gemalt"]'.encode()).hexdigest()
    assert prompt_set_digest(PROMPTS) == expected
    assert prompt_set_digest(list(PROMPTS)) == expected
    assert prompt_set_digest(PROMPTS[::-1]) != expected
    assert prompt_set_digest(["a", "b"]) != prompt_set_digest(["a,b"])


def test_valid_spec_is_float32_readonly_and_has_gram_distances():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 4))
    s = _spec(z=z, popularity=12)
    assert s.image_features.dtype == np.float32 and not s.image_features.flags.writeable
    assert s.popularity == 12.0 and s.recipe.format_version == SPEC_FORMAT_VERSION
    z32 = s.image_features.astype(np.float64)
    direct = ((z32[:, None] - z32[None]) ** 2).sum(-1)
    np.testing.assert_allclose(s.image_sq_distances, direct, atol=1e-12)
    assert np.all(np.diag(s.image_sq_distances) == 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"z": np.ones((2, 4))}, "3 prompt features"),
        ({"z": np.ones(4)}, "2-D"),
        ({"z": np.ones((3, 0))}, "non-empty"),
        ({"z": np.full((3, 4), np.nan)}, "NaN"),
        ({"z": np.full((3, 4), 1e39)}, "NaN or infinite"),
        ({"z": np.array([["a"] * 4] * 3)}, "real numbers"),
        ({"q": np.zeros((3, 5))}, "all zeros"),
        ({"q": np.ones((3, 5)), "pixel_features": np.ones((2, 8))}, "pixel rows"),
        ({"prompts": PROMPTS[:2], "recipe": _recipe()}, "prompt strings"),
        ({"recipe": _recipe(("x", "y", "z"))}, "digest does not match"),
        ({"popularity": float("inf")}, "finite"),
        ({"popularity": "many"}, "number"),
    ],
)
def test_invalid_specs_raise_spec_format_error(kwargs, message):
    with pytest.raises(SpecFormatError, match=message):
        _spec(**kwargs)


def test_recipe_rejects_other_format_versions_and_empty_fields():
    with pytest.raises(SpecFormatError, match="version 2"):
        _recipe(format_version=2)
    with pytest.raises(SpecFormatError, match="encoder_id"):
        SpecRecipe("0" * 64, "", prompt_set_digest(PROMPTS))


def test_requirement_shapes():
    r = Requirement(np.ones(4), np.ones(5))
    assert r.image_features.shape == (1, 4) and r.n_images == 1 and not r.text_only
    t = Requirement(prompt_features=np.ones((2, 5)))
    assert t.text_only and t.n_images == 2
    with pytest.raises(RequirementError, match="same count"):
        Requirement(np.ones((2, 4)), np.ones((3, 5)))
    with pytest.raises(RequirementError, match="needs image features"):
        Requirement()
    with pytest.raises(RequirementError, match="all zeros"):
        Requirement(np.ones(4), np.zeros(5))
    with pytest.raises(RequirementError, match="NaN"):
        Requirement(np.array([1.0, np.inf]), np.ones(5))
