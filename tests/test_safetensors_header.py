"""Properties of the header validator on seeded random headers: repeated keys are found at every
level, its verdict agrees with the safetensors library itself, and absurd headers are refused
before they cost memory."""

from __future__ import annotations

import json
import random
import struct

import pytest
from safetensors import safe_open

from gmi_desktop.store.safetensors_header import (
    DTYPE_BITS,
    MAX_TENSORS,
    HeaderError,
    parse_header,
)

DTYPES = ["F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "I8", "F8_E4M3", "F4", "F6_E2M3"]
NAME_PARTS = ["model", "diffusion_model", "input_blocks", "0", "attn2", "to_k", "weight", "a:b", "x\"y", "é"]


def _random_entries(rng: random.Random, n: int) -> dict:
    entries, cursor = {}, 0
    for _ in range(n):
        name = ".".join(rng.choice(NAME_PARTS) for _ in range(rng.randint(1, 4))) + f".{len(entries)}"
        dtype = rng.choice(DTYPES)
        shape = [rng.randint(0, 5) for _ in range(rng.randint(0, 3))]
        bits = DTYPE_BITS[dtype]
        for d in shape:
            bits *= d
        size = bits // 8  # sub-byte dtypes with an odd count make a (rightly) invalid entry
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [cursor, cursor + size]}
        cursor += size
    return entries


def _corrupt(rng: random.Random, entries: dict) -> dict:
    """One random change that may or may not break the header."""
    if not entries:
        return entries
    name = rng.choice(list(entries))
    info = entries[name]
    kind = rng.randrange(9)
    if kind == 0:
        info["dtype"] = rng.choice(["Q4", 5, None, ["F32"]])
    elif kind == 1:
        info["shape"] = rng.choice([[-1], [True], [1.0], "3", None, [2**70]])
    elif kind == 2:
        info["data_offsets"] = rng.choice([[0], [1, 0], [0, 1, 2], None, [0.0, 4], [False, 4]])
    elif kind == 3:
        info["data_offsets"] = [info["data_offsets"][0] + 1, info["data_offsets"][1] + 1]
    elif kind == 4:
        info["data_offsets"] = [info["data_offsets"][0], info["data_offsets"][1] + rng.choice([-1, 1])]
    elif kind == 5:
        info["extra"] = {"nested": "x:y"}  # unknown keys are ignored by the library too
    elif kind == 6:
        entries[name] = rng.choice([[], "x", 3])
    elif kind == 7:
        del info["dtype"]
    # kind 8: leave it valid
    return entries


def _verdict(fn):
    try:
        return ("ok", fn())
    except HeaderError as exc:
        return ("error", exc.reason)


def _strict_has_duplicates(text: str) -> bool:
    found = []

    def hook(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            found.append(True)
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return bool(found)


def _render(rng: random.Random, value) -> str:
    """JSON text with random whitespace, random \\u escapes, optionally a repeated key somewhere."""
    if isinstance(value, dict):
        items = list(value.items())
        if items and rng.random() < 0.08:
            items.insert(rng.randrange(len(items) + 1), rng.choice(items))
        sep = rng.choice([":", " : ", ":\n"])
        return "{" + ",".join(_render(rng, k) + sep + _render(rng, v) for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_render(rng, v) for v in value) + "]"
    if isinstance(value, str) and rng.random() < 0.05:
        return '"' + "".join(f"\\u{ord(c):04x}" for c in value) + '"'
    return json.dumps(value, ensure_ascii=rng.random() < 0.5)


@pytest.mark.parametrize("seed", range(40))
def test_duplicate_keys_are_found_at_every_level(seed):
    rng = random.Random(1000 + seed)
    for _ in range(25):
        value = {"__metadata__": {"a:b": "c:d", "json": '{"x": 1}', "n": "1"}, **_random_entries(rng, rng.randint(1, 8))}
        text = _render(rng, value)
        expected = _strict_has_duplicates(text)
        got = _verdict(lambda: parse_header(text.encode(), 10**9))
        assert (got[0] == "error" and got[1].startswith("duplicate key")) == expected, (text, got)


def _library_verdict(path) -> bool:
    try:
        with safe_open(str(path), framework="numpy") as f:
            list(f.keys())
    except Exception:  # noqa: BLE001 - any refusal is a "no"
        return False
    return True


@pytest.mark.parametrize("seed", range(6))
def test_verdict_agrees_with_the_safetensors_library(tmp_path, seed):
    rng = random.Random(2000 + seed)
    for i in range(15):
        entries = _corrupt(rng, _random_entries(rng, rng.randint(1, 6)))
        raw = json.dumps(entries).encode()
        data_len = max((e["data_offsets"][1] for e in entries.values()
                        if isinstance(e, dict) and isinstance(e.get("data_offsets"), list)
                        and len(e["data_offsets"]) == 2 and isinstance(e["data_offsets"][1], int)), default=0)
        data_len = max(0, min(data_len + rng.choice([0, 0, 0, -1, 3]), 10**6))
        path = tmp_path / f"{i}.safetensors"
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * data_len)
        ours = _verdict(lambda: parse_header(raw, data_len))
        assert (ours[0] == "ok") == _library_verdict(path), (entries, data_len, ours)


def _sd_like_header(n: int = 50) -> bytes:
    entries, begin = {}, 0
    for i in range(n):
        entries[f"model.diffusion_model.block.{i}.weight"] = {"dtype": "F16", "shape": [4, 8],
                                                              "data_offsets": [begin, begin + 64]}
        begin += 64
    return json.dumps(entries).encode(), begin


def test_absurd_entry_counts_are_refused_before_objects_are_built():
    """A valid header with far more tensors than any checkpoint (1.4 million once took 6.4 s and
    1.35 GB in one probe): refused from its byte counts, in bounded memory."""
    import time
    import tracemalloc

    raw, data_len = _sd_like_header(MAX_TENSORS * 3)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(HeaderError, match=f"more than the {MAX_TENSORS} tensors"):
            parse_header(raw, data_len)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(raw) // 4, (peak, len(raw))  # no copy of the text, no parsed objects
    assert elapsed < 1.0
    # one value per comma: a shape list of millions of dimensions is refused the same way
    huge_shape = b'{"t": {"dtype": "U8", "shape": [' + b"1," * (50 * MAX_TENSORS) + b'1], "data_offsets": [0, 1]}}'
    with pytest.raises(HeaderError, match="JSON values"):
        parse_header(huge_shape, 1)


def test_a_real_sized_header_still_parses():
    raw, data_len = _sd_like_header(5000)
    assert len(parse_header(raw, data_len).tensors) == 5000
