"""Reading the files a scan found new or changed: the header probe plus the sidecars.

Parsing and checking a checkpoint header (~1 100 keys for SD 1.5) is pure-Python work, so a cold
scan of a large library is CPU-bound: past ``parallel_min`` files it is spread over worker
processes (``spawn``: safe beside Qt and watchdog threads; workers import only the store). Results
come back in order. Injected readers (tests' counting wrappers) always run in-process. As with any
``spawn`` pool, a script that scans must keep its top-level code under ``if __name__ == "__main__"``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from gmi_desktop.store.probe import ProbeResult, probe
from gmi_desktop.store.sidecars import SidecarInfo, read_sidecars

# Probe statuses for which the sidecars are worth reading (a model, usable or not).
WITH_SIDECARS = frozenset({"ok", "unsupported", "incomplete", "invalid"})
Read = tuple[ProbeResult, SidecarInfo | None]


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def read_one(path: Path, probe_fn: Callable[[Path], ProbeResult] = probe,
             sidecars_fn: Callable[..., Any] = read_sidecars) -> Read:
    result = probe_fn(path)
    info = sidecars_fn(path, dict(result.metadata)) if result.status in WITH_SIDECARS else None
    return result, info


def read_many(paths: Sequence[Path], *, probe_fn: Callable[[Path], ProbeResult] = probe,
              sidecars_fn: Callable[..., Any] = read_sidecars, workers: int = 1,
              parallel_min: int = 200) -> Iterator[Read]:
    """``read_one`` for each path, in order; in ``workers`` processes when that pays off. If a
    worker dies (killed, out of memory) the remaining paths are read in this process."""
    parallel = (workers > 1 and len(paths) >= parallel_min
                and probe_fn is probe and sidecars_fn is read_sidecars)
    if not parallel:
        for path in paths:
            yield read_one(path, probe_fn, sidecars_fn)
        return
    done = 0
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    try:
        chunk = max(1, min(32, len(paths) // (workers * 4)))
        for read in pool.map(read_one, paths, chunksize=chunk):
            yield read
            done += 1
    except (BrokenProcessPool, OSError):
        pass  # a worker died or none could start: read the rest here, slower but complete
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for path in paths[done:]:
        yield read_one(path)
