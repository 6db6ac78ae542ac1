"""The evaluation protocol of the paper (§4.1, A.2, A.6, A.7), on numpy arrays only.

A *task* is one query (one or more images, each with its own pseudo-prompt) whose best-matching
model is known. A scorer turns a task into one score per model (ascending = better, like the
RKME distances). From the score matrix (tasks x models) we compute

- per-task rank of the true model, ``r = 1 + #{models with a strictly smaller score}`` (§4.1);
  ties are resolved in the true model's favour, exactly as the paper's formula does, and the
  share of queries where that happened is reported (``tied_share``): a scorer that ties
  everything would otherwise look perfect;
- Top-k accuracy ``mean(r <= k)`` for k = 1..8 (Table 1) and the average rank (Table 2);
- the confusion matrix true model x top-1 prediction (A.6), the prediction being the lowest
  score with ties broken by the lower model index (deterministic);
- a gamma sweep (A.7): the same protocol repeated for every kernel width in a grid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from gmi_desktop.core.ranking import finite_scores

TOP_K = tuple(range(1, 9))
PAPER_GAMMA_GRID = (0.005, 0.006, 0.007, 0.008, 0.009, 0.01, 0.02, 0.03, 0.04, 0.05)
# Multiples of the median heuristic gamma = 1 / median(||x - y||^2): a grid that fits any
# feature normalisation (unit-norm CLIP features have squared distances in [0, 4]).
MEDIAN_HEURISTIC_MULTIPLES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


@dataclass(frozen=True)
class TaskSet:
    """Identification tasks: rows are images; ``group`` ties images into multi-image queries.

    ``image_features`` (K, D), ``prompt_features`` (K, Dt) (each image's pseudo-prompt),
    ``true_model`` (K,) indices into the model list, ``pixel_features`` (K, P) or None,
    ``group`` (K,) or None: images with the same group id may be pooled into one query (A.2).
    """

    image_features: np.ndarray
    prompt_features: np.ndarray
    true_model: np.ndarray
    pixel_features: np.ndarray | None = None
    group: np.ndarray | None = None

    def __post_init__(self) -> None:
        k = self.image_features.shape[0]
        if self.image_features.ndim != 2 or self.prompt_features.ndim != 2:
            raise ValueError("image_features and prompt_features must be 2-D")
        for name in ("prompt_features", "true_model", "pixel_features", "group"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != k:
                raise ValueError(f"{name} has {value.shape[0]} rows, image_features has {k}")

    @property
    def n_images(self) -> int:
        return int(self.image_features.shape[0])

    def queries(self, images_per_query: int = 1) -> list[np.ndarray]:
        """Row indices of each query: consecutive images of one group, ``images_per_query`` each.

        Without group ids, images of the same true model form the groups. A group's last,
        incomplete chunk is dropped so every query has exactly ``images_per_query`` images.
        """
        if images_per_query < 1:
            raise ValueError("images_per_query must be >= 1")
        if images_per_query == 1:
            return [np.array([i]) for i in range(self.n_images)]
        keys = self.group if self.group is not None else self.true_model
        out: list[np.ndarray] = []
        for key in _unique_in_order(keys):
            rows = np.flatnonzero(keys == key)
            for start in range(0, len(rows) - images_per_query + 1, images_per_query):
                chunk = rows[start : start + images_per_query]
                if len(set(self.true_model[chunk].tolist())) != 1:
                    raise ValueError(f"group {key!r} mixes images of different true models")
                out.append(chunk)
        return out


def _unique_in_order(values: np.ndarray) -> list:
    seen: dict = {}
    for value in values.tolist():
        seen.setdefault(value, None)
    return list(seen)


def ranks_of_true(scores: np.ndarray, true_model: np.ndarray) -> np.ndarray:
    """Rank of the true model per task: 1 + number of models with a strictly smaller score
    (scores must be finite: ``core.ranking.finite_scores``, the rule of every ranking)."""
    scores = finite_scores(scores)
    true_model = np.asarray(true_model, dtype=np.int64)
    if scores.ndim != 2 or true_model.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (tasks, models) and true_model (tasks,), got {scores.shape}, {true_model.shape}")
    own = scores[np.arange(scores.shape[0]), true_model]
    return 1 + np.sum(scores < own[:, None], axis=1)


def tied_with_true(scores: np.ndarray, true_model: np.ndarray) -> np.ndarray:
    """Per task: does another model have exactly the true model's score (a tie §4.1's rank credits)?"""
    scores = np.asarray(scores, dtype=np.float64)
    own = scores[np.arange(scores.shape[0]), np.asarray(true_model, dtype=np.int64)]
    return np.sum(scores == own[:, None], axis=1) > 1


def top1_predictions(scores: np.ndarray) -> np.ndarray:
    """The predicted model per task: the smallest score, ties to the lowest index."""
    return np.argmin(np.asarray(scores), axis=1)


def topk_accuracy(ranks: np.ndarray, ks: Iterable[int] = TOP_K) -> dict[int, float]:
    ranks = np.asarray(ranks)
    return {int(k): float(np.mean(ranks <= k)) for k in ks}


def confusion_matrix(true_model: np.ndarray, predicted: np.ndarray, n_models: int) -> np.ndarray:
    """(n_models, n_models) counts: row = true model, column = top-1 prediction."""
    out = np.zeros((n_models, n_models), dtype=np.int64)
    np.add.at(out, (np.asarray(true_model), np.asarray(predicted)), 1)
    return out


@dataclass
class EvaluationResult:
    """One method's results on one task set; ``to_dict()`` is JSON-ready."""

    method: str
    n_models: int
    n_queries: int
    images_per_query: int
    ranks: np.ndarray
    topk: dict[int, float]
    average_rank: float
    confusion: np.ndarray
    predicted: np.ndarray
    gamma: float | None = None
    weighting: str | None = None
    model_ids: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)
    tied_share: float = 0.0  # share of queries whose true model tied with another (ranked in its favour)

    @property
    def top1(self) -> float:
        return self.topk[1]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ranks"] = self.ranks.astype(int).tolist()
        data["predicted"] = self.predicted.astype(int).tolist()
        data["confusion"] = self.confusion.astype(int).tolist()
        data["topk"] = {str(k): v for k, v in self.topk.items()}
        data["model_ids"] = list(self.model_ids)
        return data


