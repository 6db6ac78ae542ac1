"""The reduced-set iteration of :mod:`gmi_desktop.core.reduced_set` written directly in point
space for one model (the form it had before it was batched): kernels from the points ``c`` and
``x`` themselves, no Gram-matrix coefficients, no masks. Tests use it as the slow reference that
the batched coefficient-space code must agree with; the benchmark uses it as the per-model loop.
"""

from __future__ import annotations

import numpy as np

from gmi_desktop.core.kernels import rbf_kernel
from gmi_desktop.core.reduced_set import project_to_simplex


def _qp(kernel, linear, start, iterations=200):
    if len(linear) == 1:
        return np.ones(1)
    lipschitz = 2.0 * max(float(np.linalg.eigvalsh(kernel)[-1]), 1e-12)
    b = project_to_simplex(start)
    y, t = b.copy(), 1.0
    for _ in range(iterations):
        b_next = project_to_simplex(y - (2.0 * (kernel @ y) - 2.0 * linear) / lipschitz)
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        y = b_next + ((t - 1.0) / t_next) * (b_next - b)
        if np.abs(b_next - b).max() < 1e-13:
            return b_next
        b, t = b_next, t_next
    return b


def objective(c, b, x, a, gamma, kxx=None):
    """``J(c, b)`` in point space (``kxx = a'K_xx a`` if already known)."""
    kxx = float(a @ rbf_kernel(x, x, gamma) @ a) if kxx is None else kxx
    return float(b @ rbf_kernel(c, c, gamma) @ b - 2.0 * b @ rbf_kernel(c, x, gamma) @ a + kxx)


def _gradient(c, b, x, a, gamma):
    kcx = rbf_kernel(c, x, gamma) * a[None, :]
    kcc = rbf_kernel(c, c, gamma) * b[None, :]
    attract = kcx.sum(1)[:, None] * c - kcx @ x
    repel = kcc.sum(1)[:, None] * c - kcc @ c
    return 4.0 * gamma * b[:, None] * (attract - repel)


def reduce_set_pointwise(points, size, gamma, seed=0, weights=None, rounds=30, tol=1e-12):
    x = np.asarray(points, dtype=np.float64)
    n = len(x)
    a = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=np.float64)
    if size >= n:
        return x.copy(), a.copy()
    c = x[np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))].copy()
    b = np.full(size, 1.0 / size)
    kxx = float(a @ rbf_kernel(x, x, gamma) @ a)
    value = objective(c, b, x, a, gamma, kxx)
    step = 1.0 / (4.0 * gamma)
    for _ in range(rounds):
        start_value = value
        b = _qp(rbf_kernel(c, c, gamma), rbf_kernel(c, x, gamma) @ a, b)
        value = objective(c, b, x, a, gamma, kxx)
        for _ in range(10):
            grad = _gradient(c, b, x, a, gamma)
            gnorm2 = float((grad * grad).sum())
            if gnorm2 < 1e-30:
                break
            step *= 1.5
            for _ in range(40):
                trial = c - step * grad
                trial_value = objective(trial, b, x, a, gamma, kxx)
                if trial_value <= value - 0.5 * step * gnorm2:
                    c, value = trial, trial_value
                    break
                step *= 0.5
            else:
                break
        if start_value - value <= tol * max(abs(start_value), 1e-300):
            break
    return c, _qp(rbf_kernel(c, c, gamma), rbf_kernel(c, x, gamma) @ a, b)
