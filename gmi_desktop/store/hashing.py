"""Checkpoint hashes in one streaming pass: SHA-256, AutoV2, AutoV1 and the tensor-data hash.

* ``sha256``: SHA-256 of the whole file.
* ``autov2``: the first 10 hex digits of ``sha256``; AUTOMATIC1111 writes it as "Model hash" in
  image metadata (and Civitai calls it AutoV2).
* ``autov1``: the old A1111 hash: SHA-256 of the 64 KiB window at offset 1 MiB (0x100000), first
  8 hex digits. A file shorter than the window's end is hashed over the bytes it has there, as
  A1111 did. A file of at most 1 MiB has *no* bytes in the window, so its AutoV1 is ``None``: the
  A1111 value would be the hash of nothing (``e3b0c442``) for every such file and match them all.
* ``tensor_sha256``: SHA-256 of everything after the safetensors header (offset ``8 +
  header_len``), equal for two files that differ only in ``__metadata__``. ``None`` when the caller
  gives no header length (not a safetensors file).

The file is read once with a large reused buffer (hashlib releases the GIL while hashing). A file
whose ``(st_dev, st_ino, st_size, st_mtime_ns)`` differs before and after the pass was modified
while being read: the result is discarded and the pass redone, at most ``retries`` times, then
:class:`IncompleteFile` is raised. ``cancel()`` is checked before every chunk, and every chunk is
one :class:`~gmi_desktop.core.progress.Progress` event (stage "hashing", bytes done and total).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Generator
from dataclasses import dataclass
from typing import NamedTuple

from gmi_desktop.core.errors import IncompleteFile
from gmi_desktop.core.progress import CancelFn, Progress, ProgressSink, check_cancel, run

CHUNK_SIZE = 16 * 1024 * 1024
AUTOV1_OFFSET = 0x100000
AUTOV1_LENGTH = 0x10000



class StatKey(NamedTuple):
    """The identity of one version of a file (a tuple: equal to a plain 4-tuple of the same ints)."""

    device: int
    inode: int
    size: int
    mtime_ns: int


def stat_key(st: os.stat_result) -> StatKey:
    """The identity of one version of a file: device, inode, size and mtime in nanoseconds."""
    return StatKey(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class FileHashes:
    sha256: str
    autov1: str | None
    tensor_sha256: str | None
    size: int
    key: StatKey

    @property
    def autov2(self) -> str:
        return self.sha256[:10]


def autov2_of(sha256: str) -> str:
    return sha256[:10].lower()


def hash_file(
    path: str | os.PathLike[str],
    *,
    tensor_offset: int | None = None,
    cancel: CancelFn | None = None,
    progress: ProgressSink | None = None,
    retries: int = 2,
    chunk_size: int = CHUNK_SIZE,
) -> FileHashes:
    """Hash ``path`` (see the module docstring). Raises OSError when the file cannot be read,
    :class:`Cancelled` when ``cancel()`` turns true and :class:`IncompleteFile` when the file
    keeps changing under us. ``progress`` gets the event of every chunk."""
    return run(iter_hash_file(path, tensor_offset=tensor_offset, cancel=cancel, retries=retries,
                              chunk_size=chunk_size), progress)


def iter_hash_file(
    path: str | os.PathLike[str],
    *,
    tensor_offset: int | None = None,
    cancel: CancelFn | None = None,
    retries: int = 2,
    chunk_size: int = CHUNK_SIZE,
) -> Generator[Progress, None, FileHashes]:
    """:func:`hash_file` as a generator: yields a :class:`Progress` (``bytes_done`` of
    ``bytes_total``) after every chunk (a pause/cancel point for a worker) and returns the
    :class:`FileHashes`."""
    buffer = bytearray(chunk_size)
    for _attempt in range(retries + 1):
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read forever
            raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
        before = stat_key(st)
        result = yield from _one_pass(path, before, tensor_offset, cancel, buffer)
        after = stat_key(os.stat(path))
        if result is not None and after == before:
            return result
    raise IncompleteFile(path, "the file kept changing while it was being hashed")


def _one_pass(path, before: StatKey, tensor_offset, cancel, buffer: bytearray):
    view = memoryview(buffer)
    full = hashlib.sha256()
    tensors = hashlib.sha256() if tensor_offset is not None else None
    window = bytearray()
    total = before[2]
    done = 0
    # O_NONBLOCK: a FIFO swapped in after the stat must not block the open (no effect on files)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with open(fd, "rb", buffering=0) as handle:
        if stat_key(os.fstat(handle.fileno())) != before:
            return None  # replaced between stat and open
        while True:
            check_cancel(cancel, f"hashing {os.fspath(path)} was cancelled")
            count = handle.readinto(view[: min(len(buffer), total - done)]) if done < total else 0
            if not count:
                break
            chunk = view[:count]
            full.update(chunk)
            end = done + count
            if tensors is not None and end > tensor_offset:
                tensors.update(chunk[max(0, tensor_offset - done):])
            if end > AUTOV1_OFFSET and done < AUTOV1_OFFSET + AUTOV1_LENGTH:
                lo = max(AUTOV1_OFFSET, done) - done
                hi = min(AUTOV1_OFFSET + AUTOV1_LENGTH, end) - done
                window += chunk[lo:hi]
            done = end
            yield Progress("hashing", item=os.fspath(path), bytes_done=done, bytes_total=total)
    if done != total:
        return None  # shrank while we read (growth shows in the stat after the pass)
    autov1 = hashlib.sha256(window).hexdigest()[:8] if window else None
    tensor_hex = tensors.hexdigest() if tensors is not None and total >= tensor_offset else None
    return FileHashes(full.hexdigest(), autov1, tensor_hex, total, before)
