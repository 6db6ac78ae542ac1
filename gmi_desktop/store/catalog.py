"""The model catalog: one SQLite database (WAL) of every model file seen, its hashes and status.

Files are keyed by path and carry their stat key ``(device, inode, size, mtime_ns)``; content is
keyed by SHA-256 (with AutoV2, AutoV1 and the tensor-data hash); specification references are
keyed by content SHA-256, so a renamed or moved file keeps its specification. Rescans are
mark-and-sweep over a generation counter: every file seen in a scan gets the scan's generation,
and files of the scanned roots left behind are tombstoned (status ``missing``) until
:meth:`Catalog.prune`.

All writes run in ``BEGIN IMMEDIATE`` transactions, so a killed process leaves the previous
consistent state. One :class:`Catalog` object per thread (SQLite connections are not shared).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from pathlib import Path

from gmi_desktop.core.checkpoint_kinds import Status
from gmi_desktop.core.errors import CatalogError
from gmi_desktop.store import paths
from gmi_desktop.store.catalog_records import FileFacts, FileRecord, KnownFile, PruneResult, Root
from gmi_desktop.store.catalog_schema import FILE_STATUSES, LATEST, migrate, schema_version
from gmi_desktop.store.hashing import FileHashes, StatKey

__all__ = ["Catalog", "FileFacts", "FileRecord", "KnownFile", "PruneResult", "Root", "FILE_STATUSES", "LATEST"]

OFFLINE_REASON = "its library folder cannot be reached (unplugged drive?); kept until it is back"


_FACT_COLUMNS = tuple(f.name for f in fields(FileFacts) if f.name not in ("path", "key"))
_KEY_COLUMNS = ("device", "inode", "size", "mtime_ns")
# A file below a library folder that a scan found absent reads as offline; its stored status is
# kept for when the drive is back.
_OFFLINE = "r.offline_since IS NOT NULL AND f.status != 'missing'"
_SELECT = (
    f"SELECT f.id, f.path, f.root_id, {', '.join('f.' + c for c in _KEY_COLUMNS)}, "
    f"CASE WHEN {_OFFLINE} THEN 'offline' ELSE f.status END AS status, "
    f"CASE WHEN {_OFFLINE} THEN '{OFFLINE_REASON}' ELSE f.reason END AS reason, "
    f"{', '.join('f.' + c for c in _FACT_COLUMNS if c not in ('status', 'reason'))}, "
    "f.sha256, c.autov2, c.autov1, c.tensor_sha256, f.seen_generation, f.first_seen, f.last_seen "
    "FROM files f LEFT JOIN content c ON c.sha256 = f.sha256 LEFT JOIN roots r ON r.id = f.root_id"
)
_STATUS = f"(CASE WHEN {_OFFLINE} THEN 'offline' ELSE f.status END)"


def _record(cursor: sqlite3.Cursor, row: Sequence) -> FileRecord:
    """A row of ``_SELECT`` as a :class:`FileRecord`, by column name (a ``row_factory``)."""
    values = {d[0]: v for d, v in zip(cursor.description, row)}
    key = StatKey(*(values.pop(c) for c in _KEY_COLUMNS))
    values["metadata"] = json.loads(values["metadata"])
    values["status"] = Status(values["status"])
    values["path"] = Path(values["path"])
    values.pop("sidecar_sig", None)
    return FileRecord(key=key, **values)


_ELSEWHERE = "or point GMI_DATA_DIR at another folder"


def _read_only_fs(path: Path) -> bool:
    for place in (path, *path.parents):
        try:
            return bool(os.statvfs(place).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):  # not there yet; no statvfs on Windows
            continue
    return False


def _hint(exc: Exception, path: Path) -> str:
    """What the user can do about a catalog that cannot be created or opened, by its cause."""
    folder = path if path.is_dir() and not isinstance(exc, sqlite3.Error) else path.parent
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if isinstance(exc, (FileExistsError, NotADirectoryError)) or (blocker is not None and blocker != path):
        return f"{blocker or folder} is a file where a folder should be: move it away, {_ELSEWHERE}"
    if path.is_dir():
        return f"{path} is a folder where the catalog file should be: move it away, {_ELSEWHERE}"
    if _read_only_fs(path) or getattr(exc, "errno", None) == errno.EROFS:
        return f"the disk holding {folder} is read-only: {_ELSEWHERE[3:]} on a writable disk"
    text = str(exc).lower()
    if (isinstance(exc, PermissionError) or "readonly" in text or "unable to open" in text
            or (folder.exists() and not os.access(folder, os.W_OK))
            or (path.exists() and not os.access(path, os.R_OK | os.W_OK))):
        return f"you may not write to {path if path.exists() else folder}: fix its permissions, {_ELSEWHERE}"
    if "not a database" in text or "malformed" in text:
        return f"the file is damaged: move it away (a new catalog is made; scan again), {_ELSEWHERE}"
    if "locked" in text:
        return "another program holds the catalog: close it and try again"
    return f"check the disk, {_ELSEWHERE}"


def _set_wal(conn: sqlite3.Connection, timeout_s: float) -> str:
    """``PRAGMA journal_mode = WAL``. SQLite answers "locked" at once, without the busy handler,
    while another connection is creating a new catalog: wait for it like for any busy lock."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


