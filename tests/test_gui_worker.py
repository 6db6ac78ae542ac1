"""The generic worker and the GPU lane, on real generator jobs (no window)."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("pytestqt")

from gmi_desktop.core.errors import Cancelled, NotAnImage  # noqa: E402
from gmi_desktop.core.progress import Progress, check_cancel  # noqa: E402
from gmi_desktop.gui.lane import GpuLane  # noqa: E402
from gmi_desktop.gui.worker import Worker, describe  # noqa: E402
from gmi_desktop.services.library import Library  # noqa: E402
from gmi_desktop.store.catalog import Catalog  # noqa: E402
from tests.support.library_files import write_checkpoint  # noqa: E402


def counting(n, gate=None, *, cancel=None):
    for i in range(n):
        check_cancel(cancel)
        if gate is not None:
            gate.wait(10)
        yield Progress("counting", i + 1, n)
    return n * 10


def failing(*, cancel=None):
    yield Progress("reading", 1, 2)
    raise NotAnImage("x.png", "not an image file")


def test_worker_progress_and_return(qtbot):
    worker = Worker(counting, 5)
    seen = []
    worker.progress.connect(seen.append)
    with qtbot.waitSignal(worker.finished, timeout=10000), qtbot.waitSignal(worker.returned, timeout=10000) as got:
        worker.start()
    assert got.args == [50]
    qtbot.waitUntil(lambda: len(seen) == 5, timeout=5000)
    assert [e.done for e in seen] == [1, 2, 3, 4, 5]
    assert worker.join(5)


def test_worker_error_is_a_signal(qtbot):
    worker = Worker(failing)
    with qtbot.waitSignal(worker.errored, timeout=10000) as got:
        worker.start()
    assert isinstance(got.args[0], NotAnImage)
    assert worker.join(5)


def ticking(*, cancel=None):
    beat = threading.Event()
    for i in range(1_000_000):
        check_cancel(cancel)
        beat.wait(0.002)
        yield Progress("ticking", i + 1)


@pytest.fixture
def workers():
    made = []
    yield made
    for worker in made:
        assert worker.stop(30)


def test_worker_pause_and_cancel_at_a_yield(qtbot, workers):
    worker = Worker(ticking)
    workers.append(worker)
    seen = []
    worker.progress.connect(seen.append)
    worker.start()
    qtbot.waitUntil(lambda: len(seen) >= 3, timeout=10000)
    worker.pause()
    qtbot.wait(50)
    count = len(seen)
    qtbot.wait(200)
    assert len(seen) <= count + 1  # at most the event already on its way
    with qtbot.waitSignal(worker.cancelled, timeout=10000):
        worker.cancel()
    assert worker.join(5)
    assert worker.was_cancelled and worker.result is None


def test_worker_drives_a_real_library_scan(qtbot, tmp_path):
    folder = tmp_path / "models"
    for i in range(3):
        write_checkpoint(folder / f"m{i}.safetensors", seed=i)
    catalog_path = tmp_path / "catalog.sqlite3"

    def scan(*, cancel=None):
        with Catalog(catalog_path) as catalog:
            library = Library(catalog, workers=1)
            library.add_folder(folder)
            summary = yield from library.scan(cancel=cancel)
            return summary.seen, len(catalog.files("ok"))

    worker = Worker(scan)
    events = []
    worker.progress.connect(events.append)
    with qtbot.waitSignal(worker.returned, timeout=60000) as got:
        worker.start()
    assert got.args == [(3, 3)]
    assert worker.join(5)
    assert any("hashing" in describe(e) for e in events)


class FakeHost:
    """A host object: what the lane creates lazily and closes at the end."""

    instances = 0

    def __init__(self):
        FakeHost.instances += 1
        self.thread = threading.current_thread().name
        self.closed = False

    def close(self):
        self.closed = True


@pytest.fixture
def lane(qtbot):
    hosts = []

    def factory():
        hosts.append(FakeHost())
        return hosts[-1]

    lane = GpuLane(factory)
    lane.hosts = hosts
    yield lane
    assert lane.stop(30)


def test_lane_creates_host_lazily_on_its_thread(qtbot, lane):
    assert lane.hosts == []
    results = []
    lane.submit(lambda host, cancel: counting(2, cancel=cancel), "count", returned=results.append)
    qtbot.waitUntil(lambda: results == [20], timeout=10000)
    assert len(lane.hosts) == 1 and lane.hosts[0].thread == "gmi-gpu-lane"
    lane.stop(10)
    assert lane.hosts[0].closed


def test_lane_preempts_the_build_and_resumes_it(qtbot, lane):
    """The build is stopped at an image boundary for interactive work, then called again and
    continues from what it persisted (here: a counter standing for the spec store)."""
    persisted = {"done": 0}
    starts = []
    reached, hold = threading.Event(), threading.Event()
    total = 12

    def build(host, cancel):
        starts.append(persisted["done"])
        while persisted["done"] < total:
            check_cancel(cancel)
            if persisted["done"] == 3:
                reached.set()
                hold.wait(10)
            persisted["done"] += 1  # one image, persisted
            yield Progress("generating", persisted["done"], total)
        return "built"

    states, results = [], []
    lane.build_state.connect(states.append)
    lane.build_returned.connect(results.append)
    lane.start_build(build)
    assert reached.wait(10)
    job_results = []
    lane.submit(lambda host, cancel: counting(1, cancel=cancel), "identify", returned=job_results.append)
    hold.set()
    qtbot.waitUntil(lambda: job_results == [10] and results == ["built"], timeout=20000)
    assert starts == [0, 4]  # stopped after image 4, resumed there, not restarted
    assert persisted["done"] == total
    qtbot.waitUntil(lambda: states[-1:] == ["done"], timeout=5000)
    assert "waiting" in states


def test_lane_pause_resume_cancel_build(qtbot, lane):
    persisted = {"done": 0}

    def build(host, cancel):
        while True:  # endless: only the cancel can end it (a finite one could finish before the cancel)
            check_cancel(cancel)
            time.sleep(0.001)
            persisted["done"] += 1
            yield Progress("generating", persisted["done"], 0)

    states = []
    lane.build_state.connect(states.append)
    lane.start_build(build)
    qtbot.waitUntil(lambda: persisted["done"] >= 5, timeout=10000)
    lane.pause_build()
    qtbot.waitUntil(lambda: states[-1:] == ["paused"], timeout=10000)
    frozen = persisted["done"]
    qtbot.wait(100)
    assert persisted["done"] == frozen and lane.build_active
    lane.resume_build()
    qtbot.waitUntil(lambda: persisted["done"] > frozen, timeout=10000)
    lane.cancel_build()
    qtbot.waitUntil(lambda: states[-1:] == ["cancelled"], timeout=10000)
    assert not lane.build_active


def test_lane_cancels_a_queued_job_without_running_it(qtbot, lane):
    gate = threading.Event()
    returned = []
    lane.submit(lambda host, cancel: counting(1, gate, cancel=cancel), "slow", returned=returned.append)
    ran = []

    def second_fn(host, cancel):
        ran.append(True)
        yield Progress("x")

    second = lane.submit(second_fn, "second")
    with qtbot.waitSignal(second.cancelled, timeout=5000):
        second.cancel()
    gate.set()
    qtbot.waitUntil(lambda: returned == [10], timeout=10000)
    assert ran == []


def test_lane_job_error_and_cancel(qtbot, lane):
    errors, cancels = [], []
    lane.submit(lambda host, cancel: failing(cancel=cancel), "bad", errored=errors.append)
    qtbot.waitUntil(lambda: len(errors) == 1, timeout=10000)
    assert isinstance(errors[0], NotAnImage)

    def raising(host, cancel):
        raise Cancelled("x")
        yield  # pragma: no cover

    lane.submit(raising, "cancelled", cancelled=lambda: cancels.append(1))
    qtbot.waitUntil(lambda: cancels == [1], timeout=10000)


def test_signal_emit_keeps_reference_counts(qtbot):
    """PySide6 6.12.0 dropped a reference to True on every emit (a crash after a few hundred
    signals on Python 3.11); pyproject.toml excludes it."""
    import sys

    worker = Worker(counting, 1)
    worker.progress.connect(lambda event: None)
    before = sys.getrefcount(True)
    for i in range(1000):
        worker.progress.emit(i)
    assert abs(sys.getrefcount(True) - before) < 100


def test_lane_preempts_inside_a_batch(qtbot, lane):
    """An interactive job does not wait for the build's batch: the build's cancel callable says
    stop at the next step, and the interrupted batch is generated again on resume."""
    steps = {"n": 0}
    starts, reached = [], threading.Event()
    beat = threading.Event()

    def build(host, cancel):
        starts.append(steps["n"])
        for _step in range(2000):  # one long batch, checking cancel between steps like diffusers
            check_cancel(cancel)
            steps["n"] += 1
            reached.set()
            beat.wait(0.002)
        yield Progress("generating", 1, 1)
        return "built"

    results, job_results = [], []
    lane.build_returned.connect(results.append)
    lane.start_build(build)
    assert reached.wait(10)
    lane.submit(lambda host, cancel: counting(1, cancel=cancel), "identify", returned=job_results.append)
    qtbot.waitUntil(lambda: job_results == [10], timeout=10000)
    assert steps["n"] < 2000  # answered mid-batch
    qtbot.waitUntil(lambda: results == ["built"], timeout=60000)
    assert len(starts) == 2
