"""RBF kernel and kernel-mean-embedding arithmetic (paper Eq. 2, 3, 9), as small free functions.

Kernel: ``k(x, y) = exp(-gamma * ||x - y||^2)``. A weighted embedding is ``sum_i a_i k(x_i, .)`` in the
RKHS of ``k``; the squared distance of two of them expands (kernel trick) to
``a'K_xx a - 2 a'K_xy b + b'K_yy b``.

Kernel scale (gamma) and feature normalisation
-----------------------------------------------
``gamma`` only means something together with the scale of the features. The paper tuned
``gamma = 0.02`` on CLIP features whose scale it does not report (raw embedding norms are
encoder-specific). We store image features **L2-normalised**, so that squared distances lie
in ``[0, 4]`` (``||x - y||^2 = 2 - 2 cos``) for every encoder. In those units 0.02 makes the kernel
almost flat (``exp(-0.02 * 4) = 0.92`` at the largest possible distance): to first order
``k = 1 - gamma d^2``, and the RKHS distance of two normalised embeddings degenerates to
``2 gamma ||mean_x - mean_y||^2``, a comparison of means only, with all scores of order gamma.
:data:`DEFAULT_GAMMA` = 2 spreads the kernel over the range of typical CLIP image-image cosines:
``k = exp(-0.2) = 0.82`` at cos 0.95, ``exp(-1.2) = 0.30`` at cos 0.7, ``exp(-2.4) = 0.09`` at cos 0.4.
For raw features of typical norm ``s`` the paper's value corresponds to ``gamma = 0.02 * s^2`` on
unit features (``s = 10`` would give 2), see :func:`gamma_for_normalised`. The evaluation protocol
sweeps gamma; this default is where that sweep should be centred.
"""

from __future__ import annotations

import numpy as np

DEFAULT_GAMMA = 2.0


def gamma_for_normalised(gamma_raw: float, typical_norm: float) -> float:
    """The gamma on L2-normalised features equivalent to ``gamma_raw`` on raw features of norm
    ``typical_norm`` (distances scale by ``typical_norm``, squared distances by its square)."""
    return float(gamma_raw) * float(typical_norm) ** 2


def pixel_gamma(n_values: int, gamma: float = DEFAULT_GAMMA) -> float:
    """Gamma for raw pixel vectors in [0, 1] with ``n_values`` entries (RKME-Basic).

    Maps the largest possible squared distance (``n_values``) onto the largest one of unit
    features (4), so the kernel has the same shape relative to its range: ``gamma * 4 / n_values``.
    """
    return float(gamma) * 4.0 / float(n_values)


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def sq_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances (len(x) x len(y)), float64, never negative."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    d2 = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * (x @ y.T)
    return np.maximum(d2, 0.0)


def rbf_kernel(x: np.ndarray, y: np.ndarray, gamma: float) -> np.ndarray:
    """``K[i, j] = exp(-gamma ||x_i - y_j||^2)`` (float64)."""
    return np.exp(-float(gamma) * sq_distances(x, y))


def rkme_inner(
    x_points: np.ndarray, x_weights: np.ndarray, y_points: np.ndarray, y_weights: np.ndarray, gamma: float
) -> float:
    """RKHS inner product ``<sum_i a_i k(x_i, .), sum_j b_j k(y_j, .)> = a' K(x, y) b``."""
    a = np.asarray(x_weights, dtype=np.float64)
    b = np.asarray(y_weights, dtype=np.float64)
    return float(a @ rbf_kernel(x_points, y_points, gamma) @ b)


def rkme_distance(
    x_points: np.ndarray, x_weights: np.ndarray, y_points: np.ndarray, y_weights: np.ndarray, gamma: float
) -> float:
    """Squared RKHS distance ``||sum_i a_i k(x_i, .) - sum_j b_j k(y_j, .)||^2`` (Eq. 2 generalised:
    Eq. 2 is ``a = 1/N`` on the (reduced) specification and ``b = 1`` on the query image)."""
    xx = rkme_inner(x_points, x_weights, x_points, x_weights, gamma)
    xy = rkme_inner(x_points, x_weights, y_points, y_weights, gamma)
    yy = rkme_inner(y_points, y_weights, y_points, y_weights, gamma)
    return xx - 2.0 * xy + yy


def uniform_weights(n: int) -> np.ndarray:
    return np.full(n, 1.0 / n)
