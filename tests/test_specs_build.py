"""The spec building service on tiny real pipelines: progressive, preemptible, recipe-keyed, robust.

Checkpoints are tiny random SD 1.x files catalogued by the real library scan; the loader finds their
tiny config through ``GMI_RESOURCES_DIR``; CLIP is a tiny random open_clip model.
"""

from __future__ import annotations

import errno
import os
import shutil

import numpy as np
import pytest

from gmi_desktop.core.errors import UserInputError
from gmi_desktop.core.progress import run
from gmi_desktop.core.spec import Requirement, spec_completeness
from gmi_desktop.engine.host import ModelHost
from gmi_desktop.services.identify_explain import closest_thumbnails
from gmi_desktop.services.specs import SpecBuilder
from gmi_desktop.store.prompts import default_prompts
from gmi_desktop.store.spec_state import DiskFull, thumbnail_paths
from gmi_desktop.store.specfile import SpecStore, load_spec
from tests.support.spec_build import rescan, tiny_checkpoints, tiny_library, tiny_resources, tiny_settings
from tests.support.tiny_clip import register_tiny_clip

N = 15
COARSE = 3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    register_tiny_clip()
    folder = tmp_path_factory.mktemp("checkpoints")
    return tiny_checkpoints(folder, (1, 2, 3)), tiny_resources(folder / "resources", n_prompts=N)


def _library(files, tmp_path, monkeypatch, count):
    checkpoints, resources = files
    monkeypatch.setenv("GMI_RESOURCES_DIR", str(resources))
    return tiny_library(tmp_path, checkpoints[:count])


@pytest.fixture
def lib(files, tmp_path, monkeypatch):
    catalog, paths = _library(files, tmp_path, monkeypatch, 3)
    yield catalog, paths
    catalog.close()


@pytest.fixture
def lib2(files, tmp_path, monkeypatch):
    catalog, paths = _library(files, tmp_path, monkeypatch, 2)
    yield catalog, paths
    catalog.close()


def builder(catalog, store, **settings) -> SpecBuilder:
    s = tiny_settings(**settings)
    return SpecBuilder(s, ModelHost(s), catalog=catalog, store_dir=store)


def saved(events):
    return [(e.item, e.data.state) for e in events if e.stage == "saved"]


def test_coarse_specs_for_all_come_before_any_is_refined_and_ranking_works_mid_build(lib, tmp_path):
    catalog, paths = lib
    b = builder(catalog, tmp_path / "specs")
    assert {s.state for s in b.statuses().values()} == {"queued"}
    events, job = [], b.build()
    while len([e for e in events if e.stage == "saved"]) < 3:  # the GUI stops iterating: preempted
        events.append(next(job))
    job.close()
    assert sorted(saved(events)) == [("m1", "coarse"), ("m2", "coarse"), ("m3", "coarse")]
    assert all(e.stage != "generating" or "(coarse)" in e.message for e in events)
    statuses = b.statuses()
    assert {(s.state, s.images_done, s.images_total) for s in statuses.values()} == {("coarse", COARSE, N)}

    # mid-build, identification already works on the coarse specifications and knows their completeness
    store = SpecStore(tmp_path / "specs")
    assert len(store.specs) == 3 and not store.skipped
    assert all(spec.n_images == COARSE and spec_completeness(spec) == pytest.approx(COARSE / N) for spec in store.specs)
    own = store.specs[1]
    ranking = store.index().rank(Requirement(own.image_features[1:2], own.prompt_features[1:2]))
    assert ranking[0][0] == own.model_id
    assert all(p.is_file() for p in thumbnail_paths(store.paths[1], own))
    shown = closest_thumbnails(own, store.paths[1], own.image_features[1:2], count=COARSE)  # what identify shows
    assert len(shown) == COARSE and shown[0] == thumbnail_paths(store.paths[1], own)[1]

    # resumed later, even without the progress files (the coarse specs hold the same rows): nothing
    # is generated twice, and the refinement follows the same order
    for state in (tmp_path / "specs" / "building").glob("*.state.safetensors"):
        state.unlink()
    summary = run(b.build(), events.append)
    assert summary.images == 3 * (N - COARSE) and [s.state for s in summary.ready] == ["ready"] * 3
    assert saved(events)[3:] == [(name, "ready") for name, _ in saved(events)[:3]]
    assert catalog.spec_ref(own.model_id) == str(store.paths[1])
    full = load_spec(store.paths[1])
    assert full.n_images == N and spec_completeness(full) == 1.0 and len(full.prompts) == N
    np.testing.assert_array_equal(full.image_features[::5], own.image_features)
    assert default_prompts() == full.prompts  # the coarse rows are kept
    assert not list((tmp_path / "specs" / "building").iterdir())
    assert all(p.is_file() for p in thumbnail_paths(store.paths[1], full))
    # what the engine decided is recorded, so specifications stay comparable (issue 12)
    assert full.recipe.generation["engine"] == {"prediction_type": "epsilon", "zero_terminal_snr": False,
                                                "precision": "fp32"}

    # a preempted-and-resumed build is byte-identical to an uninterrupted one
    other = builder(catalog, tmp_path / "specs-straight")
    run(other.build([own.model_id]))
    assert store.paths[1].read_bytes() == (tmp_path / "specs-straight" / store.paths[1].name).read_bytes()
    assert run(b.build()).images == 0  # nothing left to do


