"""Parse and validate a safetensors JSON header as strictly as the safetensors library does.

The header is ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str:
str}}``; offsets are relative to the start of the tensor data, must tile it without gaps or
overlaps, and each span must be exactly ``prod(shape) * bits(dtype) / 8`` bytes. Anything else is
a :class:`HeaderError` with a reason a user can read; ``incomplete`` marks the one case that is
not damage but a short file (the data region ends before the last tensor).

One path: the JSON is parsed with a hook that refuses repeated keys (the library silently keeps
the last), then every entry is checked in turn. Before any of that, a header that would build an
absurd number of objects (no checkpoint has more than a few thousand tensors) is refused from a
count of its bytes, so a hostile header cannot cost a probe gigabytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# bits per element, the dtype names of safetensors 0.8
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
MAX_REPORTED = 3  # problems named in one reason before "and N more"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # as the safetensors library: a longer header is refused unread
# SDXL has 2 514 tensors, a checkpoint with EMA weights about twice that. Each tensor is one JSON
# object with two arrays and ~6 numbers; these caps leave ample room and bound a parse's memory.
MAX_TENSORS = 50_000
MAX_COMMAS = 40 * MAX_TENSORS  # JSON values (and commas inside metadata strings)

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


def _refuse_absurd(raw: bytes) -> None:
    """Refuse, before parsing, a header that would build more objects than any checkpoint has.

    Every tensor entry needs one ``{`` and every JSON value past the first of its container one
    ``,``; braces and commas inside strings only make the counts larger, never smaller."""
    objects = raw.count(b"{")
    if objects > MAX_TENSORS + 2:
        raise HeaderError(f"header holds {objects} JSON objects, more than the {MAX_TENSORS} tensors "
                          "any checkpoint has; refused unparsed")
    commas = raw.count(b",")
    if commas > MAX_COMMAS:
        raise HeaderError(f"header holds {commas} JSON values, far more than a checkpoint's "
                          f"{MAX_TENSORS} tensors need; refused unparsed")


def _decode(raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HeaderError(f"header is not valid UTF-8 (byte {exc.start + 8} of the file)") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except _Duplicate as exc:
        raise HeaderError(f"duplicate key {exc.key!r} in header") from None
    except json.JSONDecodeError as exc:
        raise HeaderError(f"header is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError) as exc:
        raise HeaderError(f"header is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HeaderError(f"header is a JSON {_json_type(value)}, not an object")
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
    """One tensor entry -> (dtype, shape, begin, end); HeaderError when malformed.

    It runs once per tensor of every header scanned, so the checks are inlined (each a type test
    or a comparison) rather than spread over helpers."""
    if type(info) is not dict:
        raise HeaderError(f"tensor {name!r}: entry is not an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if type(dtype) is not str:
        raise HeaderError(f"tensor {name!r}: missing dtype")
    bits = DTYPE_BITS.get(dtype)
    if bits is None:
        raise HeaderError(f"tensor {name!r}: unknown dtype {dtype!r}")
    if type(shape) is not list:
        raise HeaderError(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
    for size in shape:  # ``type is int`` keeps booleans out
        if type(size) is not int or size < 0:
            raise HeaderError(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
        bits *= size
    if (type(offsets) is not list or len(offsets) != 2 or type(offsets[0]) is not int
            or type(offsets[1]) is not int or offsets[0] < 0 or offsets[1] < 0):
        raise HeaderError(f"tensor {name!r}: data_offsets {offsets!r} are not two non-negative integers")
    begin, end = offsets
    if end < begin:
        raise HeaderError(f"tensor {name!r}: data_offsets [{begin}, {end}] out of range (end before begin)")
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


def _table(entries: dict, metadata: dict[str, str], data_len: int) -> tuple[Table, int]:
    """Every entry checked in turn, then the layout; names the first problem. Returns (table,
    data bytes). A failing header still hands out the names and shapes it could read, which tell
    the classifier what the damaged file was."""
    tensors: Table = {}
    spans: list[tuple[int, int, str]] = []
    first_error: HeaderError | None = None
    for name, info in entries.items():
        try:
            dtype, shape, begin, end = _entry(name, info)
        except HeaderError as exc:
            first_error = first_error or exc
            known = _dtype_and_shape(info)
            if known is not None:
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


def parse_header(raw: bytes, data_len: int) -> Header:
    """Validate header bytes ``raw``; ``data_len`` is the size of the file after the header."""
    _refuse_absurd(raw)
    value = _decode(raw)
    metadata, problems = _metadata(value.pop("__metadata__", None))
    tensors, total = _table(value, metadata, data_len)
    if total > data_len:
        raise HeaderError(
            f"file is truncated: tensor data should be {total} bytes but only {data_len} are present "
            "(still being copied, or an interrupted download)",
            incomplete=True, tensors=tensors, metadata=metadata,
        )
    if total < data_len:
        raise HeaderError(
            f"{data_len - total} unexpected bytes after the last tensor; the file is not valid safetensors",
            tensors=tensors, metadata=metadata,
        )
    return Header(tensors, metadata, total, tuple(problems))
