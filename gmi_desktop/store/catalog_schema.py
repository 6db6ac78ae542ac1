"""The catalog's SQL schema as ordered migrations, driven by the one-row ``schema_version`` table.

Each migration runs in its own transaction together with the version bump, so a process killed
mid-migration leaves the database at the previous version. A database whose version is newer than
:data:`LATEST` was written by a newer GMI Desktop: :class:`CatalogError`, never a guess.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gmi_desktop.core.errors import CatalogError

from gmi_desktop.core.checkpoint_kinds import Status

# What a files row may hold. ``offline`` is not stored: a file reads as offline while its library
# folder is marked unreachable (``roots.offline_since``), and keeps its own status for its return.
FILE_STATUSES = tuple(s.value for s in Status if s is not Status.OFFLINE)
_V1_STATUSES = ("ok", "skipped", "invalid", "incomplete", "unsupported", "missing")  # frozen with v1

_V1 = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('generation', '0');
CREATE TABLE roots (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    added_at REAL NOT NULL
);
CREATE TABLE content (
    sha256 TEXT PRIMARY KEY,
    autov2 TEXT NOT NULL,
    autov1 TEXT,
    tensor_sha256 TEXT,
    size INTEGER NOT NULL,
    hashed_at REAL NOT NULL
);
CREATE INDEX content_autov2 ON content (autov2);
CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    root_id INTEGER REFERENCES roots (id) ON DELETE SET NULL,
    device INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in _V1_STATUSES)})),
    reason TEXT NOT NULL DEFAULT '',
    file_format TEXT,
    family TEXT,
    variant TEXT,
    kind TEXT,
    display_name TEXT,
    base_model TEXT,
    download_count INTEGER,
    preview_path TEXT,
    metadata TEXT NOT NULL DEFAULT '{{}}',
    header_len INTEGER NOT NULL DEFAULT 0,
    tensor_count INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT REFERENCES content (sha256),
    seen_generation INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE INDEX files_sha256 ON files (sha256);
CREATE INDEX files_root ON files (root_id);
CREATE INDEX files_status ON files (status);
"""

# v2: specifications keyed by content (a renamed or moved file keeps its specification), lookups
# by the old A1111 hash and by tensor data, and the cheap rename key (device, inode).
_V2 = """
CREATE TABLE spec_refs (
    sha256 TEXT PRIMARY KEY,
    spec_path TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX content_autov1 ON content (autov1);
CREATE INDEX content_tensor ON content (tensor_sha256);
CREATE INDEX files_inode ON files (device, inode);
"""

# v3: the sidecars' (name, size, mtime) signature, so a rescan notices a .civitai.info or preview
# added beside an unchanged model.
_V3 = """
ALTER TABLE files ADD COLUMN sidecar_sig TEXT NOT NULL DEFAULT '';
"""

# v4: a library folder on an unplugged drive keeps its files, shown offline until it is back.
_V4 = """
ALTER TABLE roots ADD COLUMN offline_since REAL;
"""

MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _V1), (2, _V2), (3, _V3), (4, _V4))
LATEST = MIGRATIONS[-1][0]


def schema_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection, path: Path | None = None, target: int = LATEST) -> int:
    """Bring ``conn`` (autocommit mode) up to ``target``; returns the version it ended at."""
    current = schema_version(conn)
    if current > LATEST:
        raise CatalogError(
            path, f"the catalog has schema version {current}, newer than this program knows ({LATEST})"
        )
    for version, script in MIGRATIONS:
        if current < version <= target:
            bump = (
                "CREATE TABLE schema_version (version INTEGER NOT NULL);"
                f"INSERT INTO schema_version (version) VALUES ({version});"
                if version == 1
                else f"UPDATE schema_version SET version = {version};"
            )
            try:
                conn.executescript(f"BEGIN IMMEDIATE;\n{script}\n{bump}\nCOMMIT;")
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                # Another connection ran this step between our version read and our lock (two
                # threads or processes opening a new catalog together): its work is committed.
                if schema_version(conn) >= version:
                    current = schema_version(conn)
                    continue
                raise
            current = version
    return current
