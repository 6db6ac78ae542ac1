"""Scanning a library into the catalog: mark-and-sweep, renames, duplicates, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

from gmi_desktop.core.errors import Cancelled, UserInputError
from gmi_desktop.core.progress import run
from gmi_desktop.services.library import Library
from gmi_desktop.store.catalog import OFFLINE_REASON
from gmi_desktop.store.catalog import Catalog
from gmi_desktop.store.hashing import iter_hash_file
from tests.support.library_files import (
    Counting,
    bump_mtime,
    write_checkpoint,
    write_embedding,
    write_lora,
    write_vae,
)
from tests.support.model_headers import write_diffusers_folder
from tests.support.privileges import run_without_permission_override


def _library(tmp_path, counting=None):
    counting = counting or Counting()
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    lib = Library(catalog, probe_fn=counting.probe, hash_fn=counting.hash, sidecars_fn=counting.read_sidecars)
    return lib, counting


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def models(tmp_path):
    root = tmp_path / "models"
    write_checkpoint(root / "dreamy.safetensors", "sd1", seed=1)
    write_checkpoint(root / "xl" / "big.safetensors", "sdxl", seed=2)
    write_lora(root / "detail_lora.safetensors")
    write_vae(root / "vae-ft-mse.safetensors")
    (root / "old.ckpt").write_bytes(b"\x80\x02}q\x00.")
    (root / "notes.txt").write_text("not a model")
    return root


def test_cold_scan_classifies_hashes_and_records_everything(tmp_path, models):
    lib, counting = _library(tmp_path)
    lib.add_folder(models)
    events = []
    summary = run(lib.scan(), events.append)
    by_name = {r.path.name: r for r in lib.catalog.files()}
    assert set(by_name) == {"dreamy.safetensors", "big.safetensors", "detail_lora.safetensors",
                            "vae-ft-mse.safetensors", "old.ckpt"}
    dreamy = by_name["dreamy.safetensors"]
    assert (dreamy.status, dreamy.family, dreamy.variant) == ("ok", "sd1", "normal")
    assert dreamy.sha256 == _sha(models / "dreamy.safetensors")
    assert dreamy.autov2 == dreamy.sha256[:10]
    data = (models / "dreamy.safetensors").read_bytes()
    assert dreamy.tensor_sha256 == hashlib.sha256(data[dreamy.header_len:]).hexdigest()
    assert dreamy.autov1 == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert by_name["big.safetensors"].family == "sdxl"
    assert (by_name["detail_lora.safetensors"].status, by_name["detail_lora.safetensors"].kind) == ("skipped", "lora")
    assert "LoRA" in by_name["detail_lora.safetensors"].reason
    assert by_name["vae-ft-mse.safetensors"].status == "skipped"
    assert by_name["old.ckpt"].status == "unsupported" and "pickle" in by_name["old.ckpt"].reason
    assert by_name["old.ckpt"].sha256 is None and by_name["detail_lora.safetensors"].sha256 is None
    assert summary.seen == 5 and summary.probed == 5 and summary.hashed == 2
    assert {e.stage for e in events} == {"listing", "probing", "hashing"}
    assert sum(counting.hashes.values()) == 2


def test_rescan_of_an_unchanged_library_reads_no_file(tmp_path, models):
    lib, counting = _library(tmp_path)
    lib.add_folder(models)
    run(lib.scan())
    before = {r.path: (r.sha256, r.status, r.first_seen) for r in lib.catalog.files()}
    reads = counting.reads()
    summary = run(lib.scan())
    assert counting.reads() == reads  # no probe, no sidecar read, no hash
    assert summary.unchanged == 5 and summary.probed == 0 and summary.hashed == 0
    assert summary.tombstoned == []
    assert {r.path: (r.sha256, r.status, r.first_seen) for r in lib.catalog.files()} == before


def test_rescan_notices_a_sidecar_added_beside_an_unchanged_model(tmp_path, models):
    lib, counting = _library(tmp_path)
    lib.add_folder(models)
    run(lib.scan())
    (models / "dreamy.civitai.info").write_text(json.dumps({
        "id": 11, "modelId": 5, "name": "v2", "baseModel": "SD 1.5", "stats": {"downloadCount": 1234},
        "model": {"name": "Dreamy"}}))
    (models / "dreamy.preview.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    summary = run(lib.scan())
    assert summary.probed == 1 and summary.unchanged == 4 and summary.hashed == 0
    record = lib.catalog.get(models / "dreamy.safetensors")
    assert (record.download_count, record.base_model) == (1234, "SD 1.5")
    assert record.preview_path == str(models / "dreamy.preview.png")
    assert record.sha256 is not None and counting.hashes["dreamy.safetensors"] == 1
    reads = counting.reads()
    run(lib.scan())
    assert counting.reads() == reads


def test_a_broken_sidecar_is_reported_by_the_scan(tmp_path, models):
    (models / "dreamy.civitai.info").write_text('{"model": {"name": "Dreamy"}')  # cut-off download
    lib, _ = _library(tmp_path)
    lib.add_folder(models)
    summary = run(lib.scan(hashing=False))
    found = [p for p in summary.problems if p.path == models / "dreamy.safetensors"]
    assert len(found) == 1 and found[0].reason.startswith("dreamy.civitai.info: not valid JSON")
    assert lib.catalog.get(models / "dreamy.safetensors").name == "dreamy"


def test_renamed_file_keeps_its_hash_and_specification_without_rehashing(tmp_path, models):
    lib, counting = _library(tmp_path)
    lib.add_folder(models)
    run(lib.scan())
    sha = lib.catalog.get(models / "dreamy.safetensors").sha256
    lib.catalog.set_spec_ref(sha, "specs/dreamy.gmispec")
    (models / "renamed").mkdir()
    os.rename(models / "dreamy.safetensors", models / "renamed" / "Dreamy v2.safetensors")
    summary = run(lib.scan())
    moved = lib.catalog.get(models / "renamed" / "Dreamy v2.safetensors")
    assert moved.sha256 == sha and moved.status == "ok"
    assert counting.hashes["Dreamy v2.safetensors"] == 0  # recognised by (device, inode, size, mtime)
    assert summary.reused_hashes == 1
    assert summary.moved == [(models / "dreamy.safetensors", models / "renamed" / "Dreamy v2.safetensors")]
    assert lib.catalog.get(models / "dreamy.safetensors") is None
    assert lib.catalog.spec_ref(moved.sha256) == "specs/dreamy.gmispec"


def test_a_move_is_reported_to_where_the_file_went_not_to_an_older_copy(tmp_path, models):
    shutil.copyfile(models / "dreamy.safetensors", models / "a_backup.safetensors")
    lib, _ = _library(tmp_path)
    lib.add_folder(models)
    run(lib.scan())
    (models / "z").mkdir()
    os.rename(models / "dreamy.safetensors", models / "z" / "dreamy.safetensors")
    summary = run(lib.scan())
    assert summary.moved == [(models / "dreamy.safetensors", models / "z" / "dreamy.safetensors")]


def test_file_moved_by_copy_and_delete_is_recognised_by_its_hash(tmp_path, models):
    lib, _ = _library(tmp_path)
    lib.add_folder(models)
    run(lib.scan())
    sha = lib.catalog.get(models / "dreamy.safetensors").sha256
    lib.catalog.set_spec_ref(sha, "specs/dreamy.gmispec")
    shutil.copyfile(models / "dreamy.safetensors", models / "xl" / "copied.safetensors")  # new inode
    os.remove(models / "dreamy.safetensors")
    summary = run(lib.scan())
    assert summary.hashed == 1
    assert lib.catalog.get(models / "xl" / "copied.safetensors").sha256 == sha
    assert summary.moved == [(models / "dreamy.safetensors", models / "xl" / "copied.safetensors")]
    assert lib.catalog.spec_ref(sha) == "specs/dreamy.gmispec"


def test_same_checkpoint_in_two_places_is_a_duplicate(tmp_path, models):
    lib, counting = _library(tmp_path)
    other = tmp_path / "other_ui" / "checkpoints"
    other.mkdir(parents=True)
    shutil.copyfile(models / "dreamy.safetensors", other / "dreamy (copy).safetensors")
    os.link(models / "xl" / "big.safetensors", other / "big-hardlink.safetensors")
    lib.add_folder(models)
    lib.add_folder(tmp_path / "other_ui")
    run(lib.scan())
    groups = [[r.path for r in group] for group in lib.catalog.duplicates()]
    assert sorted(groups) == sorted([
        [models / "dreamy.safetensors", other / "dreamy (copy).safetensors"],
        [models / "xl" / "big.safetensors", other / "big-hardlink.safetensors"],
    ])
    dup = lib.catalog.find_by_hash(lib.catalog.get(models / "dreamy.safetensors").autov2)
    assert len(dup) == 2
    assert counting.hashes["big.safetensors"] + counting.hashes["big-hardlink.safetensors"] == 1  # same inode


def test_deleted_file_is_tombstoned_with_its_specification_until_pruned(tmp_path, models):
    lib, _ = _library(tmp_path)
    lib.add_folder(models)
    run(lib.scan())
    sha = lib.catalog.get(models / "dreamy.safetensors").sha256
    lib.catalog.set_spec_ref(sha, "specs/dreamy.gmispec")
    os.remove(models / "dreamy.safetensors")
    summary = run(lib.scan())
    assert summary.tombstoned == [models / "dreamy.safetensors"]
    gone = lib.catalog.get(models / "dreamy.safetensors")
    assert gone.status == "missing" and gone.sha256 == sha
    assert lib.catalog.spec_ref(sha) == "specs/dreamy.gmispec"
    assert lib.catalog.find_by_hash(sha[:10])[0].path == gone.path  # still identifiable
    result = lib.prune()
    assert result.removed_files == [models / "dreamy.safetensors"]
    assert result.removed_spec_paths == ["specs/dreamy.gmispec"]
    assert lib.catalog.get(models / "dreamy.safetensors") is None and lib.catalog.spec_ref(sha) is None
    assert lib.catalog.get(models / "xl" / "big.safetensors").status == "ok"


def test_replacement_with_same_size_and_older_mtime_is_rehashed(tmp_path, models):
    lib, counting = _library(tmp_path)
    target = models / "dreamy.safetensors"
    lib.add_folder(models)
    run(lib.scan())
    old = lib.catalog.get(target)
    replacement = tmp_path / "replacement.safetensors"
    write_checkpoint(replacement, "sd1", seed=99)
    assert replacement.stat().st_size == target.stat().st_size
    with open(target, "r+b") as handle:  # rewritten in place: same inode, same size
        handle.write(replacement.read_bytes())
    os.utime(target, ns=(old.key[3] - 10**9, old.key[3] - 10**9))  # one second OLDER than before
    assert target.stat().st_size == old.size
    run(lib.scan())
    new = lib.catalog.get(target)
    assert new.sha256 == _sha(replacement) != old.sha256
    assert counting.hashes["dreamy.safetensors"] == 2


def test_file_deleted_between_listing_and_reading_is_recorded_and_the_scan_goes_on(tmp_path, models):
    def delete_dreamy(path):
        if path.name == "dreamy.safetensors":
            path.unlink()

    lib, _ = _library(tmp_path, Counting(before_probe=delete_dreamy))
    lib.add_folder(models)
    summary = run(lib.scan())
    assert summary.vanished == [models / "dreamy.safetensors"]
    assert any(p.path == models / "dreamy.safetensors" and "vanished" in p.reason for p in summary.problems)
    assert lib.catalog.get(models / "dreamy.safetensors") is None
    assert lib.catalog.get(models / "xl" / "big.safetensors").status == "ok"
    assert summary.hashed == 1


def test_file_changing_between_listing_and_reading_is_incomplete_until_it_settles(tmp_path, models):
    grown = []

    def append_once(path):
        if path.name == "dreamy.safetensors" and not grown:
            grown.append(path)
            bump_mtime(path, 5_000_000)

    lib, counting = _library(tmp_path, Counting(before_probe=append_once))
    lib.add_folder(models)
    run(lib.scan())
    record = lib.catalog.get(models / "dreamy.safetensors")
    assert record.status == "incomplete" and "changed while" in record.reason
    assert counting.hashes["dreamy.safetensors"] == 0
    run(lib.scan())
    assert lib.catalog.get(models / "dreamy.safetensors").status == "ok"
    assert counting.hashes["dreamy.safetensors"] == 1


def test_truncated_mid_copy_then_completed(tmp_path, models):
    lib, counting = _library(tmp_path)
    source = write_checkpoint(tmp_path / "source.safetensors", "sd2", seed=5)
    data = source.read_bytes()
    target = models / "copying.safetensors"
    target.write_bytes(data[: len(data) // 2])
    lib.add_folder(models)
    run(lib.scan())
    partial = lib.catalog.get(target)
    assert partial.status == "incomplete" and partial.sha256 is None
    assert counting.hashes["copying.safetensors"] == 0  # never hashed half-written
    with open(target, "ab") as handle:
        handle.write(data[len(data) // 2:])
    run(lib.scan())
    done = lib.catalog.get(target)
    assert (done.status, done.family) == ("ok", "sd2")
    assert done.sha256 == _sha(source)


def test_names_that_are_not_valid_text_are_reported_and_the_scan_goes_on(tmp_path, models):
    """Linux file names are bytes: an old zip can leave Latin-1 or GBK names that are not UTF-8.
    The catalog stores text, so such a file is reported (rename it) instead of failing the scan."""
    bad_file = os.fsdecode(os.fsencode(models) + b"/caf\xe9.safetensors")
    write_checkpoint(Path(bad_file), "sd1", seed=11)
    bad_folder = Path(os.fsdecode(os.fsencode(models) + b"/\xc4\xa3\xd0\xcd"))  # GBK bytes
    write_checkpoint(bad_folder / "inside.safetensors", "sd1", seed=12)
    lib, _ = _library(tmp_path)
    lib.add_folder(models)
    summary = run(lib.scan())
    reasons = {p.path: p.reason for p in summary.problems}
    hint = "the name is not valid UTF-8 text; rename it"
    assert reasons == {Path(bad_file): hint, bad_folder: hint}
    assert lib.catalog.get(models / "dreamy.safetensors").sha256 is not None
    assert summary.seen == 5
    with pytest.raises(UserInputError, match="not valid UTF-8"):
        lib.add_folder(bad_folder)


def test_macos_appledouble_files_beside_models_are_not_listed(tmp_path, models):
    """macOS writes ``._<name>`` (AppleDouble: resource fork, Finder info) next to every file it
    copies to an exFAT/FAT drive. They are not models: no "invalid" row for each checkpoint."""
    (models / "._dreamy.safetensors").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00" + bytes(4088))
    (models / "xl" / "._big.safetensors").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00" + bytes(4088))
    lib, _ = _library(tmp_path)
    lib.add_folder(models)
    summary = run(lib.scan(hashing=False))
    assert summary.seen == 5 and summary.problems == []
    run(lib.refresh([models / "._dreamy.safetensors"]))  # what the watcher does on its event
    assert not [r for r in lib.catalog.files() if r.path.name.startswith("._")]


def test_listing_where_scandir_gives_no_inode_still_keys_files_by_their_inode(tmp_path, models, monkeypatch):
    """On Windows ``DirEntry.stat()`` leaves ``st_ino``/``st_dev`` at 0 (documented); the probe's
    ``fstat`` has the real ones. Keys from the listing must still match, or every file looks
    "changed while read" and nothing is ever hashed."""
    import gmi_desktop.services.library_walk as library_walk

    real_scandir = os.scandir

    class WindowsLikeEntry:
        def __init__(self, entry):
            self._entry = entry
            self.name, self.path = entry.name, entry.path

        def is_dir(self):
            return self._entry.is_dir()

        def is_symlink(self):
            return self._entry.is_symlink()

        def stat(self):
            st = self._entry.stat()
            return os.stat_result((st.st_mode, 0, 0, 0, st.st_uid, st.st_gid, st.st_size, int(st.st_atime),
                                   int(st.st_mtime), int(st.st_ctime), st.st_atime, st.st_mtime, st.st_ctime,
                                   st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns))

    class WindowsLikeScandir:
        def __init__(self, path):
            self._it = real_scandir(path)

        def __enter__(self):
            return (WindowsLikeEntry(e) for e in self._it)

        def __exit__(self, *exc):
            self._it.close()

    monkeypatch.setattr(library_walk.os, "scandir", WindowsLikeScandir)
    lib, _ = _library(tmp_path)
    lib.add_folder(models)
    run(lib.scan())
    dreamy = lib.catalog.get(models / "dreamy.safetensors")
    assert dreamy.status == "ok" and dreamy.sha256 is not None
    assert dreamy.key == tuple(getattr(os.stat(models / "dreamy.safetensors"), a)
                               for a in ("st_dev", "st_ino", "st_size", "st_mtime_ns"))


def test_symlink_loops_are_reported_not_fatal(tmp_path, models):
    (models / "xl" / "back_to_top").symlink_to(models, target_is_directory=True)
    (models / "self.safetensors").symlink_to(models / "self.safetensors")
    (models / "dangling.safetensors").symlink_to(tmp_path / "nowhere.safetensors")
    lib, _ = _library(tmp_path)
    lib.add_folder(models)
    summary = run(lib.scan(hashing=False))
    reasons = {p.path.name: p.reason for p in summary.problems}
    assert reasons["back_to_top"].startswith("symlink loop back to")
    assert reasons["self.safetensors"] == "symlink loop"
    assert reasons["dangling.safetensors"] == "broken symbolic link"
    assert lib.catalog.get(models / "xl" / "big.safetensors").status == "ok"
    assert summary.seen == 5


def test_a_folder_reached_by_a_link_and_by_its_real_path_is_catalogued_at_its_real_path(tmp_path, models):
    """Whatever sorts first, the link or the real folder, and in whatever order the library
    folders are given: the real path wins, so rescans do not flip files between the two paths."""
    (models / "a_link_to_xl").symlink_to(models / "xl", target_is_directory=True)
    other = tmp_path / "a_other"
    other.mkdir()
    (other / "xl_again").symlink_to(models / "xl", target_is_directory=True)
    lib, _ = _library(tmp_path)
    roots = [lib.add_folder(other), lib.add_folder(models)]
    for order in (roots, roots[::-1], None):
        summary = run(lib.scan(order, hashing=False))
        assert lib.catalog.get(models / "xl" / "big.safetensors").status == "ok"
        assert lib.catalog.get(models / "a_link_to_xl" / "big.safetensors") is None
        assert lib.catalog.get(other / "xl_again" / "big.safetensors") is None
        assert summary.tombstoned == [] and summary.moved == []
        reasons = {p.path.name: p.reason for p in summary.problems}
        assert reasons["a_link_to_xl"] == f"same folder as {models / 'xl'}, scanned once"
        assert reasons["xl_again"] == f"same folder as {models / 'xl'}, scanned once"


def test_a_linked_folder_whose_drive_is_unplugged_is_reported_and_its_files_kept(tmp_path, models):
    drive = tmp_path / "drive"
    write_checkpoint(drive / "far.safetensors", "sd1", seed=5)
    (models / "external").symlink_to(drive, target_is_directory=True)
    (models / "far_file.safetensors").symlink_to(drive / "far.safetensors")
    lib, _ = _library(tmp_path)
    lib.add_folder(models)
    run(lib.scan(hashing=False))
    assert lib.catalog.get(models / "external" / "far.safetensors").status == "ok"
    drive.rename(tmp_path / "unplugged")
    summary = run(lib.scan(hashing=False))
    reasons = {p.path.name: p.reason for p in summary.problems}
    assert reasons["external"] == "broken symbolic link"
    assert reasons["far_file.safetensors"] == "broken symbolic link"
    assert summary.tombstoned == []
    assert lib.catalog.get(models / "external" / "far.safetensors").status == "ok"
    assert lib.catalog.get(models / "far_file.safetensors").status == "ok"


def test_unreadable_folder_and_file_are_reported_and_nothing_is_tombstoned(tmp_path, models):
    """Real EACCES: the scan runs in a child without CAP_DAC_OVERRIDE (see tests/support/privileges)."""
    catalog_path = tmp_path / "catalog.sqlite3"
    lib, _ = _library(tmp_path)
    lib.add_folder(models)
    run(lib.scan())
    lib.catalog.close()
    locked = write_checkpoint(models / "locked.safetensors", "sd1", seed=8)  # new since the last scan
    os.chmod(models / "xl", 0o000)
    os.chmod(locked, 0o000)

    def scan_unprivileged():
        with pytest.raises(PermissionError):  # the child really is denied
            os.listdir(models / "xl")
        with Catalog(catalog_path) as catalog:
            summary = run(Library(catalog).scan())
        reasons = {p.path: p.reason for p in summary.problems}
        if reasons.get(models / "xl") != "permission denied" or summary.tombstoned:
            raise AssertionError(f"unexpected problems {reasons} / tombstoned {summary.tombstoned}")

    try:
        assert run_without_permission_override(scan_unprivileged) == 0
    finally:
        os.chmod(models / "xl", 0o755)
        os.chmod(locked, 0o644)
    with Catalog(catalog_path) as catalog:
        assert catalog.get(models / "xl" / "big.safetensors").status == "ok"  # not tombstoned
        denied = catalog.get(locked)
        assert (denied.status, denied.reason) == ("skipped", "unreadable: permission denied")
        run(Library(catalog).scan())  # readable again: probed again although its stat key is the same
        assert catalog.get(locked).status == "ok"


def test_missing_library_folder_is_reported_and_its_files_kept(tmp_path, models):
    lib, _ = _library(tmp_path)
    lib.add_folder(models)
    run(lib.scan(hashing=False))
    models.rename(tmp_path / "unplugged")
    summary = run(lib.scan(hashing=False))
    assert summary.problems[0].reason.startswith("library folder not found")
    assert summary.tombstoned == [] and summary.offline == [models]
    dreamy = lib.catalog.get(models / "dreamy.safetensors")
    assert (dreamy.status, dreamy.reason) == ("offline", OFFLINE_REASON)  # kept, not tombstoned
    assert summary.counts["offline"] == 5 and summary.counts["ok"] == 0
    assert "5 offline" in summary.describe() and "1 library folder offline" in summary.describe()
    assert lib.catalog.files(status="ok") == [] and lib.catalog.pending_hashes() == []
    assert lib.catalog.get(models / "dreamy.safetensors").error().hint == "connect the drive that holds it"
    (tmp_path / "unplugged").rename(models)  # plugged back in: as it was, nothing read again
    summary = run(lib.scan(hashing=False))
    assert summary.offline == [] and summary.unchanged == 5 and summary.counts["offline"] == 0
    assert lib.catalog.get(models / "dreamy.safetensors").status == "ok"


def test_a_library_folder_inside_another_owns_what_its_scan_saw(tmp_path, models):
    """Scanning a sub-folder first, then its parent: the parent's scan accounts for every file it
    listed, so a file of the sub-folder deleted later is tombstoned by the parent's scan."""
    lib, _ = _library(tmp_path)
    inner = lib.add_folder(models / "xl")
    run(lib.scan([inner], hashing=False))
    outer = lib.add_folder(models)
    summary = run(lib.scan([outer], hashing=False))
    assert summary.seen == 5
    assert {r.path.name for r in lib.catalog.files(root_id=outer.id)} == {
        "dreamy.safetensors", "big.safetensors", "detail_lora.safetensors", "vae-ft-mse.safetensors", "old.ckpt"}
    (models / "xl" / "big.safetensors").unlink()
    summary = run(lib.scan([outer], hashing=False))
    assert summary.tombstoned == [models / "xl" / "big.safetensors"]
    assert lib.catalog.get(models / "xl" / "big.safetensors").status == "missing"


