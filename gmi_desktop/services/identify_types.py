"""The typed results of identification (see :mod:`gmi_desktop.services.identify`).

Plain frozen dataclasses, no torch: the GUI shows them and the CLI prints them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmi_desktop.store.metadata import ImageMetadata

PROMPT_SOURCES = ("user", "metadata", "interrogator")


@dataclass(frozen=True)
class Evidence:
    """Why a model is listed as a metadata match: ``kind`` ``"exact"`` (a hash in the image equals
    this file's) or ``"same_name"`` (only the name agrees); ``detail`` says which field and value."""

    kind: str
    detail: str


@dataclass(frozen=True)
class RankedModel:
    """One model in a result list.

    ``score`` is the method's score (ascending = better; None for a metadata match without a
    specification); ``completeness`` the share of its full prompt set the specification holds
    (0 when it has none); ``closest`` the spec thumbnails nearest to the query, best first.
    """

    rank: int
    sha256: str | None
    name: str
    path: Path | None
    family: str | None
    score: float | None
    completeness: float
    evidence: tuple[Evidence, ...] = ()
    closest: tuple[Path, ...] = ()

    @property
    def exact(self) -> bool:
        return any(e.kind == "exact" for e in self.evidence)


@dataclass(frozen=True)
class QueryImage:
    """One query image: its file, the metadata found in it, and the prompt it is scored with
    (``prompt_source`` ``"user"``, ``"metadata"`` or ``"interrogator"``; empty before ranking)."""

    path: Path
    metadata: ImageMetadata | None
    prompt: str = ""
    prompt_source: str = ""


@dataclass(frozen=True)
class Identification:
    """The answer to "which of my models made images like these?".

    ``ranking`` covers every model with a specification (best first); ``metadata_matches`` the
    models the images' metadata names (exact matches first). ``missing`` says in one sentence which
    weights are missing and how to get them (the metadata part works without any); ``notes``
    other things the user should know (no specifications yet, a fallback method used, ...).
    """

    queries: tuple[QueryImage, ...]
    pseudo_prompt: str
    prompt_source: str
    method: str
    ranking: tuple[RankedModel, ...]
    metadata_matches: tuple[RankedModel, ...]
    missing: str | None = None
    notes: tuple[str, ...] = ()
    state: Any = field(default=None, repr=False, compare=False)  # what rerank() reuses
