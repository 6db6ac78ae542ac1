"""The one GPU lane: a background thread that owns the model host and runs GPU jobs one at a time.

Spec building is the lane's *standing* job; identification (interrogation), re-ranking and
preview generations are *interactive* jobs. The build's ``cancel`` callable answers True as soon as
interactive work is queued (or the build is paused, or the lane stops); the spec builder checks it
between steps, down to diffusers' denoising steps, and stops. The lane closes the build generator,
runs the interactive job, and later starts the build again by calling the build function anew: the
spec builder resumes from what it persisted (every finished batch), so a preempted build loses at
most the batch it was in, regenerated with the same seeds. An identify or a preview waits at most
one denoising step of the build.

The model host is created lazily on the lane's thread (by ``host_factory``), on the first job that
needs it: the GUI thread never imports torch. Jobs are functions ``(host, cancel) -> generator`` of
:class:`~gmi_desktop.core.progress.Progress` events (``core/progress.py``); the cancel callable is
the only cancel style. Signals are emitted on the lane's thread and delivered queued to the GUI.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

from PySide6.QtCore import QObject, Signal

from gmi_desktop.core.errors import Cancelled
from gmi_desktop.gui.worker import Control, drive

LaneFn = Callable[[Any, Callable[[], bool]], Generator[Any, None, Any]]

BUILD_STATES = ("idle", "running", "paused", "waiting", "cancelled", "done", "failed")


class LaneJob(QObject):
    """One interactive job on the lane; the same signals as :class:`~gmi_desktop.gui.worker.Worker`."""

    progress = Signal(object)
    returned = Signal(object)
    errored = Signal(object)
    cancelled = Signal()
    finished = Signal()

    def __init__(self, fn: LaneFn, name: str):
        super().__init__()
        self.fn = fn
        self.name = name
        self.control = Control()
        self.done = threading.Event()
        self._lane: GpuLane | None = None

    def cancel(self) -> None:
        self.control.cancel()
        if self._lane is not None:
            self._lane._drop_queued(self)


class GpuLane(QObject):
    """See the module docstring. ``host_factory()`` makes the model host on the lane's thread."""

    build_progress = Signal(object)
    build_state = Signal(str)  # one of BUILD_STATES
    build_returned = Signal(object)
    build_errored = Signal(object)
    host_ready = Signal()

    def __init__(self, host_factory: Callable[[], Any]):
        super().__init__()
        self._host_factory = host_factory
        self._host: Any = None
        self._cond = threading.Condition()
        self._queue: deque[LaneJob] = deque()
        self._live: set[LaneJob] = set()
        self._build_fn: LaneFn | None = None
        self._build_paused = False
        self._build_cancel = Control()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.state = "idle"

    # -- GUI thread -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="gmi-gpu-lane", daemon=True)
            self._thread.start()

    def submit(self, fn: LaneFn, name: str = "job", **slots: Callable[..., Any]) -> LaneJob:
        """Queue an interactive job (ahead of the build). ``slots`` maps signal names of
        :class:`LaneJob` (``progress=``, ``returned=``, ...) to callables, connected before the job
        is queued so no signal is missed."""
        job = LaneJob(fn, name)
        job._lane = self
        for signal, slot in slots.items():
            getattr(job, signal).connect(slot)
        # Queued signals die with their sender: keep the job until its last one is delivered.
        self._live.add(job)
        job.finished.connect(lambda: self._live.discard(job))
        with self._cond:
            self._queue.append(job)
            self._cond.notify_all()
        self.start()
        return job

    def start_build(self, fn: LaneFn) -> None:
        """Make ``fn`` the standing build job (replacing a finished or cancelled one) and run it."""
        with self._cond:
            self._build_fn = fn
            self._build_paused = False
            self._build_cancel = Control()
            self._cond.notify_all()
        self.start()

    def pause_build(self) -> None:
        with self._cond:
            if self._build_fn is not None:
                self._build_paused = True
                self._cond.notify_all()

    def resume_build(self) -> None:
        with self._cond:
            self._build_paused = False
            self._cond.notify_all()

    def cancel_build(self) -> None:
        with self._cond:
            self._build_cancel.cancel()
            self._build_paused = False
            self._cond.notify_all()

    @property
    def build_active(self) -> bool:
        """A build is wanted (running, paused or waiting behind interactive work)."""
        return self._build_fn is not None

    def stop(self, timeout: float | None = 60.0) -> bool:
        """Stop the build and every job at their next yield, close the host, join the thread."""
        with self._cond:
            self._stopping = True
            self._build_cancel.cancel()
            for job in self._queue:
                job.control.cancel()
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _drop_queued(self, job: LaneJob) -> None:
        with self._cond:
            try:
                self._queue.remove(job)
            except ValueError:
                return  # running or finished: its control stops it
        job.cancelled.emit()
        job.finished.emit()
        job.done.set()

    # -- the lane's thread ----------------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.build_state.emit(state)

    def _host_now(self) -> Any:
        if self._host is None:
            self._host = self._host_factory()
            self.host_ready.emit()
        return self._host

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not (self._stopping or self._queue or (self._build_fn and not self._build_paused)):
                        self._cond.wait()
                    if self._stopping:
                        break
                    job = self._queue.popleft() if self._queue else None
                if job is not None:
                    self._run_job(job)
                else:
                    self._run_build()
        finally:
            for job in list(self._queue):
                self._drop_queued(job)
            if self._host is not None:
                self._host.close()
                self._host = None

    def _run_job(self, job: LaneJob) -> None:
        try:
            value = drive(job.fn(self._host_now(), job.control.is_cancelled), job.control, job.progress.emit)
        except Cancelled:
            job.cancelled.emit()
        except Exception as exc:  # noqa: BLE001 - shown in place by the GUI
            job.errored.emit(exc)
        else:
            job.returned.emit(value)
        finally:
            job.finished.emit()
            job.done.set()

    def _should_yield(self) -> bool:
        with self._cond:
            return bool(self._queue) or self._build_paused or self._stopping

    def _run_build(self) -> None:
        """Run the build until it ends, is cancelled, or yields the lane (preempted or paused).

        The build's ``cancel`` callable also answers True when interactive work is queued, the
        build is paused or the lane stops: the spec builder checks it between denoising steps, so
        an identify waits at most one step, not a whole batch. The batch it interrupts was not
        saved and is generated again, with the same seeds, when the build is called again."""
        fn, control = self._build_fn, self._build_cancel
        if fn is None:
            return
        self._set_state("running")
        outcome = "done"
        gen = None

        def stop_now() -> bool:
            return control.is_cancelled() or self._should_yield()

        try:
            gen = fn(self._host_now(), stop_now)
            while True:
                if stop_now():
                    raise Cancelled("build stopped")
                try:
                    event = next(gen)
                except StopIteration as stop:
                    self.build_returned.emit(stop.value)
                    break
                self.build_progress.emit(event)
        except Cancelled:
            if control.is_cancelled() and not self._stopping:
                outcome = "cancelled"
            else:
                outcome = "paused" if (self._build_paused or self._stopping) else "waiting"
        except Exception as exc:  # noqa: BLE001 - shown in the builder bar
            outcome = "failed"
            self.build_errored.emit(exc)
        finally:
            if gen is not None:
                gen.close()  # the spec builder persists per batch; calling it again resumes
            with self._cond:
                if outcome in {"done", "cancelled", "failed"} and self._build_fn is fn:
                    self._build_fn = None
            self._set_state(outcome)