def test_two_scans_at_once_never_tombstone_files_that_exist(tmp_path, models):
    """A scan that started earlier (lower generation) and marks files after a later scan did must
    not make them look unseen to the later scan's sweep (e.g. the CLI scanning while the app's
    watcher rescans)."""
    lib_a, _ = _library(tmp_path)
    lib_a.add_folder(models)
    run(lib_a.scan(hashing=False))
    write_checkpoint(models / "new.safetensors", "sd1", seed=9)
    lib_b, _ = _library(tmp_path)
    early = lib_a.scan(hashing=False)
    next(early)  # the earlier scan has its generation and has listed the files
    late = lib_b.scan(hashing=False)
    while next(late).stage != "probing":  # the later scan has marked what it found unchanged
        pass
    run(early)
    summary = run(late)
    assert summary.tombstoned == []
    assert "missing" not in {r.status for r in lib_b.catalog.files()}


def test_ten_thousand_files_in_one_folder(tmp_path):
    folder = tmp_path / "embeddings"
    write_embedding(folder / "template.safetensors")
    data = (folder / "template.safetensors").read_bytes()
    for i in range(10_000):
        (folder / f"emb_{i:05d}.safetensors").write_bytes(data)
    write_checkpoint(folder / "zz_real.safetensors", "sd1", seed=3)
    lib, counting = _library(tmp_path)
    lib.add_folder(folder)
    summary = run(lib.scan())
    statuses = Counter(r.status for r in lib.catalog.files())
    assert statuses == Counter({"skipped": 10_001, "ok": 1})
    assert lib.catalog.get(folder / "emb_04321.safetensors").kind == "embedding"
    assert summary.hashed == 1
    reads = counting.reads()
    summary = run(lib.scan())
    assert counting.reads() == reads and summary.unchanged == 10_002


