"""One function per identification method, on one :class:`Specification` (float64, reference-grade).

Every score is *ascending = better* (a squared RKHS distance, or a negated similarity).
:class:`gmi_desktop.core.index.SpecIndex` computes the same numbers for all models at once.

Prompt weighting (Eq. 9 and its normalised variants)
----------------------------------------------------
Eq. 9 uses ``w_i = cos(q_i, q_tau)`` and the embedding ``(1/N) sum_i w_i k(z_i, .)``. Those weights are
not normalised and may be negative, so the embedding's mass depends on how relevant the prompts are
in general: a perfect image match does not score 0, and a model can gain from its prompt set alone.
Each weighting below turns cosines into *coefficients* ``alpha_i`` of ``k(z_i, .)``:

* ``"paper"``:   ``alpha_i = cos_i / N`` (Eq. 9 exactly);
* ``"clamped"``: ``alpha_i = max(cos_i, 0) / sum_j max(cos_j, 0)``; uniform ``1/N`` if no cosine is > 0;
* ``"softmax"``: ``alpha = softmax(cos / temperature)``.
The normalised ones make the model side a proper (conditional) mean embedding.

Several query images (A.2)
--------------------------
Image ``t`` has its own prompt feature ``q_t`` and so its own coefficients ``alpha_t``.
``combine="mixture"`` (default): the query embedding is ``(1/T) sum_t k(z_t, .)`` and the model's is
its embedding under the same mixture of prompts, ``(1/T) sum_t sum_i alpha_{t,i} k(z_i, .)``: the
distance between "what the user showed" and "what this model makes for those prompts".
``combine="paired"``: the mean over ``t`` of the single-image Eq. 9 scores, which also rewards
matching each image with its own prompt (it equals the mixture score plus a non-negative term
measuring how the per-image residuals differ from their mean). Both reduce to Eq. 9 for T = 1.

Text-only query
---------------
Without an image there is nothing to embed on the query side. CLIP maps images and texts into one
space, so we score how well the images a model made *for prompts like the query* match the query
text: ``score = -(1/T) sum_t sum_i alpha_{t,i} cos(z_i, q_t)`` (negated so ascending = better), i.e.
the model's expected CLIP score for the query, with the same prompt weighting as above. We use the
cosine rather than the RBF kernel because CLIP image and text embeddings occupy separate regions
("modality gap"): image-text distances are all large, and an RBF on them is nearly flat, while the
cosine keeps CLIP's contrastively trained ordering. It assumes one CLIP model encoded both images
and prompts (as the engine does); the only check possible here is ``D == Dt``, otherwise
:class:`RequirementError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import RequirementError
from .kernels import DEFAULT_GAMMA, l2_normalize, pixel_gamma, rbf_kernel, rkme_distance, uniform_weights
from .reduced_set import reduce_set
from .spec import Requirement, Specification

WEIGHTINGS = ("paper", "clamped", "softmax")
COMBINES = ("mixture", "paired")
DEFAULT_WEIGHTING = "softmax"  # chosen by the weighting study, docs/evaluation.md
DEFAULT_TEMPERATURE = 0.05
DEFAULT_REDUCED_SIZE = 1


def prompt_coefficients(
    cos: np.ndarray, weighting: str = DEFAULT_WEIGHTING, temperature: float = DEFAULT_TEMPERATURE
) -> np.ndarray:
    """Coefficients ``alpha`` of ``k(z_i, .)`` from cosines ``cos`` (prompts on the last axis)."""
    cos = np.asarray(cos, dtype=np.float64)
    n = cos.shape[-1]
    if weighting == "paper":
        return cos / n
    if weighting == "clamped":
        pos = np.maximum(cos, 0.0)
        total = pos.sum(axis=-1, keepdims=True)
        return np.where(total > 0, pos / np.where(total > 0, total, 1.0), 1.0 / n)
    if weighting == "softmax":
        if not temperature > 0:
            raise ValueError(f"softmax temperature must be > 0, got {temperature}")
        logits = cos / float(temperature)
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")


def prompt_cosines(prompt_features: np.ndarray, query_prompts: np.ndarray) -> np.ndarray:
    """``cos(q_t, q_i)`` as a (T, N) array."""
    return l2_normalize(np.asarray(query_prompts, np.float64)) @ l2_normalize(np.asarray(prompt_features, np.float64)).T


def _check_dims(spec: Specification, req: Requirement, *, image: bool, prompt: bool) -> None:
    checks = (
        (image, "image_features", "image features", "this method needs query image features"),
        (prompt, "prompt_features", "prompt features", "this method needs the query's (pseudo-)prompt features"),
    )
    for needed, attr, label, missing in checks:
        if not needed:
            continue
        query, stored = getattr(req, attr), getattr(spec, attr)
        if query is None:
            raise RequirementError(None, missing)
        if query.shape[1] != stored.shape[1]:
            raise RequirementError(
                None, f"query {label} have {query.shape[1]} dims, {spec.model_id} has {stored.shape[1]}"
            )


def score_proposal(
    spec: Specification,
    req: Requirement,
    gamma: float = DEFAULT_GAMMA,
    weighting: str = DEFAULT_WEIGHTING,
    temperature: float = DEFAULT_TEMPERATURE,
    combine: str = "mixture",
) -> float:
    """Eq. 9: ``|| sum_i alpha_i k(z_i, .) - k(z_tau, .) ||^2`` in closed form,
    ``alpha'K alpha - 2 alpha'k_tau + k(z_tau, z_tau)``; ``weighting="paper"`` is Eq. 9 as written.
    Several images: see ``combine`` in the module docstring. A text-only requirement is scored by
    :func:`score_text_only`."""
    if req.text_only:
        return score_text_only(spec, req, weighting, temperature)
    _check_dims(spec, req, image=True, prompt=True)
    if combine not in COMBINES:
        raise ValueError(f"unknown combine {combine!r}; choose one of {', '.join(COMBINES)}")
    alpha = prompt_coefficients(prompt_cosines(spec.prompt_features, req.prompt_features), weighting, temperature)
    kzz = np.exp(-float(gamma) * spec.image_sq_distances)
    kzq = rbf_kernel(spec.image_features, req.image_features, gamma)  # (N, T)
    kqq = rbf_kernel(req.image_features, req.image_features, gamma)  # (T, T)
    if combine == "mixture":
        a = alpha.mean(axis=0)
        return float(a @ kzz @ a - 2.0 * a @ kzq.mean(axis=1) + kqq.mean())
    quad = np.einsum("tn,nm,tm->t", alpha, kzz, alpha)
    cross = np.einsum("tn,nt->t", alpha, kzq)
    return float(np.mean(quad - 2.0 * cross + np.diag(kqq)))


def score_text_only(
    spec: Specification,
    req: Requirement,
    weighting: str = DEFAULT_WEIGHTING,
    temperature: float = DEFAULT_TEMPERATURE,
) -> float:
    """Text-only query (beyond the paper): ``-(1/T) sum_t sum_i alpha_{t,i} cos(z_i, q_t)``, the model's
    expected CLIP image-text similarity for the query prompts (see the module docstring)."""
    _check_dims(spec, req, image=False, prompt=True)
    if spec.image_features.shape[1] != req.prompt_features.shape[1]:
        raise RequirementError(
            None,
            f"text-only ranking needs image and prompt features in one space; {spec.model_id} has "
            f"{spec.image_features.shape[1]}-dim images and the query {req.prompt_features.shape[1]}-dim prompts",
        )
    alpha = prompt_coefficients(prompt_cosines(spec.prompt_features, req.prompt_features), weighting, temperature)
    image_text = prompt_cosines(spec.image_features, req.prompt_features)  # (T, N)
    return float(-np.mean(np.sum(alpha * image_text, axis=1)))


def _eq2(points: np.ndarray, query: np.ndarray, gamma: float, reduced_size: int | None, seed: int) -> float:
    if reduced_size is None:
        c, b = np.asarray(points, np.float64), uniform_weights(len(points))
    else:
        c, b = reduce_set(points, reduced_size, gamma, seed)
    return rkme_distance(c, b, query, uniform_weights(len(query)), gamma)


def score_rkme_clip(
    spec: Specification,
    req: Requirement,
    gamma: float = DEFAULT_GAMMA,
    reduced_size: int | None = DEFAULT_REDUCED_SIZE,
    seed: int = 0,
) -> float:
    """RKME-CLIP (Eq. 2 on CLIP image features): ``|| sum_j b_j k(c_j, .) - (1/T) sum_t k(z_t, .) ||^2``
    with ``(c, b)`` the reduced set of ``Z`` (size 1 in the paper; ``None`` = all N images, 1/N each)."""
    _check_dims(spec, req, image=True, prompt=False)
    return _eq2(spec.image_features, req.image_features, gamma, reduced_size, seed)


def concat_features(image_features: np.ndarray, prompt_features: np.ndarray) -> np.ndarray:
    """RKME-Concat points: image features next to L2-normalised prompt features (prompt scale is
    arbitrary, only their direction is meaningful; with unit image features both halves count alike)."""
    return np.concatenate(
        [np.asarray(image_features, np.float64), l2_normalize(np.asarray(prompt_features, np.float64))], axis=1
    )


def score_rkme_concat(
    spec: Specification,
    req: Requirement,
    gamma: float = DEFAULT_GAMMA,
    reduced_size: int | None = DEFAULT_REDUCED_SIZE,
    seed: int = 0,
) -> float:
    """RKME-Concat (paper §4.2, Table 2): Eq. 2 on ``[z_i, q_i]`` against the query's ``[z_t, q_t]``."""
    _check_dims(spec, req, image=True, prompt=True)
    points = concat_features(spec.image_features, spec.prompt_features)
    query = concat_features(req.image_features, req.prompt_features)
    return _eq2(points, query, gamma, reduced_size, seed)


