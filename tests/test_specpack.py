"""Spec packs: round trip, completeness rule, and every kind of untrusted entry refused with one
line while the store stays untouched (store/specpack.py, cli/cmd_specs.py)."""

from __future__ import annotations

import hashlib
import json
import stat
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from gmi_desktop.cli.main import main
from gmi_desktop.services.spec_models import list_models
from gmi_desktop.core.spec import SpecRecipe, Specification, prompt_set_digest
from gmi_desktop.store import paths, specpack
from gmi_desktop.store.catalog import Catalog
from gmi_desktop.store.settings import load_settings
from gmi_desktop.store.specfile import SpecStore, load_spec, save_spec, spec_filename, spec_to_bytes
from gmi_desktop.store.specpack import SpecPackError, entry_name, export_pack, import_pack, recipe_digest
from gmi_desktop.store.tensorfile import checked_bytes
from tests.support.library_files import write_checkpoint

ENCODER = "open_clip:ViT-L-14/openai"


def spec(seed: int, n: int = 6, dim: int = 8, sha: str | None = None, encoder: str = ENCODER) -> Specification:
    rng = np.random.default_rng(seed)
    prompts = tuple(f"prompt {i}" for i in range(n))
    z = rng.standard_normal((n, dim))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sha = sha or hashlib.sha256(f"checkpoint {seed}".encode()).hexdigest()
    recipe = SpecRecipe(sha, encoder, prompt_set_digest(prompts), {"steps": 25, "seed": 0})
    return Specification(sha, z, rng.standard_normal((n, dim)), prompts, recipe, display_name=f"model {seed}")