def test_order_is_asked_first_then_most_recently_added(lib2, tmp_path):
    catalog, paths = lib2
    b = builder(catalog, tmp_path / "specs")
    saved_names = lambda job: [e.item for e in run_events(job) if e.stage == "saved"]  # noqa: E731
    assert saved_names(b.build(["m2"], quick=True)) == ["m2"]  # only the models asked for
    newer = paths[0].with_name("newest.safetensors")  # a file added later, with other content
    shutil.copy(paths[0], newer)
    with newer.open("r+b") as handle:  # flip one weight byte at the very end
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    rescan(catalog, paths[0].parent)
    # the ones asked for first, then the most recently added before the older ones
    assert saved_names(b.build(quick=True, first=["m1"])) == ["m1", "newest"]
    with pytest.raises(UserInputError, match="no checkpoint in the library matches 'nope'"):
        run(b.build(["nope"]))


def run_events(job):
    events = []
    run(job, events.append)
    return events


def test_a_changed_recipe_or_sidecar_rebuilds_exactly_the_affected_specs(lib2, tmp_path):
    catalog, paths = lib2
    b = builder(catalog, tmp_path / "specs")
    run(b.build(quick=True))
    before = {p.name: p.read_bytes() for p in (tmp_path / "specs").glob("*.safetensors")}
    paths[1].with_name("m2.prompts.txt").write_text("a knight in armor\n@default\n", encoding="utf-8")
    statuses = {s.name: s for s in b.statuses().values()}
    assert statuses["m2"].state == "queued" and statuses["m2"].images_total == N + 1
    assert statuses["m1"].state == "coarse"
    events = run_events(b.build(quick=True))
    assert [e.item for e in events if e.stage == "saved"] == ["m2"]
    after = {p.name: p.read_bytes() for p in (tmp_path / "specs").glob("*.safetensors")}
    changed = {name for name in after if after[name] != before[name]}
    assert len(changed) == 1 and load_spec(tmp_path / "specs" / changed.pop()).prompts[0] == "a knight in armor"
    # another number of steps changes every recipe
    assert {s.state for s in builder(catalog, tmp_path / "specs", steps=3).statuses().values()} == {"queued"}


def test_duplicates_share_one_specification(lib2, tmp_path):
    catalog, paths = lib2
    shutil.copy(paths[0], paths[0].with_name("renamed copy.safetensors"))
    rescan(catalog, paths[0].parent)
    b = builder(catalog, tmp_path / "specs")
    assert len(b.statuses()) == 2
    run(b.build(quick=True))
    assert len(list((tmp_path / "specs").glob("*.safetensors"))) == 2


def test_a_bad_checkpoint_fails_with_its_reason_and_the_build_goes_on(lib2, tmp_path):
    catalog, paths = lib2
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])  # truncated after the scan
    b = builder(catalog, tmp_path / "specs")
    events = []
    summary = run(b.build(quick=True), events.append)
    assert events[-1].done == events[-1].total == COARSE  # the failed model's images leave the total
    assert [(e.item, e.data.state) for e in events if e.stage == "failed"] == [("m2", "failed")]
    assert [s.name for s in summary.failed] == ["m2"] and "m2" not in [s.name for s in summary.coarse]
    assert len(summary.coarse) == 1 and summary.failed[0].reason
    assert b.statuses()[summary.failed[0].sha256].state == "failed"
    assert run(b.build(quick=True)).images == 0  # not retried on its own ...
    paths[1].write_bytes(data)
    assert [s.name for s in run(b.build(["m2"], quick=True)).coarse] == ["m2"]  # ... but when asked for


