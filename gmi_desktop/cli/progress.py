"""Progress of a long job (:class:`~gmi_desktop.core.progress.Progress` events) on stderr that a
person can read.

On a terminal, one status line rewritten in place (``\\r`` + clear-to-end, redrawn at most every
``redraw_s``) and ended with a newline by :meth:`ProgressLine.close`::

    hashing 1/2  realistic-sdxl.safetensors  3.1/6.9 GB  840 MB/s  ETA 5 s

Anywhere else (CI logs, pipes) the same text as plain lines: per phase at most one every
``every_s`` seconds, plus the phase's final counts, so a 7 GB file does not fill a log with twenty
``hashing 1/2`` lines. A phase is an event's ``stage``. The rate is the phase's bytes so far over
its time so far (whole files done plus the bytes of the current one); the ETA is the current
file's. An event's ``message`` (a job's own rate or ETA) is shown after its counts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TextIO

from gmi_desktop.core.progress import Progress

CLEAR_TO_END = "\x1b[K"
_UNITS = ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB"))


def _unit(n: float) -> tuple[float, str]:
    for scale, name in _UNITS:
        if n >= scale * 0.9995:  # 999 999 B is "1.0 MB", not "1000 kB"
            return scale, name
    return 1.0, "B"


def human_bytes(n: float) -> str:
    """``3.1 GB``, ``840 MB``, ``12 B`` (decimal units, as file managers show sizes)."""
    scale, name = _unit(n)
    value = n / scale
    return f"{value:.0f} {name}" if scale == 1.0 or round(value, 1) >= 100 else f"{value:.1f} {name}"


def bytes_of(done: float, total: float) -> str:
    """``3.1/6.9 GB``: both in the unit of the total."""
    scale, name = _unit(total)
    digits = 0 if scale == 1.0 else 1
    return f"{done / scale:.{digits}f}/{total / scale:.{digits}f} {name}"


def human_duration(seconds: float) -> str:
    """``5 s``, ``3 min 20 s``, ``1 h 05 min``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def printable(text: str) -> str:
    """``text`` with control and format characters (newline, ESC, bidi overrides) written as
    escapes: a file or model name must not break a table line or drive the terminal."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def _shorten(name: str, room: int) -> str:
    """``name`` in at most ``room`` characters, cut in the middle (the end says the extension)."""
    if len(name) <= room:
        return name
    if room < 5:
        return name[:max(room, 0)]
    head = (room - 1) // 2
    return name[:head] + "…" + name[len(name) - (room - 1 - head):]


class ProgressLine:
    """Callable that renders :class:`Progress` events on ``stream``; call :meth:`close` at the end."""

    def __init__(self, stream: TextIO, *, clock: Callable[[], float] = time.monotonic,
                 tty: bool | None = None, width: int | None = None, every_s: float = 5.0,
                 redraw_s: float = 0.1):
        self.stream = stream
        self.clock = clock
        self.tty = stream.isatty() if tty is None else tty
        self.width = width
        self.every_s = every_s
        self.redraw_s = redraw_s
        self.phase = ""
        self.phase_start = 0.0
        self.last_line_at = 0.0
        self.pending = False  # a status line is on screen without its newline
        self.file_key: tuple[int, object] | None = None
        self.file_bytes = 0  # size of the current file
        self.bytes_before = 0  # bytes of the files done earlier in this phase

    def __call__(self, event: Progress) -> None:
        now = self.clock()
        if event.stage != self.phase:
            self.phase, self.phase_start, self.last_line_at = event.stage, now, now
            self.file_key, self.file_bytes, self.bytes_before = None, 0, 0
            forced = True
        else:
            forced = False
        self._track_file(event)
        final = bool(event.total) and event.done == event.total
        if self.tty:
            if forced or final or now - self.last_line_at >= self.redraw_s:
                self._draw(self.status(event, now))
                self.last_line_at = now
        elif final or now - self.last_line_at >= self.every_s:
            self.stream.write(self.status(event, now) + "\n")
            self.stream.flush()
            self.last_line_at = now

    def close(self) -> None:
        """End the status line (terminal); a no-op when nothing is on screen."""
        if self.pending:
            self.stream.write("\n")
            self.stream.flush()
            self.pending = False

    def _track_file(self, event: Progress) -> None:
        key = (event.done, event.item)
        if key != self.file_key:
            if self.file_key is not None and event.done > self.file_key[0]:
                self.bytes_before += self.file_bytes  # the previous file was read to its end
            self.file_key, self.file_bytes = key, 0
        self.file_bytes = max(self.file_bytes, event.bytes_total)

    def _columns(self) -> int:
        return self.width or _terminal_width(self.stream)

    def _draw(self, text: str) -> None:
        self.stream.write("\r" + text[: self._columns() - 1] + CLEAR_TO_END)
        self.stream.flush()
        self.pending = True

    def rate(self, event: Progress, now: float) -> float | None:
        """Bytes per second over the phase so far; ``None`` before there is anything to go on."""
        elapsed = now - self.phase_start
        done = self.bytes_before + event.bytes_done
        return done / elapsed if elapsed > 0 and done > 0 else None

    def status(self, event: Progress, now: float) -> str:
        """The one-line status text for ``event`` at time ``now``."""
        if event.stage == "listing":
            return f"{event.stage} {event.done} file{'' if event.done == 1 else 's'} found"
        if not event.total:
            return f"{event.stage} {event.done}" + (f"  {printable(event.message)}" if event.message else "")
        if event.done == event.total:
            text = f"{event.stage} {event.done}/{event.total}"
            rate = self.rate(Progress(event.stage, event.done, event.total), now)
            if event.stage == "hashing" and rate:
                text += f"  {human_bytes(self.bytes_before)} in {human_duration(now - self.phase_start)}" \
                        f"  {human_bytes(rate)}/s"
            return text
        number = event.done + 1 if event.stage == "hashing" else event.done
        head = f"{event.stage} {number}/{event.total}"
        tail = ""
        if event.bytes_total:
            tail = f"  {bytes_of(event.bytes_done, event.bytes_total)}"
            rate = self.rate(event, now)
            if rate:
                left = (event.bytes_total - event.bytes_done) / rate
                tail += f"  {human_bytes(rate)}/s  ETA {human_duration(left)}"
        if event.message:
            tail += f"  {printable(event.message)}"
        if not event.item:
            return head + tail
        name = printable(os.path.basename(event.item) or event.item)
        room = self._columns() - 1 - len(head) - len(tail) - 2 if self.tty else len(name)
        return f"{head}  {_shorten(name, max(room, 12))}{tail}"


def _terminal_width(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (OSError, ValueError, AttributeError):
        return 80
