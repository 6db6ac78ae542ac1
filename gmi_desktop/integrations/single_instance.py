"""One running GMI Desktop per user: later launches hand their images to it and exit.

A file manager starts one process per selected file (Explorer with a static verb) or one for the
whole selection; either way the first process becomes the **primary**: it holds a ``QLockFile``
in the data folder and listens on a ``QLocalServer`` that only this user may connect to. Every
other launch is a **secondary**: it connects, sends the absolute paths of its images as one
length-prefixed message, waits for the primary's ``OK`` and exits. The primary emits
:attr:`Primary.paths_received`; the window connects it to "come to the front and identify".

``claim(paths)`` is the whole protocol::

    primary = claim(sys.argv[1:])
    if primary is None:
        return 0                      # handed over to the running window
    app = QApplication(sys.argv)
    primary.listen()                  # needs the application's event loop
    primary.paths_received.connect(window.open_images)

A crash leaves the lock file and, on Unix, the socket file behind: ``QLockFile`` treats a lock
whose process is gone as stale and takes it over, and the new primary removes the old socket
before listening. A launch that finds the lock held waits (up to ``timeout_s``) for the primary
to start listening, so N processes started at once end with exactly one primary that receives
every path. On macOS, Finder's "Open With" arrives as ``QFileOpenEvent``s: :meth:`Primary.
watch_file_open_events` turns them into the same signal.

Message: ``b"GMI1"``, a 4-byte big-endian length, then ASCII JSON ``{"paths": [...]}`` (file
names that are not valid UTF-8 travel as escaped surrogates and come back unchanged).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
import time
from collections.abc import Iterable

from PySide6.QtCore import QCoreApplication, QEvent, QLockFile, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from gmi_desktop.core.errors import GMIError
from gmi_desktop.store import paths as app_paths

MAGIC = b"GMI1"
ACK = b"OK"
MAX_PAYLOAD = 4 << 20  # 4 MB: some 20 000 paths; anything bigger is not ours


class SingleInstanceError(GMIError):
    """The running instance holds the lock but does not answer, or the lock cannot be taken."""


def instance_name() -> str:
    """The local server's name: one per user and data folder (a portable install is separate)."""
    data = os.fspath(app_paths.data_dir().resolve())
    user = str(os.getuid()) if hasattr(os, "getuid") else os.environ.get("USERNAME", "")
    digest = hashlib.sha256(f"{user}\0{data}".encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"gmi-desktop-{digest}"


def lock_file_path() -> str:
    return os.fspath(app_paths.data_dir() / "instance.lock")


def encode_message(paths: Iterable[str]) -> bytes:
    payload = json.dumps({"paths": list(paths)}, ensure_ascii=True).encode("ascii")
    if len(payload) > MAX_PAYLOAD:
        raise SingleInstanceError(f"too many files to hand over at once ({len(payload)} bytes of paths)")
    return MAGIC + struct.pack(">I", len(payload)) + payload


def decode_message(buffer: bytes) -> list[str] | None:
    """The paths of a complete message, None while more bytes are needed; ValueError if it is
    not one of ours."""
    if buffer[:len(MAGIC)] != MAGIC[:len(buffer)]:
        raise ValueError("not a GMI Desktop message")
    if len(buffer) < 8:
        return None
    (size,) = struct.unpack(">I", buffer[4:8])
    if size > MAX_PAYLOAD:
        raise ValueError("message too large")
    if len(buffer) < 8 + size:
        return None
    data = json.loads(buffer[8:8 + size].decode("ascii"))
    found = data.get("paths") if isinstance(data, dict) else None
    if not isinstance(found, list) or not all(isinstance(p, str) and os.path.isabs(p) for p in found):
        raise ValueError("the message does not hold a list of absolute paths")
    return found


def absolute(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    return [os.path.abspath(os.fspath(p)) for p in paths]


class Primary(QObject):
    """The running instance's end: owns the lock and the server; emits the paths it is sent."""

    paths_received = Signal(list)

    def __init__(self, lock: QLockFile, name: str, initial_paths: list[str]):
        super().__init__()
        self.name = name
        self.initial_paths = initial_paths
        self._lock = lock
        self._server: QLocalServer | None = None
        self._buffers: dict[QLocalSocket, bytearray] = {}

    @property
    def listening(self) -> bool:
        return self._server is not None and self._server.isListening()

    def server_path(self) -> str:
        return self._server.fullServerName() if self._server is not None else ""

    def listen(self) -> None:
        """Start accepting secondaries (call once a Q(Core)Application exists)."""
        if self.listening:
            return
        if QCoreApplication.instance() is None:
            raise SingleInstanceError("create the Qt application before Primary.listen()")
        QLocalServer.removeServer(self.name)  # a socket file left by a crashed primary
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        server.newConnection.connect(self._accept)
        if not server.listen(self.name):
            raise SingleInstanceError(f"cannot listen for other launches: {server.errorString()}")
        self._server = server

    def close(self) -> None:
        """Stop listening and release the lock. Connections still open are dropped first, with
        their signals cut, so none reaches this object while Qt destroys it."""
        for socket in list(self._buffers):
            self._forget(socket)
        if self._server is not None:
            self._server.close()
            self._server = None
        self._lock.unlock()

    def watch_file_open_events(self, app: QCoreApplication) -> None:
        """Emit :attr:`paths_received` for macOS ``QFileOpenEvent`` (Finder's "Open With")."""
        app.installEventFilter(self)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.FileOpen:
            path = event.file()
            if path:
                self.paths_received.emit([os.path.abspath(path)])
                return True
        return False

    def _accept(self) -> None:
        while self._server is not None and self._server.hasPendingConnections():
            socket = self._server.nextPendingConnection()
            self._buffers[socket] = bytearray()
            socket.readyRead.connect(lambda s=socket: self._read(s))
            socket.disconnected.connect(lambda s=socket: self._forget(s))
            self._read(socket)

    def _read(self, socket: QLocalSocket) -> None:
        buffer = self._buffers.get(socket)
        if buffer is None:
            return
        buffer += bytes(socket.readAll().data())
        try:
            found = decode_message(bytes(buffer))
        except ValueError:
            self._forget(socket)
            return
        if found is None:
            return
        socket.write(ACK)
        socket.flush()
        self._buffers[socket] = bytearray()  # answered; the sender closes its end
        self.paths_received.emit(found)

    def _forget(self, socket: QLocalSocket) -> None:
        self._buffers.pop(socket, None)
        socket.readyRead.disconnect()
        socket.disconnected.disconnect()
        socket.abort()
        socket.deleteLater()


def send(paths: list[str], name: str, timeout_ms: int = 2000) -> bool:
    """Hand ``paths`` to the primary listening on ``name``; True once it acknowledged them."""
    socket = QLocalSocket()
    socket.connectToServer(name)
    if not socket.waitForConnected(timeout_ms):
        return False
    if sys.platform == "win32":  # let the primary bring its window to the front
        import ctypes

        ctypes.windll.user32.AllowSetForegroundWindow(-1)
    socket.write(encode_message(paths))
    if not socket.waitForBytesWritten(timeout_ms):
        socket.abort()
        return False
    reply = b""
    while len(reply) < len(ACK):
        if not socket.waitForReadyRead(timeout_ms):
            break
        reply += bytes(socket.readAll().data())
    socket.abort()
    return reply[:len(ACK)] == ACK


def claim(paths: Iterable[str | os.PathLike[str]] = (), *, timeout_s: float = 20.0) -> Primary | None:
    """Become the primary (returned, with ``paths`` as its :attr:`Primary.initial_paths`) or hand
    ``paths`` to the running one (None). Listening starts at once when a Qt application exists,
    otherwise at :meth:`Primary.listen`."""
    wanted = absolute(paths)
    name = instance_name()
    lock = QLockFile(lock_file_path())
    lock.setStaleLockTime(0)  # stale only when its process is gone, never by age
    deadline = time.monotonic() + timeout_s
    while True:
        if lock.tryLock(0):
            primary = Primary(lock, name, wanted)
            if QCoreApplication.instance() is not None:
                primary.listen()
            return primary
        if lock.error() != QLockFile.LockError.LockFailedError:
            raise SingleInstanceError(f"cannot use the lock file {lock_file_path()} ({lock.error().name})")
        if send(wanted, name):
            return None
        if time.monotonic() > deadline:
            raise SingleInstanceError("GMI Desktop is running but does not answer; close it and try again")
        time.sleep(0.05)
