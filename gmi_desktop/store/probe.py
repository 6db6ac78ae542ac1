"""Header probe: what a model file is, read from its first bytes only.

:func:`probe` never raises for a bad file: every failure ends in a :class:`ProbeResult` with a
``status`` and a human ``reason``. It checks that the path is a regular file before opening it
(a FIFO named ``*.safetensors`` must not block us), opens with ``O_NONBLOCK`` and re-checks the
open descriptor (the path may be swapped in between), then reads the 8-byte header length and the
JSON header with plain reads -- never mmap, never a tensor byte. The whole tensor table is
validated the way the safetensors library does (contiguous offsets, sizes matching shape and
dtype, string-only metadata), and classified by :mod:`gmi_desktop.store.classify`.
:func:`probe_header` is the same probe handing out the validated header too: the checkpoint loader
of the engine uses it, so the application has one safetensors header parser.

Statuses are :class:`~gmi_desktop.core.checkpoint_kinds.Status`, the words the scan prints:

``ok``           a Stable Diffusion checkpoint we can use.
``skipped``      a readable file that is something else (``kind`` says what: lora, vae, ...), or
                 one the operating system refused (vanished, permission denied, I/O error:
                 ``kind`` is ``"unreadable"`` and the reason starts with ``unreadable:``).
``unsupported``  a model we will not load (pickles, unknown architectures).
``invalid``      recognised format, but broken (bad header, bad offsets, non-string metadata, ...).
``incomplete``   shorter than its header declares: truncated, or still being copied.
"""

from __future__ import annotations

import codecs
import errno
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from gmi_desktop.core.checkpoint_kinds import UNREADABLE, Status, status_error
from gmi_desktop.core.errors import UserInputError
from gmi_desktop.store.classify import classify_tensors
from gmi_desktop.store.hashing import StatKey, stat_key
from gmi_desktop.store.safetensors_header import MAX_HEADER_BYTES, Header, HeaderError, parse_header

UNREADABLE_PREFIX = "unreadable: "
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl"}
SAFETENSORS_SUFFIXES = {".safetensors", ".sft"}
# the suffixes of single-file models a library lists: safetensors, and pickles (unsupported, never loaded)
MODEL_SUFFIXES = frozenset({".safetensors", ".sft", ".ckpt", ".pt", ".pth"})
PICKLE_ADVICE = "pickle files can run code; convert to .safetensors"
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")


@dataclass(frozen=True)
class ProbeResult:
    """What :func:`probe` learned about one path. ``header_len`` = 8 + JSON header bytes."""

    path: Path
    status: Status
    file_format: str  # "safetensors" | "diffusers" | "pickle" | "zip" | "gguf" | "unknown"
    family: str | None = None  # "sd1" | "sd2" | "sdxl" | "sdxl_refiner"
    variant: str | None = None  # "normal" | "inpaint" | "depth" | "instruct_pix2pix"
    kind: str | None = None  # for non-checkpoints: "lora", "lycoris", "vae", "embedding", ...
    reason: str = ""
    size: int = 0
    header_len: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    tensor_count: int = 0
    prediction: str | None = None  # "v_prediction" | "epsilon" when the file declares it
    key: StatKey | None = None  # the stat of the file as read (fstat of the open descriptor)

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def unreadable(self) -> bool:
        return self.kind == UNREADABLE

    def error(self) -> UserInputError | None:
        """The typed error matching a non-ok result (``None`` when ok), for CLI/GUI reporting."""
        reason = self.reason
        if self.status == Status.INVALID and not self.tensor_count and self.file_format == "safetensors":
            reason = f"not a safetensors file ({reason})"
        return status_error(self.status, self.path, reason, self.kind)


def _result(path: Path, status: Status, fmt: str, reason: str, st: os.stat_result | None = None, **kw):
    if st is not None:
        kw.setdefault("size", st.st_size)
        kw["key"] = stat_key(st)
    return ProbeResult(path, status, fmt, reason=reason, **kw)


