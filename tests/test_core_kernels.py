"""Kernel arithmetic, reduced sets and ranking."""

from __future__ import annotations

import numpy as np
import pytest

from gmi_desktop.core.kernels import l2_normalize, rbf_kernel, rkme_distance, sq_distances, uniform_weights
from gmi_desktop.core.ranking import order_from_scores, ranks_from_scores
from gmi_desktop.core.reduced_set import project_to_simplex, reduce_set
from tests.support.reference_scores import eq2_direct


def test_sq_distances_and_kernel_match_direct_formula():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((5, 7)), rng.standard_normal((4, 7))
    direct = ((x[:, None] - y[None]) ** 2).sum(-1)
    np.testing.assert_allclose(sq_distances(x, y), direct, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rbf_kernel(x, y, 0.3), np.exp(-0.3 * direct), rtol=1e-12)
    assert np.all(sq_distances(x, x) >= 0)


def test_rkme_distance_self_zero_symmetric_and_matches_direct():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((4, 3))
    a, b = project_to_simplex(rng.standard_normal(6)), uniform_weights(4)
    assert rkme_distance(x, a, x, a, 0.7) == 0.0
    d_xy = rkme_distance(x, a, y, b, 0.7)
    assert d_xy > 0
    assert d_xy == pytest.approx(rkme_distance(y, b, x, a, 0.7), rel=1e-12)
    assert d_xy == pytest.approx(eq2_direct(x, a, y, 0.7), rel=1e-9)
    perm = rng.permutation(6)
    assert rkme_distance(x[perm], a[perm], y, b, 0.7) == pytest.approx(d_xy, rel=1e-12)


def test_simplex_projection():
    rng = np.random.default_rng(3)
    for _ in range(20):
        v = rng.standard_normal(6) * 3
        p = project_to_simplex(v)
        assert p.min() >= 0 and p.sum() == pytest.approx(1.0)
        # the projection is the closest simplex point: no random simplex point is closer
        others = rng.dirichlet(np.ones(6), size=200)
        assert np.linalg.norm(v - p) <= np.linalg.norm(v - others, axis=1).min() + 1e-12


def test_reduced_set_of_full_size_reproduces_embedding():
    rng = np.random.default_rng(4)
    x = l2_normalize(rng.standard_normal((12, 8)))
    c, b = reduce_set(x, 12, 2.0, seed=0)
    assert rkme_distance(c, b, x, uniform_weights(12), 2.0) == pytest.approx(0.0, abs=1e-12)


def test_reduced_set_of_size_one_lands_on_the_mean_of_a_tight_cluster():
    rng = np.random.default_rng(5)
    x = 0.01 * rng.standard_normal((40, 5)) + np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    c, b = reduce_set(x, 1, 2.0, seed=3)
    assert b.tolist() == [1.0]
    np.testing.assert_allclose(c[0], x.mean(0), atol=1e-4)


def test_reduced_set_optimises_deterministically_and_improves_with_size():
    rng = np.random.default_rng(6)
    x = l2_normalize(rng.standard_normal((30, 6)))
    a = uniform_weights(30)
    dist = {}
    for size in (1, 3, 8):
        c, b = reduce_set(x, size, 2.0, seed=1)
        c2, b2 = reduce_set(x, size, 2.0, seed=1)
        np.testing.assert_array_equal(c, c2)
        np.testing.assert_array_equal(b, b2)
        assert b.min() >= 0 and b.sum() == pytest.approx(1.0)
        dist[size] = rkme_distance(c, b, x, a, 2.0)
        start = np.random.default_rng(1).choice(30, size=size, replace=False)
        assert dist[size] < rkme_distance(x[np.sort(start)], uniform_weights(size), x, a, 2.0)
    assert dist[8] < dist[3] < dist[1]


def test_ranks_follow_the_paper_with_ties():
    scores = [0.3, 0.1, 0.3, 0.2, 0.1]
    assert ranks_from_scores(scores).tolist() == [4, 1, 4, 3, 1]
    assert order_from_scores(scores, ["e", "d", "c", "b", "a"]).tolist() == [4, 1, 3, 2, 0]
    with pytest.raises(ValueError):
        ranks_from_scores([0.1, float("nan")])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_one_rule_for_non_finite_scores(bad):
    """Ranks of one query, orders, and the evaluation's ranks of the true model all refuse NaN
    and both infinities (a score is a finite distance; anything else is a bug upstream)."""
    from gmi_desktop.evaluation.metrics import ranks_of_true

    scores = [0.1, bad, 0.3]
    with pytest.raises(ValueError, match="finite"):
        ranks_from_scores(scores)
    with pytest.raises(ValueError, match="finite"):
        order_from_scores(scores, ["a", "b", "c"])
    with pytest.raises(ValueError, match="finite"):
        ranks_of_true(np.array([scores]), np.array([0]))


def test_blas_thread_control_restores_the_previous_count():
    from gmi_desktop.core.blas import blas_thread_count, blas_threads

    before = blas_thread_count()
    if before is None:  # numpy without OpenBLAS (e.g. Accelerate): documented no-op
        with blas_threads(1):
            assert blas_thread_count() is None
        return
    with blas_threads(1):
        assert blas_thread_count() == 1
        with blas_threads(1):
            assert blas_thread_count() == 1
    assert blas_thread_count() == before
