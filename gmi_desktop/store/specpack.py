"""Spec packs: specifications shared between users, keyed by checkpoint SHA-256 + recipe digest.

A user with a weak GPU imports specifications someone else built for the same files. A pack is
a zip file::

    manifest.json                      {"kind": "gmi-spec-pack", "format_version": 1, "entries": [...]}
    specs/<sha256>.<recipe16>.safetensors   the spec files, byte for byte as stored

Each manifest entry names its ``file``, ``checkpoint_sha256``, ``recipe_digest`` (see
:func:`recipe_digest`), ``encoder_id``, ``images``, ``size`` and ``sha256`` (of the file bytes).
Export writes entries in a fixed order with fixed timestamps: the same specifications always
make the same pack bytes.

**Import treats the pack as untrusted.** Each entry is refused, with one line saying why, when
its name could land outside the store (absolute, ``..``, backslashes, links) or is not listed /
listed twice; it is larger than :data:`MAX_ENTRY_BYTES` or inflates more than
:data:`MAX_RATIO` times its compressed size (read with a hard limit, never trusting the declared
size); its bytes do not match the manifest's SHA-256; it is not a valid specification file (our
checked format: shapes, NaN/inf, checksum); its checkpoint or recipe disagrees with its key; its
encoder is not the one this installation uses, or its recipe is not the one this installation
builds for that checkpoint; or its feature width differs from the local specifications of that
encoder. The destination name is always computed by us
(:func:`~gmi_desktop.store.specfile.spec_filename`), never taken from the archive. Everything is
checked before anything is written, each accepted file is written atomically, and a local
specification is replaced only by a strictly more complete one (more images) of the same
checkpoint and encoder, or when its own recipe is outdated: nothing else in the store is touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gmi_desktop.core.errors import UserInputError
from gmi_desktop.core.spec import Specification, SpecRecipe
from gmi_desktop.store.atomic import atomic_writer, atomic_write_bytes
from gmi_desktop.store.specfile import SpecStore, load_spec, spec_filename, spec_to_bytes

KIND = "gmi-spec-pack"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 4 << 20
MAX_ENTRY_BYTES = 256 << 20  # a 55-image ViT-L spec is ~0.4 MB; 1 000 images of ViT-bigG ~10 MB
MAX_RATIO = 20  # float features deflate by ~1.1x; a ratio like this is a bomb
MAX_ENTRIES = 100_000
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class SpecPackError(UserInputError):
    """The pack as a whole cannot be read (not a zip, no manifest, ...)."""

    default_hint = "ask for the pack again, or export it again with gmi-desktop specs export"


def recipe_digest(recipe: SpecRecipe) -> str:
    """How a specification was made, without *which* checkpoint: the spec builder's digest of its
    recipe (``generation["recipe_digest"]``: encoder, full prompt set, seeds, steps, scheduler,
    guidance, resolution; shared by the coarse and the full specification), else the SHA-256 of
    the recipe's canonical JSON without the checkpoint."""
    digest = recipe.generation.get("recipe_digest")
    if isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest):
        return digest
    payload = {"encoder_id": recipe.encoder_id, "prompt_set_digest": recipe.prompt_set_digest,
               "generation": dict(recipe.generation), "format_version": recipe.format_version}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def entry_name(spec: Specification) -> str:
    return f"specs/{spec.recipe.checkpoint_sha256}.{recipe_digest(spec.recipe)[:16]}.safetensors"


