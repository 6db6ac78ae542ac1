"""The evaluation protocol on hand-made score matrices with known answers, and the synthetic world."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gmi_desktop.evaluation.metrics import (
    PAPER_GAMMA_GRID,
    TaskSet,
    confusion_matrix,
    evaluate,
    evaluate_scores,
    gamma_grid,
    gamma_sweep,
    median_heuristic_gamma,
    ranks_of_true,
    tied_with_true,
    top1_predictions,
    topk_accuracy,
)
from gmi_desktop.evaluation.synthetic import make_world, prompt_driven_share, world_specifications


def test_ranks_on_a_hand_made_matrix():
    scores = np.array(
        [
            [0.1, 0.5, 0.9],  # true 0: best -> rank 1
            [0.1, 0.5, 0.9],  # true 2: worst -> rank 3
            [0.4, 0.2, 0.3],  # true 2: one better -> rank 2
            [0.3, 0.3, 0.3],  # all tied: rank 1 for anyone (paper's strict inequality)
            [0.2, 0.2, 0.1],  # true 1: tied with 0, 2 better -> rank 2
        ]
    )
    true = np.array([0, 2, 2, 1, 1])
    ranks = ranks_of_true(scores, true)
    assert ranks.tolist() == [1, 3, 2, 1, 2]
    result = evaluate_scores(scores, true, method="hand")
    assert result.topk[1] == pytest.approx(2 / 5)
    assert result.topk[2] == pytest.approx(4 / 5)
    assert all(result.topk[k] == 1.0 for k in range(3, 9))
    assert result.average_rank == pytest.approx(9 / 5)
    # ties go to the lowest index for the top-1 prediction
    assert top1_predictions(scores).tolist() == [0, 0, 1, 0, 2]
    assert result.confusion.tolist() == [[1, 0, 0], [1, 0, 1], [1, 1, 0]]
    # ties credited to the true model are counted, so a report can say how much they weigh
    assert tied_with_true(scores, true).tolist() == [False, False, False, True, True]
    assert result.tied_share == pytest.approx(2 / 5) and result.to_dict()["tied_share"] == result.tied_share


def test_topk_is_monotone_and_reaches_one_at_m():
    rng = np.random.default_rng(1)
    scores = rng.random((200, 8))
    true = rng.integers(0, 8, 200)
    acc = topk_accuracy(ranks_of_true(scores, true))
    values = [acc[k] for k in range(1, 9)]
    assert values == sorted(values)
    assert acc[8] == 1.0


def test_confusion_matrix_sums():
    rng = np.random.default_rng(2)
    true = rng.integers(0, 5, 300)
    pred = rng.integers(0, 5, 300)
    cm = confusion_matrix(true, pred, 5)
    assert cm.sum() == 300
    assert cm.sum(axis=1).tolist() == np.bincount(true, minlength=5).tolist()
    assert cm.sum(axis=0).tolist() == np.bincount(pred, minlength=5).tolist()
    assert np.trace(cm) == np.sum(true == pred)


def test_perfect_scorer_and_random_scorer():
    rng = np.random.default_rng(3)
    m, n = 10, 4000
    true = rng.integers(0, m, n)
    perfect = rng.random((n, m)) + 1.0
    perfect[np.arange(n), true] = 0.0
    res = evaluate_scores(perfect, true, method="perfect")
    assert res.top1 == 1.0 and res.average_rank == 1.0
    assert np.array_equal(np.diag(res.confusion), np.bincount(true, minlength=m))
    random = evaluate_scores(rng.random((n, m)), true, method="random")
    assert random.top1 == pytest.approx(1 / m, abs=0.02)
    assert random.average_rank == pytest.approx((m + 1) / 2, abs=0.15)
    assert random.topk[4] == pytest.approx(4 / m, abs=0.03)


def test_result_is_json_serialisable():
    res = evaluate_scores(np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([0, 0]), method="m", gamma=2.0,
                          weighting="clamped", model_ids=("a", "b"))
    data = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert data["ranks"] == [1, 2] and data["topk"]["1"] == 0.5 and data["confusion"] == [[1, 1], [0, 0]]
    assert data["model_ids"] == ["a", "b"] and data["weighting"] == "clamped"


def test_bad_score_matrices_are_rejected():
    with pytest.raises(ValueError):
        ranks_of_true(np.array([[0.0, np.nan]]), np.array([0]))
    with pytest.raises(ValueError):
        ranks_of_true(np.zeros((2, 3)), np.array([0]))


def _tasks(true, group=None):
    k = len(true)
    return TaskSet(np.ones((k, 3), np.float32), np.ones((k, 2), np.float32), np.asarray(true), group=group)


def test_multi_image_queries_group_images_of_one_model():
    tasks = _tasks([0, 0, 0, 0, 0, 1, 1, 1, 2])
    assert [q.tolist() for q in tasks.queries(1)] == [[i] for i in range(9)]
    assert [q.tolist() for q in tasks.queries(2)] == [[0, 1], [2, 3], [5, 6]]
    assert [q.tolist() for q in tasks.queries(3)] == [[0, 1, 2], [5, 6, 7]]
    grouped = _tasks([0, 0, 0, 0], group=np.array([7, 8, 7, 8]))
    assert [q.tolist() for q in grouped.queries(2)] == [[0, 2], [1, 3]]
    with pytest.raises(ValueError):
        _tasks([0, 1], group=np.array([5, 5])).queries(2)
    with pytest.raises(ValueError):
        tasks.queries(0)


def test_evaluate_with_a_scorer_of_pooled_queries():
    """A scorer that averages per-image scores over a query: more images, fewer mistakes."""
    rng = np.random.default_rng(4)
    m, k = 6, 600
    true = np.repeat(np.arange(m), k // m)
    per_image = rng.normal(size=(k, m))
    per_image[np.arange(k), true] -= 0.8
    tasks = _tasks(true)
    one = evaluate(tasks, lambda rows: per_image[rows].mean(axis=0), method="avg")
    four = evaluate(tasks, lambda rows: per_image[rows].mean(axis=0), method="avg", images_per_query=4)
    assert one.n_queries == k and four.n_queries == k // 4
    assert four.top1 > one.top1 + 0.1
    assert four.images_per_query == 4


def test_gamma_sweep_and_grid():
    calls = []

    def run(gamma):
        calls.append(gamma)
        scores = np.array([[gamma, 1.0], [1.0, 0.0]])
        return evaluate_scores(scores, np.array([0, 1]), method="x")

    points = gamma_sweep(run, [0.5, 2.0])
    assert calls == [0.5, 2.0]
    assert [p.top1 for p in points] == [1.0, 0.5]
    assert [p.tied_share for p in points] == [0.0, 0.0]
    tied = gamma_sweep(run, [1.0])[0]  # ties the first query's two models: credited to the true one
    assert (tied.top1, tied.tied_share) == (1.0, 0.5)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    # unit vectors in 16-D are nearly orthogonal: squared distances concentrate near 2
    assert median_heuristic_gamma(x) == pytest.approx(0.5, rel=0.1)
    grid = gamma_grid(x)
    assert set(PAPER_GAMMA_GRID) <= set(grid) and list(grid) == sorted(grid)
    assert any(g == pytest.approx(0.5, rel=0.1) for g in grid) and max(grid) > 8


def test_synthetic_world_is_seeded_and_held_out():
    a, b, c = make_world(0, n_models=4, n_task_prompts=4, n_seeds=2), make_world(0, n_models=4, n_task_prompts=4, n_seeds=2), make_world(1, n_models=4, n_task_prompts=4, n_seeds=2)
    assert a.spec_image_features.tobytes() == b.spec_image_features.tobytes()
    assert a.tasks.prompt_features.tobytes() == b.tasks.prompt_features.tobytes()
    assert a.spec_image_features.tobytes() != c.spec_image_features.tobytes()
    assert a.tasks.n_images == 4 * 4 * 2
    assert not set(a.task_prompts) & {p for ps in a.spec_prompts for p in ps}
    norms = np.linalg.norm(a.spec_image_features, axis=-1)
    assert np.allclose(norms, 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(a.tasks.image_features, axis=1), 1.0, atol=1e-5)
    assert a.tasks.pixel_features.min() >= 0 and a.tasks.pixel_features.max() <= 1
    assert set(a.spec_prompts) == {a.spec_prompts[0]}  # one shared default prompt set
    own = make_world(0, n_models=4, n_task_prompts=4, n_seeds=2, own_prompts=True)
    assert len(set(own.spec_prompts)) == 4  # each model its own prompt set
    specs = world_specifications(own)
    assert [s.model_id for s in specs] == list(own.model_ids)
    assert all(s.recipe.generation["own_prompts"] for s in specs)


def test_decoy_world_adds_one_model_that_never_made_a_task_image():
    small = dict(n_models=4, n_task_prompts=4, n_seeds=2, n_spec_prompts=10)
    plain, decoy = make_world(2, **small), make_world(2, decoy=True, **small)
    assert len(decoy.model_ids) == 5 and decoy.model_ids[-1].endswith("decoy")
    assert set(decoy.tasks.true_model.tolist()) == {0, 1, 2, 3}
    # the other models and the tasks are unchanged by adding the decoy
    assert decoy.spec_image_features[:4].tobytes() == plain.spec_image_features.tobytes()
    assert decoy.tasks.image_features.tobytes() == plain.tasks.image_features.tobytes()
    # the decoy's prompt texts resemble the task prompts far more than the default prompts do
    task_text = decoy.tasks.prompt_features
    sim_decoy = (decoy.spec_prompt_features[-1] @ task_text.T).max(axis=0).mean()
    sim_default = (decoy.spec_prompt_features[0] @ task_text.T).max(axis=0).mean()
    assert sim_decoy > sim_default + 0.05


def test_prompt_driven_share_counts_mistakes_towards_own_prompt_topics():
    world = make_world(0, own_prompts=True, n_models=4, n_task_prompts=8, n_seeds=1, n_spec_prompts=24, n_own_prompts=8)
    queries = world.tasks.queries(1)
    favoured = [int(np.flatnonzero(np.any(world.favourites == world.task_topics[q[0]], axis=1)
                                   & (np.arange(4) != world.tasks.true_model[q[0]]))[:1].sum()) for q in queries]
    truth = world.tasks.true_model
    assert prompt_driven_share(world, truth, queries) == (0.0, 0.0)  # no mistakes at all
    share, expected = prompt_driven_share(world, np.array(favoured), queries)
    wrong = np.array(favoured) != truth
    fav_hits = [np.any(world.favourites[p] == world.task_topics[q[0]]) for p, q in zip(favoured, queries)]
    assert share == pytest.approx(np.mean(np.array(fav_hits)[wrong]))
    assert 0.0 <= expected <= 1.0