def _unreadable(path: Path, reason: str, st: os.stat_result | None = None) -> ProbeResult:
    return _result(path, Status.SKIPPED, "unknown", UNREADABLE_PREFIX + reason, st, kind=UNREADABLE)


def _os_error_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "file vanished before it could be read"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    return f"cannot read: {exc.strerror or exc}"


def _kind_of_mode(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    return "special file"


def _read_exact(fd: int, n: int) -> bytes:
    """Read up to ``n`` bytes, looping over short reads; fewer only at end of file."""
    chunks: list[bytes] = []
    left = n
    while left > 0:
        chunk = os.read(fd, min(left, 16 * 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _sniff(head: bytes) -> str | None:
    """Formats we refuse, by magic bytes: zip (torch .ckpt/.pt), pickle, GGUF."""
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if head.startswith(b"GGUF"):
        return "gguf"
    return None


def _refused(path: Path, fmt: str, st: os.stat_result) -> ProbeResult:
    if fmt == "gguf":
        reason = "unsupported: GGUF quantised model; only .safetensors checkpoints are supported"
    else:
        what = "zip archive (torch pickle)" if fmt == "zip" else "pickle"
        reason = f"unsupported: {what}; {PICKLE_ADVICE}"
    return _result(path, Status.UNSUPPORTED, fmt, reason, st)


def probe(path: str | PathLike[str]) -> ProbeResult:
    """Probe one path (file or diffusers folder). Never raises for a bad or vanished file."""
    return probe_header(path)[0]


def probe_header(path: str | PathLike[str]) -> tuple[ProbeResult, Header | None]:
    """:func:`probe`, plus the validated safetensors header when there is one (``None`` when the
    header is missing or broken, and for folders). For loaders that check the tensor table against
    the config they are about to use rather than against the full-size families."""
    path = Path(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        reason = _os_error_reason(exc)
        if exc.errno == errno.ENOENT and os.path.islink(path):
            reason = "broken symlink: its target does not exist"
        return _unreadable(path, reason), None
    except ValueError as exc:  # embedded NUL and the like
        return _unreadable(path, f"bad path: {exc}"), None
    if stat.S_ISDIR(st.st_mode):
        from gmi_desktop.store.diffusers_folder import probe_diffusers_folder

        return probe_diffusers_folder(path, st), None
    if not stat.S_ISREG(st.st_mode):
        return _result(
            path, Status.SKIPPED, "unknown", f"not a regular file: {_kind_of_mode(st.st_mode)}", st,
            kind="unknown",
        ), None
    parsed: list[Header] = []
    try:
        result = _probe_file(path, parsed)
    except OSError as exc:
        return _unreadable(path, _os_error_reason(exc), st), None
    return result, (parsed[0] if parsed else None)


def _probe_file(path: Path, parsed: list[Header]) -> ProbeResult:
    """Probe a regular file; a header that parses is appended to ``parsed``."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped for a FIFO between stat and open
            return _result(
                path, Status.SKIPPED, "unknown", f"not a regular file: {_kind_of_mode(st.st_mode)}",
                st, kind="unknown",
            )
        head = _read_exact(fd, 8)
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            fmt = _sniff(head) or ("pickle" if suffix != ".bin" else "unknown")
            if fmt == "gguf":
                return _refused(path, fmt, st)
            return _result(path, Status.UNSUPPORTED, fmt, f"unsupported: {suffix} file; {PICKLE_ADVICE}", st)
        named = suffix in SAFETENSORS_SUFFIXES
        result = _probe_safetensors(path, fd, st, head, named, parsed)
        if not named and result.status in {Status.INVALID, Status.INCOMPLETE} and not result.tensor_count:
            return _result(path, Status.SKIPPED, "unknown", f"not a safetensors file ({result.reason})", st,
                           kind="unknown")
        return result
    finally:
        os.close(fd)


def _probe_safetensors(path: Path, fd: int, st: os.stat_result, head: bytes, named: bool,
                       parsed: list[Header]) -> ProbeResult:
    size = st.st_size
    fmt = "safetensors" if named else "unknown"
    bad = Status.INVALID if named else Status.SKIPPED
    kind = None if named else "unknown"
    if size == 0:
        return _result(path, bad, fmt, "empty file (0 bytes)", st, kind=kind)
    if len(head) < 8:
        refused = _sniff(head)
        if refused:
            return _refused(path, refused, st)
        return _result(path, bad, fmt, f"file is {len(head)} bytes, too short for a safetensors header", st, kind=kind)
    declared = int.from_bytes(head, "little")
    available = size - 8
    first = _read_exact(fd, 1) if available > 0 else b""
    if first != b"{":
        refused = _sniff(head)
        if refused:
            return _refused(path, refused, st)
        if not named:
            return _result(path, Status.SKIPPED, "unknown", "not a safetensors file", st, kind="unknown")
    if declared == 0 and first in (b"\x00", b""):
        return _result(
            path, Status.INCOMPLETE, fmt,
            "file starts with zero bytes: a download that reserved the space but has not written "
            "the data yet (or a damaged file)", st,
        )
    if declared == 0:
        return _result(path, Status.INVALID, fmt, "header length is 0", st)
    if declared > MAX_HEADER_BYTES:
        where = f"exceeds file size {size}" if declared > available else "is implausibly large"
        return _result(
            path, Status.INVALID, fmt,
            f"header length {declared} {where} (at most {MAX_HEADER_BYTES} bytes accepted)", st,
        )
    if declared > available:
        return _header_past_end(path, fd, st, declared, first)
    raw = first + _read_exact(fd, declared - 1)
    if len(raw) < declared:  # shrank while we read
        return _result(path, Status.INCOMPLETE, "safetensors", "file shrank while being read", st)
    header_len = 8 + declared
    try:
        header = parse_header(raw, data_len=size - header_len)
    except HeaderError as exc:
        status = Status.INCOMPLETE if exc.incomplete else Status.INVALID
        seen = classify_tensors(exc.tensors, exc.metadata) if exc.tensors else None
        return _result(
            path, status, "safetensors", exc.reason, st, header_len=header_len,
            metadata=exc.metadata, tensor_count=exc.tensor_count,
            family=seen and seen.family, variant=seen and seen.variant, kind=seen and seen.kind,
        )
    parsed.append(header)
    verdict = classify_tensors(header.tensors, header.metadata)
    status, reason = verdict.status, verdict.reason
    if header.problems:  # the format check comes first, whatever the tensors are
        status, reason = Status.INVALID, "; ".join(header.problems)
    return _result(
        path, status, "safetensors", reason, st,
        family=verdict.family, variant=verdict.variant, kind=verdict.kind, header_len=header_len,
        metadata=header.metadata, tensor_count=len(header.tensors), prediction=verdict.prediction,
    )


def _header_past_end(path: Path, fd: int, st: os.stat_result, declared: int, first: bytes) -> ProbeResult:
    """The declared header runs past the end of the file: a cut-off copy or a damaged length.

    A copy cut off inside the header leaves nothing but JSON text after the length; a damaged
    length makes the "header" run into binary tensor data. Reads at most the file (< 100 MB here).
    """
    rest = first + _read_exact(fd, max(st.st_size - 9, 0))
    try:  # incremental: a cut may split the last UTF-8 character
        codecs.getincrementaldecoder("utf-8")().decode(rest, final=False)
        is_text = _CONTROL_BYTES.search(rest) is None
    except UnicodeDecodeError:
        is_text = False
    if is_text:
        return _result(
            path, Status.INCOMPLETE, "safetensors",
            f"header length {declared} exceeds file size {st.st_size}: the file ends inside its "
            "header (truncated, or still being copied)", st,
        )
    return _result(
        path, Status.INVALID, "safetensors",
        f"header length {declared} exceeds file size {st.st_size} and the bytes after it are not a "
        "JSON header; the length field is damaged", st,
    )
