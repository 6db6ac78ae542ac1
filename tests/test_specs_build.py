"""The spec building service on tiny real pipelines: progressive, preemptible, recipe-keyed, robust.

Checkpoints are tiny random SD 1.x files catalogued by the real library scan; the loader finds their
tiny config through ``GMI_RESOURCES_DIR``; CLIP is a tiny random open_clip model.
"""

from __future__ import annotations

import errno
import shutil

import numpy as np
import pytest

from gmi_desktop.core.errors import UserInputError
from gmi_desktop.core.progress import run
from gmi_desktop.core.spec import Requirement, spec_completeness
from gmi_desktop.engine.host import ModelHost
from gmi_desktop.services.specs import SpecBuilder
from gmi_desktop.store.prompts import default_prompts
from gmi_desktop.store.spec_state import DiskFull, thumbnail_paths
from gmi_desktop.store.specfile import SpecStore, load_spec
from tests.support.spec_build import rescan, tiny_checkpoints, tiny_library, tiny_resources, tiny_settings
from tests.support.tiny_clip import register_tiny_clip

N = len(default_prompts())
COARSE = 11


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    register_tiny_clip()
    folder = tmp_path_factory.mktemp("checkpoints")
    return tiny_checkpoints(folder, (1, 2, 3)), tiny_resources(folder / "resources")


@pytest.fixture
def lib(files, tmp_path, monkeypatch):
    checkpoints, resources = files
    monkeypatch.setenv("GMI_RESOURCES_DIR", str(resources))
    catalog, paths = tiny_library(tmp_path, checkpoints)
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
    ranking = store.index().rank(Requirement(own.image_features[3:4], own.prompt_features[3:4]))
    assert ranking[0][0] == own.model_id
    assert all(p.is_file() for p in thumbnail_paths(store.paths[1], own))

    # resumed later: nothing is generated twice, and the refinement follows the same order
    summary = run(b.build(), events.append)
    assert summary.images == 3 * (N - COARSE) and [s.state for s in summary.ready] == ["ready"] * 3
    assert saved(events)[3:] == [(name, "ready") for name, _ in saved(events)[:3]]
    assert catalog.spec_ref(own.model_id) == str(store.paths[1])
    full = load_spec(store.paths[1])
    assert full.n_images == N and spec_completeness(full) == 1.0 and full.prompts == default_prompts()
    np.testing.assert_array_equal(full.image_features[::5], own.image_features)  # the coarse rows are kept
    assert not list((tmp_path / "specs" / "building").glob("*.state.safetensors"))

    # a preempted-and-resumed build is byte-identical to an uninterrupted one
    other = builder(catalog, tmp_path / "specs-straight")
    run(other.build())
    for path in store.paths:
        assert path.read_bytes() == (tmp_path / "specs-straight" / path.name).read_bytes()
    assert run(b.build()).images == 0  # nothing left to do


def test_order_is_asked_first_then_most_recently_added(lib, tmp_path):
    catalog, paths = lib
    b = builder(catalog, tmp_path / "specs")
    assert [e.item for e in run_events(b.build(first=["m2"], quick=True)) if e.stage == "saved"][0] == "m2"
    # a file added later comes before the older ones
    newer = paths[0].with_name("newest.safetensors")
    shutil.copy(paths[0], newer)
    with newer.open("r+b") as handle:  # other content: flip one weight byte at the very end
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(bytes([last[0] ^ 1]))
    rescan(catalog, paths[0].parent)
    order = [e.item for e in run_events(b.build(quick=True)) if e.stage == "saved"]
    assert order == ["newest"]
    events = run_events(b.build(["m3", "m1"]))  # only those asked for, in that order
    assert [e.item for e in events if e.stage == "saved"] == ["m3", "m1"]
    with pytest.raises(UserInputError, match="no checkpoint in the library matches 'nope'"):
        run(b.build(["nope"]))


def run_events(job):
    events = []
    run(job, events.append)
    return events


def test_a_changed_recipe_or_sidecar_rebuilds_exactly_the_affected_specs(lib, tmp_path):
    catalog, paths = lib
    b = builder(catalog, tmp_path / "specs")
    run(b.build(quick=True))
    before = {p.name: p.read_bytes() for p in (tmp_path / "specs").glob("*.safetensors")}
    paths[1].with_name("m2.prompts.txt").write_text("a knight in armor\n@default\n", encoding="utf-8")
    statuses = {s.name: s for s in b.statuses().values()}
    assert statuses["m2"].state == "queued" and statuses["m2"].images_total == N + 1
    assert statuses["m1"].state == statuses["m3"].state == "coarse"
    events = run_events(b.build(quick=True))
    assert [e.item for e in events if e.stage == "saved"] == ["m2"]
    after = {p.name: p.read_bytes() for p in (tmp_path / "specs").glob("*.safetensors")}
    changed = {name for name in after if after[name] != before[name]}
    assert len(changed) == 1 and load_spec(tmp_path / "specs" / changed.pop()).prompts[0] == "a knight in armor"
    # another number of steps changes every recipe
    assert {s.state for s in builder(catalog, tmp_path / "specs", steps=3).statuses().values()} == {"queued"}


def test_duplicates_share_one_specification(lib, tmp_path):
    catalog, paths = lib
    shutil.copy(paths[0], paths[0].with_name("renamed copy.safetensors"))
    rescan(catalog, paths[0].parent)
    b = builder(catalog, tmp_path / "specs")
    assert len(b.statuses()) == 3
    run(b.build(quick=True))
    assert len(list((tmp_path / "specs").glob("*.safetensors"))) == 3


def test_a_bad_checkpoint_fails_with_its_reason_and_the_build_goes_on(lib, tmp_path):
    catalog, paths = lib
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])  # truncated after the scan
    b = builder(catalog, tmp_path / "specs")
    summary = run(b.build(quick=True))
    assert [s.name for s in summary.failed] == ["m2"] and "m2" not in [s.name for s in summary.coarse]
    assert len(summary.coarse) == 2 and summary.failed[0].reason
    assert b.statuses()[summary.failed[0].sha256].state == "failed"
    assert run(b.build(quick=True)).images == 0  # not retried on its own ...
    paths[1].write_bytes(data)
    assert [s.name for s in run(b.build(["m2"], quick=True)).coarse] == ["m2"]  # ... but when asked for


def test_a_full_disk_is_a_clear_error_that_loses_nothing(lib, tmp_path, monkeypatch):
    catalog, _paths = lib
    import gmi_desktop.store.spec_state as spec_state

    real, calls = spec_state.atomic_write_bytes, []

    def filling_up(path, data):
        calls.append(path)
        if len(calls) > 30:
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
    assert summary.images == 3 * COARSE - done_before
    straight = builder(catalog, tmp_path / "specs-straight")
    run(straight.build(quick=True))
    for path in (tmp_path / "specs").glob("*.safetensors"):
        assert path.read_bytes() == (tmp_path / "specs-straight" / path.name).read_bytes()
