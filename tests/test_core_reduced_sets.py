"""Batched reduced sets (``reduce_sets``): equal to one model at a time, to the point-space
iteration, deterministic, chunk-independent; and the baseline arrays built from them."""

from __future__ import annotations

import numpy as np
import pytest

import gmi_desktop.core.reduced_set as rs
from gmi_desktop.core.baseline_sets import build_baseline_sets
from gmi_desktop.core.kernels import l2_normalize, rbf_kernel, rkme_distance
from gmi_desktop.core.reduced_set import reduce_set, reduce_sets
from tests.support.reference_reduced_set import objective, reduce_set_pointwise

GAMMA = 2.0


def _clustered(rng, m, n, f, spread=0.7):
    """``m`` models, each a style centre plus noise, unit norm (like CLIP image features)."""
    centres = rng.standard_normal((m, 1, f))
    return l2_normalize(centres + spread * rng.standard_normal((m, n, f)))


def _assert_same(batched, single, atol=1e-12):
    c, b = batched
    c1, b1 = single
    s = len(b1)
    np.testing.assert_allclose(c[:s], c1, rtol=0, atol=atol)
    np.testing.assert_allclose(b[:s], b1, rtol=0, atol=atol)
    assert not c[s:].any() and not b[s:].any()  # padding: zero points of weight 0


@pytest.mark.parametrize("size", [1, 2, 4, 12, 15])
def test_batched_equals_one_model_at_a_time(size):
    x = _clustered(np.random.default_rng(size), 5, 12, 6)
    rounds = 30 if size == 1 else 8  # size 1 converges; larger ones stop at the round limit
    c, b = reduce_sets(x, size, GAMMA, seed=3, rounds=rounds)
    assert c.shape == (5, min(size, 12), 6) and b.shape == (5, min(size, 12))
    for m in range(5):
        _assert_same((c[m], b[m]), reduce_set(x[m], size, GAMMA, seed=3, rounds=rounds))
    if size >= 12:  # the exact set: the points themselves, weight 1/N
        np.testing.assert_array_equal(c, x)
        np.testing.assert_array_equal(b, np.full((5, 12), 1 / 12))


@pytest.mark.parametrize("size", [1, 3, 5])
def test_coefficient_space_iteration_agrees_with_point_space(size):
    """Same iteration, different arithmetic: objectives agree to rounding, points to the
    flatness of J at its minimum (a rounding-level difference can decide one more round)."""
    rng = np.random.default_rng(10 + size)
    x = _clustered(rng, 4, 14, 7)
    a = rng.dirichlet(np.ones(14), size=4)
    c, b = reduce_sets(x, size, GAMMA, seed=size, weights=a, rounds=12)
    for m in range(4):
        c_ref, b_ref = reduce_set_pointwise(x[m], size, GAMMA, seed=size, weights=a[m], rounds=12)
        assert objective(c[m], b[m], x[m], a[m], GAMMA) == pytest.approx(
            objective(c_ref, b_ref, x[m], a[m], GAMMA), abs=1e-12
        )
        np.testing.assert_allclose(c[m], c_ref, atol=1e-5)
        np.testing.assert_allclose(b[m], b_ref, atol=1e-5)


def test_ragged_sets_and_weights_equal_one_model_at_a_time():
    rng = np.random.default_rng(20)
    counts = [9, 3, 14, 4, 11, 14]
    sets = [l2_normalize(rng.standard_normal((n, 5))).astype(np.float32) for n in counts]
    weights = [rng.dirichlet(np.ones(n)) for n in counts]
    c, b = reduce_sets(sets, 4, GAMMA, seed=1, weights=weights)
    assert c.shape == (6, 4, 5) and c.dtype == np.float64
    for m, (x, a) in enumerate(zip(sets, weights)):
        single = reduce_set(x, 4, GAMMA, seed=1, weights=a)
        _assert_same((c[m], b[m]), single, atol=1e-10)  # padding changes summation order only
        assert len(single[1]) == min(4, len(x))
    np.testing.assert_array_equal(c[1, :3], sets[1])  # N <= size: the set itself
    np.testing.assert_array_equal(b[1], np.append(weights[1], 0.0))


