"""Test-wide guard rails: offscreen Qt, no network, every app/library dir redirected to tmp_path."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# Hugging Face / transformers / diffusers must never try the hub in tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["DO_NOT_TRACK"] = "1"

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}


class NetworkAccessInTest(RuntimeError):
    pass


def _is_local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0] if address else ""
    return host in _LOCAL_HOSTS or str(host).startswith("127.")


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _guarded_connect(self, address):
    if not _is_local(address):
        raise NetworkAccessInTest(f"test tried to connect to {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_local(address):
        raise NetworkAccessInTest(f"test tried to connect to {address!r}")
    return _real_connect_ex(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    if host not in _LOCAL_HOSTS and not str(host).startswith("127.") and host is not None:
        raise NetworkAccessInTest(f"test tried to resolve {host!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
socket.getaddrinfo = _guarded_getaddrinfo


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory, monkeypatch):
    """Point every data/config/cache location of ours and of the ML libraries into a temp dir."""
    base = tmp_path_factory.mktemp("appdirs")
    for name in ("data", "config", "cache", "hf", "torch", "xdg_cache", "xdg_config", "xdg_data"):
        (base / name).mkdir()
    monkeypatch.setenv("GMI_DATA_DIR", str(base / "data"))
    monkeypatch.setenv("GMI_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("GMI_CACHE_DIR", str(base / "cache"))
    monkeypatch.setenv("HF_HOME", str(base / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(base / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "xdg_cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "xdg_config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(base / "xdg_data"))
    for key in [k for k in os.environ if k.startswith("GMI_") and k not in {"GMI_DATA_DIR", "GMI_CONFIG_DIR", "GMI_CACHE_DIR"}]:
        monkeypatch.delenv(key, raising=False)
    yield base


# process-wide helper threads libraries start once and keep (tqdm's monitor, started by
# clip-interrogator's progress bars): not ours to stop
_LIBRARY_SINGLETONS = {"tqdm_monitor"}


@pytest.fixture(autouse=True)
def _no_leaked_threads():
    """Fail a test that leaves a thread of its own running (a watcher, a generation helper...)."""
    import threading
    import time

    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and t.name not in _LIBRARY_SINGLETONS]
    for thread in leaked:
        thread.join(max(0.0, deadline - time.monotonic()))
    leaked = [t.name for t in leaked if t.is_alive()]
    assert not leaked, f"test left threads running: {leaked}"
