"""Prompt sets: the default specification set, the disjoint evaluation set, per-model sidecars.

Files are UTF-8 text, one prompt per line; blank lines and lines starting with ``#`` are ignored,
a prompt seen twice is kept once (first place). ``resources/prompts/default.txt`` (55 prompts,
paper §4.1) makes specifications; ``resources/prompts/evaluation.txt`` (18 prompts, disjoint from
it) makes test images for benchmarks.

A model's developer can ship its own prompts (paper A.5): ``<checkpoint stem>.prompts.txt`` beside
the checkpoint **replaces** the default set for that model; a line ``@default`` in it **extends**
instead, inserting the default set at that place (e.g. the developer's prompts first, then
``@default``). The prompt set is part of a specification's recipe, so editing a sidecar rebuilds
only that model's specification.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from gmi_desktop.core.errors import UserInputError
from gmi_desktop.store.resources import resources_dir

SIDECAR_SUFFIX = ".prompts.txt"
INCLUDE_DEFAULT = "@default"
MAX_PROMPTS = 1000
COARSE_STRIDE = 5  # the coarse pass uses every 5th prompt: 11 of the 55 defaults


class PromptFileError(UserInputError):
    default_hint = "one prompt per line; '#' starts a comment; '@default' includes the default set"


@dataclass(frozen=True)
class PromptSet:
    prompts: tuple[str, ...]
    source: str  # "default" | "sidecar" | "sidecar+default"
    path: Path | None = None  # the sidecar, when there is one

    def __len__(self) -> int:
        return len(self.prompts)


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PromptFileError(path, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise PromptFileError(path, f"cannot read the prompt file: {exc.strerror or exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _unique(prompts: list[str], path: Path) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(prompts))
    if not out:
        raise PromptFileError(path, "the prompt file holds no prompts")
    if len(out) > MAX_PROMPTS:
        raise PromptFileError(path, f"{len(out)} prompts; at most {MAX_PROMPTS} are allowed")
    return out


def read_prompt_file(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The prompts of one file (no ``@default`` expansion)."""
    path = Path(path)
    return _unique([p for p in _lines(path) if p != INCLUDE_DEFAULT], path)


def prompts_dir() -> Path:
    return resources_dir() / "prompts"


def default_prompts() -> tuple[str, ...]:
    return read_prompt_file(prompts_dir() / "default.txt")


def evaluation_prompts() -> tuple[str, ...]:
    return read_prompt_file(prompts_dir() / "evaluation.txt")


def sidecar_path(checkpoint: str | os.PathLike[str]) -> Path:
    """``model.safetensors`` -> ``model.prompts.txt`` (a diffusers folder ``m/`` -> ``m.prompts.txt``)."""
    path = Path(checkpoint)
    stem = path.name if path.is_dir() else path.stem
    return path.with_name(stem + SIDECAR_SUFFIX)


def prompt_set_for(checkpoint: str | os.PathLike[str] | None) -> PromptSet:
    """The prompts a checkpoint's specification is built from: its sidecar, else the default."""
    sidecar = sidecar_path(checkpoint) if checkpoint is not None else None
    if sidecar is None or not sidecar.is_file():
        return PromptSet(default_prompts(), "default")
    lines = _lines(sidecar)
    if INCLUDE_DEFAULT not in lines:
        return PromptSet(_unique(lines, sidecar), "sidecar", sidecar)
    defaults = default_prompts()
    expanded: list[str] = []
    for line in lines:
        expanded.extend(defaults if line == INCLUDE_DEFAULT else (line,))
    return PromptSet(_unique(expanded, sidecar), "sidecar+default", sidecar)


def coarse_indices(n: int, stride: int = COARSE_STRIDE) -> tuple[int, ...]:
    """A fixed, well-spread subset of ``range(n)`` for the coarse pass: ``ceil(n / stride)``
    indices ``floor(k * n / size)`` (every 5th of 55; evenly spread for any other size)."""
    if n <= 0:
        return ()
    size = math.ceil(n / stride)
    return tuple(sorted({(k * n) // size for k in range(size)}))
