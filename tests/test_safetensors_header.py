"""Properties of the header validator on seeded random headers: its fast paths agree with the
exact checks, and its verdict agrees with the safetensors library itself."""

from __future__ import annotations

import json
import random
import struct

import pytest
from safetensors import safe_open

from gmi_desktop.store.safetensors_header import (
    DTYPE_BITS,
    HeaderError,
    _checked_one_by_one,
    _well_formed,
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


@pytest.mark.parametrize("seed", range(40))
def test_fast_path_agrees_with_the_entry_by_entry_checks(seed):
    rng = random.Random(seed)
    for _ in range(25):
        entries = _corrupt(rng, _random_entries(rng, rng.randint(0, 12)))
        fast = _well_formed(json.loads(json.dumps(entries)))
        slow = _verdict(lambda: _checked_one_by_one(entries, {}, 10**9))
        if fast is None:  # only broken headers, or sub-byte dtypes / empty tensors (exact path)
            unusual = any(DTYPE_BITS.get(e.get("dtype"), 8) % 8 or 0 in e.get("shape", [1])
                          for e in entries.values() if isinstance(e, dict) and isinstance(e.get("dtype"), str)
                          and isinstance(e.get("shape", []), list))
            assert slow[0] == "error" or unusual, (entries, slow)
        else:
            assert slow == ("ok", fast)


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


@pytest.mark.parametrize("enabled", [True, False])
def test_parsing_pauses_the_collector_and_restores_its_state_even_on_error(enabled, monkeypatch):
    import gc

    import gmi_desktop.store.safetensors_header as module

    seen = []
    real = module._decode
    monkeypatch.setattr(module, "_decode", lambda raw: seen.append(gc.isenabled()) or real(raw))
    raw, data_len = _sd_like_header()
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        assert len(parse_header(raw, data_len).tensors) == 50
        with pytest.raises(HeaderError, match="truncated"):
            parse_header(raw, data_len - 1)
        with pytest.raises(HeaderError, match="not valid JSON"):
            parse_header(raw[:-1], data_len)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [False, False, False]


def test_the_collector_stays_paused_until_the_last_concurrent_parse_ends(monkeypatch):
    import gc
    import threading

    import gmi_desktop.store.safetensors_header as module

    raw, data_len = _sd_like_header()
    inside, release = threading.Event(), threading.Event()
    real, seen = module._decode, []

    def decode(data):
        if threading.current_thread() is threading.main_thread():
            release.set()  # the other parse, which began first, now ends while this one runs
            other.join(10)
            seen.append(gc.isenabled())  # a plain save/restore would have switched it back on
        else:
            inside.set()
            release.wait(10)
        return real(data)

    monkeypatch.setattr(module, "_decode", decode)
    assert gc.isenabled()
    other = threading.Thread(target=parse_header, args=(raw, data_len))
    other.start()
    try:
        assert inside.wait(10)
        parse_header(raw, data_len)
    finally:
        release.set()
        other.join()
    assert seen == [False] and gc.isenabled()
