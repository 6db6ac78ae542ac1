"""Hash values against hashlib on known bytes; modification while hashing; cancellation."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from gmi_desktop.core.errors import Cancelled, IncompleteFile
from gmi_desktop.store.hashing import AUTOV1_LENGTH, AUTOV1_OFFSET, hash_file, stat_key


def _random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.mark.parametrize("chunk_size", [4096, 100_003, 16 * 1024 * 1024])
def test_hashes_of_a_file_larger_than_the_autov1_window(tmp_path, chunk_size):
    data = _random_bytes(AUTOV1_OFFSET + AUTOV1_LENGTH + 12_345, seed=1)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    tensor_offset = 8 + 1000
    got = hash_file(path, tensor_offset=tensor_offset, chunk_size=chunk_size)
    full = hashlib.sha256(data).hexdigest()
    assert got.sha256 == full
    assert got.autov2 == full[:10]
    window = data[0x100000 : 0x100000 + 0x10000]
    assert len(window) == 65536
    assert got.autov1 == hashlib.sha256(window).hexdigest()[:8]
    assert got.tensor_sha256 == hashlib.sha256(data[tensor_offset:]).hexdigest()
    assert got.size == len(data)
    assert got.key == stat_key(os.stat(path))


def test_autov1_of_a_file_ending_inside_the_window_hashes_what_is_there(tmp_path):
    data = _random_bytes(AUTOV1_OFFSET + 100, seed=2)
    path = tmp_path / "short.safetensors"
    path.write_bytes(data)
    got = hash_file(path, chunk_size=65536)
    assert got.autov1 == hashlib.sha256(data[AUTOV1_OFFSET:]).hexdigest()[:8]
    assert got.tensor_sha256 is None  # no header length given


@pytest.mark.parametrize("size", [0, 10, AUTOV1_OFFSET])
def test_a_file_of_at_most_one_mib_has_no_autov1(tmp_path, size):
    data = _random_bytes(size, seed=3)
    path = tmp_path / "small.bin"
    path.write_bytes(data)
    got = hash_file(path, tensor_offset=8)
    assert got.autov1 is None
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    expected_tensor = hashlib.sha256(data[8:]).hexdigest() if size >= 8 else None
    assert got.tensor_sha256 == expected_tensor


def test_two_files_differing_only_in_metadata_share_the_tensor_hash(tmp_path):
    payload = _random_bytes(50_000, seed=4)
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"H" * 108 + payload)
    b.write_bytes(b"J" * 108 + payload)
    ha, hb = hash_file(a, tensor_offset=108), hash_file(b, tensor_offset=108)
    assert ha.sha256 != hb.sha256
    assert ha.tensor_sha256 == hb.tensor_sha256


def test_a_file_modified_while_hashed_is_hashed_again(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(_random_bytes(300_000, seed=5))
    final = _random_bytes(300_000, seed=6)
    calls = {"n": 0}

    def meddle(event):
        calls["n"] += 1
        if calls["n"] == 1:  # first chunk of the first pass: rewrite the file, same size
            with open(path, "r+b") as handle:
                handle.write(final)
            st = os.stat(path)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))

    got = hash_file(path, chunk_size=65536, progress=meddle)
    assert got.sha256 == hashlib.sha256(final).hexdigest()
    assert calls["n"] > 300_000 // 65536 + 1  # the first pass was thrown away


def test_a_file_that_keeps_growing_ends_incomplete(tmp_path):
    path = tmp_path / "growing.safetensors"
    path.write_bytes(b"x" * 100_000)

    def grow(event):
        with open(path, "ab") as handle:
            handle.write(b"y")

    with pytest.raises(IncompleteFile) as info:
        hash_file(path, chunk_size=65536, progress=grow, retries=2)
    assert info.value.path == path


def test_cancel_raises_cancelled(tmp_path):
    path = tmp_path / "c.safetensors"
    path.write_bytes(_random_bytes(200_000, seed=7))
    seen = []
    with pytest.raises(Cancelled):
        hash_file(path, chunk_size=65536, cancel=lambda: len(seen) >= 1, progress=lambda e: seen.append(e.bytes_done))
    assert seen == [65536]


def test_missing_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        hash_file(tmp_path / "nope.safetensors")


def _hash_in_thread(path, **kw):
    """hash_file in a thread; if it blocks (a FIFO without a writer), a writer is attached to free
    it so the test fails instead of hanging."""
    import threading

    outcome: dict = {}

    def target():
        try:
            outcome["value"] = hash_file(path, **kw)
        except (OSError, IncompleteFile) as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(5)
    blocked = thread.is_alive()
    if blocked:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
    return blocked, outcome


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    blocked, outcome = _hash_in_thread(fifo)
    assert not blocked
    assert isinstance(outcome.get("error"), OSError) and "not a regular file" in str(outcome["error"])


def test_a_file_swapped_for_a_fifo_after_its_stat_does_not_block(tmp_path, monkeypatch):
    """The race the probe guards against too: the path is a regular file when stat'ed and a FIFO
    when opened. The open must not block; the changed identity means the file is not hashed."""
    from gmi_desktop.store import hashing

    regular = tmp_path / "model.safetensors"
    regular.write_bytes(b"x" * 100)
    fifo = tmp_path / "swapped.safetensors"
    os.mkfifo(fifo)
    real_stat = os.stat
    monkeypatch.setattr(hashing.os, "stat", lambda p, *a, **k: real_stat(regular if p == fifo else p, *a, **k))
    blocked, outcome = _hash_in_thread(fifo, retries=0)
    assert not blocked
    assert isinstance(outcome.get("error"), IncompleteFile)