@pytest.mark.parametrize("ui,parts", [
    ("AUTOMATIC1111/Forge", ("models", "Stable-diffusion")),
    ("ComfyUI", ("models", "checkpoints")),
    ("InvokeAI 3", ("models", "sdxl", "main")),
    ("SwarmUI", ("Models", "Stable-Diffusion")),
    ("Stability Matrix", ("Models", "StableDiffusion")),
])
def test_pointing_at_a_ui_root_scans_its_checkpoint_folder(tmp_path, ui, parts):
    root = tmp_path / "ui"
    checkpoint = write_checkpoint(root.joinpath(*parts) / "model.safetensors", "sd1", seed=4)
    write_lora(root / "models" / "Lora" / "style.safetensors")
    write_checkpoint(root / "venv" / "lib" / "test_fixture.safetensors", "sd1", seed=6)
    lib, _ = _library(tmp_path)
    lib.add_folder(root)
    summary = run(lib.scan(hashing=False))
    assert summary.folders == [(root.joinpath(*parts), ui)]
    assert [r.path for r in lib.catalog.files()] == [checkpoint]


def test_invokeai_4_root_scans_its_models_folder(tmp_path):
    root = tmp_path / "invokeai"
    (root / "invokeai.yaml").parent.mkdir(parents=True)
    (root / "invokeai.yaml").write_text("schema_version: 4.0.2\n")
    checkpoint = write_checkpoint(root / "models" / "4f1c2a" / "juggernaut.safetensors", "sdxl", seed=7)
    write_checkpoint(root / "outputs" / "stray.safetensors", "sd1", seed=8)
    lib, _ = _library(tmp_path)
    lib.add_folder(root)
    summary = run(lib.scan(hashing=False))
    assert summary.folders == [(root / "models", "InvokeAI")]
    assert [r.path for r in lib.catalog.files()] == [checkpoint]


