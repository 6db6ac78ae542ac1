"""Reduced-set construction for RKME specifications (Wu et al. 2023; paper §4.1 and A.4).

Given points ``x_1..x_N`` with target weights ``a`` (uniform by default), find ``size`` points
``c_j`` and simplex weights ``b`` (``b >= 0``, ``sum b = 1``) minimising

    J(c, b) = || sum_j b_j k(c_j, .) - sum_i a_i k(x_i, .) ||^2_H
            = b'K_cc b - 2 b'K_cx a + a'K_xx a.

Alternating minimisation, deterministic given ``seed``:
  * weights, points fixed: a convex QP on the simplex, solved by accelerated projected gradient;
  * points, weights fixed: gradient steps with Armijo backtracking (sufficient-decrease constant 1/2, so every
    accepted step lowers ``J`` and steps cannot overshoot),
    ``dJ/dc_j = 4 gamma b_j [ sum_i a_i k(c_j, x_i)(c_j - x_i) - sum_l b_l k(c_j, c_l)(c_j - c_l) ]``.
The start is ``size`` distinct input points drawn with ``seed``. A size of at least ``N`` returns
the input set itself (the exact embedding, ``J = 0``).
"""

from __future__ import annotations

import numpy as np

from .kernels import rbf_kernel


def project_to_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto ``{b >= 0, sum b = 1}`` (sort-based, exact)."""
    v = np.asarray(v, dtype=np.float64)
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    idx = np.arange(1, len(v) + 1)
    rho = np.nonzero(u - css / idx > 0)[0][-1]
    theta = css[rho] / (rho + 1.0)
    return np.maximum(v - theta, 0.0)


def simplex_qp(kernel: np.ndarray, linear: np.ndarray, start: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Minimise ``b'Kb - 2 b'v`` over the simplex (FISTA with step ``1 / (2 lambda_max(K))``)."""
    n = len(linear)
    if n == 1:
        return np.ones(1)
    lipschitz = 2.0 * max(float(np.linalg.eigvalsh(kernel)[-1]), 1e-12)
    b = project_to_simplex(start)
    y, t = b.copy(), 1.0
    for _ in range(iterations):
        b_next = project_to_simplex(y - (2.0 * (kernel @ y) - 2.0 * linear) / lipschitz)
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        y = b_next + ((t - 1.0) / t_next) * (b_next - b)
        if np.abs(b_next - b).max() < 1e-13:
            b = b_next
            break
        b, t = b_next, t_next
    return b


def _objective(c, b, x, a, gamma, kxx_term):
    return float(b @ rbf_kernel(c, c, gamma) @ b - 2.0 * b @ rbf_kernel(c, x, gamma) @ a + kxx_term)


def _point_gradient(c, b, x, a, gamma):
    kcx = rbf_kernel(c, x, gamma) * a[None, :]  # (s, N) a_i k(c_j, x_i)
    kcc = rbf_kernel(c, c, gamma) * b[None, :]  # (s, s) b_l k(c_j, c_l)
    attract = kcx.sum(1)[:, None] * c - kcx @ x
    repel = kcc.sum(1)[:, None] * c - kcc @ c
    return 4.0 * gamma * b[:, None] * (attract - repel)


def reduce_set(
    points: np.ndarray,
    size: int,
    gamma: float,
    seed: int = 0,
    weights: np.ndarray | None = None,
    rounds: int = 30,
    tol: float = 1e-12,
) -> tuple[np.ndarray, np.ndarray]:
    """Reduced set ``(c, b)`` of ``size`` points (float64, ``size x D``) and simplex weights
    approximating the embedding of ``points`` (weights ``weights``, default uniform)."""
    x = np.asarray(points, dtype=np.float64)
    n = x.shape[0]
    if size < 1:
        raise ValueError(f"reduced set size must be >= 1, got {size}")
    a = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=np.float64)
    if size >= n:
        return x.copy(), a.copy()
    rng = np.random.default_rng(seed)
    c = x[np.sort(rng.choice(n, size=size, replace=False))].copy()
    b = np.full(size, 1.0 / size)
    kxx_term = float(a @ rbf_kernel(x, x, gamma) @ a)
    value = _objective(c, b, x, a, gamma, kxx_term)
    step = 1.0 / (4.0 * gamma)
    for _ in range(rounds):
        start_value = value
        b = simplex_qp(rbf_kernel(c, c, gamma), rbf_kernel(c, x, gamma) @ a, b)
        value = _objective(c, b, x, a, gamma, kxx_term)
        for _ in range(10):
            grad = _point_gradient(c, b, x, a, gamma)
            gnorm2 = float((grad * grad).sum())
            if gnorm2 < 1e-30:
                break
            step *= 1.5
            for _ in range(40):
                trial = c - step * grad
                trial_value = _objective(trial, b, x, a, gamma, kxx_term)
                if trial_value <= value - 0.5 * step * gnorm2:
                    c, value = trial, trial_value
                    break
                step *= 0.5
            else:
                break
        if start_value - value <= tol * max(abs(start_value), 1e-300):
            break
    b = simplex_qp(rbf_kernel(c, c, gamma), rbf_kernel(c, x, gamma) @ a, b)
    return c, b
