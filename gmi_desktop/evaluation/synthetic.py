"""A seeded synthetic feature world that behaves like CLIP features of Stable Diffusion models.

Used to demonstrate the benchmark without real features and to choose the default prompt
weighting by evidence (docs/evaluation.md). The generative story:

- prompts belong to *topics*; a prompt's *content* is ``normalise(topic centre + detail)``;
- its text feature is ``normalise(text_common + A @ content + noise)`` — correlated with the
  content through a fixed random map ``A``, and anisotropic like CLIP text features (unrelated
  prompts still have a cosine of about 0.5);
- every model has a global *style* plus a topic-specific style (how it renders that topic; the
  interplay between prompt and image of Example 2.1), and its image feature for a prompt is
  ``normalise(image_common + content + style + topic_style + noise)`` (unit norm, like CLIP);
- a task image is made by one model from a *held-out* prompt (never in a spec prompt set), with
  a pseudo-prompt that is a noisy version of that prompt's text feature (the interrogator);
- "pixel" features in [0, 1] (for RKME-Basic) are a fixed random non-linear map of the image
  feature drowned in noise, and models have Zipf-like download counts (for Download).

Scenario ``own_prompts=True`` is A.5: each model's developer adds ``n_own_prompts`` prompts of
their own, from the model's favourite topics, in place of as many default prompts (the model
keeps the first ``n_spec_prompts - n_own_prompts`` default prompts). Some models' prompt sets then
resemble a query far more than others' — a model must not win from its prompts alone;
:func:`prompt_driven_share` measures how often a method's mistakes go to such models.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np

from gmi_desktop.core.spec import Specification, SpecRecipe, prompt_set_digest
from gmi_desktop.evaluation.metrics import TaskSet


@dataclass(frozen=True)
class WorldConfig:
    """Sizes (defaults: the paper's 16 models, 55 spec prompts, 18 task prompts x 10 seeds) and
    the scales of each component of a feature (see the module docstring). The scales were set so
    that with shared prompts RKME-CLIP and Eq. 9 land near the paper's Table 1 (top-1 0.3-0.45)."""

    n_models: int = 16
    n_topics: int = 8
    n_spec_prompts: int = 55
    n_task_prompts: int = 18
    n_seeds: int = 10
    dim: int = 128
    text_dim: int = 96
    pixel_dim: int = 48
    detail: float = 0.8
    image_common: float = 0.9
    text_common: float = 1.0
    style: float = 0.12
    topic_style: float = 0.16
    image_noise: float = 0.55
    text_noise: float = 0.3
    pseudo_prompt_noise: float = 0.6
    pixel_noise: float = 0.5
    own_prompts: bool = False
    favourite_topics: int = 2
    n_own_prompts: int = 20
    decoy: bool = False


@dataclass(frozen=True)
class SyntheticWorld:
    """Spec arrays per model (``(M, N, ...)``; with ``decoy`` the decoy is the extra last model),
    the tasks (true models ``0..n_models-1``), and what made them."""

    config: WorldConfig
    seed: int
    model_ids: tuple[str, ...]
    spec_prompts: tuple[tuple[str, ...], ...]
    spec_image_features: np.ndarray  # (M, N, D) float32
    spec_prompt_features: np.ndarray  # (M, N, Dt) float32
    spec_pixel_features: np.ndarray  # (M, N, P) float32
    popularity: np.ndarray  # (M,) download counts
    tasks: TaskSet
    task_prompts: tuple[str, ...]
    task_topics: np.ndarray  # (K,) topic of each task image's prompt
    favourites: np.ndarray  # (M, favourite_topics) topics of each model's own prompts (A.5)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _gauss_unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return _unit(rng.standard_normal(shape))


class _Generator:
    def __init__(self, cfg: WorldConfig, seed: int):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)
        rng, d = self.rng, cfg.dim
        self.topics = _gauss_unit(rng, cfg.n_topics, d)
        self.image_common = _gauss_unit(rng, d)
        self.text_common = _gauss_unit(rng, cfg.text_dim)
        self.text_map = rng.standard_normal((cfg.text_dim, d)) / np.sqrt(d)
        self.pixel_map = rng.standard_normal((cfg.pixel_dim, d)) * 2.0
        self.style = _gauss_unit(rng, cfg.n_models, d)
        self.topic_style = _gauss_unit(rng, cfg.n_models, cfg.n_topics, d)
        self.n_made = 0

    def prompts(self, topics: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """Content (n, D), text features (n, Dt) and names of new, distinct prompts."""
        cfg, rng = self.cfg, self.rng
        content = _unit(self.topics[topics] + cfg.detail * _gauss_unit(rng, len(topics), cfg.dim))
        text = self.text_map @ content.T
        text = text.T / np.linalg.norm(text, axis=0)[:, None]
        noise = cfg.text_noise * _gauss_unit(rng, len(topics), cfg.text_dim)
        text = _unit(cfg.text_common * self.text_common + text + noise)
        names = tuple(f"prompt {self.n_made + i} (topic {t})" for i, t in enumerate(topics.tolist()))
        self.n_made += len(topics)
        return content, text, names

    def images(self, model: int, content: np.ndarray, topics: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        noise = cfg.image_noise * _gauss_unit(self.rng, len(topics), cfg.dim)
        raw = (
            cfg.image_common * self.image_common
            + content
            + cfg.style * self.style[model]
            + cfg.topic_style * self.topic_style[model, topics]
            + noise
        )
        return _unit(raw)

    def pixels(self, images: np.ndarray) -> np.ndarray:
        clean = 0.5 + 0.25 * np.tanh(images @ self.pixel_map.T)
        noisy = clean + self.cfg.pixel_noise * self.rng.standard_normal(clean.shape)
        return np.clip(noisy, 0.0, 1.0)

    def pseudo_prompts(self, text: np.ndarray) -> np.ndarray:
        noise = self.cfg.pseudo_prompt_noise * _gauss_unit(self.rng, text.shape[0], text.shape[1])
        return _unit(text + noise)

    def favourite_topics(self) -> np.ndarray:
        cfg = self.cfg
        return np.stack([self.rng.choice(cfg.n_topics, cfg.favourite_topics, replace=False) for _ in range(cfg.n_models)])


def make_world(seed: int = 0, config: WorldConfig | None = None, **overrides) -> SyntheticWorld:
    """Generate a world; the same ``seed`` and config always give bit-identical arrays."""
    cfg = replace(config or WorldConfig(), **overrides)
    if cfg.n_models < 2 or cfg.n_spec_prompts < 1 or cfg.n_task_prompts < 1 or cfg.n_seeds < 1:
        raise ValueError("a world needs >= 2 models, >= 1 spec prompt, task prompt and seed")
    if not 1 <= cfg.favourite_topics <= cfg.n_topics:
        raise ValueError("favourite_topics must be between 1 and n_topics")
    gen = _Generator(cfg, seed)
    m_ids = tuple(f"synthetic-{seed}-model-{m:02d}" for m in range(cfg.n_models))

    n_own = min(cfg.n_own_prompts, cfg.n_spec_prompts - 1) if cfg.own_prompts else 0
    default_topics = np.arange(cfg.n_spec_prompts - n_own) % cfg.n_topics
    default = gen.prompts(default_topics)
    favourites = gen.favourite_topics()
    z, q, px, names = [], [], [], []
    for m in range(cfg.n_models):
        topics, (content, text, prompt_names) = default_topics, default
        if n_own:
            own_topics = favourites[m][np.arange(n_own) % cfg.favourite_topics]
            own = gen.prompts(own_topics)
            topics = np.concatenate([default_topics, own_topics])
            content, text = np.concatenate([content, own[0]]), np.concatenate([text, own[1]])
            prompt_names = prompt_names + own[2]
        images = gen.images(m, content, topics)
        z.append(images)
        q.append(text)
        px.append(gen.pixels(images))
        names.append(prompt_names)

    task_topics = np.arange(cfg.n_task_prompts) % cfg.n_topics
    t_content, t_text, t_names = gen.prompts(task_topics)
    rows_img, rows_q, rows_px, rows_true = [], [], [], []
    for m in range(cfg.n_models):
        for _seed in range(cfg.n_seeds):  # order (model, seed, prompt): a group mixes prompts
            images = gen.images(m, t_content, task_topics)
            rows_img.append(images)
            rows_px.append(gen.pixels(images))
            rows_q.append(gen.pseudo_prompts(t_text))
            rows_true.append(np.full(cfg.n_task_prompts, m))
    true = np.concatenate(rows_true).astype(np.int64)
    tasks = TaskSet(
        image_features=np.concatenate(rows_img).astype(np.float32),
        prompt_features=np.concatenate(rows_q).astype(np.float32),
        true_model=true,
        pixel_features=np.concatenate(rows_px).astype(np.float32),
        group=true.copy(),
    )
    popularity = np.round(1e5 / (1 + gen.rng.permutation(cfg.n_models))).astype(np.int64)
    if cfg.decoy:
        m_ids, popularity = m_ids + (f"synthetic-{seed}-decoy",), np.append(popularity, 1)
        _add_decoy(gen, default_topics, default, t_text, t_names, z, q, px, names)
    return SyntheticWorld(
        config=cfg,
        seed=seed,
        model_ids=m_ids,
        spec_prompts=tuple(names),
        spec_image_features=np.stack(z).astype(np.float32),
        spec_prompt_features=np.stack(q).astype(np.float32),
        spec_pixel_features=np.stack(px).astype(np.float32),
        popularity=popularity,
        tasks=tasks,
        task_prompts=t_names,
        task_topics=np.tile(task_topics, cfg.n_models * cfg.n_seeds),
        favourites=favourites,
    )


def _add_decoy(gen: _Generator, topics, default, t_text, t_names, z, q, px, names) -> None:
    """A model that never made a task image, whose prompt *texts* paraphrase the task prompts while
    its images are ordinary images of the first default prompts: it can only win from its prompts."""
    cfg, n = gen.cfg, len(z[0])
    gen.style = np.vstack([gen.style, _gauss_unit(gen.rng, 1, cfg.dim)])
    gen.topic_style = np.concatenate([gen.topic_style, _gauss_unit(gen.rng, 1, cfg.n_topics, cfg.dim)])
    content = default[0] if len(default[0]) >= n else np.resize(default[0], (n, cfg.dim))
    images = gen.images(cfg.n_models, content[:n], np.resize(topics, n))
    pick = np.arange(n) % len(t_text)
    text = _unit(t_text[pick] + cfg.text_noise * _gauss_unit(gen.rng, n, cfg.text_dim))
    z.append(images)
    q.append(text)
    px.append(gen.pixels(images))
    names.append(tuple(f"decoy prompt {i} (like {t_names[j]})" for i, j in enumerate(pick.tolist())))


def synthetic_encoder_id(config: WorldConfig) -> str:
    return f"synthetic-clip-d{config.dim}-t{config.text_dim}"


def world_specifications(world: SyntheticWorld) -> list[Specification]:
    """One :class:`Specification` per synthetic model, in model-index order."""
    cfg = world.config
    specs = []
    for m, model_id in enumerate(world.model_ids):
        prompts = world.spec_prompts[m]
        recipe = SpecRecipe(
            checkpoint_sha256=hashlib.sha256(model_id.encode()).hexdigest(),
            encoder_id=synthetic_encoder_id(cfg),
            prompt_set_digest=prompt_set_digest(prompts),
            generation={"synthetic_world_seed": world.seed, "own_prompts": cfg.own_prompts},
        )
        specs.append(
            Specification(
                model_id=model_id,
                image_features=world.spec_image_features[m],
                prompt_features=world.spec_prompt_features[m],
                prompts=prompts,
                recipe=recipe,
                display_name=f"Synthetic model {m:02d}",
                pixel_features=world.spec_pixel_features[m],
                popularity=float(world.popularity[m]),
            )
        )
    return specs


def prompt_driven_share(world: SyntheticWorld, predicted: np.ndarray, queries: list[np.ndarray]) -> tuple[float, float]:
    """Among wrong top-1 predictions, the share that went to a model whose own prompts (A.5) are
    about the query's topic, and the share expected if mistakes ignored prompts (uniform over the
    wrong models). A method that lets prompt sets win on their own scores far above the baseline."""
    if world.config.decoy:
        raise ValueError("prompt_driven_share is defined for worlds without a decoy")
    wrong = hits = expected = 0.0
    for pred, rows in zip(np.asarray(predicted).tolist(), queries):
        true, topic = int(world.tasks.true_model[rows[0]]), int(world.task_topics[rows[0]])
        if pred == true:
            continue
        fav = np.any(world.favourites == topic, axis=1)
        wrong += 1
        hits += bool(fav[pred])
        expected += (fav.sum() - fav[true]) / (len(fav) - 1)
    return (hits / wrong, expected / wrong) if wrong else (0.0, 0.0)