def test_diffusers_folder_is_one_catalogued_checkpoint(tmp_path):
    root = tmp_path / "ComfyUI"
    folder = write_diffusers_folder(root / "models" / "diffusers" / "my-sd15", "sd1")
    lib, counting = _library(tmp_path)
    lib.add_folder(root)
    summary = run(lib.scan())
    record = lib.catalog.get(folder)
    assert (record.status, record.file_format, record.family) == ("ok", "diffusers", "sd1")
    assert [r.path for r in lib.catalog.files()] == [folder]  # its weight files are not listed apart
    assert summary.hashed == 0 and record.sha256 is None  # no single file to hash
    reads = counting.reads()
    assert run(lib.scan()).unchanged == 1 and counting.reads() == reads
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    with open(unet, "ab") as handle:  # a component changed: the folder is read again
        handle.write(bytes(8))
    run(lib.scan())
    assert counting.probes["my-sd15"] == 2


def test_cancel_during_hashing_records_nothing_for_that_file(tmp_path, models):
    lib, _ = _library(tmp_path)
    lib.add_folder(models)
    run(lib.scan(hashing=False))
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        run(lib.hash_pending(cancel=cancel))
    assert all(r.sha256 is None for r in lib.catalog.files())
    assert len(lib.catalog.pending_hashes()) == 2


