"""Checked safetensors files: tensors + string metadata + a SHA-256 over both.

safetensors itself validates the header layout but has no checksum, so a flipped byte inside a
tensor goes unnoticed. Every file we write carries ``gmi.sha256``: the digest of the metadata
(canonical JSON, without the digest) and of every tensor (name, dtype, shape, raw bytes, in name
order). :func:`read_checked` recomputes it, so any corruption is reported, never loaded.

Reading never raises anything but the ``error`` class it is given (a UserInputError subclass
taking ``(path, reason)``).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np

from gmi_desktop.core.errors import UserInputError
from gmi_desktop.store.safetensors_header import MAX_HEADER_BYTES, HeaderError, parse_header

DIGEST_KEY = "gmi.sha256"


def content_digest(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    h = hashlib.sha256()
    meta = {k: v for k, v in metadata.items() if k != DIGEST_KEY}
    h.update(json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        h.update(f"\n{name}|{array.dtype.str}|{array.shape}\n".encode())
        h.update(array.tobytes())
    return h.hexdigest()


_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}


def checked_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """Serialise to safetensors bytes with the digest added to the metadata.

    The layout is written here rather than by ``safetensors.numpy.save`` because that orders the
    metadata arbitrarily: the same specification must give the same bytes (reproducible specs,
    shareable packs that hash the same). Keys are sorted, tensors laid out in name order,
    little-endian, the header padded with spaces to a multiple of 8 as the format recommends.
    """
    meta = dict(metadata)
    meta[DIGEST_KEY] = content_digest(tensors, meta)
    header: dict[str, object] = {"__metadata__": dict(sorted(meta.items()))}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        code = _DTYPES.get(array.dtype.name)
        if code is None:
            raise TypeError(f"tensor {name!r}: dtype {array.dtype} cannot be stored")
        blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def read_checked(path: str | os.PathLike[str], error: type[UserInputError]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Tensors and metadata of a checked file, or ``error(path, reason)``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(path, f"cannot read the file: {exc.strerror or exc}") from exc
    if not data:
        raise error(path, "the file is empty")
    metadata = _header_metadata(path, data, error)
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, TypeError) as exc:
        raise error(path, f"not a valid safetensors file: {exc}") from exc
    stored = metadata.get(DIGEST_KEY)
    if stored is None:
        raise error(path, "no checksum in the metadata (not written by gmi-desktop)")
    if content_digest(tensors, metadata) != stored:
        raise error(path, "checksum mismatch: the file is corrupted")
    return tensors, metadata


def _header_metadata(path: Path, data: bytes, error: type[UserInputError]) -> dict[str, str]:
    """The string metadata, after the header passed the same validation as every probed file."""
    if len(data) < 8:
        raise error(path, f"truncated: {len(data)} bytes is shorter than a safetensors header")
    length = int.from_bytes(data[:8], "little")
    if length > min(MAX_HEADER_BYTES, len(data) - 8):
        raise error(path, "not a safetensors file or truncated (header length exceeds the file)")
    try:
        header = parse_header(data[8:8 + length], len(data) - 8 - length)
    except HeaderError as exc:
        raise error(path, f"not a valid safetensors file: {exc.reason}") from None
    if header.problems:
        raise error(path, "; ".join(header.problems))
    return header.metadata


def json_field(path: Path, metadata: dict[str, str], key: str, error: type[UserInputError]):
    """Decode one JSON-valued metadata entry, or ``error`` naming the key."""
    if key not in metadata:
        raise error(path, f"metadata entry {key!r} is missing")
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as exc:
        raise error(path, f"metadata entry {key!r} is not valid JSON: {exc}") from exc
