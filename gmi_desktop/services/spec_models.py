"""Which checkpoints get a specification, in which order, under which recipe (no torch).

One :class:`Model` per content SHA-256 of the catalog's usable (``ok``) checkpoints: duplicates and
renamed copies share it. Its file is the first present path (sorted); its prompt set the first
``.prompts.txt`` sidecar found beside any of its paths (sorted), else the default set.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmi_desktop.core.errors import UserInputError
from gmi_desktop.core.spec import SPEC_FORMAT_VERSION, prompt_set_digest
from gmi_desktop.engine.sd_configs import native_resolution
from gmi_desktop.store.catalog import Catalog, FileRecord
from gmi_desktop.store.prompts import prompt_set_for
from gmi_desktop.store.spec_state import SpecPaths
from gmi_desktop.store.specfile import spec_filename

BUILDABLE_VARIANTS = ("normal", "inpaint")


def recipe_for(settings: Any, encoder_id: str, family: str, variant: str, prompts: Sequence[str]) -> dict[str, Any]:
    """Everything that decides a specification's features, as plain JSON values."""
    return {
        "encoder_id": encoder_id,
        "prompt_set_digest": prompt_set_digest(prompts),
        "prompts_total": len(prompts),
        "seed": int(settings.seed),
        "images_per_prompt": 1,
        "steps": int(settings.steps),
        "scheduler": settings.scheduler,
        "guidance_scale": float(settings.guidance_scale),
        "resolution": int(settings.resolution) or native_resolution(family, None, variant),
        "negative_prompt": "",
        "family": family,
        "variant": variant,
        "format_version": SPEC_FORMAT_VERSION,
    }


def recipe_digest(recipe: dict[str, Any]) -> str:
    """SHA-256 of the recipe's canonical JSON: equal digests, interchangeable specifications."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


@dataclass
class Model:
    key: str  # sha256, or the path of a file not hashed yet
    sha256: str
    name: str
    record: FileRecord  # the file generated from: the first of ``records``
    records: list[FileRecord]
    added: float
    encoder_id: str
    paths: SpecPaths
    prompts: tuple[str, ...] = ()
    prompt_source: str = "default"
    recipe: dict[str, Any] | None = None
    digest: str = ""
    skip_reason: str = ""
    fail_reason: str = ""

    @property
    def family(self) -> str:
        return self.record.family or ""

    @property
    def variant(self) -> str:
        return self.record.variant or "normal"


def _model(sha: str, records: list[FileRecord], settings: Any, encoder_id: str, store: Path) -> Model:
    record = records[0]
    model = Model(sha or str(record.path), sha, record.name, record, records, min(r.first_seen for r in records), encoder_id,
                  SpecPaths.of(store, spec_filename(sha or "unhashed", encoder_id)))
    if not sha:
        model.skip_reason = "not hashed yet (run gmi-desktop scan)"
        return model
    if not record.family or record.variant not in BUILDABLE_VARIANTS:
        model.skip_reason = f"{record.family or 'unknown'} {record.variant or ''} checkpoints cannot make images from a prompt alone"
        return model
    try:
        chosen = next((p for p in (prompt_set_for(r.path) for r in records) if p.source != "default"), None)
        chosen = chosen or prompt_set_for(None)
    except UserInputError as exc:
        model.fail_reason = exc.message
        return model
    model.prompts, model.prompt_source = chosen.prompts, chosen.source
    model.recipe = recipe_for(settings, encoder_id, model.family, model.variant, chosen.prompts)
    model.digest = recipe_digest(model.recipe)
    return model


def _matches(query: str, model: Model) -> bool:
    q = query.strip()
    low = q.casefold()
    for record in model.records:
        path = record.path
        if q in (str(path), path.name) or low in (path.stem.casefold(), path.name.casefold(), model.name.casefold()):
            return True
    if model.sha256 and len(low) >= 8 and all(c in "0123456789abcdef" for c in low):
        return model.sha256.startswith(low)
    return False


def list_models(catalog: Catalog, settings: Any, encoder_id: str, store: Path, asked: Sequence[str] | None = None,
                first: Sequence[str] = ()) -> list[Model]:
    """The models in build order: ``asked`` only (in that order) when given; else all, ``first``
    ones first, then the most recently added."""
    groups: dict[str, list[FileRecord]] = {}
    for record in catalog.files(status="ok"):
        groups.setdefault(record.sha256 or f"\0{record.path}", []).append(record)
    models = [_model("" if key.startswith("\0") else key, sorted(records, key=lambda r: str(r.path)), settings,
                     encoder_id, store) for key, records in groups.items()]
    models.sort(key=lambda m: (-m.added, m.name.casefold(), m.key))
    chosen: list[Model] = []
    for query in list(asked or ()) + list(first):
        hits = [m for m in models if _matches(query, m)]
        if not hits:
            raise UserInputError(None, f"no checkpoint in the library matches {query!r}",
                                 "name a file, its display name or its SHA-256 (at least 8 hex digits); "
                                 "run gmi-desktop scan FOLDER to add checkpoints")
        chosen += [m for m in hits if m not in chosen]
    if asked is not None:
        return chosen
    return chosen + [m for m in models if m not in chosen]
