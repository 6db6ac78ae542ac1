"""Spec files: bit-exact round trip, every kind of bad file -> SpecFormatError naming it, the store."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load, save

from gmi_desktop.core.errors import SpecFormatError
from gmi_desktop.store import specfile
from gmi_desktop.store.specfile import SpecStore, load_spec, save_spec, spec_filename, spec_to_bytes
from gmi_desktop.store.tensorfile import checked_bytes
from tests.support.specs import make_spec


def _parts(spec):
    """Tensors and metadata of a valid spec file, to be tampered with and re-signed."""
    data = spec_to_bytes(spec)
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + header_len])["__metadata__"]
    meta.pop("gmi.sha256")
    return {k: v.copy() for k, v in load(data).items()}, meta


def _write_resigned(path, tensors, meta):
    path.write_bytes(checked_bytes(tensors, meta))
    return path


def _assert_bad(path, fragment):
    with pytest.raises(SpecFormatError) as info:
        load_spec(path)
    assert info.value.path == path
    assert str(path) in str(info.value)
    assert fragment in info.value.reason
    return info.value


def test_round_trip_is_bit_exact(tmp_path):
    spec = make_spec(3)
    loaded = load_spec(save_spec(spec, tmp_path / "a.safetensors"))
    for name in ("image_features", "prompt_features", "pixel_features", "image_sq_distances"):
        original, back = getattr(spec, name), getattr(loaded, name)
        assert back.dtype == original.dtype and back.shape == original.shape
        assert back.tobytes() == original.tobytes(), name
    assert loaded.model_id == spec.model_id
    assert loaded.prompts == spec.prompts  # includes a non-ASCII character
    assert loaded.recipe == spec.recipe
    assert loaded.display_name == spec.display_name
    assert loaded.popularity == spec.popularity
    # writing the loaded spec again gives the very same bytes (reproducible, shareable files)
    assert _parts(loaded)[1] == _parts(spec)[1]
    assert spec_to_bytes(loaded) == spec_to_bytes(spec)
    assert (tmp_path / "a.safetensors").read_bytes() == spec_to_bytes(spec)


def test_files_are_standard_safetensors(tmp_path):
    from safetensors.numpy import load_file

    spec = make_spec(5)
    tensors = load_file(str(save_spec(spec, tmp_path / "c.safetensors")))
    assert tensors["image_features"].tobytes() == spec.image_features.tobytes()


def test_round_trip_without_optional_parts(tmp_path):
    spec = make_spec(4, pixels=False, popularity=None)
    loaded = load_spec(save_spec(spec, tmp_path / "b.safetensors"))
    assert loaded.pixel_features is None and loaded.popularity is None


def test_flipped_byte_anywhere_is_detected(tmp_path):
    path = save_spec(make_spec(1), tmp_path / "s.safetensors")
    data = path.read_bytes()
    rng = np.random.default_rng(0)
    for offset in [len(data) - 1, len(data) // 2, 40, *rng.integers(8, len(data), 20).tolist()]:
        bad = bytearray(data)
        bad[offset] ^= 0x10
        path.write_bytes(bytes(bad))
        with pytest.raises(SpecFormatError) as info:
            load_spec(path)
        assert info.value.path == path


def test_truncated_file(tmp_path):
    path = save_spec(make_spec(1), tmp_path / "s.safetensors")
    data = path.read_bytes()
    for size in (len(data) - 7, len(data) // 2, 9, 5):
        path.write_bytes(data[:size])
        _assert_bad(path, "")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.safetensors"
    path.write_bytes(b"")
    _assert_bad(path, "empty")


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("these are my notes about checkpoints, not tensors\n" * 4)
    _assert_bad(path, "")


def test_plain_safetensors_without_checksum(tmp_path):
    path = tmp_path / "plain.safetensors"
    path.write_bytes(save({"image_features": np.ones((2, 3), np.float32)}))
    _assert_bad(path, "checksum")


def test_unreadable_path(tmp_path):
    _assert_bad(tmp_path / "missing.safetensors", "cannot read")
    folder = tmp_path / "dir.safetensors"
    folder.mkdir()
    _assert_bad(folder, "cannot read")


def test_wrong_format_version(tmp_path):
    tensors, meta = _parts(make_spec(1))
    meta["gmi.format_version"] = "99"
    _assert_bad(_write_resigned(tmp_path / "v.safetensors", tensors, meta), "version 99")


@pytest.mark.parametrize("name", ["image_features", "prompt_features", "image_sq_distances"])
def test_missing_tensor(tmp_path, name):
    tensors, meta = _parts(make_spec(1))
    del tensors[name]
    _assert_bad(_write_resigned(tmp_path / "m.safetensors", tensors, meta), f"tensor {name!r} is missing")


def test_shape_mismatches(tmp_path):
    tensors, meta = _parts(make_spec(1))
    short = dict(tensors, prompt_features=tensors["prompt_features"][:-1])
    _assert_bad(_write_resigned(tmp_path / "q.safetensors", short, meta), "prompt features")
    prompts = json.loads(meta["gmi.prompts"])
    fewer = dict(meta, **{"gmi.prompts": json.dumps(prompts[:-1])})
    _assert_bad(_write_resigned(tmp_path / "p.safetensors", tensors, fewer), "prompts in the metadata")
    pix = dict(tensors, pixel_features=tensors["pixel_features"][:2])
    _assert_bad(_write_resigned(tmp_path / "x.safetensors", pix, meta), "pixel rows")
    d2 = dict(tensors, image_sq_distances=np.zeros((2, 2)))
    _assert_bad(_write_resigned(tmp_path / "d.safetensors", d2, meta), "image_sq_distances")
    flat = dict(tensors, image_features=tensors["image_features"].reshape(-1))
    _assert_bad(_write_resigned(tmp_path / "f.safetensors", flat, meta), "")


def test_wrong_dtype(tmp_path):
    tensors, meta = _parts(make_spec(1))
    tensors["image_features"] = tensors["image_features"].astype(np.float64)
    _assert_bad(_write_resigned(tmp_path / "t.safetensors", tensors, meta), "float32")


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values(tmp_path, value):
    tensors, meta = _parts(make_spec(1))
    tensors["image_features"][2, 1] = value
    _assert_bad(_write_resigned(tmp_path / "n.safetensors", tensors, meta), "NaN or infinite")


def test_bad_metadata(tmp_path):
    tensors, meta = _parts(make_spec(1))
    cases = {
        "gmi.recipe": "{not json",
        "gmi.model_id": json.dumps(""),
        "gmi.popularity": json.dumps("lots"),
        "gmi.kind": json.dumps("catalog"),
        "gmi.prompts": json.dumps({"a": 1}),
    }
    for key, value in cases.items():
        path = _write_resigned(tmp_path / f"{key}.safetensors", tensors, dict(meta, **{key: value}))
        _assert_bad(path, "")
    recipe = json.loads(meta["gmi.recipe"])
    recipe["prompt_set_digest"] = "0" * 64
    path = _write_resigned(tmp_path / "digest.safetensors", tensors, dict(meta, **{"gmi.recipe": json.dumps(recipe)}))
    _assert_bad(path, "prompt_set_digest")
    no_version = {k: v for k, v in meta.items() if k != "gmi.format_version"}
    _assert_bad(_write_resigned(tmp_path / "nov.safetensors", tensors, no_version), "missing")


def test_spec_filename_is_safe():
    name = spec_filename("../evil id/ä", "open_clip:ViT-L-14/openai")
    assert "/" not in name and name.endswith(".safetensors") and not name.startswith(".")
    assert spec_filename("a" * 64, "clip") == "a" * 64 + ".clip.safetensors"
    # lossy slugs stay unique
    assert spec_filename("a/b", "clip") != spec_filename("a-b", "clip")
    assert spec_filename("x", "open_clip:ViT-L-14") != spec_filename("x", "open_clip/ViT-L-14")


def test_store_skips_bad_files_and_loads_good_ones(tmp_path):
    store = SpecStore(tmp_path)
    assert store.specs == [] and store.skipped == []
    good = [make_spec(s) for s in range(3)]
    for spec in good:
        store.save(spec)
    (tmp_path / "zz-broken.safetensors").write_bytes(b"\x00" * 40)
    (tmp_path / "aa-empty.safetensors").write_bytes(b"")
    (tmp_path / ".model-9.test-encoder.safetensors.x1y2.tmp").write_bytes(spec_to_bytes(make_spec(9)))
    (tmp_path / "readme.txt").write_text("not a spec")
    dup = spec_to_bytes(make_spec(0))
    (tmp_path / "x-model-0-copy.safetensors").write_bytes(dup)
    store.reload()
    assert [s.model_id for s in store.specs] == ["model-0", "model-1", "model-2"]
    reasons = {s.path.name: s.reason for s in store.skipped}
    assert set(reasons) == {"zz-broken.safetensors", "aa-empty.safetensors", "x-model-0-copy.safetensors"}
    assert "empty" in reasons["aa-empty.safetensors"]
    assert "duplicate" in reasons["x-model-0-copy.safetensors"]
    assert all(str(s).startswith("skipped: ") for s in store.skipped)
    for spec, loaded in zip(good, store.specs):
        assert loaded.image_features.tobytes() == spec.image_features.tobytes()


def test_store_on_missing_folder(tmp_path):
    with pytest.raises(SpecFormatError) as info:
        SpecStore.open(tmp_path / "nope")
    assert info.value.path == tmp_path / "nope"


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = save_spec(make_spec(1), tmp_path / "m.safetensors")
    before = path.read_bytes()

    def broken(_spec):
        raise OSError("disk full")

    monkeypatch.setattr(specfile, "spec_to_bytes", broken)
    with pytest.raises(OSError):
        save_spec(make_spec(2), path)
    assert path.read_bytes() == before

    real_replace = os.replace

    def failing_replace(src, dst):
        raise OSError("replace failed")

    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        save_spec(make_spec(2), path)
    monkeypatch.setattr(os, "replace", real_replace)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert load_spec(path).model_id == "model-1"


def test_store_index_scores_all_models_in_one_pass(tmp_path):
    from gmi_desktop.core.index import SpecIndex
    from gmi_desktop.core.scores import score_proposal
    from gmi_desktop.core.spec import Requirement

    store = SpecStore.open(tmp_path)
    originals = [make_spec(s) for s in range(4)]
    for spec in originals:
        store.save(spec)
    store.reload()
    index = store.index(gamma=1.5)
    assert isinstance(index, SpecIndex) and index.model_ids == tuple(s.model_id for s in originals)
    rng = np.random.default_rng(9)
    req = Requirement(image_features=rng.standard_normal(8), prompt_features=rng.standard_normal(5))
    loaded_scores = index.score(req, "proposal", weighting="paper")
    direct = [score_proposal(s, req, 1.5, weighting="paper") for s in originals]
    np.testing.assert_allclose(loaded_scores, direct, rtol=1e-5)
    with pytest.raises(SpecFormatError):
        SpecStore.open(tmp_path / "sub" if (tmp_path / "sub").mkdir() is None else tmp_path).index()


def test_header_damage_is_named_by_the_shared_header_validation(tmp_path):
    path = save_spec(make_spec(1), tmp_path / "s.safetensors")
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + length])
    name = next(k for k in header if k != "__metadata__")
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin, end + 4]  # span no longer matches shape and dtype
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + length:])
    _assert_bad(path, f"not a valid safetensors file: tensor {name!r}: shape")
    header[name]["data_offsets"] = [begin, end]
    header["__metadata__"]["gmi.popularity"] = 3
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + length:])
    _assert_bad(path, "__metadata__ has non-string values: 'gmi.popularity' (number)")