def test_deterministic_given_seed_and_independent_of_chunking(monkeypatch):
    x = _clustered(np.random.default_rng(30), 6, 10, 4)
    x_before = x.copy()
    first = reduce_sets(x, 3, GAMMA, seed=5, rounds=8)
    np.testing.assert_array_equal(x, x_before)  # the input is never written
    again = reduce_sets(list(x), 3, GAMMA, seed=5, rounds=8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    monkeypatch.setattr(rs, "_OPT_CHUNK", 2)
    monkeypatch.setattr(rs, "_DATA_CHUNK_BYTES", 1)
    chunked = reduce_sets(x, 3, GAMMA, seed=5, rounds=8)
    np.testing.assert_array_equal(first[0], chunked[0])
    np.testing.assert_array_equal(first[1], chunked[1])
    other = reduce_sets(x, 3, GAMMA, seed=7, rounds=8)  # another seed starts from other points
    assert not np.array_equal(first[0], other[0])


def test_results_are_optimal_weights_and_better_than_the_start():
    """KKT of the simplex QP in ``b`` (every support weight has the least partial derivative);
    ``J`` below the seeded start and falling with size, for every model of the batch."""
    x = _clustered(np.random.default_rng(40), 6, 20, 5)
    a = np.full(20, 1 / 20)
    dist = {}
    for size in (1, 3, 6):
        c, b = reduce_sets(x, size, GAMMA, seed=2)
        start = np.sort(np.random.default_rng(2).choice(20, size=size, replace=False))
        dist[size] = []
        for m in range(6):
            assert b[m].min() >= 0 and b[m].sum() == pytest.approx(1.0, abs=1e-12)
            partial = 2 * rbf_kernel(c[m], c[m], GAMMA) @ b[m] - 2 * rbf_kernel(c[m], x[m], GAMMA) @ a
            support = b[m] > 1e-9
            assert np.ptp(partial[support]) < 1e-6
            assert partial.min() >= partial[support].max() - 1e-6
            dist[size].append(rkme_distance(c[m], b[m], x[m], a, GAMMA))
            assert dist[size][-1] < rkme_distance(x[m, start], np.full(size, 1 / size), x[m], a, GAMMA)
    assert np.all(np.array(dist[6]) < np.array(dist[3])) and np.all(np.array(dist[3]) < np.array(dist[1]))


def test_size_one_of_tight_clusters_lands_on_each_mean():
    rng = np.random.default_rng(50)
    centres = rng.standard_normal((8, 1, 6))
    x = centres + 0.01 * rng.standard_normal((8, 30, 6))
    c, b = reduce_sets(x, 1, GAMMA, seed=0)
    np.testing.assert_array_equal(b, np.ones((8, 1)))
    np.testing.assert_allclose(c[:, 0], x.mean(1), atol=1e-4)


def test_bad_input_is_refused():
    x = np.zeros((2, 5, 3))
    with pytest.raises(ValueError, match="size"):
        reduce_sets(x, 0, GAMMA)
    with pytest.raises(ValueError, match="feature sizes"):
        reduce_sets([np.zeros((4, 3)), np.zeros((4, 2))], 1, GAMMA)
    with pytest.raises(ValueError, match="non-empty"):
        reduce_sets([np.zeros((4, 3)), np.zeros((0, 3))], 1, GAMMA)
    with pytest.raises(ValueError, match="non-empty"):
        reduce_sets([], 1, GAMMA)
    with pytest.raises(ValueError, match="weights"):
        reduce_sets(x, 1, GAMMA, weights=np.ones((2, 4)) / 4)


@pytest.mark.parametrize("reduced_size", [1, 3, None])
def test_baseline_sets_hold_each_models_reduced_set(reduced_size):
    rng = np.random.default_rng(60)
    sets = [l2_normalize(rng.standard_normal((n, 6))).astype(np.float32) for n in (10, 7, 10, 12)]
    base = build_baseline_sets(iter(sets), reduced_size, GAMMA, seed=4)
    size = base.weights.shape[1]
    assert size == (12 if reduced_size is None else reduced_size)
    for m, x in enumerate(sets):
        if reduced_size is None:
            c, b = x.astype(np.float64), np.full(len(x), 1 / len(x))
        else:
            c, b = reduce_set(x, reduced_size, GAMMA, seed=4)
        pts = base.points[m * size : (m + 1) * size]
        np.testing.assert_allclose(pts[: len(c)], c, atol=1e-6)
        np.testing.assert_allclose(base.weights[m, : len(b)], b, atol=1e-7)
        assert not base.weights[m, len(b) :].any()
        assert base.self_terms[m] == pytest.approx(b @ rbf_kernel(c, c, GAMMA) @ b, rel=1e-12)


def test_a_converged_model_takes_no_further_rounds():
    """Each model stops at its own convergence: a higher round limit changes nothing, bitwise,
    although the batch mixes quick and slow models (sets of very different spread)."""
    rng = np.random.default_rng(70)
    x = np.concatenate([_clustered(rng, 3, 12, 5, spread=0.05), _clustered(rng, 3, 12, 5, spread=2.0)])
    c, b = reduce_sets(x, 1, GAMMA, seed=0)
    c_more, b_more = reduce_sets(x, 1, GAMMA, seed=0, rounds=60)
    np.testing.assert_array_equal(c, c_more)
    np.testing.assert_array_equal(b, b_more)
    c_fewer, _ = reduce_sets(x, 1, GAMMA, seed=0, rounds=2)  # the slow ones were still moving
    assert not np.array_equal(c[3:], c_fewer[3:])


def _circle(n):
    """The paper's Example 2.1 default images: the unit circle at n evenly spaced angles."""
    p = -1 + (2 * np.arange(n) + 1) / n
    return np.stack([np.cos(np.pi * p), np.sin(np.pi * p)], 1)


def _embedded(x, width, seed):
    """``x`` rotated into ``width`` dimensions (same distances; more dimensions than points)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((width, x.shape[1])))
    return x @ q.T


def _flat_and_symmetric_sets():
    rng = np.random.default_rng(80)
    pairs = rng.standard_normal((6, 5))
    yield "circle (Example 2.1)", _circle(55), 1.0
    yield "circle, finer gamma", _circle(55), 0.5
    yield "square", np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]), 1.0
    yield "pairs +-x", np.concatenate([pairs, -pairs]) / 2, 1.0
    yield "duplicated points in 30 dimensions", _embedded(np.repeat(rng.standard_normal((4, 3)), 3, axis=0), 30, 2), 2.0
    yield "a plane in 40 dimensions", _embedded(rng.standard_normal((20, 2)), 40, 3), 2.0
    yield "more dimensions than points (not flat)", l2_normalize(rng.standard_normal((10, 30))), 2.0


@pytest.mark.parametrize("case", list(_flat_and_symmetric_sets()), ids=lambda c: c[0])
def test_flat_and_symmetric_sets_reach_the_point_space_optimum(case):
    """Sets whose points span fewer dimensions than their number (a circle, duplicates, a plane)
    have flat optima: the iteration must not stop early there (it once stopped at |c| = 0.081 on
    the circle, where the optimum is the centre and the point-space iteration reaches 5e-5).
    Sets with more dimensions than points run on a Cholesky factor or, when singular, on an
    eigendecomposition of the Gram matrix: both are checked here too."""
    _name, x, gamma = case
    a = np.full(len(x), 1 / len(x))
    for size in (1, 2):
        c, b = reduce_set(x, size, gamma, seed=0)
        c_ref, b_ref = reduce_set_pointwise(x, size, gamma, seed=0)
        assert objective(c, b, x, a, gamma) == pytest.approx(objective(c_ref, b_ref, x, a, gamma), abs=1e-12)
        assert rkme_distance(c, b, x, a, gamma) == pytest.approx(rkme_distance(c_ref, b_ref, x, a, gamma), abs=1e-9)
    batched = reduce_sets(np.stack([x, x[::-1]]), 1, gamma, seed=0)
    np.testing.assert_array_equal(batched[0][0], reduce_set(x, 1, gamma, seed=0)[0])


def test_example_2_1_circle_reduces_to_its_centre():
    """Size 1 on the whole circle: the best single point is the centre (|c| ~ 0), as the point
    space iteration finds; the size-1 RKME-CLIP baseline then ties on the paper's toy."""
    x = _circle(55)
    c, b = reduce_set(x, 1, 1.0)
    assert np.linalg.norm(c[0]) < 1e-3
    assert b[0] == 1.0
    # Rotated into 80 dimensions the minimum is as flat (quartic in |c|) and 30 rounds end about
    # |c| = 0.03 for both iterations; with more rounds both go on towards the centre.
    xe = _embedded(x, 80, 1)
    a = np.full(55, 1 / 55)
    ce, be = reduce_set(xe, 1, 1.0, rounds=300)
    cr, br = reduce_set_pointwise(xe, 1, 1.0, rounds=300)
    assert np.linalg.norm(ce[0]) < 0.02
    assert objective(ce, be, xe, a, 1.0) == pytest.approx(objective(cr, br, xe, a, 1.0), abs=1e-9)


@pytest.mark.parametrize("width", [3, 40])  # points themselves / Cholesky coordinates
def test_an_input_point_that_is_already_optimal_stays_exact(width):
    """At a kernel so narrow that the points do not see each other, the start point is stationary:
    it must come back bit for bit (rounding noise in the gradient is not a reason to move), or
    exactly tied scores (a reported tie) would differ in the last bits."""
    x = l2_normalize(np.random.default_rng(90).standard_normal((4, 12, width)))
    c, b = reduce_sets(x, 1, 1e4, seed=0)
    start = np.sort(np.random.default_rng(0).choice(12, size=1, replace=False))
    np.testing.assert_array_equal(c[:, 0], x[:, start[0]])
    np.testing.assert_array_equal(b, np.ones((4, 1)))
