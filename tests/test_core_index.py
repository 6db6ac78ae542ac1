"""SpecIndex equals the per-spec scores for every method, layout and query shape."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gmi_desktop.core import scores as S
from gmi_desktop.core.errors import RequirementError, SpecFormatError
from gmi_desktop.core.index import METHODS, SpecIndex
from gmi_desktop.core.kernels import l2_normalize
from gmi_desktop.core.spec import Requirement
from gmi_desktop.evaluation.toy import example_2_1
from tests.support.core_builders import make_prompt_set, make_query, make_spec, mixed_specs

ATOL = 2e-6  # float32 index against float64 reference functions


def _reference(specs, req, method, gamma=2.0, reduced_size=1, **kw):
    if method == "proposal":
        return np.array([S.score_proposal(s, req, gamma, **kw) for s in specs])
    if method == "download":
        return S.score_download(specs)
    fn = {"rkme_clip": S.score_rkme_clip, "rkme_concat": S.score_rkme_concat, "rkme_basic": S.score_rkme_basic}[method]
    g = None if method == "rkme_basic" else gamma
    return np.array([fn(s, req, g, reduced_size=reduced_size) for s in specs])


@pytest.fixture(scope="module")
def mixed():
    rng = np.random.default_rng(30)
    specs = mixed_specs(rng)
    return specs, SpecIndex(specs), SpecIndex(specs, gamma=0.5, reduced_size=None), rng


@pytest.mark.parametrize("t", [1, 3])
def test_index_equals_per_spec_functions_for_every_method_and_weighting(mixed, t):
    specs, index, _, rng = mixed
    req = make_query(rng, t=t, pixels=12)
    for weighting in S.WEIGHTINGS:
        for combine in S.COMBINES:
            got = index.score(req, weighting=weighting, combine=combine)
            want = _reference(specs, req, "proposal", weighting=weighting, combine=combine)
            np.testing.assert_allclose(got, want, atol=ATOL, err_msg=f"{weighting}/{combine}")
    for method in METHODS[1:]:
        np.testing.assert_allclose(index.score(req, method), _reference(specs, req, method), atol=ATOL, err_msg=method)
    text = Requirement(prompt_features=req.prompt_features)
    with pytest.raises(RequirementError, match="one space"):
        index.score(text)


def test_index_full_sets_and_other_gamma(mixed):
    specs, _, full, rng = mixed
    req = make_query(rng, t=2, pixels=12)
    for method in ("rkme_clip", "rkme_concat"):
        want = _reference(specs, req, method, gamma=0.5, reduced_size=None)
        np.testing.assert_allclose(full.score(req, method), want, atol=ATOL)
    want = _reference(specs, req, "proposal", gamma=0.5, weighting="paper")
    np.testing.assert_allclose(full.score(req, weighting="paper"), want, atol=ATOL)


def test_prompt_edit_fast_path_equals_full_scoring(mixed):
    specs, index, _, rng = mixed
    req = make_query(rng, t=1)
    prepared = index.prepare_image(req)
    for _ in range(3):
        new_prompt = rng.standard_normal((1, 10))
        edited = Requirement(req.image_features, new_prompt)
        np.testing.assert_array_equal(index.score_prompt(prepared, new_prompt), index.score(edited))
        want = _reference(specs, edited, "proposal")
        np.testing.assert_allclose(index.score_prompt(prepared, new_prompt), want, atol=ATOL)
    with pytest.raises(RequirementError, match="2 prompt features for 1"):
        index.score_prompt(prepared, rng.standard_normal((2, 10)))


def test_index_invariant_to_model_order(mixed):
    specs, index, _, rng = mixed
    req = make_query(rng, t=2, pixels=12)
    perm = rng.permutation(len(specs))
    shuffled = SpecIndex([specs[i] for i in perm])
    for method in METHODS:
        np.testing.assert_allclose(shuffled.score(req, method), index.score(req, method)[perm], atol=1e-6)
    assert [m for m, _, _ in shuffled.rank(req)] == [m for m, _, _ in index.rank(req)]


def test_shared_prompt_sets_are_stored_once(mixed):
    specs, index, _, _ = mixed
    # groups: default set of 7 (5 models), a shared set of 4 (2 models), 3 own sets of 7, 2 own sets of 4
    assert index._qhat.shape == (7 + 4 + 3 * 7 + 2 * 4, 10)
    sizes = sorted(m1 - m0 for b in index._blocks for _, m0, m1 in b.big)
    assert sizes == [2, 5]


def test_text_only_index_matches_and_prefers_matching_prompts():
    """Two models drew the same images; only model "match" drew the concept image for the prompt
    that names it, so a text-only query for that concept ranks it first."""
    rng = np.random.default_rng(31)
    dim = 16
    concepts = l2_normalize(rng.standard_normal((5, dim)))
    z = l2_normalize(rng.standard_normal((5, dim)))
    z[0] = concepts[4]
    own = (tuple(f"c{i}" for i in range(5)), concepts)
    swapped = (("c4", "c1", "c2", "c3", "c0"), concepts[[4, 1, 2, 3, 0]])
    specs = [
        make_spec(rng, "other", d=dim, prompt_set=own, z=z),
        make_spec(rng, "match", d=dim, prompt_set=swapped, z=z),
        make_spec(rng, "noise", d=dim, prompt_set=own),
    ]
    index = SpecIndex(specs)
    req = Requirement(prompt_features=concepts[4] + 0.05 * rng.standard_normal(dim))
    for weighting in S.WEIGHTINGS:
        got = index.score(req, weighting=weighting)
        np.testing.assert_allclose(got, _reference(specs, req, "proposal", weighting=weighting), atol=ATOL)
        assert index.rank(req, weighting=weighting)[0][0] == "match"


def test_planted_match_ranks_first_in_the_index():
    rng = np.random.default_rng(32)
    default = make_prompt_set(rng, 10, 10)
    centres = l2_normalize(rng.standard_normal((20, 12)))  # each model has its own "style"
    specs = [
        make_spec(rng, f"m{i:02d}", prompt_set=default, z=l2_normalize(c + 0.3 * rng.standard_normal((10, 12))))
        for i, c in enumerate(centres)
    ]
    z = l2_normalize(specs[13].image_features[4] + 0.05 * rng.standard_normal(12))
    req = Requirement(z, default[1][4])
    index = SpecIndex(specs)
    for method in ("proposal", "rkme_clip"):
        top = index.rank(req, method)[0]
        assert top[0] == "m13" and top[2] == 1


def test_rank_ties_share_rank_and_order_by_id():
    rng = np.random.default_rng(33)
    default = make_prompt_set(rng, 5, 10)
    base = make_spec(rng, "zz", prompt_set=default)
    twin = make_spec(rng, "aa", prompt_set=default, z=base.image_features)
    other = make_spec(rng, "mm", prompt_set=default)
    req = Requirement(base.image_features[0], default[1][0])
    ranked = SpecIndex([base, other, twin]).rank(req)
    assert [(m, r) for m, _, r in ranked][:2] == [("aa", 1), ("zz", 1)]
    assert ranked[2][2] == 3


def test_example_2_1_in_the_index():
    specs, req, true_index = example_2_1(4, n_query=5, user_range=(-0.5, 0.0), sampling="grid")
    index = SpecIndex(specs, reduced_size=None)
    eq2 = index.score(req, "rkme_clip")
    assert eq2[0] == pytest.approx(eq2[1], abs=1e-6)
    assert index.rank(req, weighting="paper")[0][0] == specs[true_index].model_id


def test_index_rejects_bad_input():
    rng = np.random.default_rng(34)
    a = make_spec(rng, "a")
    with pytest.raises(SpecFormatError, match="more than once"):
        SpecIndex([a, a])
    with pytest.raises(SpecFormatError, match="no specifications"):
        SpecIndex([])
    with pytest.raises(SpecFormatError, match="different encoders"):
        SpecIndex([a, make_spec(rng, "b", d=13)])
    index = SpecIndex([a])
    with pytest.raises(RequirementError, match="dims"):
        index.score(make_query(rng, d=11))
    with pytest.raises(RequirementError, match="pixel"):
        index.score(make_query(rng), "rkme_basic")
    with pytest.raises(ValueError, match="unknown method"):
        index.score(make_query(rng), "magic")
    # same width, other encoder: the feature spaces differ, so they must not be ranked together
    other = make_spec(rng, "b")
    other = dataclasses.replace(other, recipe=dataclasses.replace(other.recipe, encoder_id="other-encoder"))
    with pytest.raises(SpecFormatError, match="different encoders.*other-encoder"):
        SpecIndex([a, other])
    for gamma in (float("inf"), float("nan"), 0.0, -1.0):
        with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
            SpecIndex([a], gamma=gamma)


def test_index_orders_models_like_float64_when_scores_differ_below_float32_resolution():
    # A narrow kernel (large gamma): the models of one prompt group differ only by off-diagonal
    # kernel terms of 1e-11..1e-8, below float32's resolution of a score near 1.5 (1.2e-7). The
    # index must still order them as the float64 reference does, not tie them (ties flatter the
    # true model in the evaluation).
    rng = np.random.default_rng(5)
    shared = make_prompt_set(rng, 20, 10)
    specs = [make_spec(rng, f"m{i}", d=12, prompt_set=shared) for i in range(12)]
    specs.append(make_spec(rng, "own", d=12, n=20, dt=10))
    index = SpecIndex(specs, gamma=16.0)
    off_diagonal = ~np.eye(len(specs), dtype=bool)
    for t in (1, 2):
        req = make_query(rng, t=t)
        for weighting in ("paper", "clamped", "softmax"):
            for combine in ("mixture", "paired"):
                opts = dict(weighting=weighting, combine=combine)
                want = _reference(specs, req, "proposal", gamma=16.0, **opts)
                got = index.score(req, **opts)
                gaps = np.abs(want[:, None] - want[None, :])[off_diagonal]
                assert 1e-13 < gaps.min() < 1e-8, opts
                np.testing.assert_array_equal(np.argsort(got), np.argsort(want), err_msg=str(opts))
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
