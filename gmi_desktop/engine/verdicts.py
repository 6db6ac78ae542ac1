"""What the engine learnt about a checkpoint or a device, kept so it is learnt only once.

One small JSON file (``<data dir>/engine_verdicts.json``), written atomically, with sections:

* ``prediction``: checkpoint SHA-256 -> ``"epsilon"`` | ``"v_prediction"`` (SD 2.x files that do
  not say which, decided by one UNet evaluation; see :mod:`gmi_desktop.engine.prediction`);
* ``precision``: ``<device key>|<checkpoint>`` -> ``"fp16"`` | ``"fp16, fp32 VAE"`` | ``"fp32"``
  (what made finite images on that kind of GPU);
* ``batch``: ``<device key>|<family>|<resolution>`` -> the batch that fitted (and kept its speed)
  after a larger one ran out of memory or slowed down: later plans stay at or below it.

The file is a cache: a damaged or foreign one is ignored (and replaced on the next write), never an
error; losing it only costs relearning.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from gmi_desktop.store.atomic import atomic_write_bytes

SECTIONS = ("prediction", "precision", "batch")
FILE_NAME = "engine_verdicts.json"


class Verdicts:
    """Remembered verdicts; ``path=None`` keeps them in memory only."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] | None = None

    @classmethod
    def default(cls) -> "Verdicts":
        from gmi_desktop.store import paths

        return cls(paths.data_dir() / FILE_NAME)

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._data is None:
            data: Any = {}
            if self.path is not None and self.path.is_file():
                try:
                    data = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                    data = {}
            if not isinstance(data, dict):
                data = {}
            self._data = {s: dict(data[s]) if isinstance(data.get(s), dict) else {} for s in SECTIONS}
        return self._data

    def get(self, section: str, key: str) -> Any:
        with self._lock:
            return self._load()[section].get(key)

    def put(self, section: str, key: str, value: Any) -> None:
        if section not in SECTIONS:
            raise ValueError(f"unknown verdict section {section!r}")
        with self._lock:
            data = self._load()
            if data[section].get(key) == value:
                return
            data[section][key] = value
            if self.path is not None:
                atomic_write_bytes(self.path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))
