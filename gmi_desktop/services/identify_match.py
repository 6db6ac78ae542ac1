"""Exact and same-name matches between the checkpoints an image's metadata names and the library.

A hash in the metadata equal to a local file's AutoV2 (10 hex), AutoV1 (8 hex) or SHA-256 is an
**exact** match. A model name equal to a local file's name is a weaker **same name** match when
the hashes differ or the image gives none. Names compare without case and checkpoint suffix, as
the UIs write them: the file stem (A1111 ``Model: dreamy``), the path below the models folder
(ComfyUI ``ckpt_name`` ``SD15/dreamy.safetensors``, ``\\`` or ``/``), or that path joined with
``_`` (A1111 names a checkpoint in a subfolder ``SD15_dreamy``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from gmi_desktop.services.identify_types import Evidence, RankedModel
from gmi_desktop.store.catalog import Catalog, FileRecord
from gmi_desktop.store.metadata import ImageMetadata, ModelRef, model_name_key

HASH_LABELS = {"autov2": "AutoV2", "autov1": "AutoV1", "sha256": "SHA-256"}
NAME_DEPTH = 4  # folders above a file that a UI may put in a model's name


def name_keys(record: FileRecord) -> set[str]:
    """Every form a UI may write this file's name in (see the module docstring)."""
    parts = [p.lower() for p in record.path.parent.parts[-NAME_DEPTH:]]
    stem = record.path.stem.lower()
    keys = {stem}
    for k in range(1, len(parts) + 1):
        keys.add("/".join(parts[-k:] + [stem]))
        keys.add("_".join(parts[-k:] + [stem]))
    return keys


def _file_hash(record: FileRecord, kind: str) -> str | None:
    return {"autov2": record.autov2, "autov1": record.autov1, "sha256": record.sha256}.get(kind)


def _where(meta: ImageMetadata, ref: ModelRef) -> str:
    return f"{meta.path.name} ({ref.field}, {meta.source})"


def match_metadata(metadata: Iterable[ImageMetadata], catalog: Catalog,
                   completeness: Callable[[str | None], float] = lambda sha: 0.0) -> tuple[RankedModel, ...]:
    """The library files the images' metadata points at, exact matches first, with evidence."""
    metas = [m for m in metadata if m is not None and m.models]
    if not metas:
        return ()
    present = [r for r in catalog.files() if r.status not in ("missing", "skipped")]
    by_key: dict[str, list[FileRecord]] = {}
    for record in present:
        for key in name_keys(record):
            by_key.setdefault(key, []).append(record)
    found: dict[str, tuple[FileRecord, list[Evidence]]] = {}  # sha256 (or path) -> first file + evidence

    def add(record: FileRecord, evidence: Evidence) -> None:
        key = record.sha256 or str(record.path)
        entry = found.setdefault(key, (record, []))
        if evidence not in entry[1]:
            entry[1].append(evidence)

    for meta in metas:
        for ref in meta.models:
            exact_keys = set()
            digest = ref.comparable_hash
            if digest:
                label = HASH_LABELS[ref.hash_kind]
                for record in catalog.find_by_hash(digest):
                    if record.status == "missing":
                        continue
                    exact_keys.add(record.sha256)
                    add(record, Evidence("exact", f"{label} {digest} in {_where(meta, ref)} equals this file's {label}"))
            if not ref.name:
                continue
            for record in by_key.get(model_name_key(ref.name), []):
                if record.sha256 and record.sha256 in exact_keys:
                    continue
                if ref.hash is None:
                    why = "the image gives no hash"
                elif digest is None:
                    why = f"its hash {ref.hash} ({ref.hash_kind}) cannot be compared with ours"
                elif record.sha256 is None:
                    why = "this file is not hashed yet"
                else:
                    label = HASH_LABELS[ref.hash_kind]
                    why = f"but its {label} {digest} differs from this file's {_file_hash(record, ref.hash_kind)}"
                add(record, Evidence("same_name", f'model name "{ref.name}" in {_where(meta, ref)} equals '
                                                  f"this file's name; {why}"))
    entries = []
    for record, evidence in found.values():
        has_exact = any(e.kind == "exact" for e in evidence)
        ordered = tuple(sorted(evidence, key=lambda e: e.kind != "exact"))
        entries.append((not has_exact, record.name.lower(), record, ordered))
    entries.sort(key=lambda e: (e[0], e[1], str(e[2].path)))
    return tuple(
        RankedModel(rank=i + 1, sha256=record.sha256, name=record.name, path=record.path, family=record.family,
                    score=None, completeness=completeness(record.sha256), evidence=evidence)
        for i, (_, _, record, evidence) in enumerate(entries)
    )


def evidence_by_sha(matches: Sequence[RankedModel]) -> dict[str, tuple[Evidence, ...]]:
    return {m.sha256: m.evidence for m in matches if m.sha256}