def evaluate_scores(
    scores: np.ndarray,
    true_model: np.ndarray,
    *,
    method: str,
    images_per_query: int = 1,
    gamma: float | None = None,
    weighting: str | None = None,
    model_ids: Sequence[str] = (),
) -> EvaluationResult:
    """All metrics from a (queries, models) score matrix and the true model of each query."""
    scores = np.asarray(scores, dtype=np.float64)
    ranks = ranks_of_true(scores, true_model)
    predicted = top1_predictions(scores)
    n_models = scores.shape[1]
    return EvaluationResult(
        method=method,
        n_models=n_models,
        n_queries=scores.shape[0],
        images_per_query=images_per_query,
        ranks=ranks,
        topk=topk_accuracy(ranks),
        average_rank=float(np.mean(ranks)) if len(ranks) else float("nan"),
        confusion=confusion_matrix(true_model, predicted, n_models),
        predicted=predicted,
        gamma=gamma,
        weighting=weighting,
        model_ids=tuple(model_ids),
        tied_share=float(np.mean(tied_with_true(scores, true_model))) if len(ranks) else 0.0,
    )


QueryScorer = Callable[[np.ndarray], np.ndarray]
"""Maps the row indices of one query (into a TaskSet) to one score per model."""


def score_matrix(tasks: TaskSet, scorer: QueryScorer, images_per_query: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Scores of every query against every model, and the true model of each query."""
    queries = tasks.queries(images_per_query)
    if not queries:
        raise ValueError(f"no query of {images_per_query} images can be formed from these tasks")
    rows = [np.asarray(scorer(q), dtype=np.float64) for q in queries]
    true = np.array([tasks.true_model[q[0]] for q in queries], dtype=np.int64)
    return np.stack(rows), true


def evaluate(
    tasks: TaskSet,
    scorer: QueryScorer,
    *,
    method: str,
    images_per_query: int = 1,
    gamma: float | None = None,
    weighting: str | None = None,
    model_ids: Sequence[str] = (),
) -> EvaluationResult:
    scores, true = score_matrix(tasks, scorer, images_per_query)
    return evaluate_scores(
        scores, true, method=method, images_per_query=images_per_query,
        gamma=gamma, weighting=weighting, model_ids=model_ids,
    )


@dataclass(frozen=True)
class GammaPoint:
    gamma: float
    top1: float
    top4: float
    average_rank: float
    tied_share: float = 0.0


def gamma_sweep(run: Callable[[float], EvaluationResult], gammas: Iterable[float]) -> list[GammaPoint]:
    """Run the protocol once per gamma (A.7); ``run(gamma)`` evaluates one method at that width."""
    out = []
    for gamma in gammas:
        result = run(float(gamma))
        out.append(GammaPoint(float(gamma), result.topk[1], result.topk[4], result.average_rank, result.tied_share))
    return out


def median_heuristic_gamma(features: np.ndarray, max_rows: int = 512, seed: int = 0) -> float:
    """1 / median squared distance between rows (a subsample of ``max_rows`` rows, seeded)."""
    x = np.asarray(features, dtype=np.float64)
    if x.shape[0] > max_rows:
        x = x[np.random.default_rng(seed).choice(x.shape[0], max_rows, replace=False)]
    sq = np.sum(x * x, axis=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    off = d2[~np.eye(x.shape[0], dtype=bool)]
    median = float(np.median(np.maximum(off, 0.0))) if off.size else 0.0
    return 1.0 / median if median > 0 else 1.0


def gamma_grid(features: np.ndarray) -> tuple[float, ...]:
    """The paper's grid plus median-heuristic multiples for these features, sorted, rounded."""
    base = median_heuristic_gamma(features)
    scaled = {float(f"{base * m:.4g}") for m in MEDIAN_HEURISTIC_MULTIPLES}
    return tuple(sorted(scaled | set(PAPER_GAMMA_GRID)))
