"""The SQLite catalog: migrations, WAL, newer-schema refusal, lookups, transactions that survive a kill."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from gmi_desktop.core.errors import CatalogError
from gmi_desktop.store import paths
from gmi_desktop.store.catalog import Catalog, FileFacts
from gmi_desktop.store.catalog_schema import LATEST, MIGRATIONS, migrate
from gmi_desktop.store.hashing import FileHashes


def _hashes(seed: str, key) -> FileHashes:
    sha = hashlib.sha256(seed.encode()).hexdigest()
    return FileHashes(sha, hashlib.sha256(b"v1" + seed.encode()).hexdigest()[:8], "t" * 64, key[2], key)


def _facts(path: str, key=(1, 2, 3, 4), status="ok", **kw) -> FileFacts:
    return FileFacts(path, key, status, family=kw.pop("family", "sd1"), metadata={"ss_x": "ü"}, **kw)


def test_new_catalog_lives_in_the_data_dir_with_wal_and_latest_schema():
    with Catalog() as catalog:
        assert catalog.path == paths.catalog_path()
        assert catalog.journal_mode == "wal"
        assert catalog.schema_version() == LATEST == 4
    conn = sqlite3.connect(paths.catalog_path())
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"schema_version", "roots", "files", "content", "spec_refs", "meta"} <= tables


def test_migration_from_version_1_keeps_the_data(tmp_path):
    db = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(db, isolation_level=None)
    assert migrate(conn, db, target=1) == 1
    conn.execute("INSERT INTO roots (path, added_at) VALUES ('/models', 1.0)")
    conn.execute("INSERT INTO content VALUES ('ab' || printf('%062d', 0), 'ab00000000', NULL, NULL, 5, 1.0)")
    conn.execute(
        "INSERT INTO files (path, root_id, device, inode, size, mtime_ns, status, sha256, seen_generation, "
        "first_seen, last_seen) VALUES ('/models/a.safetensors', 1, 1, 2, 5, 7, 'ok', 'ab' || printf('%062d', 0), 1, 1, 1)"
    )
    assert "spec_refs" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    with Catalog(db) as catalog:
        assert catalog.schema_version() == LATEST
        assert catalog.file_keys()["/models/a.safetensors"].sidecar_sig == ""  # v3 column, defaulted
        record = catalog.get("/models/a.safetensors")
        assert record.autov2 == "ab00000000" and record.key == (1, 2, 5, 7)
        catalog.set_spec_ref(record.sha256, "spec.safetensors")  # the v2 table exists now
        assert catalog.spec_ref(record.sha256) == "spec.safetensors"


def test_every_migration_step_is_ordered_and_reaches_latest(tmp_path):
    versions = [v for v, _ in MIGRATIONS]
    assert versions == sorted(versions) == list(range(1, LATEST + 1))
    conn = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    assert migrate(conn) == LATEST
    assert migrate(conn) == LATEST  # idempotent


def test_newer_schema_is_a_clear_error(tmp_path):
    db = tmp_path / "future.sqlite3"
    Catalog(db).close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(CatalogError, match="schema version 99, newer than this program knows") as info:
        Catalog(db)
    assert info.value.path == db and "update GMI Desktop" in str(info.value)


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    db = tmp_path / "junk.sqlite3"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CatalogError, match="cannot open the catalog"):
        Catalog(db)


def test_lookups_by_sha256_autov2_autov1_and_statuses(tmp_path):
    with Catalog(tmp_path / "c.sqlite3") as catalog:
        root = catalog.add_root(tmp_path)
        gen = catalog.next_generation()
        catalog.record_files([(_facts("/m/a.safetensors", (1, 10, 3, 4)), root.id, None),
                              (_facts("/m/b.safetensors", (1, 11, 3, 4)), root.id, None),
                              (_facts("/m/lora.safetensors", (1, 12, 3, 4), status="skipped", reason="LoRA"), root.id, None)],
                             gen)
        assert [r.path.name for r in catalog.pending_hashes()] == []  # file_format unknown: not hashable
        a, b = catalog.get("/m/a.safetensors"), catalog.get("/m/b.safetensors")
        ha = _hashes("a", a.key)
        assert catalog.record_hashes(a.id, ha)
        assert not catalog.record_hashes(b.id, _hashes("b", (9, 9, 9, 9)))  # stale key: refused
        for text in (ha.sha256, ha.sha256.upper(), ha.autov2, ha.autov1, f"  {ha.autov2} "):
            assert [r.path.name for r in catalog.find_by_hash(text)] == ["a.safetensors"], text
        assert catalog.find_by_hash("zz" * 5) == [] and catalog.find_by_hash("abc") == []
        assert [r.path.name for r in catalog.files(status="skipped")] == ["lora.safetensors"]
        assert catalog.get("/m/a.safetensors").metadata == {"ss_x": "ü"}
        assert catalog.duplicates() == []
        assert catalog.record_hashes(b.id, FileHashes(ha.sha256, ha.autov1, None, 3, b.key))
        assert [[r.path.name for r in g] for g in catalog.duplicates()] == [["a.safetensors", "b.safetensors"]]


def test_unknown_status_is_refused_and_nothing_is_written(tmp_path):
    with Catalog(tmp_path / "c.sqlite3") as catalog:
        with pytest.raises(ValueError):
            catalog.record_files([(_facts("/m/a.safetensors"), None, None),
                                  (_facts("/m/b.safetensors", status="weird"), None, None)], 1)
        assert catalog.files() == []


def test_roots_add_list_remove(tmp_path):
    with Catalog(tmp_path / "c.sqlite3") as catalog:
        a = catalog.add_root(tmp_path / "a")
        assert catalog.add_root(str(tmp_path / "a") + "/") == a  # normalised, no duplicate
        catalog.add_root(tmp_path / "b")
        assert [r.path for r in catalog.roots()] == [tmp_path / "a", tmp_path / "b"]
        catalog.record_files([(_facts("/a/x.safetensors"), a.id, None)], 1)
        assert catalog.remove_root(tmp_path / "a") and not catalog.remove_root(tmp_path / "a")
        assert catalog.files() == [] and [r.path for r in catalog.roots()] == [tmp_path / "b"]


def test_killed_process_mid_transaction_leaves_a_consistent_catalog(tmp_path):
    db = tmp_path / "c.sqlite3"
    with Catalog(db) as catalog:
        catalog.record_files([(_facts("/m/keep.safetensors"), None, None)], 1)
    script = textwrap.dedent(f"""
        import os
        from gmi_desktop.store.catalog import Catalog, FileFacts
        catalog = Catalog({str(db)!r})
        with catalog.transaction() as conn:
            conn.execute("UPDATE files SET status = 'missing'")
            conn.execute("INSERT INTO roots (path, added_at) VALUES ('/half', 0)")
            os.kill(os.getpid(), 9)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), capture_output=True, timeout=60)
    assert proc.returncode == -9
    with Catalog(db) as catalog:
        assert catalog.integrity_ok()
        assert [(r.path.name, r.status) for r in catalog.files()] == [("keep.safetensors", "ok")]
        assert catalog.roots() == []


