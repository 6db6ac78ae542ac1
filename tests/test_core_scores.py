"""The per-spec scores of every method: closed forms against direct loops, and their properties."""

from __future__ import annotations

import numpy as np
import pytest

from gmi_desktop.core import scores as S
from gmi_desktop.core.errors import RequirementError
from gmi_desktop.core.kernels import l2_normalize
from gmi_desktop.core.reduced_set import reduce_set
from gmi_desktop.core.spec import Requirement
from gmi_desktop.evaluation.toy import example_2_1
from tests.support.core_builders import make_prompt_set, make_query, make_spec
from tests.support.reference_scores import eq2_direct, eq9_direct


@pytest.mark.parametrize("gamma", [0.02, 0.5, 2.0, 8.0])
def test_proposal_paper_closed_form_equals_direct_eq9(gamma):
    rng = np.random.default_rng(10)
    for _ in range(3):
        spec = make_spec(rng, "m", d=9, n=8, dt=6)
        req = make_query(rng, d=9, dt=6)
        z_tau, q_tau = req.image_features[0], req.prompt_features[0]
        direct = eq9_direct(spec.image_features, spec.prompt_features, z_tau, q_tau, gamma)
        got = S.score_proposal(spec, req, gamma, weighting="paper")
        assert got == pytest.approx(direct, rel=1e-9)


def test_eq2_closed_form_equals_direct_for_full_and_reduced_sets():
    rng = np.random.default_rng(11)
    spec = make_spec(rng, "m", d=5, n=9, pixels=6)
    req = make_query(rng, t=2, d=5, pixels=6)
    z, x = spec.image_features, req.image_features
    assert S.score_rkme_clip(spec, req, 1.5, reduced_size=None) == pytest.approx(
        eq2_direct(z, np.full(9, 1 / 9), x, 1.5), rel=1e-9
    )
    c, b = reduce_set(z, 3, 1.5, seed=0)
    assert S.score_rkme_clip(spec, req, 1.5, reduced_size=3) == pytest.approx(eq2_direct(c, b, x, 1.5), rel=1e-9)
    cp, bp = reduce_set(spec.pixel_features, 1, 0.25, seed=0)
    assert S.score_rkme_basic(spec, req, 0.25) == pytest.approx(eq2_direct(cp, bp, req.pixel_features, 0.25), rel=1e-9)
    pts = np.concatenate([z, l2_normalize(spec.prompt_features.astype(np.float64))], axis=1)
    qx = np.concatenate([x, l2_normalize(req.prompt_features.astype(np.float64))], axis=1)
    assert S.score_rkme_concat(spec, req, 0.7, reduced_size=None) == pytest.approx(
        eq2_direct(pts, np.full(9, 1 / 9), qx, 0.7), rel=1e-9
    )


def test_weightings():
    cos = np.array([[0.9, -0.2, 0.1, 0.0]])
    np.testing.assert_allclose(S.prompt_coefficients(cos, "paper"), cos / 4)
    np.testing.assert_allclose(S.prompt_coefficients(cos, "clamped"), [[0.9, 0, 0.1, 0]])
    np.testing.assert_allclose(S.prompt_coefficients(-np.abs(cos), "clamped"), [[0.25] * 4])
    soft = S.prompt_coefficients(cos, "softmax", temperature=0.1)
    np.testing.assert_allclose(soft, np.exp(cos / 0.1) / np.exp(cos / 0.1).sum())
    assert S.prompt_coefficients(cos, "softmax", temperature=1e-4).round(6).tolist() == [[1, 0, 0, 0]]
    with pytest.raises(ValueError, match="unknown weighting"):
        S.prompt_coefficients(cos, "uniform")


@pytest.mark.parametrize("weighting", S.WEIGHTINGS)
def test_proposal_invariant_to_permuting_spec_points(weighting):
    rng = np.random.default_rng(12)
    spec = make_spec(rng, "m", n=10)
    req = make_query(rng, t=2)
    perm = rng.permutation(10)
    prompt_set = (tuple(np.array(spec.prompts)[perm]), spec.prompt_features[perm])
    permuted = make_spec(rng, "m", z=spec.image_features[perm], prompt_set=prompt_set)
    for combine in S.COMBINES:
        a = S.score_proposal(spec, req, weighting=weighting, combine=combine)
        assert S.score_proposal(permuted, req, weighting=weighting, combine=combine) == pytest.approx(a, rel=1e-12)


def test_normalised_weighting_scores_an_exact_conditional_match_zero():
    """Clamped/softmax make the model side a mean embedding: images that sit exactly where the
    weights point reproduce the query (score 0); Eq. 9's raw weights do not."""
    rng = np.random.default_rng(13)
    prompts, q = make_prompt_set(rng, 6, 10)
    z = l2_normalize(rng.standard_normal((6, 12)))
    spec = make_spec(rng, "m", prompt_set=(prompts, q), z=z)
    req = Requirement(z[2], q[2])
    assert S.score_proposal(spec, req, weighting="softmax", temperature=1e-3) == pytest.approx(0.0, abs=1e-9)
    assert S.score_proposal(spec, req, weighting="paper") > 0.1


