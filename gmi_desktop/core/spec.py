"""The data types of identification: a model's :class:`Specification` and a user's :class:`Requirement`.

Paper §3.1 (Eq. 4-7): a specification is ``S_m = {Z_m; Q_m}``, the encoded images ``Z_m`` (N x D) that
model ``m`` generated for the prompts ``P_m`` and the encoded prompts ``Q_m`` (N x Dt); row ``i`` of
``Z`` was generated from prompt ``i``. Paper §3.2 (Eq. 8): a requirement is ``R = {z_tau; q_tau}``;
here it holds T query images, each with its *own* (pseudo-)prompt feature (A.2).

Feature scale: the kernel ``exp(-gamma ||x - y||^2)`` depends on it. The engine stores CLIP image
features **L2-normalised** (squared distances then lie in [0, 4] whatever the encoder's raw
scale), and ``gamma`` (see :mod:`gmi_desktop.core.kernels`) is expressed in those units. Prompt
features are only compared by cosine, so their scale does not matter. This module does not
normalise: it stores what it is given, as float32, read-only, after validation.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .errors import RequirementError, SpecFormatError

SPEC_FORMAT_VERSION = 1


def prompt_set_digest(prompts: Iterable[str]) -> str:
    """SHA-256 (hex) of the prompt list in a canonical encoding: UTF-8 JSON array, no spaces.

    Order matters: prompt ``i`` is paired with image ``i``.
    """
    items = list(prompts)
    if not all(isinstance(p, str) for p in items):
        raise SpecFormatError(None, "prompts must be strings")
    payload = json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()


def _as_matrix(value: Any, name: str, error: type, path: Any = None, allow_vector: bool = False) -> np.ndarray:
    """A finite, C-contiguous, read-only float32 matrix, or ``error`` saying what is wrong."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise error(path, f"{name} is not an array: {exc}") from exc
    if arr.dtype.kind not in "fiu":
        raise error(path, f"{name} must be real numbers, got dtype {arr.dtype}")
    if allow_vector and arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise error(path, f"{name} must be a non-empty 2-D array, got shape {arr.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(out).all():
        raise error(path, f"{name} contains NaN or infinite values (or values too large for float32)")
    out.setflags(write=False)
    return out


def _check_nonzero_rows(arr: np.ndarray, name: str, error: type) -> None:
    norms = np.linalg.norm(arr.astype(np.float64), axis=1)
    if (norms <= 1e-12).any():
        bad = int(np.flatnonzero(norms <= 1e-12)[0])
        raise error(None, f"{name} row {bad} is all zeros; its cosine similarity is undefined")


@dataclass(frozen=True)
class SpecRecipe:
    """How a specification was made; two specs with equal recipes are interchangeable."""

    checkpoint_sha256: str
    encoder_id: str
    prompt_set_digest: str
    generation: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = SPEC_FORMAT_VERSION

    def __post_init__(self) -> None:
        for name in ("checkpoint_sha256", "encoder_id", "prompt_set_digest"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise SpecFormatError(None, f"recipe.{name} must be a non-empty string")
        if self.format_version != SPEC_FORMAT_VERSION:
            raise SpecFormatError(
                None,
                f"specification format version {self.format_version} is not supported "
                f"(this version reads {SPEC_FORMAT_VERSION})",
            )
        if not isinstance(self.generation, Mapping):
            raise SpecFormatError(None, "recipe.generation must be a mapping")
        object.__setattr__(self, "generation", dict(self.generation))


@dataclass(frozen=True, eq=False)
class Specification:
    """One model's specification (Eq. 7): images ``Z`` (N x D) generated from prompts whose features
    are ``Q`` (N x Dt), row-paired.

    ``pixel_features`` (N x P, optional) are the same images as raw downsampled pixels in [0, 1]
    (see :func:`gmi_desktop.core.scores.downsample_pixels`), only used by the RKME-Basic baseline.
    ``popularity`` (e.g. a download count), when known, drives the Download baseline.
    Equality is identity (arrays inside); compare ``model_id`` and ``recipe`` instead.
    """

    model_id: str
    image_features: np.ndarray
    prompt_features: np.ndarray
    prompts: tuple[str, ...]
    recipe: SpecRecipe
    display_name: str = ""
    pixel_features: np.ndarray | None = None
    popularity: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not self.model_id:
            raise SpecFormatError(None, "model_id must be a non-empty string")
        if not isinstance(self.recipe, SpecRecipe):
            raise SpecFormatError(None, f"{self.model_id}: recipe must be a SpecRecipe")
        z = _as_matrix(self.image_features, "image_features", SpecFormatError)
        q = _as_matrix(self.prompt_features, "prompt_features", SpecFormatError)
        if q.shape[0] != z.shape[0]:
            raise SpecFormatError(
                None, f"{self.model_id}: {z.shape[0]} images but {q.shape[0]} prompt features"
            )
        _check_nonzero_rows(q, "prompt_features", SpecFormatError)
        prompts = tuple(self.prompts)
        if len(prompts) != z.shape[0] or not all(isinstance(p, str) for p in prompts):
            raise SpecFormatError(
                None, f"{self.model_id}: need {z.shape[0]} prompt strings, got {len(prompts)}"
            )
        if prompt_set_digest(prompts) != self.recipe.prompt_set_digest:
            raise SpecFormatError(None, f"{self.model_id}: recipe.prompt_set_digest does not match the prompts")
        pix = None
        if self.pixel_features is not None:
            pix = _as_matrix(self.pixel_features, "pixel_features", SpecFormatError)
            if pix.shape[0] != z.shape[0]:
                raise SpecFormatError(
                    None, f"{self.model_id}: {pix.shape[0]} pixel rows for {z.shape[0]} images"
                )
        pop = self.popularity
        if pop is not None:
            if isinstance(pop, bool) or not isinstance(pop, (int, float, np.integer, np.floating)):
                raise SpecFormatError(None, f"{self.model_id}: popularity must be a number or None")
            pop = float(pop)
            if not math.isfinite(pop):
                raise SpecFormatError(None, f"{self.model_id}: popularity must be finite")
        if not isinstance(self.display_name, str):
            raise SpecFormatError(None, f"{self.model_id}: display_name must be a string")
        object.__setattr__(self, "image_features", z)
        object.__setattr__(self, "prompt_features", q)
        object.__setattr__(self, "prompts", prompts)
        object.__setattr__(self, "pixel_features", pix)
        object.__setattr__(self, "popularity", pop)

    @property
    def n_images(self) -> int:
        return int(self.image_features.shape[0])

    @property
    def name(self) -> str:
        return self.display_name or self.model_id

    @cached_property
    def image_sq_distances(self) -> np.ndarray:
        """Pairwise squared distances of ``Z`` (N x N, float64): query-independent and
        gamma-independent, so ``K = exp(-gamma * D2)`` is one elementwise call."""
        z = self.image_features.astype(np.float64)
        sq = (z * z).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)
        np.fill_diagonal(d2, 0.0)
        d2.setflags(write=False)
        return d2


def spec_completeness(spec: Specification) -> float:
    """How much of its prompt set a specification covers, in (0, 1]: a progressive build first
    makes a coarse specification from a subset of the prompts (``recipe.generation`` records
    ``prompts_total``, the size of the full set), then refines it. 1.0 when not recorded."""
    total = spec.recipe.generation.get("prompts_total")
    if isinstance(total, bool) or not isinstance(total, int) or total <= 0:
        return 1.0
    return min(1.0, spec.n_images / total)


@dataclass(frozen=True, eq=False)
class Requirement:
    """A query: T images ``image_features`` (T x D), each paired with its own prompt feature
    (``prompt_features``, T x Dt: the interrogator's pseudo-prompt or the user's prompt).

    ``image_features=None`` is a text-only query (prompt features only). ``prompt_features=None``
    is an image-only query (enough for the RKME baselines, not for the proposal).
    A 1-D array is taken as T = 1.
    """

    image_features: np.ndarray | None = None
    prompt_features: np.ndarray | None = None
    pixel_features: np.ndarray | None = None

    def __post_init__(self) -> None:
        z = q = pix = None
        if self.image_features is not None:
            z = _as_matrix(self.image_features, "query image_features", RequirementError, allow_vector=True)
        if self.prompt_features is not None:
            q = _as_matrix(self.prompt_features, "query prompt_features", RequirementError, allow_vector=True)
            _check_nonzero_rows(q, "query prompt_features", RequirementError)
        if self.pixel_features is not None:
            pix = _as_matrix(self.pixel_features, "query pixel_features", RequirementError, allow_vector=True)
        if z is None and q is None:
            raise RequirementError(None, "a query needs image features, prompt features or both")
        counts = {a.shape[0] for a in (z, q, pix) if a is not None}
        if len(counts) != 1:
            raise RequirementError(
                None, "query images, prompt features and pixel features must have the same count T"
            )
        if pix is not None and z is None:
            raise RequirementError(None, "query pixel features need the query image features too")
        object.__setattr__(self, "image_features", z)
        object.__setattr__(self, "prompt_features", q)
        object.__setattr__(self, "pixel_features", pix)

    @property
    def n_images(self) -> int:
        """T: the number of query images (or of prompts, for a text-only query)."""
        first = self.image_features if self.image_features is not None else self.prompt_features
        return int(first.shape[0])

    @property
    def text_only(self) -> bool:
        return self.image_features is None
