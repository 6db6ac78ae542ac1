"""Slow, direct reference evaluations of Eq. 2 and Eq. 9 (pure Python loops, float64).

The squared RKHS norm of ``f = sum_j c_j k(p_j, .)`` is ``sum_j sum_l c_j c_l k(p_j, p_l)``; both
embeddings are written as one signed list of (coefficient, point) pairs and the double loop is
evaluated pair by pair with ``math.exp`` - no matrix algebra shared with the code under test.
"""

from __future__ import annotations

import math


def _k(x, y, gamma):
    return math.exp(-gamma * sum((float(a) - float(b)) ** 2 for a, b in zip(x, y)))


def rkhs_sq_norm(terms, gamma):
    """``|| sum_j c_j k(p_j, .) ||^2`` for ``terms = [(c_j, p_j), ...]``."""
    total = 0.0
    for cj, pj in terms:
        for cl, pl in terms:
            total += cj * cl * _k(pj, pl, gamma)
    return total


def _cos(a, b):
    dot = sum(float(x) * float(y) for x, y in zip(a, b))
    return dot / (math.sqrt(sum(float(x) ** 2 for x in a)) * math.sqrt(sum(float(y) ** 2 for y in b)))


def eq9_direct(z, q, z_tau, q_tau, gamma):
    """Eq. 9 as written: ``|| (1/N) sum_i cos(q_i, q_tau) k(z_i, .) - k(z_tau, .) ||^2``."""
    n = len(z)
    terms = [(_cos(q[i], q_tau) / n, z[i]) for i in range(n)]
    terms.append((-1.0, z_tau))
    return rkhs_sq_norm(terms, gamma)


def eq2_direct(points, weights, queries, gamma):
    """Eq. 2 generalised: ``|| sum_j b_j k(c_j, .) - (1/T) sum_t k(x_t, .) ||^2``."""
    t = len(queries)
    terms = [(float(w), p) for w, p in zip(weights, points)] + [(-1.0 / t, x) for x in queries]
    return rkhs_sq_norm(terms, gamma)