def test_bad_folder_is_a_user_error(tmp_path):
    lib, _ = _library(tmp_path)
    with pytest.raises(UserInputError, match="no such folder"):
        lib.add_folder(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserInputError, match="not a folder"):
        lib.add_folder(tmp_path / "file.txt")


def test_reading_in_worker_processes_gives_the_same_catalog_as_in_process(tmp_path, models):
    for i in range(6):
        write_checkpoint(models / "many" / f"m{i}.safetensors", "sd2", seed=10 + i)
    results = []
    for workers in (1, 2):
        with Catalog(tmp_path / f"c{workers}.sqlite3") as catalog:
            lib = Library(catalog, workers=workers, parallel_min=2)
            lib.add_folder(models)
            summary = run(lib.scan(hashing=False))
            assert summary.probed == 11
            results.append([(r.path, r.status, r.reason, r.family, r.kind, r.display_name, r.metadata, r.header_len)
                            for r in catalog.files()])
    assert results[0] == results[1]
    assert sum(1 for row in results[1] if row[3] == "sd2") == 6


def test_hashing_yields_byte_progress_inside_a_file_and_closing_the_generator_stops_it(tmp_path, models, monkeypatch):
    import gmi_desktop.services.library as library_module

    monkeypatch.setattr(library_module, "HASH_EVENT_BYTES", 2 * 1024 * 1024)
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    lib = Library(catalog, hash_fn=lambda path, **kw: iter_hash_file(path, chunk_size=1 << 20, **kw))
    lib.add_folder(models)
    run(lib.scan(hashing=False))
    gen = lib.hash_pending()
    inside = []
    for event in gen:
        if event.bytes_done:
            inside.append((Path(event.item).name, event.bytes_done, event.bytes_total))
        if len(inside) == 3:
            gen.close()  # what a worker does on cancel: the pause point is the yield
            break
    size = (models / "dreamy.safetensors").stat().st_size  # first pending file, in path order
    assert size > 6 * 1024 * 1024
    assert inside == [("dreamy.safetensors", n * 2 * 1024 * 1024, size) for n in (1, 2, 3)]
    assert all(r.sha256 is None for r in catalog.files())  # nothing recorded for the half-hashed file
    run(lib.hash_pending())
    assert len([r for r in catalog.files() if r.sha256]) == 2


