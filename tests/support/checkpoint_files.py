"""Build real safetensors files for tests: a true header over a sparse or real data region.

``write_safetensors_header(path, {name: (dtype, shape)})`` lays the tensors out contiguously in
the given order, writes the 8-byte length and JSON header (padded with spaces to a multiple of 8
like the safetensors library) and then either truncates the file to its full length (``sparse``:
a 7 GB checkpoint costs no disk), writes zeros, or writes given bytes. Knobs corrupt the file for
bad-input tests: ``declared_len``, ``offsets`` overrides, ``truncate_to``, ``raw_header``.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}

Spec = Mapping[str, tuple[str, tuple[int, ...]]]


def layout(tensors: Spec) -> tuple[dict, int]:
    """Header entries with contiguous offsets in insertion order; returns (entries, data bytes)."""
    entries: dict = {}
    cursor = 0
    for name, (dtype, shape) in tensors.items():
        n = math.prod(shape) * DTYPE_BYTES[dtype]
        entries[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [cursor, cursor + n]}
        cursor += n
    return entries, cursor


def header_bytes(entries: Mapping, metadata: Mapping | None = None) -> bytes:
    doc = dict(entries)
    if metadata is not None:
        doc = {"__metadata__": dict(metadata), **doc}
    raw = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)


def write_safetensors_header(
    path: str | os.PathLike,
    tensors: Spec,
    metadata: Mapping | None = None,
    data: str | bytes = "sparse",
    *,
    declared_len: int | None = None,
    offsets: Mapping[str, list] | None = None,
    raw_header: bytes | None = None,
    truncate_to: int | None = None,
    extra_entries: Mapping | None = None,
) -> Path:
    """Write a safetensors file; see the module docstring. Returns the path."""
    path = Path(path)
    entries, data_len = layout(tensors)
    for name, pair in (offsets or {}).items():
        entries[name]["data_offsets"] = list(pair)
    entries.update(extra_entries or {})
    raw = raw_header if raw_header is not None else header_bytes(entries, metadata)
    length = len(raw) if declared_len is None else declared_len
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", length) + raw)
        if isinstance(data, bytes):
            f.write(data)
        elif data == "zeros":
            f.write(b"\0" * data_len)
        elif data == "sparse":
            f.truncate(8 + len(raw) + data_len)
        else:
            raise ValueError(f"data must be 'sparse', 'zeros' or bytes, not {data!r}")
        if truncate_to is not None:
            f.truncate(truncate_to)
    return path


def data_length(tensors: Spec) -> int:
    return layout(tensors)[1]
