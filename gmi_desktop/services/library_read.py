"""Reading the files a scan found new or changed: the header probe, the sidecars, and whether the
file may still be being written.

Parsing and checking a checkpoint header (~1 100 keys for SD 1.5) is pure-Python work, so a cold
scan of a large library is CPU-bound: past ``parallel_min`` files it is spread over worker
processes (``spawn``: safe beside Qt and watchdog threads; workers import only the store). Results
come back in order. Injected readers (tests' counting wrappers) always run in-process. As with any
``spawn`` pool, a script that scans must keep its top-level code under ``if __name__ == "__main__"``.

Bounds: a worker ends with the process that started it, however that one ends (``kill -9``
included), so nothing is left holding the scan's stdout; a header longer than
``WORKER_HEADER_BYTES`` is parsed by the scanning process itself, one at a time, so the peak memory
of a scan does not grow with the number of workers whatever the files hold.

**Still being written.** Some download managers write the full size first and the data later
(aria2, used by many model downloaders, preallocates and keeps ``<file>.aria2`` beside the
download). Such a file has a valid header and the right size long before it is complete. A file is
held ``incomplete`` (never hashed, read again by every scan) while a known in-progress marker lies
beside it, or while the last bytes of its data region are still zeros where the header says
tensors are. A file modified within ``SETTLE_S`` is checked again after it was hashed, before its
hash is trusted.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from gmi_desktop.core.checkpoint_kinds import Status
from gmi_desktop.services.library_walk import IN_PROGRESS_MARKERS, Candidate
from gmi_desktop.store.catalog import FileFacts
from gmi_desktop.store.hashing import StatKey
from gmi_desktop.store.probe import ProbeResult, probe
from gmi_desktop.store.sidecars import SidecarInfo, read_sidecars

# Probe statuses for which the sidecars are worth reading (a model, usable or not).
WITH_SIDECARS = frozenset({Status.OK, Status.UNSUPPORTED, Status.INCOMPLETE, Status.INVALID})
STILL_WRITTEN = "still being written: "  # reason prefix of a file read again by every scan
TAIL_BYTES = 64 * 1024  # the end of the data region that must not be all zeros
SETTLE_S = 10.0  # a file modified more recently than this is checked again after hashing
WORKER_HEADER_BYTES = 8 * 1024 * 1024  # longer headers are parsed in the scanning process, one at a time
CHANGED_WHILE_READ = "the file changed while it was being read (still being copied?)"
VANISHED = "vanished before it could be read"
Read = tuple[ProbeResult, SidecarInfo | None, str | None]


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def still_written(path: Path, header_len: int, size: int) -> str | None:
    """Why ``path`` (a safetensors file of ``size`` bytes whose data starts at ``header_len``) may
    still be being written, or ``None``."""
    for marker in IN_PROGRESS_MARKERS:
        if os.path.lexists(f"{os.fspath(path)}{marker}"):
            return f"{STILL_WRITTEN}download in progress ({path.name}{marker} beside it)"
    tail = min(TAIL_BYTES, size - header_len)
    if tail <= 0:
        return None
    try:
        with open(path, "rb") as handle:
            handle.seek(size - tail)
            end = handle.read(tail)
    except OSError:
        return None  # the probe or the hash reports what is wrong with reading it
    if len(end) == tail and not end.strip(b"\0"):
        return (f"{STILL_WRITTEN}its last {tail // 1024} KiB of tensor data are zeros, as in a download "
                "that reserved the space and has not written it yet (if nothing is downloading it, "
                "the file is damaged: re-download it)")
    return None


def recently_modified(key: StatKey, now: float | None = None) -> bool:
    return (time.time() if now is None else now) - key.mtime_ns / 1e9 < SETTLE_S


def read_one(path: Path, probe_fn: Callable[[Path], ProbeResult] = probe,
             sidecars_fn: Callable[..., Any] = read_sidecars, max_header: int | None = None) -> Read | None:
    """Probe, sidecars and the still-written check of one file; ``None`` (only with
    ``max_header``) when its header is longer than that: read it in the scanning process."""
    if max_header is not None and _declared_header(path) > max_header:
        return None
    result = probe_fn(path)
    info = sidecars_fn(path, dict(result.metadata)) if result.status in WITH_SIDECARS else None
    writing = None
    if result.ok and result.file_format == "safetensors":
        writing = still_written(path, result.header_len, result.size)
    return result, info, writing


def _declared_header(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return int.from_bytes(handle.read(8).ljust(8, b"\0"), "little")
    except OSError:
        return 0  # the probe reports it


def _init_worker() -> None:
    """Worker initializer. A scan worker only parses headers and reads sidecars, which build many
    small objects and no reference cycles: the cyclic garbage collector is off for its whole life
    (it doubled the time of a header parse). Then: end with the parent (:func:`_die_with_parent`)."""
    gc.disable()
    _die_with_parent()


def _die_with_parent() -> None:
    """End this worker as soon as the process that started it ends, however it ends.
    ``parent_process()`` waits on a pipe only the parent holds open; a kill closes it."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="gmi-scan-parent-watch", daemon=True).start()


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
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker)
    try:
        chunk = max(1, min(32, len(paths) // (workers * 4)))
        for path, read in zip(paths, pool.map(_read_bounded, paths, chunksize=chunk)):
            yield read if read is not None else read_one(path)
            done += 1
    except (BrokenProcessPool, OSError):
        pass  # a worker died or none could start: read the rest here, slower but complete
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for path in paths[done:]:
        yield read_one(path)


def _read_bounded(path: Path) -> Read | None:
    return read_one(path, max_header=WORKER_HEADER_BYTES)


def facts_from(candidate: Candidate, read: Read) -> FileFacts | None:
    """Catalog facts from a read; ``None`` when the file vanished before being read."""
    result, info, writing = read
    path, key = candidate.path, candidate.key
    if result.unreadable:
        if not os.path.lexists(path):
            return None
        return FileFacts(path, key, Status.SKIPPED, result.reason, kind=result.kind)
    if not candidate.is_folder and result.key != key:
        # Changed between listing and reading: still being written. Keep the listing key so the
        # next scan sees a different key and reads it again.
        return FileFacts(path, key, Status.INCOMPLETE, CHANGED_WHILE_READ, file_format=result.file_format)
    status, reason = (Status.INCOMPLETE, writing) if writing else (result.status, result.reason)
    return FileFacts(
        path=path, key=key, status=status, reason=reason, file_format=result.file_format,
        family=result.family, variant=result.variant, kind=result.kind,
        display_name=info.display_name if info else None,
        base_model=info.base_model if info else None, download_count=info.download_count if info else None,
        preview_path=os.fspath(info.preview_path) if info and info.preview_path else None,
        metadata=dict(result.metadata), header_len=result.header_len, tensor_count=result.tensor_count,
        sidecar_sig=candidate.sidecars,
    )
