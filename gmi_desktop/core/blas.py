"""Best-effort control of the BLAS thread count numpy uses (OpenBLAS), via ctypes.

Scoring is memory-bound (one pass over the stored image features) or tiny (a few MB); a second
BLAS thread adds no bandwidth, and on a busy machine waking it costs more than the work itself
(measured here: a 6 MB product took 0.08 ms on one thread and 11-16 ms on two while other
processes loaded the cores). :class:`~gmi_desktop.core.index.SpecIndex` therefore scores with one
BLAS thread. Where numpy's BLAS is not OpenBLAS (e.g. Accelerate on macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import numpy as np

_NAMES = [
    (f"{prefix}_set_num_threads{suffix}", f"{prefix}_get_num_threads{suffix}")
    for prefix in ("scipy_openblas", "openblas")
    for suffix in ("64_", "")
]
_lock = threading.RLock()


def _candidate_paths() -> list[str]:
    base = os.path.dirname(os.path.dirname(np.__file__))
    paths = []
    for folder in (os.path.join(base, "numpy.libs"), os.path.join(os.path.dirname(np.__file__), ".dylibs")):
        paths += sorted(glob.glob(os.path.join(folder, "*openblas*")))
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths += sorted({line.split()[-1] for line in maps if "openblas" in line and "/" in line})
    except OSError:
        pass
    return paths


@lru_cache(maxsize=1)
def _functions():
    """``(set_num_threads, get_num_threads)`` of numpy's OpenBLAS, or ``None``."""
    for path in _candidate_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _NAMES:
            setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                return setter, getter
    return None


def blas_thread_count() -> int | None:
    """Threads numpy's OpenBLAS currently uses, or ``None`` when it cannot be controlled."""
    funcs = _functions()
    return None if funcs is None else int(funcs[1]())


@contextmanager
def blas_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` BLAS threads (``None``: leave as is), restoring the old count."""
    funcs = _functions() if n is not None else None
    if funcs is None:
        yield
        return
    setter, getter = funcs
    with _lock:
        old = int(getter())
        setter(int(n))
        try:
            yield
        finally:
            setter(old)
