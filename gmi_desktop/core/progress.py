"""The one progress-and-cancel protocol of every long job.

A long job is a *generator function* (superqt's ``GeneratorWorker`` shape): each ``yield`` hands
out one :class:`Progress` event and is the point where a driver may pause; the generator's
``return`` value is the job's result; an exception is its failure. Cancelling is one ``cancel``
callable (``() -> bool``) passed in by the caller and checked between steps with
:func:`check_cancel`, which raises :class:`~gmi_desktop.core.errors.Cancelled`.

Code below the services that cannot be a generator (a callback from inside a library, a step of
diffusers) reports through a :data:`ProgressSink` taking the same event type.

:func:`run` drives a job to completion without Qt (the CLI and tests); the GUI wraps the same
generator in a worker that turns events into signals.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from gmi_desktop.core.errors import Cancelled

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """One step of a long job.

    ``stage`` says what is happening in a word the faces can show ("listing", "probing",
    "hashing", "downloading", "generating", "encoding", "labels", "ranking", ...); ``done`` and
    ``total`` count its units (``total`` 0 when unknown); ``item`` names what is being worked on (a
    file, a model); ``bytes_done``/``bytes_total`` are set when the unit is a file being read or
    downloaded; ``message`` is a sentence for a person. ``data`` optionally carries a value the
    stage hands out as it goes (e.g. the record whose specification just became usable); faces that
    do not know it ignore it.
    """

    stage: str
    done: int = 0
    total: int = 0
    item: str = ""
    bytes_done: int = 0
    bytes_total: int = 0
    message: str = ""
    data: Any = None

    @property
    def fraction(self) -> float | None:
        """``done / total`` in [0, 1], or None when the total is unknown."""
        if self.total <= 0:
            return None
        return min(1.0, max(0.0, self.done / self.total))


CancelFn = Callable[[], bool]
ProgressSink = Callable[[Progress], None]
Job = Generator[Progress, None, T]


def check_cancel(cancel: CancelFn | None, what: str = "cancelled") -> None:
    """Raise :class:`Cancelled` when ``cancel`` says so (``None`` never cancels)."""
    if cancel is not None and cancel():
        raise Cancelled(what)


def run(job: Generator[Progress, Any, T], on_progress: ProgressSink | None = None) -> T:
    """Drive ``job`` to its end, handing every event to ``on_progress``; return its result."""
    while True:
        try:
            event = next(job)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(event)
