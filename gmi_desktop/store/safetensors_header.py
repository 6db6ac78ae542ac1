"""Parse and validate a safetensors JSON header as strictly as the safetensors library does.

The header is ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str:
str}}``; offsets are relative to the start of the tensor data, must tile it without gaps or
overlaps, and each span must be exactly ``prod(shape) * bits(dtype) / 8`` bytes. Anything else is
a :class:`HeaderError` with a reason a user can read; ``incomplete`` marks the one case that is
not damage but a short file (the data region ends before the last tensor).
"""

from __future__ import annotations

import gc
import json
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter, mul, sub

# bits per element, the dtype names of safetensors 0.8
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
_WHOLE_BYTES = {name: bits // 8 for name, bits in DTYPE_BITS.items() if bits % 8 == 0}
MAX_REPORTED = 3  # problems named in one reason before "and N more"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # as the safetensors library: a longer header is refused unread

Table = dict[str, tuple[str, tuple[int, ...]]]


class HeaderError(Exception):
    """The header is unusable. ``tensors`` holds the table when names and shapes parsed."""

    def __init__(self, reason: str, *, incomplete: bool = False, tensors: Table | None = None,
                 metadata: dict[str, str] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.incomplete = incomplete
        self.tensors = tensors
        self.metadata = metadata or {}

    @property
    def tensor_count(self) -> int:
        return len(self.tensors or {})


@dataclass(frozen=True)
class Header:
    tensors: Table
    metadata: dict[str, str]
    data_len: int  # bytes of tensor data the header declares
    problems: tuple[str, ...] = field(default=())  # non-fatal findings that still make it unloadable


class _Duplicate(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return out


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str, hook=None) -> object:
    try:
        return json.loads(text, object_pairs_hook=hook, parse_constant=_reject_constant)
    except _Duplicate as exc:
        raise HeaderError(f"duplicate key {exc.key!r} in header") from None
    except json.JSONDecodeError as exc:
        raise HeaderError(f"header is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise HeaderError(f"header is not valid JSON: {exc}") from None


def _surely_no_duplicates(text: str, value: dict) -> bool:
    """Cheap proof that no object in the header repeats a key, else ``False`` (then look closer).

    Each key in the parsed objects owns one ``:`` of the text; the only other colons sit inside
    strings. Counting the keys of the two levels a header has, plus the colons inside their
    strings, gives at most the colons of the text, and exactly that only when nothing was dropped
    by a repeated key (and nothing is hidden in deeper levels or ``\\u`` escapes, which we do not
    count and so send to the exact check).
    """
    if "\\" in text and "\\u" in text:  # one-byte memchr first: the pair search is 20x slower
        return False
    if set(map(type, value.values())) - {dict}:  # an entry that is not an object: exact parse
        return False
    keys = len(value) + sum(map(len, value.values()))
    meta = value.get("__metadata__")
    inside = "".join(value)
    if isinstance(meta, dict):
        inside += "".join(meta) + "".join(v for v in meta.values() if isinstance(v, str))
    return text.count(":") == keys + inside.count(":")


def _decode(raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HeaderError(f"header is not valid UTF-8 (byte {exc.start + 8} of the file)") from None
    value = _loads(text)
    if not isinstance(value, dict):
        raise HeaderError(f"header is a JSON {_json_type(value)}, not an object")
    if not _surely_no_duplicates(text, value):
        value = _loads(text, _no_duplicates)  # exact: names the repeated key, or finds none
    return value


def _counts(value: object) -> bool:
    """A JSON array of non-negative integers (``type is int`` keeps booleans out)."""
    if type(value) is not list:
        return False
    for item in value:
        if type(item) is not int or item < 0:
            return False
    return True


def _metadata(value: object) -> tuple[dict[str, str], list[str]]:
    if value is None:
        return {}, []
    if not isinstance(value, dict):
        raise HeaderError(f"__metadata__ is a JSON {_json_type(value)}, not an object of strings")
    kept = {k: v for k, v in value.items() if isinstance(v, str)}
    odd = sorted(k for k, v in value.items() if not isinstance(v, str))
    if not odd:
        return kept, []
    named = ", ".join(f"{k!r} ({_json_type(value[k])})" for k in odd[:MAX_REPORTED])
    more = f" and {len(odd) - MAX_REPORTED} more" if len(odd) > MAX_REPORTED else ""
    return kept, [f"__metadata__ has non-string values: {named}{more}; safetensors requires strings"]


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _entry(name: str, info: object) -> tuple[str, tuple[int, ...], int, int]:
    """One tensor entry -> (dtype, shape, begin, end); HeaderError when malformed."""
    if not isinstance(info, dict):
        raise HeaderError(f"tensor {name!r}: entry is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str):
        raise HeaderError(f"tensor {name!r}: missing dtype")
    if dtype not in DTYPE_BITS:
        raise HeaderError(f"tensor {name!r}: unknown dtype {dtype!r}")
    if not _counts(shape):
        raise HeaderError(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
    if not (_counts(offsets) and len(offsets) == 2):
        raise HeaderError(f"tensor {name!r}: data_offsets {offsets!r} are not two non-negative integers")
    begin, end = offsets
    if end < begin:
        raise HeaderError(f"tensor {name!r}: data_offsets [{begin}, {end}] out of range (end before begin)")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8:
        raise HeaderError(f"tensor {name!r}: {dtype} shape {shape} does not fill whole bytes")
    if end - begin != bits // 8:
        raise HeaderError(
            f"tensor {name!r}: shape {shape} of {dtype} needs {bits // 8} bytes "
            f"but data_offsets [{begin}, {end}] span {end - begin}"
        )
    return dtype, tuple(shape), begin, end


def _dtype_and_shape(info: object) -> tuple[str, tuple[int, ...]] | None:
    if not isinstance(info, dict):
        return None
    dtype, shape = info.get("dtype"), info.get("shape")
    if isinstance(dtype, str) and _counts(shape):
        return dtype, tuple(shape)
    return None


def _check_layout(spans: list[tuple[int, int, str]], data_len: int) -> int:
    """Offsets must tile ``[0, total)``; returns ``total``. ``data_len`` = bytes present on disk."""
    spans.sort()
    cursor = 0
    for begin, end, name in spans:
        if begin != cursor:
            if begin > cursor and begin >= data_len > cursor:
                raise HeaderError(
                    f"tensor {name!r}: data_offsets [{begin}, {end}] out of range: the tensor data "
                    f"is {data_len} bytes and the previous tensor ends at {cursor}"
                )
            what = "gap" if begin > cursor else "overlap"
            raise HeaderError(
                f"tensor {name!r}: data_offsets start at {begin} but the previous tensor ends at "
                f"{cursor} ({what} of {abs(begin - cursor)} bytes)"
            )
        cursor = end
    return cursor


_DTYPE, _SHAPE, _OFFSETS = itemgetter("dtype"), itemgetter("shape"), itemgetter("data_offsets")


def _well_formed(entries: dict) -> tuple[Table, int] | None:
    """The tensor table and data length when every entry is well formed and the spans tile the
    data, checked column-wise with C-level builtins; ``None`` sends the header to the
    entry-by-entry checks that name what is wrong.

    Tiling without sorting the spans: with every span non-empty, sorted begins equal to
    ``[0] + sorted ends[:-1]`` means the spans chain from 0 to the last end with nothing
    repeated or skipped (each span is an edge begin -> end going strictly forward).
    """
    infos = list(entries.values())
    if set(map(type, infos)) - {dict}:
        return None
    try:
        dtypes = list(map(_DTYPE, infos))
        shapes = list(map(_SHAPE, infos))
        offsets = list(map(_OFFSETS, infos))
        if not set(dtypes) <= _WHOLE_BYTES.keys():  # unknown and sub-byte dtypes: one by one
            return None
    except (KeyError, TypeError):  # a missing field, an unhashable dtype
        return None
    if set(map(type, shapes)) - {list} or set(map(type, offsets)) - {list} or set(map(len, offsets)) - {2}:
        return None
    numbers = list(chain(chain.from_iterable(offsets), chain.from_iterable(shapes)))
    if set(map(type, numbers)) - {int} or min(numbers, default=0) < 0:
        return None
    begins, ends = numbers[0:2 * len(offsets):2], numbers[1:2 * len(offsets):2]
    nbytes = list(map(mul, map(math.prod, shapes), map(_WHOLE_BYTES.__getitem__, dtypes)))
    if nbytes != list(map(sub, ends, begins)) or (nbytes and min(nbytes) == 0):
        return None  # wrong sizes, end < begin; empty tensors take the exact path
    begins.sort()
    ends.sort()
    if begins and (begins[0] != 0 or begins[1:] != ends[:-1]):
        return None
    return dict(zip(entries, zip(dtypes, map(tuple, shapes)))), (ends[-1] if ends else 0)


def _checked_one_by_one(entries: dict, metadata: dict[str, str], data_len: int) -> tuple[Table, int]:
    """Entry-by-entry validation that names the first problem; returns (table, data bytes)."""
    tensors: Table = {}
    spans: list[tuple[int, int, str]] = []
    first_error: HeaderError | None = None
    for name, info in entries.items():
        try:
            dtype, shape, begin, end = _entry(name, info)
        except HeaderError as exc:
            first_error = first_error or exc
            known = _dtype_and_shape(info)
            if known is not None:  # still tells the classifier what the file is
                tensors[name] = known
            continue
        tensors[name] = (dtype, shape)
        spans.append((begin, end, name))
    try:
        if first_error is not None:
            raise first_error
        return tensors, _check_layout(spans, data_len)
    except HeaderError as exc:
        exc.tensors, exc.metadata = tensors, metadata
        raise


_gc_lock = threading.Lock()
_gc_pauses = 0  # threads inside _gc_paused(); the first one in records the state, the last one out restores it
_gc_was_enabled = False


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block; the previous state comes back after it.

    A header parse allocates thousands of dicts and lists (one per tensor entry). Each 700
    allocations trigger a young collection, and their survivors soon a full one, which walks every
    object of the process: in an application that has imported torch that is 10^5-10^6 objects,
    and the collector, not the parser, becomes the larger share of a probe. Nothing the parse makes
    can form a cycle (JSON is a tree; the table is dicts of tuples), so reference counting frees
    all of it and pausing the collector loses nothing. A depth count keeps the collector paused
    until the last of several concurrent parses (threads) ends, and the state from before the
    first comes back (a collector the application had turned off stays off).
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


def parse_header(raw: bytes, data_len: int) -> Header:
    """Validate header bytes ``raw``; ``data_len`` is the size of the file after the header."""
    with _gc_paused():
        header = _parse(raw, data_len)  # the parsed JSON is freed before the collector is back
    return _with_coverage(header, data_len)


def _parse(raw: bytes, data_len: int) -> Header:
    value = _decode(raw)
    metadata, problems = _metadata(value.pop("__metadata__", None))
    fast = _well_formed(value)
    if fast is not None:
        tensors, total = fast
    else:
        tensors, total = _checked_one_by_one(value, metadata, data_len)
    return Header(tensors, metadata, total, tuple(problems))


def _with_coverage(header: Header, data_len: int) -> Header:
    """The tensors must cover the data region exactly: less data is a cut-off file."""
    total = header.data_len
    if total > data_len:
        raise HeaderError(
            f"file is truncated: tensor data should be {total} bytes but only {data_len} are present "
            "(still being copied, or an interrupted download)",
            incomplete=True, tensors=header.tensors, metadata=header.metadata,
        )
    if total < data_len:
        raise HeaderError(
            f"{data_len - total} unexpected bytes after the last tensor; the file is not valid safetensors",
            tensors=header.tensors, metadata=header.metadata,
        )
    return header