# -- export ------------------------------------------------------------------------------------
def export_pack(pack: str | os.PathLike[str], specs: Iterable[Specification]) -> list[Specification]:
    """Write ``specs`` into the pack file ``pack`` (atomically); returns what was written."""
    chosen = sorted(specs, key=lambda s: (s.recipe.checkpoint_sha256, recipe_digest(s.recipe)))
    entries, blobs = [], []
    for spec in chosen:
        data = spec_to_bytes(spec)
        entries.append({
            "file": entry_name(spec), "checkpoint_sha256": spec.recipe.checkpoint_sha256,
            "recipe_digest": recipe_digest(spec.recipe), "encoder_id": spec.recipe.encoder_id,
            "model_id": spec.model_id, "name": spec.name, "images": spec.n_images,
            "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        })
        blobs.append(data)
    manifest = {"kind": KIND, "format_version": FORMAT_VERSION, "entries": entries}
    with atomic_writer(pack) as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
        _write(archive, MANIFEST, json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False).encode())
        for entry, data in zip(entries, blobs):
            _write(archive, entry["file"], data)
    return chosen


def _write(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    archive.writestr(info, data)


# -- import ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PackDecision:
    """What happened to one entry: ``action`` ``"imported"``, ``"kept"`` (the local spec is as
    complete or more) or ``"refused"``, with a one-line ``reason``."""

    entry: str
    action: str
    reason: str
    spec: Specification | None = None
    path: Path | None = None

    def __str__(self) -> str:
        return f"{self.action}: {self.entry}: {self.reason}"


@dataclass
class ImportResult:
    decisions: list[PackDecision] = field(default_factory=list)

    def of(self, action: str) -> list[PackDecision]:
        return [d for d in self.decisions if d.action == action]


def _unsafe_name(name: str) -> str | None:
    if not name or name.startswith(("/", "\\")) or "\\" in name or ":" in name or "\x00" in name:
        return "its name would land outside the spec store"
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "its name would land outside the spec store"
    return None


def _read_limited(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes | str:
    """The entry's bytes, or the reason it is refused (never reading more than ``limit`` + 1)."""
    if info.file_size > limit:
        return f"entry is {info.file_size} bytes, over the {limit}-byte limit"
    if info.compress_size and info.file_size > MAX_RATIO * max(info.compress_size, 1) and info.file_size > 1 << 20:
        return f"entry inflates {info.file_size // max(info.compress_size, 1)}x (a compression bomb)"
    try:
        with archive.open(info) as handle:
            data = handle.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        return f"entry cannot be read ({exc})"
    if len(data) > limit:
        return f"entry is larger than the {limit}-byte limit (its header understates it)"
    if info.compress_size and len(data) > MAX_RATIO * max(info.compress_size, 1) and len(data) > 1 << 20:
        return f"entry inflates {len(data) // max(info.compress_size, 1)}x (a compression bomb)"
    return data


def _manifest(archive: zipfile.ZipFile, pack: Path) -> list[dict]:
    found = [i for i in archive.infolist() if i.filename == MANIFEST]
    if len(found) != 1:
        raise SpecPackError(pack, f"no {MANIFEST} in the pack" if not found else f"{MANIFEST} is stored twice")
    info = found[0]
    data = _read_limited(archive, info, MAX_MANIFEST_BYTES)
    if isinstance(data, str):
        raise SpecPackError(pack, f"{MANIFEST}: {data}")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SpecPackError(pack, f"{MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise SpecPackError(pack, "not a GMI Desktop spec pack")
    if doc.get("format_version") != FORMAT_VERSION:
        raise SpecPackError(pack, f"spec pack format {doc.get('format_version')!r} is not supported "
                                  f"(this version reads {FORMAT_VERSION})", "update GMI Desktop")
    entries = doc.get("entries")
    if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
        raise SpecPackError(pack, f"{MANIFEST} has no valid entries list")
    return entries


_FIELDS = {"file": str, "checkpoint_sha256": str, "recipe_digest": str, "encoder_id": str, "sha256": str}


def _check_entry(entry, archive, infos, seen, encoder_id, expected, local_dims) -> PackDecision:
    if not isinstance(entry, dict) or any(not isinstance(entry.get(k), t) for k, t in _FIELDS.items()):
        return PackDecision(str(entry)[:80], "refused", "manifest entry lacks file, keys or checksum")
    name = entry["file"]
    label = name
    if name in seen:
        return PackDecision(label, "refused", "listed twice in the manifest")
    seen.add(name)
    reason = _unsafe_name(name)
    if reason:
        return PackDecision(label, "refused", reason)
    matching = [i for i in infos if i.filename == name]
    if not matching:
        return PackDecision(label, "refused", "listed in the manifest but not in the pack")
    if len(matching) > 1:
        return PackDecision(label, "refused", "stored twice in the pack")
    info = matching[0]
    mode = info.external_attr >> 16
    if info.is_dir() or stat.S_IFMT(mode) not in (0, stat.S_IFREG):  # 0: no type recorded (plain file)
        return PackDecision(label, "refused", "not a regular file (a link or folder)")
    data = _read_limited(archive, info, MAX_ENTRY_BYTES)
    if isinstance(data, str):
        return PackDecision(label, "refused", data)
    if hashlib.sha256(data).hexdigest() != entry["sha256"].lower():
        return PackDecision(label, "refused", "checksum mismatch: the bytes differ from the manifest's SHA-256")
    with tempfile.TemporaryDirectory(prefix="gmi-pack-") as tmp:
        path = Path(tmp) / "entry.safetensors"
        path.write_bytes(data)
        try:
            spec = load_spec(path)
        except UserInputError as exc:
            return PackDecision(label, "refused", f"not a valid specification: {exc.reason}")
    recipe = spec.recipe
    if recipe.checkpoint_sha256 != entry["checkpoint_sha256"].lower():
        return PackDecision(label, "refused", "its checkpoint SHA-256 differs from its key in the manifest")
    if recipe_digest(recipe) != entry["recipe_digest"].lower():
        return PackDecision(label, "refused", "its recipe differs from its recipe digest in the manifest")
    if recipe.encoder_id != entry["encoder_id"]:
        return PackDecision(label, "refused", "its encoder differs from the manifest's")
    if encoder_id is not None and recipe.encoder_id != encoder_id:
        return PackDecision(label, "refused", f"made with {recipe.encoder_id}, this installation uses {encoder_id}")
    wanted = (expected or {}).get(recipe.checkpoint_sha256)
    if wanted is not None and recipe_digest(recipe) != wanted:
        return PackDecision(label, "refused", "its recipe (prompt set, generation settings) is not the one "
                                              "this installation builds for that checkpoint")
    dims = local_dims.get(recipe.encoder_id)
    shape = (spec.image_features.shape[1], spec.prompt_features.shape[1])
    if dims is not None and shape != dims:
        return PackDecision(label, "refused", f"feature widths {shape} differ from the local {recipe.encoder_id} "
                                              f"specifications' {dims}")
    return PackDecision(label, "imported", f"{spec.name}: {spec.n_images} images", spec)


def import_pack(pack: str | os.PathLike[str], store_dir: str | os.PathLike[str], *,
                encoder_id: str | None = None, expected: Mapping[str, str] | None = None) -> ImportResult:
    """Import the acceptable entries of ``pack`` into ``store_dir`` (see the module docstring).

    ``encoder_id``: the encoder this installation uses (None: any); ``expected``: checkpoint
    SHA-256 -> the recipe digest this installation builds for it (checkpoints not in it are
    accepted under any recipe of that encoder). Raises :class:`SpecPackError` only when the pack
    as a whole is unreadable.
    """
    pack = Path(pack)
    store = Path(store_dir)
    if not pack.is_file():
        raise SpecPackError(pack, "no such file" if not pack.exists() else "not a file")
    local = SpecStore(store) if store.is_dir() else None
    local_specs = {(s.model_id, s.recipe.encoder_id): (s, p) for s, p in zip(local.specs, local.paths)} if local else {}
    local_dims = {enc: (s.image_features.shape[1], s.prompt_features.shape[1]) for (_, enc), (s, _) in local_specs.items()}
    result = ImportResult()
    try:
        with zipfile.ZipFile(pack) as archive:
            infos = archive.infolist()
            entries = _manifest(archive, pack)
            seen: set[str] = set()
            for entry in entries:
                result.decisions.append(_check_entry(entry, archive, infos, seen, encoder_id, expected, local_dims))
            listed = seen | {MANIFEST}
            for info in infos:
                if info.filename not in listed:
                    reason = _unsafe_name(info.filename) or "not listed in the manifest"
                    result.decisions.append(PackDecision(info.filename, "refused", reason))
    except zipfile.BadZipFile as exc:
        raise SpecPackError(pack, f"not a zip file ({exc})") from None
    except OSError as exc:
        raise SpecPackError(pack, f"cannot read the pack: {exc.strerror or exc}") from None
    final = []
    for decision in result.decisions:
        spec = decision.spec
        if decision.action != "imported" or spec is None:
            final.append(decision)
            continue
        mine = local_specs.get((spec.model_id, spec.recipe.encoder_id))
        wanted = (expected or {}).get(spec.recipe.checkpoint_sha256)
        stale = mine is not None and wanted is not None and recipe_digest(mine[0].recipe) != wanted
        if mine is not None and not stale and mine[0].n_images >= spec.n_images:
            final.append(PackDecision(decision.entry, "kept", f"the local specification of {spec.name} has "
                                      f"{mine[0].n_images} images (the pack's {spec.n_images})", spec, mine[1]))
            continue
        target = store / spec_filename(spec.model_id, spec.recipe.encoder_id)
        atomic_write_bytes(target, spec_to_bytes(spec))
        local_specs[(spec.model_id, spec.recipe.encoder_id)] = (spec, target)
        final.append(PackDecision(decision.entry, "imported", decision.reason, spec, target))
    result.decisions = final
    return result