@pytest.mark.parametrize("weighting", S.WEIGHTINGS)
def test_multi_image_combinations(weighting):
    rng = np.random.default_rng(14)
    spec = make_spec(rng, "m", n=8)
    req = make_query(rng, t=3)
    singles = [
        S.score_proposal(spec, Requirement(req.image_features[t], req.prompt_features[t]), weighting=weighting)
        for t in range(3)
    ]
    paired = S.score_proposal(spec, req, weighting=weighting, combine="paired")
    mixture = S.score_proposal(spec, req, weighting=weighting, combine="mixture")
    assert paired == pytest.approx(np.mean(singles), rel=1e-12)
    assert mixture <= paired + 1e-12  # Jensen: the mixture distance never exceeds the mean distance
    # one image repeated T times is the single-image score under both combinations
    rep = Requirement(np.repeat(req.image_features[:1], 3, 0), np.repeat(req.prompt_features[:1], 3, 0))
    for combine in S.COMBINES:
        assert S.score_proposal(spec, rep, weighting=weighting, combine=combine) == pytest.approx(singles[0], rel=1e-9)


def _planted(rng, n_models=8, t=1):
    """A query made of a (slightly perturbed) spec image of model 5 paired with that image's prompt."""
    default = make_prompt_set(rng, 12, 10)
    specs = [make_spec(rng, f"m{i}", prompt_set=default) for i in range(n_models)]
    idx = rng.choice(12, size=t, replace=False)
    z = l2_normalize(specs[5].image_features[idx] + 0.05 * rng.standard_normal((t, 12)))
    q = default[1][idx] + 0.05 * rng.standard_normal((t, 10))
    return specs, Requirement(z, q)


@pytest.mark.parametrize("t", [1, 3])
def test_planted_model_ranks_first(t):
    rng = np.random.default_rng(15 + t)
    specs, req = _planted(rng, t=t)
    for weighting in S.WEIGHTINGS:
        for combine in S.COMBINES:
            scores = [S.score_proposal(s, req, weighting=weighting, combine=combine) for s in specs]
            assert int(np.argmin(scores)) == 5, (weighting, combine)
    clip = [S.score_rkme_clip(s, req, reduced_size=None) for s in specs]
    assert int(np.argmin(clip)) == 5


def test_example_2_1_baseline_ties_and_proposal_separates():
    for seed, true in [(0, 0), (1, 1), (2, 0)]:
        specs, req, true_index = example_2_1(seed, n_query=5, user_range=(-0.5, 0.0), true_model=true, sampling="grid")
        assert true_index == true
        eq2 = [S.score_rkme_clip(s, req, reduced_size=None) for s in specs]
        assert eq2[0] == pytest.approx(eq2[1], rel=1e-9)
        for weighting in S.WEIGHTINGS:
            prop = [S.score_proposal(s, req, weighting=weighting) for s in specs]
            assert int(np.argmin(prop)) == true_index
            assert abs(prop[0] - prop[1]) > 0.3
    specs, req, _ = example_2_1(0, n_query=5, user_range=(-0.5, 0.0))
    eq2 = [S.score_rkme_clip(s, req, reduced_size=None) for s in specs]
    prop = [S.score_proposal(s, req, weighting="paper") for s in specs]
    assert abs(prop[0] - prop[1]) > 3 * abs(eq2[0] - eq2[1])


def test_text_only_query_ranks_matching_model_first():
    """Shared CLIP-like space (D == Dt): the query text points at concept c; only model 2 drew c
    for the prompt that mentions it."""
    rng = np.random.default_rng(17)
    dim = 16
    concepts = l2_normalize(rng.standard_normal((6, dim)))
    prompts, q = ("c0", "c1", "c2", "c3", "c4", "c5"), concepts
    specs = []
    for m in range(4):
        z = l2_normalize(rng.standard_normal((6, dim)))
        if m == 2:
            z[3] = concepts[3]
        specs.append(make_spec(rng, f"m{m}", d=dim, prompt_set=(prompts, q), z=z))
    req = Requirement(prompt_features=concepts[3] + 0.1 * rng.standard_normal(dim))
    for weighting in S.WEIGHTINGS:
        scores = [S.score_proposal(s, req, weighting=weighting) for s in specs]
        assert int(np.argmin(scores)) == 2
    with pytest.raises(RequirementError, match="one space"):
        S.score_text_only(make_spec(rng, "x", d=12, n=6, dt=10), Requirement(prompt_features=np.ones(10)))


def test_download_is_a_strict_popularity_then_id_order():
    rng = np.random.default_rng(18)
    specs = [make_spec(rng, mid, popularity=p) for mid, p in [("b", None), ("a", None), ("c", 5.0), ("d", 50.0)]]
    assert S.score_download(specs).tolist() == [3.0, 2.0, 1.0, 0.0]


def test_methods_reject_mismatched_queries():
    rng = np.random.default_rng(19)
    spec = make_spec(rng, "m", d=12, dt=10)
    with pytest.raises(RequirementError, match="dims"):
        S.score_proposal(spec, make_query(rng, d=11))
    with pytest.raises(RequirementError, match="prompt"):
        S.score_proposal(spec, Requirement(image_features=np.ones(12)))
    with pytest.raises(RequirementError, match="pixel"):
        S.score_rkme_basic(spec, make_query(rng))


def test_downsample_pixels():
    img = np.zeros((64, 96, 3), dtype=np.uint8)
    img[:, 40:] = 255
    v = S.downsample_pixels(img, 4)
    assert v.shape == (48,) and v.dtype == np.float32
    grid = v.reshape(4, 4, 3)[..., 0]
    np.testing.assert_allclose(grid, [[0, 0.5, 1, 1]] * 4)  # centre crop columns 16..80
    gray = S.downsample_pixels(np.full((3, 3), 0.25), 6)
    np.testing.assert_allclose(gray, 0.25)
    with pytest.raises(ValueError):
        S.downsample_pixels(np.zeros((4, 4, 2)), 2)
