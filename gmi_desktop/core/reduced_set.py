"""Reduced-set construction for RKME specifications (Wu et al. 2023; paper §4.1 and A.4), for many
models at once.

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

Coordinates. The iteration runs in point space, in coordinates of the data's span: any ``L``
(N x r) with ``L L' = G = x x'`` is a copy of the points rotated into r <= N dimensions (the RBF
kernel sees only distances), so the points are ``y`` (size x r) and every step costs O(N r)
instead of O(N F) per point: ``L = x`` when F <= N, else the Cholesky factor of ``G`` (the
eigendecomposition when ``G`` is singular). At the end ``c = x_start + ((y - y_start) L^+) x``
(``c = y`` when ``L = x``).
An earlier version iterated on coefficients ``W`` with ``c = W x``: when the points span fewer
dimensions than N, ``W`` grew in directions that do not move ``c`` (to 1e5 on a circle) and
``W G W'`` carried errors that stopped the line search early at a flat optimum.

Batching. :func:`reduce_sets` runs the iteration for M models at once: every step is a stacked
matmul over the models that still take it (per-model masks for converged rounds, gradient steps,
line searches and QP iterations), so each model follows exactly the path it follows alone. Models
are batched by their number of points N (no padding inside the iteration, which would change the
order of floating-point sums), in chunks of at most 2048 models.
:func:`reduce_set` is that function for one model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_OPT_CHUNK = 2048  # models optimised together (bounds the stacked Gram matrices)
_DATA_CHUNK_BYTES = 4 << 20  # float64 points converted at a time (stays in cache for the matmul)
_ROUNDING = 64 * np.finfo(np.float64).eps  # relative size of rounding noise in a gradient


def project_to_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row (last axis) onto ``{b >= 0, sum b = 1}`` (sort-based, exact)."""
    v = np.asarray(v, dtype=np.float64)
    rows = v.reshape(-1, v.shape[-1])
    u = -np.sort(-rows, axis=1)
    css = np.cumsum(u, axis=1) - 1.0
    positive = u - css / np.arange(1, rows.shape[1] + 1) > 0
    rho = rows.shape[1] - 1 - np.argmax(positive[:, ::-1], axis=1)
    theta = css[np.arange(len(rows)), rho] / (rho + 1.0)
    return np.maximum(rows - theta[:, None], 0.0).reshape(v.shape)


def simplex_qp(kernel: np.ndarray, linear: np.ndarray, start: np.ndarray, iterations: int = 200) -> np.ndarray:
    """Minimise ``b'K_m b - 2 b'v_m`` over the simplex for every m (``kernel`` (M, s, s), ``linear``
    and ``start`` (M, s)): FISTA with step ``1 / (2 lambda_max(K_m))``, each model stopping on its own."""
    kernel = np.asarray(kernel, dtype=np.float64)
    m, s = np.shape(linear)
    if s == 1:
        return np.ones((m, 1))
    lipschitz = 2.0 * np.maximum(np.linalg.eigvalsh(kernel)[:, -1], 1e-12)
    b = project_to_simplex(start)
    y, t = b.copy(), 1.0
    live = np.arange(m)
    for _ in range(iterations):
        if live.size == 0:
            break
        yl, bl = y[live], b[live]
        grad = 2.0 * _weighted_rows(_take(kernel, live), yl) - 2.0 * linear[live]
        b_next = project_to_simplex(yl - grad / lipschitz[live, None])
        t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        y[live] = b_next + ((t - 1.0) / t_next) * (b_next - bl)
        done = np.abs(b_next - bl).max(axis=1) < 1e-13
        b[live] = b_next
        live, t = live[~done], t_next
    return b