def test_a_full_disk_is_a_clear_error_that_loses_nothing(lib2, tmp_path, monkeypatch):
    catalog, _paths = lib2
    import gmi_desktop.store.spec_state as spec_state

    real, calls = spec_state.atomic_write_bytes, []

    def filling_up(path, data):
        calls.append(path)
        if len(calls) > 2:  # the first model is saved, the second one hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(spec_state, "atomic_write_bytes", filling_up)
    b = builder(catalog, tmp_path / "specs")
    with pytest.raises(DiskFull, match="disk is full"):
        run(b.build(quick=True))
    monkeypatch.setattr(spec_state, "atomic_write_bytes", real)
    done_before = sum(s.images_done for s in b.statuses().values())
    assert done_before > 0
    summary = run(b.build(quick=True))
    assert summary.images == 2 * COARSE - done_before
    straight = builder(catalog, tmp_path / "specs-straight")
    run(straight.build(quick=True))
    for path in (tmp_path / "specs").glob("*.safetensors"):
        assert path.read_bytes() == (tmp_path / "specs-straight" / path.name).read_bytes()


def test_statuses_need_no_torch(lib2, tmp_path):
    import subprocess
    import sys

    catalog, _paths = lib2
    run(builder(catalog, tmp_path / "specs").build(["m1"], quick=True))
    code = ("import sys; from gmi_desktop.services.specs import SpecBuilder; "
            "from gmi_desktop.store.settings import load_settings; from gmi_desktop.store.catalog import Catalog; "
            "s = load_settings(); "
            "from gmi_desktop.engine.host import ModelHost; "
            f"b = SpecBuilder(s, ModelHost(s), catalog=Catalog({str(catalog.path)!r}), store_dir={str(tmp_path / 'specs')!r}); "
            "print(sorted((x.name, x.state, x.images_done) for x in b.statuses().values())); "
            "print('torch' in sys.modules)")
    env = dict(os.environ, GMI_STEPS="2", GMI_RESOLUTION="64", GMI_CLIP_MODEL="GMI-Tiny-CLIP",
               GMI_CLIP_PRETRAINED="random-seed0")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.splitlines() == [f"[('m1', 'coarse', {COARSE}), ('m2', 'queued', 0)]", "False"]


def test_out_of_memory_stops_the_build_and_loses_nothing(lib2, tmp_path, monkeypatch):
    from gmi_desktop.core.errors import OutOfMemory
    from gmi_desktop.engine.generation import LoadedPipeline

    catalog, _paths = lib2
    real, calls = LoadedPipeline.generate, []

    def runs_out(self, prompts, seeds, **kwargs):  # the device fills up at the second batch
        calls.append(len(prompts))
        if len(calls) == 2:
            raise OutOfMemory("generating 64x64 images", ["attention slicing", "one image per batch"])
        return real(self, prompts, seeds, **kwargs)

    monkeypatch.setattr(LoadedPipeline, "generate", runs_out)
    b = builder(catalog, tmp_path / "specs")
    with pytest.raises(OutOfMemory, match="out of memory while generating"):
        run(b.build(quick=True))
    assert sorted((s.state, s.images_done) for s in b.statuses().values()) == [("coarse", COARSE), ("queued", 0)]
    assert run(b.build(quick=True)).images == COARSE  # the rest, once memory is back


def test_files_that_cannot_get_a_specification_are_skipped_with_the_reason(tmp_path):
    from gmi_desktop.store.catalog import Catalog, FileFacts
    from gmi_desktop.store.hashing import FileHashes

    catalog = Catalog(tmp_path / "catalog.sqlite3")
    facts = [FileFacts(str(tmp_path / "refiner.safetensors"), (1, 1, 10, 1), "ok", family="sdxl_refiner", variant="normal",
                       file_format="safetensors"),
             FileFacts(str(tmp_path / "depth.safetensors"), (1, 2, 10, 1), "ok", family="sd2", variant="depth",
                       file_format="safetensors"),
             FileFacts(str(tmp_path / "fresh.safetensors"), (1, 3, 10, 1), "ok", family="sd1", variant="normal",
                       file_format="safetensors")]
    catalog.record_files([(f, None, None) for f in facts], catalog.next_generation())
    for sha, (name, key) in zip("ab", (("refiner", (1, 1, 10, 1)), ("depth", (1, 2, 10, 1)))):
        catalog.record_hashes(catalog.get(tmp_path / f"{name}.safetensors").id, FileHashes(sha * 64, None, None, 10, key))
    statuses = {s.name: s for s in builder(catalog, tmp_path / "specs").statuses().values()}
    assert {n: s.state for n, s in statuses.items()} == {"refiner": "skipped", "depth": "skipped", "fresh": "skipped"}
    assert "refiner" in statuses["refiner"].reason and "prompt alone" in statuses["depth"].reason
    assert "not hashed yet" in statuses["fresh"].reason
    assert {s.name for s in run(builder(catalog, tmp_path / "specs").build()).skipped} == set(statuses)
    catalog.close()
