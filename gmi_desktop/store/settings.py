"""One typed settings object: defaults < ``settings.toml`` in the config dir < ``GMI_*`` env < CLI.

Each field's environment variable is ``GMI_`` + the upper-cased field name (``GMI_DEVICE=cpu``).
Unknown keys in the TOML file are reported, not silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from gmi_desktop.core.errors import SettingsError
from gmi_desktop.store import paths


@dataclass(frozen=True)
class Settings:
    # Library
    library_folders: tuple[str, ...] = ()
    # Devices: "auto" picks cuda > mps > cpu.
    device: str = "auto"
    low_vram: bool = False
    # Encoders (paper: OpenAI CLIP ViT-L/14 for SD 1.x).
    clip_model: str = "ViT-L-14"
    clip_pretrained: str = "openai"
    clip_weights: str = ""  # explicit local file/folder; empty = look in caches, then download
    blip_model: str = "Salesforce/blip-image-captioning-large"
    blip_weights: str = ""
    interrogator_mode: str = "fast"  # fast | classic | best | negative
    interrogator_labels: str = ""  # folder with clip-interrogator label lists; empty = its bundled ones
    allow_downloads: bool = True
    # Generation of specification images.
    scheduler: str = "dpmpp_2m"
    steps: int = 25
    guidance_scale: float = 7.0
    resolution: int = 0  # 0 = the family's native size (512 SD1, 768 SD2, 1024 SDXL)
    batch_size: int = 4
    seed: int = 0
    # Identification.
    method: str = "proposal"
    gamma: float = 0.0  # 0 = the documented default for the encoder's feature scale
    top_k: int = 10  # how many ranked models the app and `identify` show (at least 1)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)


# Lower bounds checked wherever a value comes in (file, environment, command line, settings dialog).
MINIMUM = {"top_k": 1}


def _coerce(name: str, kind: Any, raw: Any, source: str) -> Any:
    value = _convert(name, kind, raw, source)
    if name in MINIMUM and value < MINIMUM[name]:
        raise SettingsError(source, f"setting {name!r} must be at least {MINIMUM[name]}, got {value!r}")
    return value


def _convert(name: str, kind: Any, raw: Any, source: str) -> Any:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if "tuple" in kind_name:
            if isinstance(raw, str):
                return tuple(p for p in raw.split(os.pathsep) if p)
            if not isinstance(raw, (list, tuple)) or not all(isinstance(p, (str, os.PathLike)) for p in raw):
                raise TypeError(raw)
            return tuple(os.fspath(p) for p in raw)
        if kind_name == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind_name == "int":
            if isinstance(raw, bool) or not isinstance(raw, (int, str)):
                raise TypeError(raw)  # no silent 2.5 -> 2 or true -> 1
            return int(raw)
        if kind_name == "float":
            if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
                raise TypeError(raw)
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
        if not isinstance(raw, (str, os.PathLike)):
            raise TypeError(raw)
        return os.fspath(raw)
    except (TypeError, ValueError):
        raise SettingsError(source, f"setting {name!r} has an invalid value {raw!r}") from None


def load_settings(path: Path | None = None, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings: defaults, then the TOML file, then ``GMI_*`` env vars, then ``overrides``."""
    path = paths.settings_path() if path is None else path
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    known = {f.name: f.type for f in fields(Settings) if f.name != "extra"}
    extra: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(path, f"cannot read settings: {exc}") from None
        for key, raw in data.items():
            if key in known:
                values[key] = _coerce(key, known[key], raw, str(path))
            else:
                extra[key] = raw
    for key, kind in known.items():
        raw = env.get(f"GMI_{key.upper()}")
        if raw is not None:
            values[key] = _coerce(key, kind, raw, f"GMI_{key.upper()}")
    for key, raw in overrides.items():
        if raw is None:
            continue
        if key not in known:
            raise SettingsError(None, f"unknown setting {key!r}")
        values[key] = _coerce(key, known[key], raw, "command line")
    return Settings(**values, extra=extra)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def save_settings(changes: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``changes`` (field name -> value) into ``settings.toml``, keeping its other keys.

    Values are checked like the file's own (a bad one is a :class:`SettingsError` and nothing is
    written); the file is replaced atomically. Environment variables still win when loading.
    """
    from gmi_desktop.store.atomic import atomic_write_bytes

    path = paths.settings_path() if path is None else path
    known = {f.name: f.type for f in fields(Settings) if f.name != "extra"}
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(path, f"cannot read settings: {exc}") from None
    for key, raw in changes.items():
        if key not in known:
            raise SettingsError(path, f"unknown setting {key!r}")
        data[key] = _coerce(key, known[key], raw, "settings dialog")
    text = "# GMI Desktop settings (written by the app; see store/settings.py)\n"
    text += "".join(f"{key} = {_toml(value)}\n" for key, value in sorted(data.items()))
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