class Catalog:
    """Open (creating and migrating as needed) the catalog at ``path`` (default: the data dir)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, busy_timeout_s: float = 10.0):
        try:  # the default place is made by paths.catalog_path()
            self.path = Path(path) if path is not None else paths.catalog_path()
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            where = Path(path) if path is not None else Path(exc.filename or paths.data_dir())
            raise CatalogError(where, f"cannot create the catalog's folder: {exc.strerror or exc}",
                               _hint(exc, where)) from None
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self.journal_mode = _set_wal(conn, busy_timeout_s)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self.version = migrate(conn, self.path)
        except (sqlite3.DatabaseError, CatalogError) as exc:
            if conn is not None:
                conn.close()
            if isinstance(exc, CatalogError):
                raise
            raise CatalogError(self.path, f"cannot open the catalog: {exc}", _hint(exc, self.path)) from None
        self._conn = conn

    # -- plumbing -------------------------------------------------------------------------------
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back if the body raises."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def schema_version(self) -> int:
        return schema_version(self._conn)

    def integrity_ok(self) -> bool:
        return self._conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # -- roots ----------------------------------------------------------------------------------
    def add_root(self, path: str | os.PathLike[str]) -> Root:
        text = os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(path))))
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO roots (path, added_at) VALUES (?, ?)", (text, time.time()))
        return self.root(text)

    def root(self, path: str | os.PathLike[str]) -> Root:
        text = os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(path))))
        row = self._conn.execute("SELECT id, path, added_at, offline_since FROM roots WHERE path = ?",
                                 (text,)).fetchone()
        if row is None:
            raise KeyError(text)
        return Root(row[0], Path(row[1]), row[2], row[3])

    def roots(self) -> list[Root]:
        rows = self._conn.execute("SELECT id, path, added_at, offline_since FROM roots ORDER BY path").fetchall()
        return [Root(r[0], Path(r[1]), r[2], r[3]) for r in rows]

    def set_offline(self, root_id: int, offline: bool) -> int:
        """Mark a library folder unreachable (its files read as ``offline``, nothing is lost) or
        reachable again; returns how many present files it holds."""
        with self.transaction() as conn:
            conn.execute("UPDATE roots SET offline_since = CASE WHEN ? THEN COALESCE(offline_since, ?) END "
                         "WHERE id = ?", (offline, time.time(), root_id))
            return conn.execute("SELECT COUNT(*) FROM files WHERE root_id = ? AND status != 'missing'",
                                (root_id,)).fetchone()[0]

    def remove_root(self, path: str | os.PathLike[str]) -> bool:
        """Forget a root and its files; content hashes and specification references stay until
        :meth:`prune`."""
        try:
            root = self.root(path)
        except KeyError:
            return False
        with self.transaction() as conn:
            conn.execute("DELETE FROM files WHERE root_id = ?", (root.id,))
            conn.execute("DELETE FROM roots WHERE id = ?", (root.id,))
        return True

    # -- scanning -------------------------------------------------------------------------------
    def next_generation(self) -> int:
        with self.transaction() as conn:
            conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
            return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def file_keys(self, root_ids: Iterable[int] | None = None) -> dict[str, KnownFile]:
        """``path -> KnownFile`` for the files of ``root_ids`` (every file when None)."""
        sql = "SELECT path, id, device, inode, size, mtime_ns, status, sha256, reason, kind, sidecar_sig FROM files"
        args: tuple = ()
        if root_ids is not None:
            ids = tuple(root_ids)
            sql += f" WHERE root_id IN ({','.join('?' * len(ids))})"
            args = ids
        return {r[0]: KnownFile(r[1], StatKey(*r[2:6]), *r[6:]) for r in self._conn.execute(sql, args)}

    def unseen(self, generation: int, root_ids: Iterable[int]) -> list[tuple[int, Path]]:
        """Present files of ``root_ids`` not seen since ``generation`` began: sweep candidates."""
        ids = tuple(root_ids)
        rows = self._conn.execute(
            f"SELECT id, path FROM files WHERE root_id IN ({','.join('?' * len(ids))}) "
            "AND seen_generation < ? AND status != 'missing' ORDER BY path", (*ids, generation),
        )
        return [(r[0], Path(r[1])) for r in rows]

    def record_files(self, facts: Iterable[tuple[FileFacts, int | None, str | None]], generation: int) -> None:
        """Insert or update files from ``(facts, root_id, sha256)``; ``sha256`` is carried over for
        a file known to hold already-hashed content (a rename), else ``None`` (hash pending)."""
        now = time.time()
        rows = []
        for f, root_id, sha in facts:
            if f.status not in FILE_STATUSES:
                raise ValueError(f"unknown file status {f.status!r}")
            values = [getattr(f, c) for c in _FACT_COLUMNS]
            values[_FACT_COLUMNS.index("metadata")] = json.dumps(dict(f.metadata), ensure_ascii=False, sort_keys=True)
            rows.append((os.fspath(f.path), root_id, *f.key, *values, sha, generation, now, now))
        updates = ", ".join(f"{c} = excluded.{c}" for c in ("root_id", *_KEY_COLUMNS, *_FACT_COLUMNS,
                                                            "sha256", "last_seen"))
        # never lower: a scan that began earlier must not make the file unseen to a later one's sweep
        updates += ", seen_generation = MAX(seen_generation, excluded.seen_generation)"
        columns = ("path", "root_id", *_KEY_COLUMNS, *_FACT_COLUMNS, "sha256", "seen_generation", "first_seen",
                   "last_seen")
        with self.transaction() as conn:
            conn.executemany(
                f"INSERT INTO files ({', '.join(columns)}) VALUES ({','.join('?' * len(columns))}) "
                f"ON CONFLICT (path) DO UPDATE SET {updates}",
                rows,
            )

    def mark_seen(self, file_ids: Iterable[int], generation: int, root_id: int | None = None) -> None:
        """Mark files seen in ``generation``; with ``root_id``, they now belong to that library
        folder (the one whose scan listed them: library folders may nest)."""
        now = time.time()
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE files SET seen_generation = MAX(seen_generation, ?), last_seen = ?, "
                "root_id = COALESCE(?, root_id) WHERE id = ?",
                ((generation, now, root_id, i) for i in file_ids),
            )

    def present_under(self, path: str | os.PathLike[str]) -> list[tuple[int, Path]]:
        """Present files at ``path`` or anywhere below it (a deleted or moved-away folder)."""
        text = os.fspath(path).rstrip(os.sep) or os.sep
        lo, hi = text + os.sep, text + chr(ord(os.sep) + 1)
        rows = self._conn.execute(
            "SELECT id, path FROM files WHERE status != 'missing' AND (path = ? OR (path >= ? AND path < ?)) "
            "ORDER BY path", (text, lo, hi),
        )
        return [(r[0], Path(r[1])) for r in rows]

    def tombstone(self, file_ids: Iterable[int], reason: str = "file is gone") -> None:
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE files SET status = 'missing', reason = ? WHERE id = ? AND status != 'missing'",
                ((reason, i) for i in file_ids),
            )

    def set_status(self, file_id: int, status: str, reason: str) -> None:
        if status not in FILE_STATUSES:
            raise ValueError(f"unknown file status {status!r}")
        with self.transaction() as conn:
            conn.execute("UPDATE files SET status = ?, reason = ? WHERE id = ?", (status, reason, file_id))

    def collapse_moves(self) -> list[tuple[Path, Path]]:
        """Drop tombstones whose content lives on at another path (a move); ``(old, new)`` pairs.

        Nothing is lost: the specification reference is keyed by the content hash. The new path
        is the same inode if present (a rename), else the copy seen first most recently (not an
        older copy that was there all along)."""
        with self.transaction() as conn:
            rows = conn.execute(
                "WITH ranked AS (SELECT gone.id, gone.path AS old, live.path AS new, ROW_NUMBER() OVER ("
                "PARTITION BY gone.id ORDER BY live.device = gone.device AND live.inode = gone.inode DESC, "
                "live.first_seen DESC, live.path) AS rank FROM files gone JOIN files live "
                "ON live.sha256 = gone.sha256 AND live.status != 'missing' WHERE gone.status = 'missing') "
                "SELECT id, old, new FROM ranked WHERE rank = 1 ORDER BY old"
            ).fetchall()
            conn.executemany("DELETE FROM files WHERE id = ?", ((r[0],) for r in rows))
        return [(Path(r[1]), Path(r[2])) for r in rows]

    def _records(self, where: str = "", args: Sequence = ()) -> list[FileRecord]:
        cursor = self._conn.cursor()
        cursor.row_factory = _record
        return cursor.execute(f"{_SELECT} {where}", tuple(args)).fetchall()

    # -- hashing --------------------------------------------------------------------------------
    def pending_hashes(self) -> list[FileRecord]:
        """Usable single-file checkpoints whose content is not hashed yet (and can be read now)."""
        return self._records(f"WHERE {_STATUS} = 'ok' AND f.sha256 IS NULL AND f.file_format = 'safetensors' "
                             "ORDER BY f.path")

    def record_hashes(self, file_id: int, hashes: FileHashes) -> bool:
        """Store ``hashes`` for the file if its row still has the stat key that was hashed."""
        with self.transaction() as conn:
            row = conn.execute("SELECT device, inode, size, mtime_ns FROM files WHERE id = ?", (file_id,)).fetchone()
            if row is None or tuple(row) != tuple(hashes.key):
                return False
            conn.execute(
                "INSERT OR IGNORE INTO content (sha256, autov2, autov1, tensor_sha256, size, hashed_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (hashes.sha256, hashes.autov2, hashes.autov1, hashes.tensor_sha256, hashes.size, time.time()),
            )
            conn.execute("UPDATE files SET sha256 = ? WHERE id = ?", (hashes.sha256, file_id))
        return True

    # -- lookups --------------------------------------------------------------------------------
    def get(self, path: str | os.PathLike[str]) -> FileRecord | None:
        found = self._records("WHERE f.path = ?", (os.fspath(path),))
        return found[0] if found else None

    def files(self, status: str | Sequence[str] | None = None, root_id: int | None = None) -> list[FileRecord]:
        clauses, args = [], []
        if status is not None:
            wanted = (status,) if isinstance(status, str) else tuple(status)
            clauses.append(f"{_STATUS} IN ({','.join('?' * len(wanted))})")
            args += wanted
        if root_id is not None:
            clauses.append("f.root_id = ?")
            args.append(root_id)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._records(f"{where} ORDER BY f.path", args)

    def status_counts(self, root_ids: Iterable[int]) -> dict[Status, int]:
        """How many present files of ``root_ids`` are in each status (``offline`` included)."""
        ids = tuple(root_ids)
        counts = {s: 0 for s in Status if s is not Status.MISSING}
        rows = self._conn.execute(
            f"SELECT {_STATUS}, COUNT(*) FROM files f LEFT JOIN roots r ON r.id = f.root_id "
            f"WHERE f.root_id IN ({','.join('?' * len(ids))}) AND f.status != 'missing' GROUP BY 1", ids)
        for status, n in rows:
            counts[Status(status)] = n
        return counts

    def paths_with_status(self, statuses: Iterable[str], root_ids: Iterable[int]) -> list[Path]:
        wanted, ids = tuple(statuses), tuple(root_ids)
        rows = self._conn.execute(
            f"SELECT f.path FROM files f LEFT JOIN roots r ON r.id = f.root_id WHERE {_STATUS} IN "
            f"({','.join('?' * len(wanted))}) AND f.root_id IN ({','.join('?' * len(ids))}) ORDER BY f.path",
            (*wanted, *ids))
        return [Path(r[0]) for r in rows]

    def find_by_hash(self, text: str) -> list[FileRecord]:
        """Files whose content matches a hash as images and sites write it: 64 hex digits = SHA-256,
        10 = AutoV2 ("Model hash" of A1111), 8 = AutoV1 (old A1111). Present files first."""
        value = text.strip().lower()
        column = {64: "c.sha256", 10: "c.autov2", 8: "c.autov1"}.get(len(value))
        if column is None or any(ch not in "0123456789abcdef" for ch in value):
            return []
        return self._records(f"WHERE {column} = ? ORDER BY f.status = 'missing', f.path", (value,))

    def duplicates(self) -> list[list[FileRecord]]:
        """Groups of present files holding the same content (same SHA-256 in two places or more)."""
        shas = [r[0] for r in self._conn.execute(
            "SELECT sha256 FROM files WHERE status != 'missing' AND sha256 IS NOT NULL "
            "GROUP BY sha256 HAVING COUNT(*) > 1 ORDER BY MIN(path)"
        )]
        return [self._records("WHERE f.sha256 = ? AND f.status != 'missing' ORDER BY f.path", (sha,)) for sha in shas]

    def copies(self) -> dict[str, int]:
        """``sha256 -> copies`` for content held by two separate files or more. Hard links and
        symbolic links to one file share its (device, inode): they are one copy on disk."""
        rows = self._conn.execute(
            "SELECT sha256, COUNT(DISTINCT device || ':' || inode) FROM files "
            "WHERE status != 'missing' AND sha256 IS NOT NULL GROUP BY sha256"
        )
        return {sha: n for sha, n in rows if n > 1}

    # -- specification references ---------------------------------------------------------------
    def set_spec_ref(self, sha256: str, spec_path: str | os.PathLike[str]) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO spec_refs (sha256, spec_path, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (sha256) DO UPDATE SET spec_path = excluded.spec_path, created_at = excluded.created_at",
                (sha256, os.fspath(spec_path), time.time()),
            )

    def spec_ref(self, sha256: str) -> str | None:
        row = self._conn.execute("SELECT spec_path FROM spec_refs WHERE sha256 = ?", (sha256,)).fetchone()
        return row[0] if row else None

    def prune(self) -> PruneResult:
        """Remove tombstoned files, then content and specification references no file holds."""
        with self.transaction() as conn:
            gone = [Path(r[0]) for r in conn.execute("SELECT path FROM files WHERE status = 'missing' ORDER BY path")]
            conn.execute("DELETE FROM files WHERE status = 'missing'")
            orphan = "sha256 NOT IN (SELECT sha256 FROM files WHERE sha256 IS NOT NULL)"
            specs = [r[0] for r in conn.execute(f"SELECT spec_path FROM spec_refs WHERE {orphan} ORDER BY spec_path")]
            conn.execute(f"DELETE FROM spec_refs WHERE {orphan}")
            conn.execute(f"DELETE FROM content WHERE {orphan}")
        return PruneResult(gone, specs)

