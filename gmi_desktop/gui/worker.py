"""One generic worker that drives any service generator on a background thread.

A service job is a generator function (``core/progress.py``): it takes ``cancel`` (a ``() -> bool``
callable), yields :class:`~gmi_desktop.core.progress.Progress` events and returns its result. A
:class:`Worker` calls it on its own thread and turns it into Qt signals, the superqt
``GeneratorWorker`` shape:

- every yielded event -> ``progress(event)``;
- the return value -> ``returned(value)``;
- :class:`~gmi_desktop.core.errors.Cancelled` (raised by the job, or a cancel seen at a yield) ->
  ``cancelled()``; any other exception -> ``errored(exc)``;
- then always ``finished()``.

Pause and cancel are honoured at every ``yield`` (the job itself also checks ``cancel`` between its
own steps, which is the only cancel style: there is no second "abort" flag). A job stopped at a
yield is closed (``generator.close()``), so its ``finally`` blocks run on the worker thread.

The thread is a plain :class:`threading.Thread`, not a ``QThread``: it can be joined like any
Python thread (the tests' leaked-thread check sees it), and a ``QThread`` running Python code leaves
a ``_DummyThread`` behind on Python 3.11. Signals emitted from it reach slots of objects living on
the GUI thread through queued connections, so widgets are only ever touched on the GUI thread.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Generator
from typing import Any

from PySide6.QtCore import QObject, Signal

from gmi_desktop.core.errors import Cancelled
from gmi_desktop.core.progress import Progress

JobFn = Callable[..., Generator[Any, None, Any]]
_NUMBERS = itertools.count(1)


class Control:
    """Pause/cancel state shared between the GUI thread and a job's thread."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def cancel(self) -> None:
        self._cancelled.set()
        self._running.set()  # a paused job wakes up to see it

    def is_cancelled(self) -> bool:
        return self._cancelled.is_set()

    def pause(self) -> None:
        if not self._cancelled.is_set():
            self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_while_paused(self) -> None:
        self._running.wait()


def drive(gen: Generator[Any, None, Any], control: Control, emit: Callable[[Any], None]) -> Any:
    """Run ``gen`` to its end under ``control``; return its value. A cancel seen at a yield closes
    the generator and raises :class:`Cancelled`."""
    try:
        while True:
            if control.is_cancelled():
                raise Cancelled("cancelled")
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            emit(event)
            if control.paused:
                control.wait_while_paused()
    finally:
        gen.close()


class Worker(QObject):
    """Runs ``job(*args, cancel=..., **kwargs)`` on a background thread; see the module docstring.

    Create it on the GUI thread, connect its signals, then :meth:`start`; keep a reference until
    ``finished`` has been delivered (queued signals die with their sender). :meth:`stop` cancels and
    joins (use it when the window closes and in test fixtures).
    """

    progress = Signal(object)
    returned = Signal(object)
    errored = Signal(object)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, job: JobFn, *args: Any, name: str = "", **kwargs: Any):
        super().__init__()
        self._job = job
        self._args = args
        self._kwargs = kwargs
        self.control = Control()
        self.name = name or getattr(job, "__name__", "job")
        self._thread: threading.Thread | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.was_cancelled = False

    # -- control (GUI thread) -------------------------------------------------------------------
    def start(self) -> "Worker":
        if self._thread is not None:
            raise RuntimeError(f"worker {self.name!r} already started")
        self._thread = threading.Thread(target=self._run, name=f"gmi-{self.name}-{next(_NUMBERS)}", daemon=True)
        self._thread.start()
        return self

    def pause(self) -> None:
        self.control.pause()

    def resume(self) -> None:
        self.control.resume()

    def cancel(self) -> None:
        self.control.cancel()

    @property
    def paused(self) -> bool:
        return self.control.paused

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self, timeout: float | None = 30.0) -> bool:
        """Cancel and wait for the thread to end."""
        self.cancel()
        return self.join(timeout)

    # -- the job's thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            gen = self._job(*self._args, cancel=self.control.is_cancelled, **self._kwargs)
            self.result = drive(gen, self.control, self._emit)
        except Cancelled:
            self.was_cancelled = True
            self.cancelled.emit()
        except Exception as exc:  # noqa: BLE001 - handed to the GUI as a signal, shown in place
            self.error = exc
            self.errored.emit(exc)
        else:
            self.returned.emit(self.result)
        finally:
            self.finished.emit()

    def _emit(self, event: Any) -> None:
        self.progress.emit(event)


def describe(event: Any) -> str:
    """One line for a progress event (a :class:`Progress`, or an older event with the same fields)."""
    if isinstance(event, Progress):
        if event.message:
            return event.message
        stage, done, total, item = event.stage, event.done, event.total, event.item
    else:
        stage = getattr(event, "stage", None) or getattr(event, "phase", "working")
        done, total = getattr(event, "done", 0), getattr(event, "total", 0)
        item = getattr(event, "item", None) or getattr(event, "path", None) or ""
    count = f" {done} of {total}" if total else (f" {done}" if done else "")
    tail = f": {getattr(item, 'name', item)}" if item else ""
    return f"{stage}{count}{tail}"