def test_a_killed_worker_process_does_not_lose_files(tmp_path):
    import multiprocessing
    import signal

    from gmi_desktop.services.library_read import read_many

    paths = [write_checkpoint(tmp_path / f"m{i:02d}.safetensors", "sd1", seed=20 + i) for i in range(12)]
    serial = [r.family for r, _, _ in read_many(paths, workers=1)]
    reads = read_many(paths, workers=2, parallel_min=2)
    got = [next(reads)[0].family]
    for child in multiprocessing.active_children():
        os.kill(child.pid, signal.SIGKILL)
    got += [r.family for r, _, _ in reads]
    assert got == serial == ["sd1"] * 12


def test_a_cancelled_scan_keeps_whole_batches_and_the_next_scan_resumes(tmp_path):
    from gmi_desktop.services.library import BATCH

    folder = tmp_path / "many"
    write_embedding(folder / "t.safetensors")
    data = (folder / "t.safetensors").read_bytes()
    for i in range(2 * BATCH + 50):
        (folder / f"e{i:04d}.safetensors").write_bytes(data)
    total = 2 * BATCH + 51
    lib, counting = _library(tmp_path)
    lib.add_folder(folder)
    probing = []
    with pytest.raises(Cancelled):
        run(lib.scan(cancel=lambda: len(probing) >= BATCH + 10),
            lambda e: probing.append(e) if e.stage == "probing" else None)
    assert len(lib.catalog.files()) == BATCH  # one whole batch committed, nothing half-written
    assert lib.catalog.integrity_ok()
    summary = run(lib.scan())
    assert (summary.unchanged, summary.probed) == (BATCH, total - BATCH)
    assert sum(counting.probes.values()) == (BATCH + 10) + (total - BATCH)


def test_file_that_keeps_changing_while_hashed_ends_incomplete_then_recovers(tmp_path, models):
    target = models / "dreamy.safetensors"
    touching = {"on": True}

    def meddling_hash(path, **kw):
        """The real hasher, while someone keeps touching dreamy.safetensors between chunks."""
        steps = iter_hash_file(path, chunk_size=1 << 20, **kw)
        while True:
            try:
                item = next(steps)
            except StopIteration as stop:
                return stop.value
            if touching["on"] and Path(path) == target:
                bump_mtime(target, 1_000_000)
            yield item

    lib = Library(Catalog(tmp_path / "catalog.sqlite3"), hash_fn=meddling_hash)
    lib.add_folder(models)
    summary = run(lib.scan())
    record = lib.catalog.get(target)
    assert (record.status, record.sha256) == ("incomplete", None)
    assert "kept changing" in record.reason and any("kept changing" in p.reason for p in summary.problems)
    assert lib.catalog.get(models / "xl" / "big.safetensors").sha256 is not None
    touching["on"] = False
    run(lib.scan())  # its key moved, so it is read and hashed again
    record = lib.catalog.get(target)
    assert record.status == "ok" and record.sha256 == _sha(target)
