"""Opening the model host for a face that may not import ``engine`` itself (the GUI's GPU lane).

The host module imports nothing heavy at import time; torch and the model libraries load on the
first model a job asks for, on the thread that asks.
"""

from __future__ import annotations

from typing import Any

from gmi_desktop.engine.host import ModelHost


def open_host(settings: Any) -> ModelHost:
    """A fresh :class:`~gmi_desktop.engine.host.ModelHost` for ``settings`` (nothing loaded yet)."""
    return ModelHost(settings)