def test_catalogs_opened_at_once_on_a_new_file_all_open(tmp_path):
    """The app's threads (or the app and the CLI) opening the catalog for the first time together:
    the one that loses the race to create the tables must find them made, not fail."""
    import threading

    for attempt in range(8):
        path = tmp_path / f"race{attempt}" / "catalog.sqlite3"
        barrier = threading.Barrier(4)
        errors: list[str] = []

        def open_it(path=path, barrier=barrier, errors=errors):
            barrier.wait()
            try:
                with Catalog(path) as catalog:
                    assert catalog.version == LATEST
            except CatalogError as exc:
                errors.append(str(exc))

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with Catalog(path) as catalog:
            assert catalog.schema_version() == LATEST and catalog.integrity_ok()


def test_a_data_folder_that_cannot_be_made_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should go")
    with pytest.raises(CatalogError, match="cannot create the catalog's folder"):
        Catalog(blocker / "data" / "catalog.sqlite3")


def test_scan_with_a_data_dir_that_cannot_be_made_exits_2_with_one_line(tmp_path, monkeypatch, capsys):
    from gmi_desktop.cli.main import main

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should go")
    monkeypatch.setenv("GMI_DATA_DIR", str(blocker / "data"))
    (tmp_path / "models").mkdir()
    assert main(["scan", str(tmp_path / "models")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot create the catalog's folder" in err[0]