def _take(arr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``arr[rows]`` for a sorted subset ``rows`` of its models; no copy when that is all of them."""
    return arr if len(rows) == len(arr) else arr[rows]


def _kernels(p: np.ndarray, y: np.ndarray, ldiag: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """``K_cx`` (M, s, N) and ``K_cc`` (M, s, s) from the points ``y`` and ``p = y L'``."""
    cc = y @ y.transpose(0, 2, 1)
    cn = np.diagonal(cc, axis1=1, axis2=2)
    kcx = np.exp(-gamma * np.maximum(cn[:, :, None] + ldiag[:, None, :] - 2.0 * p, 0.0))
    kcc = np.exp(-gamma * np.maximum(cn[:, :, None] + cn[:, None, :] - 2.0 * cc, 0.0))
    return kcx, kcc


def _weighted_rows(k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``K_m v_m`` for every m: (M, s, n) x (M, n) -> (M, s)."""
    return (k @ v[:, :, None])[:, :, 0]


def _objective(kcx, kcc, a, b, kxx):
    return (_weighted_rows(kcc, b) * b).sum(1) - 2.0 * (_weighted_rows(kcx, a) * b).sum(1) + kxx


def _gradient(kcx, kcc, l, y, a, b, gamma):
    """``dJ/dy`` (M, s, r): the point gradient of the module docstring, in coordinates."""
    att = kcx * a[:, None, :]
    rep = kcc * b[:, None, :]
    pull = (att.sum(2) - rep.sum(2))[:, :, None]
    return (4.0 * gamma) * b[:, :, None] * (pull * y - att @ l + rep @ y)


def _point_steps(l, ldiag, a, kxx, y, p, b, value, step, gamma):
    """Up to 10 Armijo gradient steps on the points of every model. ``y``, ``p = y L'``,
    ``value`` and ``step`` are updated in place."""
    moving = np.arange(len(y))
    for _ in range(10):
        if moving.size == 0:
            return
        ym, pm, bm = y[moving], p[moving], b[moving]
        kcx, kcc = _kernels(pm, ym, ldiag[moving], gamma)
        lm = _take(l, moving)
        dy = _gradient(kcx, kcc, lm, ym, a[moving], bm, gamma)
        dp = dy @ lm.transpose(0, 2, 1)
        gnorm2 = (dy * dy).sum(axis=(1, 2))
        # a gradient at the rounding level of its own terms (4 gamma |y|) is zero: moving on it
        # would only shift a stationary point (an input point at a very narrow kernel) by noise
        rounding = _ROUNDING * 4.0 * gamma * np.abs(ym).max(axis=(1, 2))
        keep = (gnorm2 >= 1e-30) & (gnorm2 > rounding * rounding)
        moving, ym, pm, bm, dy, dp, gnorm2 = (arr[keep] for arr in (moving, ym, pm, bm, dy, dp, gnorm2))
        step[moving] *= 1.5
        searching = np.arange(len(moving))
        for _ in range(40):
            if searching.size == 0:
                break
            sel = moving[searching]
            st = step[sel][:, None, None]
            trial_y = ym[searching] - st * dy[searching]
            trial_p = pm[searching] - st * dp[searching]
            kcx, kcc = _kernels(trial_p, trial_y, ldiag[sel], gamma)
            trial_value = _objective(kcx, kcc, a[sel], bm[searching], kxx[sel])
            ok = trial_value <= value[sel] - 0.5 * step[sel] * gnorm2[searching]
            y[sel[ok]], p[sel[ok]] = trial_y[ok], trial_p[ok]
            value[sel[ok]] = trial_value[ok]
            step[sel[~ok]] *= 0.5
            searching = searching[~ok]
        moving = np.delete(moving, searching)  # a failed line search ends that model's steps


def _optimise(g, l, a, y, gamma, rounds, tol):
    """Alternating minimisation from the points ``y`` (M, s, r) in the coordinates ``l`` (M, N, r)
    (``l l' = g``, the Gram matrices (M, N, N)), target weights ``a`` (M, N); ``y`` is updated in
    place; returns the simplex weights (M, s)."""
    m, s, _ = y.shape
    gdiag = np.ascontiguousarray(np.diagonal(g, axis1=1, axis2=2))
    kxx_mat = np.exp(-gamma * np.maximum(gdiag[:, :, None] + gdiag[:, None, :] - 2.0 * g, 0.0))
    kxx = (_weighted_rows(kxx_mat, a) * a).sum(1)
    del kxx_mat
    ldiag = np.einsum("mnr,mnr->mn", l, l)
    p = y @ l.transpose(0, 2, 1)
    b = np.full((m, s), 1.0 / s)
    value = _objective(*_kernels(p, y, ldiag, gamma), a, b, kxx)
    step = np.full(m, 1.0 / (4.0 * gamma))
    live = np.arange(m)
    for _ in range(rounds):
        if live.size == 0:
            break
        start_value = value[live]
        ll, yl, pl, al, dl = _take(l, live), y[live], p[live], a[live], ldiag[live]
        kcx, kcc = _kernels(pl, yl, dl, gamma)
        bl = simplex_qp(kcc, _weighted_rows(kcx, al), b[live])
        vl = _objective(kcx, kcc, al, bl, kxx[live])
        stl = step[live]
        _point_steps(ll, dl, al, kxx[live], yl, pl, bl, vl, stl, gamma)
        y[live], p[live], b[live], value[live], step[live] = yl, pl, bl, vl, stl
        converged = start_value - vl <= tol * np.maximum(np.abs(start_value), 1e-300)
        live = live[~converged]
    kcx, kcc = _kernels(p, y, ldiag, gamma)
    return simplex_qp(kcc, _weighted_rows(kcx, a), b)


def _square_roots(g: np.ndarray) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """``L`` (M, N, N) with ``L L' = G`` per model: the Cholesky factor, or for a singular ``G``
    (points spanning fewer than N dimensions) ``U sqrt(lambda)`` of its eigendecomposition, whose
    pseudo-inverse is returned by model index. Decided model by model, so a model's factor does
    not depend on its batch."""
    try:
        return np.linalg.cholesky(g), {}
    except np.linalg.LinAlgError:
        pass
    out, pinv = np.empty_like(g), {}
    for i, gi in enumerate(g):
        try:
            out[i] = np.linalg.cholesky(gi)
        except np.linalg.LinAlgError:
            lam, u = np.linalg.eigh(gi)
            root = np.sqrt(np.maximum(lam, 0.0))
            out[i] = u * root
            kept = lam > lam[-1] * len(lam) * np.finfo(np.float64).eps
            pinv[i] = np.where(kept[:, None], u.T / np.where(kept, root, 1.0)[:, None], 0.0)
    return out, pinv


def _coefficients(y: np.ndarray, l: np.ndarray, pinv: dict[int, np.ndarray]) -> np.ndarray:
    """``W = y L^+`` (M, s, N): the combination ``W x`` of the input points that ``y`` stands for."""
    w = np.linalg.solve(l.transpose(0, 2, 1), y.transpose(0, 2, 1)).transpose(0, 2, 1) if not pinv else None
    if w is None:
        w = np.empty((len(y), y.shape[1], l.shape[1]))
        for i in range(len(y)):
            w[i] = y[i] @ pinv[i] if i in pinv else np.linalg.solve(l[i].T, y[i].T).T
    return w


def _as_sets(point_sets, weights):
    """Validated ``(sets, counts, F, a)``: the sets as given (no float64 copy yet), their sizes,
    the feature width and the target weights zero-padded to (M, max N)."""
    if isinstance(point_sets, np.ndarray) and point_sets.ndim == 3:
        sets: Sequence[np.ndarray] = point_sets
        counts = np.full(len(sets), point_sets.shape[1])
        dims = {point_sets.shape[2]}
    else:
        sets = [np.asarray(p) for p in point_sets]
        counts = np.array([p.shape[0] if p.ndim == 2 else 0 for p in sets], dtype=np.int64)
        dims = {p.shape[-1] for p in sets}
    if len(sets) == 0 or np.any(counts < 1):
        raise ValueError("point sets must be non-empty (N, F) arrays, at least one of them")
    if len(dims) != 1:
        raise ValueError(f"point sets have different feature sizes {sorted(dims)}")
    n_max = int(counts.max())
    if weights is None:
        a = np.where(np.arange(n_max) < counts[:, None], 1.0 / counts[:, None], 0.0)
    else:
        wsets = [np.asarray(wt, dtype=np.float64) for wt in weights]
        if len(wsets) != len(sets) or any(wt.shape != (n,) for wt, n in zip(wsets, counts)):
            raise ValueError("weights must give one value per point of every set")
        a = np.zeros((len(sets), n_max))
        for row, wt in zip(a, wsets):
            row[: len(wt)] = wt
    return sets, counts, dims.pop(), a


def _padded(sets, rows: np.ndarray, n: int, dim: int) -> np.ndarray:
    """Points of the models ``rows`` as float64 (len(rows), n, F), zero rows as padding."""
    if isinstance(sets, np.ndarray):
        return np.asarray(sets[rows], dtype=np.float64)
    out = np.zeros((len(rows), n, dim))
    for i, r in enumerate(rows):
        out[i, : len(sets[r])] = sets[r]
    return out


def reduce_sets(
    point_sets: np.ndarray | Sequence[np.ndarray],
    size: int,
    gamma: float,
    seed: int = 0,
    weights: np.ndarray | Sequence[np.ndarray] | None = None,
    rounds: int = 30,
    tol: float = 1e-12,
) -> tuple[np.ndarray, np.ndarray]:
    """Reduced sets of M models at once: ``point_sets`` (M, N, F) or a list of (N_m, F) arrays,
    ``weights`` (M, N) / a list of (N_m,) target weights (default uniform).

    Returns ``c`` (M, S, F) float64 and ``b`` (M, S) simplex weights with ``S = min(size, max N_m)``;
    a model with ``N_m <= size`` gets its own points and weights, rows past a model's set are zero
    points of weight 0. Model m's result is :func:`reduce_set` of its points alone.
    """
    if size < 1:
        raise ValueError(f"reduced set size must be >= 1, got {size}")
    sets, counts, dim, a = _as_sets(point_sets, weights)
    n_max = a.shape[1]
    out_size = min(size, n_max)
    c = np.zeros((len(sets), out_size, dim))
    b = np.zeros((len(sets), out_size))
    exact = np.flatnonzero(counts <= size)
    b[exact] = a[exact, :out_size]
    exact_chunk = max(1, _DATA_CHUNK_BYTES // (8 * n_max * dim))
    for lo in range(0, len(exact), exact_chunk):
        rows = exact[lo : lo + exact_chunk]
        c[rows] = _padded(sets, rows, out_size, dim)
    for n in np.unique(counts[counts > size]):  # equal N in a batch: no padding in the iteration
        group = np.flatnonzero(counts == n)
        start = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
        data_chunk = max(1, _DATA_CHUNK_BYTES // (8 * n * dim))
        for lo in range(0, len(group), _OPT_CHUNK):
            rows = group[lo : lo + _OPT_CHUNK]
            g = np.empty((len(rows), n, n))
            l = np.empty((len(rows), n, dim)) if dim <= n else g  # F <= N: the points themselves
            for d0 in range(0, len(rows), data_chunk):
                x = _padded(sets, rows[d0 : d0 + data_chunk], n, dim)
                g[d0 : d0 + len(x)] = x @ x.transpose(0, 2, 1)
                if dim <= n:
                    l[d0 : d0 + len(x)] = x
            pinv: dict[int, np.ndarray] = {}
            if dim > n:
                l, pinv = _square_roots(g)
            y0 = np.ascontiguousarray(l[:, start])
            y = y0.copy()
            b[rows] = _optimise(g, l, a[rows, :n], y, float(gamma), rounds, tol)
            if dim <= n:
                c[rows] = y
                continue
            w = _coefficients(y - y0, l, pinv)  # the moves only: a point that never moved stays exact
            for d0 in range(0, len(rows), data_chunk):
                part = rows[d0 : d0 + data_chunk]
                x = _padded(sets, part, n, dim)
                c[part] = x[:, start] + w[d0 : d0 + len(part)] @ x
    return c, b


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
    c, b = reduce_sets(x[None], size, gamma, seed, None if weights is None else [weights], rounds, tol)
    return c[0], b[0]
