"""One running instance per user: real processes, a real QLockFile and QLocalServer."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QCoreApplication
from PySide6.QtGui import QFileOpenEvent

from gmi_desktop.integrations import single_instance as si

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys
from pathlib import Path
from PySide6.QtCore import QCoreApplication, QTimer
from gmi_desktop.integrations.single_instance import claim
out, expected, mine = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
primary = claim([mine], timeout_s=60)
if primary is None:
    (out / f"secondary-{os.getpid()}").write_text(mine)
    sys.exit(0)
app = QCoreApplication([])
primary.listen()
got = list(primary.initial_paths)
(out / "listening").write_text(primary.server_path())
def received(paths):
    got.extend(paths)
    if len(got) >= expected:
        app.quit()
primary.paths_received.connect(received)
QTimer.singleShot(int(sys.argv[4]) * 1000, app.quit)
app.exec()
primary.close()
(out / f"primary-{os.getpid()}.json").write_text(json.dumps(got))
"""


def child_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                QT_QPA_PLATFORM="offscreen")


def spawn(out: Path, expected: int, path: str, linger_s: int = 60) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(expected), path, str(linger_s)],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_message_round_trip_and_refusals():
    paths = ["/a b/ünï.png", "/x/\udcff-not-utf8.jpg", "C:\\Users\\x.webp" if os.name == "nt" else "/y/%1.webp"]
    data = si.encode_message(paths)
    assert si.decode_message(data) == paths
    for cut in range(len(data)):
        assert si.decode_message(data[:cut]) is None  # incomplete: wait for more
    with pytest.raises(ValueError):
        si.decode_message(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(ValueError):
        si.decode_message(si.MAGIC + (si.MAX_PAYLOAD + 1).to_bytes(4, "big"))
    with pytest.raises(ValueError):  # relative paths are not accepted
        si.decode_message(si.encode_message(["relative.png"]))


def test_n_processes_at_once_exactly_one_primary_gets_every_path(tmp_path):
    n = 8
    out = tmp_path / "out"
    out.mkdir()
    paths = [str(tmp_path / f"image {i} ünï.png") for i in range(n)]
    procs = [spawn(out, n, p) for p in paths]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode(errors="replace")
    primaries = sorted(out.glob("primary-*.json"))
    assert len(primaries) == 1, sorted(p.name for p in out.iterdir())
    assert len(list(out.glob("secondary-*"))) == n - 1
    received = json.loads(primaries[0].read_text())
    assert sorted(received) == sorted(paths)  # every path, each once


def test_stale_lock_and_socket_after_a_crash_are_recovered(tmp_path, qtbot):
    out = tmp_path / "out"
    out.mkdir()
    crashed = spawn(out, 99, str(tmp_path / "first.png"), linger_s=120)
    wait_for(lambda: (out / "listening").exists())
    socket_path = (out / "listening").read_text()
    crashed.send_signal(signal.SIGKILL)
    crashed.communicate(timeout=60)
    assert Path(si.lock_file_path()).exists()  # left behind by the crash
    if os.name == "posix":
        assert Path(socket_path).exists()

    primary = si.claim([tmp_path / "second.png"], timeout_s=10)
    try:
        assert primary is not None and primary.listening
        assert primary.initial_paths == [str(tmp_path / "second.png")]
        if os.name == "posix":  # user-only access: nobody else may connect
            assert stat.S_IMODE(os.stat(primary.server_path()).st_mode) & 0o077 == 0
        with qtbot.waitSignal(primary.paths_received, timeout=30_000) as signal_:
            late = subprocess.Popen([sys.executable, "-m", "gmi_desktop", "open", "third.png", "4th 100%.jpg"],
                                    cwd=tmp_path, env=child_env(), stderr=subprocess.PIPE)
        assert signal_.args == [[str(tmp_path / "third.png"), str(tmp_path / "4th 100%.jpg")]]
        assert late.wait(timeout=60) == 0, late.stderr.read()
    finally:
        primary.close()


def test_garbage_on_the_socket_is_dropped_and_the_next_launch_still_gets_through(tmp_path, qtbot):
    from PySide6.QtNetwork import QLocalSocket

    primary = si.claim([], timeout_s=10)
    try:
        assert primary is not None
        bad = QLocalSocket()
        bad.connectToServer(primary.name)
        assert bad.waitForConnected(5000)
        bad.write(b"GET / HTTP/1.1\r\n\r\n")
        bad.flush()
        qtbot.waitUntil(lambda: bad.state() == QLocalSocket.LocalSocketState.UnconnectedState, timeout=10_000)
        with qtbot.waitSignal(primary.paths_received, timeout=30_000) as signal_:
            good = subprocess.Popen([sys.executable, "-m", "gmi_desktop", "open", str(tmp_path / "ok.png")],
                                    env=child_env(), stderr=subprocess.PIPE)
        assert signal_.args == [[str(tmp_path / "ok.png")]]
        assert good.wait(timeout=60) == 0, good.stderr.read()
    finally:
        primary.close()


def test_file_open_events_reach_the_same_signal(qapp, qtbot, tmp_path):
    primary = si.claim([], timeout_s=10)
    try:
        primary.watch_file_open_events(qapp)
        image = tmp_path / "from finder.png"
        with qtbot.waitSignal(primary.paths_received, timeout=5000) as signal_:
            QCoreApplication.sendEvent(qapp, QFileOpenEvent(str(image)))
        assert signal_.args == [[str(image)]]
    finally:
        qapp.removeEventFilter(primary)
        primary.close()


def test_a_second_claim_in_the_same_session_is_a_secondary(tmp_path, qtbot):
    primary = si.claim([], timeout_s=10)
    try:
        assert primary is not None
        got = []
        primary.paths_received.connect(got.extend)
        # the secondary blocks for the acknowledgement, which the primary sends from the event
        # loop: run it in a child process, as a real second launch is
        proc = subprocess.Popen([sys.executable, "-c",
                                 "import sys; from gmi_desktop.integrations.single_instance import claim; "
                                 "sys.exit(0 if claim(sys.argv[1:], timeout_s=20) is None else 3)",
                                 str(tmp_path / "a.png")], env=child_env(), stderr=subprocess.PIPE)
        qtbot.waitUntil(lambda: proc.poll() is not None, timeout=60_000)
        assert proc.returncode == 0, proc.stderr.read()
        assert got == [str(tmp_path / "a.png")]
    finally:
        primary.close()


def test_a_hand_over_brings_the_window_to_front_and_identifies(qtbot, tmp_path):
    from PySide6.QtWidgets import QMainWindow

    from gmi_desktop.integrations.launch import connect_window

    class Window(QMainWindow):  # the part of the main window's interface the hand-over uses
        def __init__(self):
            super().__init__()
            self.identified: list[list[str]] = []

        def take_items(self, items):
            self.identified.append(items)

    window = Window()
    qtbot.addWidget(window)
    window.showMinimized()
    primary = si.claim([], timeout_s=10)
    try:
        connect_window(primary, window)
        with qtbot.waitSignal(primary.paths_received, timeout=30_000):
            proc = subprocess.Popen([sys.executable, "-m", "gmi_desktop", "open", "x.png"], cwd=tmp_path,
                                    env=child_env(), stderr=subprocess.PIPE)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        assert window.identified == [[str(tmp_path / "x.png")]]
        assert not window.isMinimized() and window.isVisible()
        primary.paths_received.emit([])  # a launch without images: to the front, nothing identified
        assert window.identified == [[str(tmp_path / "x.png")]]
    finally:
        primary.close()


def test_tray_notices_fall_back_to_the_status_line_without_a_tray(qapp, qtbot):
    from PySide6.QtWidgets import QSystemTrayIcon

    from gmi_desktop.integrations.tray import TrayNotifier
    from gmi_desktop.services.watch_mode import Notice

    notifier = TrayNotifier()
    try:
        assert (notifier.tray is None) == (not QSystemTrayIcon.isSystemTrayAvailable())
        if notifier.tray is not None:
            pytest.skip("this session has a system tray; the fallback is for sessions without one")
        with qtbot.waitSignal(notifier.fallback, timeout=1000) as shown:
            assert notifier.show(Notice("usable", "m: specification usable (coarse, 11/55 images)")) is False
        assert shown.args == ["m: specification usable (coarse, 11/55 images)"]
    finally:
        notifier.close()


def test_the_real_window_takes_handed_over_files_like_drops(qtbot, tmp_path):
    from PySide6.QtGui import QImage

    from gmi_desktop.gui.backend import Backend
    from gmi_desktop.gui.main_window import MainWindow
    from gmi_desktop.integrations.launch import connect_window
    from gmi_desktop.store.settings import Settings

    window = MainWindow(Backend(Settings(), scan_workers=1), state_path=tmp_path / "window.ini")
    window.ask = lambda title, text: True
    qtbot.addWidget(window)
    window.show()
    window.start()
    primary = si.claim([], timeout_s=10)
    try:
        connect_window(primary, window)
        (tmp_path / "paper.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
        image = QImage(24, 24, QImage.Format_RGB888)
        image.fill(0x3366AA)
        assert image.save(str(tmp_path / "cat photo.png"), "PNG")
        for name in ("paper.pdf", "cat photo.png"):
            with qtbot.waitSignal(primary.paths_received, timeout=30_000):
                proc = subprocess.Popen([sys.executable, "-m", "gmi_desktop", "open", name], cwd=tmp_path,
                                        env=child_env(), stderr=subprocess.PIPE)
            assert proc.wait(timeout=60) == 0, proc.stderr.read()
            if name.endswith(".pdf"):
                assert "a PDF document, not an image" in window.query.message.text()
                assert window.query_images == []
        assert window.query_images == [tmp_path / "cat photo.png"]
    finally:
        primary.close()
        window.shutdown(30)
