"""Real "permission denied" in tests that run as root.

Root bypasses file modes through two Linux capabilities, CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH.
:func:`run_without_permission_override` runs a function in a forked child that has dropped both
(``capset``), so ``chmod 000`` denies it exactly as it denies an ordinary user. As an ordinary
user nothing needs dropping and the child just runs the function.
"""

from __future__ import annotations

import ctypes
import os
import traceback
from collections.abc import Callable

_CAP_VERSION_3 = 0x20080522
_DAC_BITS = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_dac_capabilities() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    header = _Header(_CAP_VERSION_3, 0)
    data = (_Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    for field in ("effective", "permitted", "inheritable"):
        setattr(data[0], field, getattr(data[0], field) & ~_DAC_BITS)
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def run_without_permission_override(fn: Callable[[], None]) -> int:
    """Run ``fn`` in a child process that obeys file modes; returns its exit code (0 = fn returned).

    Close SQLite connections before calling (a connection must not cross a fork)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            if os.geteuid() == 0:
                _drop_dac_capabilities()
            fn()
            code = 0
        except BaseException:  # noqa: BLE001 - report anything, then leave the child
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