def store_with(folder: Path, *specs: Specification) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s in specs:
        save_spec(s, folder / spec_filename(s.model_id, s.recipe.encoder_id))
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def entry_for(s: Specification, data: bytes | None = None, **overrides) -> tuple[dict, bytes]:
    data = spec_to_bytes(s) if data is None else data
    entry = {"file": entry_name(s), "checkpoint_sha256": s.recipe.checkpoint_sha256,
             "recipe_digest": recipe_digest(s.recipe), "encoder_id": s.recipe.encoder_id, "model_id": s.model_id,
             "name": s.name, "images": s.n_images, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    entry.update(overrides)
    return entry, data


def write_pack(path: Path, members: list[tuple[dict | None, str, bytes]], *, links: tuple[str, ...] = ()) -> Path:
    """A pack written by hand: (manifest entry or None, member name, bytes) each."""
    manifest = {"kind": "gmi-spec-pack", "format_version": 1, "entries": [m[0] for m in members if m[0]]}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("manifest.json", json.dumps(manifest))
        for _entry, name, data in members:
            archive.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


# -- round trip --------------------------------------------------------------------------------
def test_round_trip_is_byte_identical_and_deterministic(tmp_path):
    specs = [spec(1), spec(2, n=3)]
    source = store_with(tmp_path / "a", *specs)
    pack = tmp_path / "pack.zip"
    export_pack(pack, SpecStore(source).specs)
    result = import_pack(pack, tmp_path / "b", encoder_id=ENCODER)
    assert [d.action for d in result.decisions] == ["imported", "imported"]
    assert snapshot(tmp_path / "b") == snapshot(source)
    again = tmp_path / "again.zip"
    export_pack(again, SpecStore(tmp_path / "b").specs)
    assert again.read_bytes() == pack.read_bytes()
    with zipfile.ZipFile(pack) as archive:
        names = sorted(archive.namelist())
    assert names[0] == "manifest.json" and all(n.startswith("specs/") for n in names[1:])
    assert all(s.recipe.checkpoint_sha256 in "".join(names) for s in specs)


def test_a_more_complete_local_spec_is_never_overwritten(tmp_path):
    full, coarse = spec(1, n=6), spec(1, n=3)
    pack_coarse, pack_full = tmp_path / "coarse.zip", tmp_path / "full.zip"
    export_pack(pack_coarse, [coarse])
    export_pack(pack_full, [full])
    local = store_with(tmp_path / "local", full)
    before = snapshot(local)
    result = import_pack(pack_coarse, local, encoder_id=ENCODER)
    assert [d.action for d in result.decisions] == ["kept"] and "6 images" in result.decisions[0].reason
    assert snapshot(local) == before
    partial = store_with(tmp_path / "partial", coarse)
    result = import_pack(pack_full, partial, encoder_id=ENCODER)
    assert [d.action for d in result.decisions] == ["imported"]
    (only,) = SpecStore(partial).specs
    assert only.n_images == 6


# -- untrusted packs ---------------------------------------------------------------------------
def _refused_once(tmp_path, pack, why: str, **kwargs):
    local = store_with(tmp_path / "local", spec(9))
    before = snapshot(local)
    result = import_pack(pack, local, **{"encoder_id": ENCODER, **kwargs})
    refused = result.of("refused")
    assert len(refused) == 1 and why in refused[0].reason, [str(d) for d in result.decisions]
    assert "\n" not in str(refused[0])
    assert snapshot(local) == before
    return result


def test_names_outside_the_store_and_links_are_refused(tmp_path):
    s = spec(1)
    for bad in ("../evil.safetensors", "/tmp/evil.safetensors", "specs\\..\\..\\evil.safetensors", "specs/./x"):
        entry, data = entry_for(s, file=bad)
        pack = write_pack(tmp_path / "p.zip", [(entry, bad, data)])
        result = _refused_once(tmp_path, pack, "outside the spec store")
        assert not (tmp_path / "evil.safetensors").exists()
        assert [d.action for d in result.decisions] == ["refused"]
    entry, data = entry_for(s)
    link_entry = dict(entry, file="specs/link.safetensors")
    pack = write_pack(tmp_path / "l.zip", [(entry, entry["file"], data), (link_entry, "__skip__", b"")],
                      links=("specs/link.safetensors",))
    local = store_with(tmp_path / "local2", spec(9))
    result = import_pack(pack, local, encoder_id=ENCODER)
    actions = {d.entry: (d.action, d.reason) for d in result.decisions}
    assert actions[entry["file"]][0] == "imported"
    assert actions["specs/link.safetensors"] == ("refused", "not a regular file (a link or folder)")
    assert actions["__skip__"] == ("refused", "not listed in the manifest")


def test_oversized_and_compression_bomb_entries_are_refused(tmp_path, monkeypatch):
    s = spec(1)
    entry, data = entry_for(s)
    monkeypatch.setattr(specpack, "MAX_ENTRY_BYTES", len(data) - 1)
    _refused_once(tmp_path, write_pack(tmp_path / "big.zip", [(entry, entry["file"], data)]), "limit")
    bomb = b"\0" * (8 << 20)  # deflates to ~8 KB
    entry, _ = entry_for(s, sha256=hashlib.sha256(bomb).hexdigest(), size=len(bomb))
    bomb_pack = write_pack(tmp_path / "bomb.zip", [(entry, entry["file"], bomb)])
    monkeypatch.setattr(specpack, "MAX_ENTRY_BYTES", 4 << 20)
    start = time.perf_counter()
    _refused_once(tmp_path, bomb_pack, "over the 4194304-byte limit")  # refused from its header
    monkeypatch.undo()
    _refused_once(tmp_path, bomb_pack, "compression bomb")
    assert time.perf_counter() - start < 5


def test_checksum_key_and_recipe_mismatches_are_refused(tmp_path):
    s = spec(1)
    entry, data = entry_for(s, sha256="0" * 64)
    _refused_once(tmp_path, write_pack(tmp_path / "a.zip", [(entry, entry["file"], data)]), "checksum mismatch")
    entry, data = entry_for(s, checkpoint_sha256="f" * 64)
    _refused_once(tmp_path, write_pack(tmp_path / "b.zip", [(entry, entry["file"], data)]), "differs from its key")
    entry, data = entry_for(s, recipe_digest="e" * 64)
    _refused_once(tmp_path, write_pack(tmp_path / "c.zip", [(entry, entry["file"], data)]), "recipe digest")
    other = spec(2, encoder="open_clip:ViT-B-32/openai")
    entry, data = entry_for(other)
    _refused_once(tmp_path, write_pack(tmp_path / "d.zip", [(entry, entry["file"], data)]),
                  "this installation uses open_clip:ViT-L-14/openai")
    entry, data = entry_for(s)
    _refused_once(tmp_path, write_pack(tmp_path / "e.zip", [(entry, entry["file"], data)]),
                  "not the one this installation builds", expected={s.recipe.checkpoint_sha256: "1" * 64})


def test_the_spec_builders_recipe_digest_keys_the_pack_and_an_outdated_local_spec_is_replaced(tmp_path):
    def built(n: int, digest: str) -> Specification:
        base = spec(5, n=n)
        generation = {"prompts_total": 6, "recipe_digest": digest, "prompt_indices": list(range(n))}
        recipe = SpecRecipe(base.recipe.checkpoint_sha256, ENCODER, base.recipe.prompt_set_digest, generation)
        return Specification(base.model_id, base.image_features, base.prompt_features, base.prompts, recipe)

    current, old = "c" * 64, "d" * 64
    coarse = built(3, current)
    assert recipe_digest(coarse.recipe) == current
    pack = tmp_path / "p.zip"
    export_pack(pack, [coarse])
    with zipfile.ZipFile(pack) as archive:
        assert json.loads(archive.read("manifest.json"))["entries"][0]["recipe_digest"] == current
    local = store_with(tmp_path / "local", built(6, old))  # more images, but an outdated recipe
    result = import_pack(pack, local, encoder_id=ENCODER, expected={coarse.recipe.checkpoint_sha256: current})
    assert [d.action for d in result.decisions] == ["imported"]
    (now,) = SpecStore(local).specs
    assert now.n_images == 3 and recipe_digest(now.recipe) == current
    result = import_pack(pack, local, encoder_id=ENCODER, expected={coarse.recipe.checkpoint_sha256: current})
    assert [d.action for d in result.decisions] == ["kept"]


def test_wrong_shapes_and_nan_features_are_refused(tmp_path):
    wide = spec(1, dim=16)  # the local store's ViT-L specs are 8 wide here
    entry, data = entry_for(wide)
    _refused_once(tmp_path, write_pack(tmp_path / "w.zip", [(entry, entry["file"], data)]), "feature widths")
    s = spec(3)
    good = spec_to_bytes(s)
    meta = {k: v for k, v in _metadata_of(tmp_path, good).items() if k != "gmi.sha256"}
    z = s.image_features.copy()
    z[0, 0] = np.nan
    tensors = {"image_features": z, "prompt_features": s.prompt_features, "image_sq_distances": s.image_sq_distances}
    nan_bytes = checked_bytes(tensors, meta)  # a valid checksum over NaN features
    entry, data = entry_for(s, data=nan_bytes)
    _refused_once(tmp_path, write_pack(tmp_path / "n.zip", [(entry, entry["file"], data)]), "NaN")
    tensors["image_features"] = s.image_features[:4]
    entry, data = entry_for(s, data=checked_bytes(tensors, meta))
    _refused_once(tmp_path, write_pack(tmp_path / "s.zip", [(entry, entry["file"], data)]), "not a valid specification")


def _metadata_of(tmp_path, data: bytes) -> dict[str, str]:
    from gmi_desktop.core.errors import SpecFormatError
    from gmi_desktop.store.tensorfile import read_checked

    path = tmp_path / "probe.safetensors"
    path.write_bytes(data)
    return read_checked(path, SpecFormatError)[1]


def test_broken_packs_are_one_error(tmp_path):
    not_zip = tmp_path / "x.zip"
    not_zip.write_bytes(b"PK but no")
    with pytest.raises(SpecPackError, match="not a zip"):
        import_pack(not_zip, tmp_path / "s")
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("specs/a.safetensors", b"x")
    with pytest.raises(SpecPackError, match="no manifest.json"):
        import_pack(empty, tmp_path / "s")
    wrong = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong, "w") as archive:
        archive.writestr("manifest.json", json.dumps({"kind": "gmi-spec-pack", "format_version": 99, "entries": []}))
    with pytest.raises(SpecPackError, match="format 99"):
        import_pack(wrong, tmp_path / "s")
    assert not (tmp_path / "s").exists()


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_export_then_import(tmp_path, capsys):
    models = tmp_path / "models"
    write_checkpoint(models / "dreamy.safetensors", "sd1", seed=1)
    assert main(["scan", str(models)]) == 0
    with Catalog() as catalog:
        (record,) = catalog.files(status="ok")
        (model,) = list_models(catalog, load_settings(), ENCODER, paths.specs_dir())
    base = spec(1, sha=record.sha256)
    generation = {"prompts_total": 55, "recipe_digest": model.digest}  # as the spec builder writes it
    s = Specification(base.model_id, base.image_features, base.prompt_features, base.prompts,
                      SpecRecipe(record.sha256, ENCODER, base.recipe.prompt_set_digest, generation))
    store_with(paths.specs_dir(), s)
    pack = tmp_path / "dreamy.zip"
    capsys.readouterr()
    assert main(["specs", "export", str(pack), "--models", "dreamy"]) == 0
    assert capsys.readouterr().out.startswith(f"exported: dreamy ({record.sha256[:12]}, 6 images)")
    for path in paths.specs_dir().iterdir():
        path.unlink()
    assert main(["specs", "import", str(pack)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("imported: specs/") and "6 images" in out
    with Catalog() as catalog:
        ref = catalog.spec_ref(record.sha256)
    assert load_spec(ref).recipe.checkpoint_sha256 == record.sha256
    assert main(["specs", "import", str(pack)]) == 0
    assert capsys.readouterr().out.startswith("kept: ")
    entry, data = entry_for(s, sha256="0" * 64)
    bad = write_pack(tmp_path / "bad.zip", [(entry, entry["file"], data)])
    assert main(["specs", "import", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len([line for line in err if line.startswith("refused: ")]) == 1
    other = tmp_path / "other-recipe.zip"
    export_pack(other, [spec(1, n=8, sha=record.sha256)])  # more images, but not this installation's recipe
    assert main(["specs", "import", str(other)]) == 2
    assert "not the one this installation builds" in capsys.readouterr().err
    assert main(["specs", "import", str(tmp_path / "absent.zip")]) == 2
    assert main(["specs", "export", str(tmp_path / "none.zip"), "--models", "nothing"]) == 2