def downsample_pixels(image: np.ndarray, size: int = 32) -> np.ndarray:
    """An image (H x W, H x W x 1/3/4, uint8 or float in [0, 1]) as a flat float32 vector of
    ``size x size x 3`` values in [0, 1]: area (box) averaging after a centre crop to a square
    multiple of ``size``, or nearest sampling when the image is smaller than ``size``."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or min(arr.shape[:2]) == 0:
        raise ValueError(f"expected an H x W x C image with C in 1, 3, 4; got shape {arr.shape}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    img = arr[:, :, :3].astype(np.float64) / scale
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    side = min(img.shape[:2])
    top, left = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
    img = img[top : top + side, left : left + side]
    if side >= size:
        cell = side // size
        off = (side - cell * size) // 2
        img = img[off : off + cell * size, off : off + cell * size]
        img = img.reshape(size, cell, size, cell, 3).mean(axis=(1, 3))
    else:
        idx = (np.arange(size) * side) // size
        img = img[idx][:, idx]
    return np.clip(img, 0.0, 1.0).astype(np.float32).reshape(-1)


def score_rkme_basic(
    spec: Specification,
    req: Requirement,
    gamma: float | None = None,
    reduced_size: int | None = DEFAULT_REDUCED_SIZE,
    seed: int = 0,
) -> float:
    """RKME-Basic (Eq. 2 on raw downsampled pixels). ``gamma=None`` uses
    :func:`gmi_desktop.core.kernels.pixel_gamma` for the pixel count."""
    if spec.pixel_features is None:
        raise RequirementError(None, f"{spec.model_id} has no pixel features; RKME-Basic needs them")
    if req.pixel_features is None or req.pixel_features.shape[1] != spec.pixel_features.shape[1]:
        raise RequirementError(
            None, f"RKME-Basic needs query pixel features of {spec.pixel_features.shape[1]} values"
        )
    g = pixel_gamma(spec.pixel_features.shape[1]) if gamma is None else gamma
    return _eq2(spec.pixel_features, req.pixel_features, g, reduced_size, seed)


def score_download(specs: Sequence[Specification]) -> np.ndarray:
    """Download baseline: a fixed, query-independent order. Models with a known popularity come
    first, most popular first; the rest follow by ``model_id``. Scores are the positions 0..M-1
    (all distinct, so no ties ever flatter this baseline)."""
    keys = sorted(
        range(len(specs)),
        key=lambda m: (specs[m].popularity is None, -(specs[m].popularity or 0.0), specs[m].model_id),
    )
    out = np.empty(len(specs), dtype=np.float64)
    out[np.asarray(keys, dtype=np.int64)] = np.arange(len(specs), dtype=np.float64)
    return out
