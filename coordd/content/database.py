"""The content database (``<state>/content.db``): units, repository versions, the pool's files.

A SQLite file of its own, beside the task store: a sync writing 50,000 units in batches
must not hold the lock a task submission waits for. Connections are short-lived, one per
call, opened in the thread (or worker process) that uses them; SQLite's WAL lets readers
run beside the one writer, and ``busy_timeout`` queues writers. The coordinator has already
kept conflicting operations apart, so two writers never race for the same rows.

Tables (see ``SCHEMA``):

``files``
    Every file the pool holds, by sha256, with its size. A file reaches the pool's path
    before its row (so a crash leaves at most a file without a row, which the next sync
    that names it records without a download).
``aliases``
    Checksums of another type that a feed declared for a pool file, so a feed that names
    files by sha512 or sha1 finds them without a download.
``units``
    One row per unit (``kind``: rpm, erratum, delta, file, metadata), unique by ``key``
    within its kind: the columns every query filters or sorts on, and ``data``, the typed
    record as JSON (``coordd.content.units`` converts both ways).
``rpm_files``, ``rpm_changelogs``
    A package's file list and changelog, by ``pkgid`` (its checksum in primary.xml): the bulk
    of filelists.xml and other.xml, read only by publish.
``rpm_xml``
    A package's entries in primary, filelists and other.xml as its feed wrote them, by
    ``pkgid`` and file type (``coordd.content.fragments``): what publish writes, when a
    package has them.
``repo_content``
    Which units a repository's versions hold, as ranges: a row is in version N when
    ``added <= N`` and ``removed`` is null or greater than N. The latest version is the
    rows whose ``removed`` is null. ``origin`` says how the unit came: ``feed`` (a sync
    drops it when its feed stops listing it), ``copy`` or ``upload``.
``versions``
    Each version's number, the task that made it, when, and its counts (per kind, and the
    units added and removed).
``sync_state``
    What the last sync of a repository saw (repomd.xml and .treeinfo checksums, options):
    a sync of an unchanged feed compares it and stops.
``feed_units``
    The units a sync chose from one feed state (``metadata``: a digest of repomd.xml,
    .treeinfo and the options that choose), kept while some repository's last sync saw
    that state: a sync of another repository from the same metadata, whatever mirror
    serves it, takes the set instead of fetching and parsing the metadata again.
``publications``
    The version each repository's published tree shows; a published version is never
    pruned.
``staged``
    The units a running sync has chosen, before it commits them as a version.
``version_repomd``
    What a version's repomd.xml says besides its records: the feed's revision and tags
    (content, distro, repo), and the records of the feed that coordd does not carry
    (``*_db``, ``*_zck``). Every new version starts with its previous version's (any
    change of content keeps them); a sync writes the feed's (or, changing no content,
    updates the latest version's); a rollback takes the older version's; a copy into a
    target that has none takes the source's.
``module_documents``
    The documents of each modules.yaml the store holds, by the file's checksum
    (``type:hex``) and position: kind, module name and stream, artifacts (NEVRAs) and the
    document's text, so a copy chooses streams without parsing YAML again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread

__all__ = ["SCHEMA", "ContentDB", "connect", "dumps", "transaction"]

_T = TypeVar("_T")

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS aliases (
    checksum_type TEXT NOT NULL,
    checksum TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (checksum_type, checksum)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS units (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    epoch TEXT,
    version TEXT,
    release TEXT,
    arch TEXT,
    href TEXT,
    size INTEGER,
    checksum_type TEXT,
    checksum TEXT,
    sha256 TEXT,
    pkgid TEXT,
    data TEXT NOT NULL,
    UNIQUE (kind, key)
);
CREATE INDEX IF NOT EXISTS units_sha256 ON units(sha256) WHERE sha256 IS NOT NULL;
CREATE INDEX IF NOT EXISTS units_pkgid ON units(pkgid) WHERE pkgid IS NOT NULL;
CREATE TABLE IF NOT EXISTS rpm_files (
    pkgid TEXT PRIMARY KEY,
    files TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rpm_changelogs (
    pkgid TEXT PRIMARY KEY,
    changelogs TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rpm_xml (
    pkgid TEXT NOT NULL,
    type TEXT NOT NULL,
    xml BLOB NOT NULL,
    PRIMARY KEY (pkgid, type)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS repo_content (
    repo_id TEXT NOT NULL,
    unit_id INTEGER NOT NULL,
    added INTEGER NOT NULL,
    removed INTEGER,
    origin TEXT NOT NULL,
    PRIMARY KEY (repo_id, unit_id, added)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS repo_content_unit ON repo_content(unit_id);
CREATE INDEX IF NOT EXISTS repo_content_latest ON repo_content(repo_id, unit_id)
    WHERE removed IS NULL;
CREATE TABLE IF NOT EXISTS versions (
    repo_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    created REAL NOT NULL,
    task_id TEXT,
    base INTEGER,
    counts TEXT NOT NULL,
    size INTEGER NOT NULL,
    added TEXT NOT NULL,
    removed TEXT NOT NULL,
    note TEXT,
    PRIMARY KEY (repo_id, number)
);
CREATE TABLE IF NOT EXISTS sync_state (
    repo_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    metadata TEXT,
    revision TEXT,
    feed TEXT,
    synced_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS feed_units (
    metadata TEXT NOT NULL,
    unit_id INTEGER NOT NULL,
    base TEXT,
    PRIMARY KEY (metadata, unit_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS publications (
    repo_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    path TEXT NOT NULL,
    revision TEXT,
    published REAL NOT NULL,
    task_id TEXT
);
CREATE TABLE IF NOT EXISTS version_repomd (
    repo_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    repomd TEXT NOT NULL,
    PRIMARY KEY (repo_id, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS module_documents (
    checksum TEXT NOT NULL,
    position INTEGER NOT NULL,
    document TEXT NOT NULL,
    name TEXT,
    stream TEXT,
    artifacts TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (checksum, position)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS staged (
    repo_id TEXT NOT NULL,
    unit_id INTEGER NOT NULL,
    base TEXT,
    PRIMARY KEY (repo_id, unit_id)
) WITHOUT ROWID;
"""

BUSY_TIMEOUT_MS = 120_000


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def connect(path: Path, *, durable: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, foreign keys off.

    ``durable`` commits with ``synchronous=FULL`` (a committed version survives a power
    cut); the bulk unit writes of a sync use NORMAL, which in WAL mode still never
    corrupts the file and costs no fsync per batch. A unit batch lost to a power cut is
    written again by the rerun of the sync that wrote it.
    """
    db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        db.row_factory = sqlite3.Row
    except BaseException:
        db.close()
        raise
    return db


def transaction(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], _T]) -> _T:
    """Run ``fn`` inside one ``BEGIN IMMEDIATE`` transaction of ``db``: committed if it
    returns, rolled back if it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = fn(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def create(path: Path) -> None:
    """Create (or check) the schema of the database at ``path``."""
    db = connect(path)
    try:
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found > SCHEMA_VERSION:
            raise RuntimeError(
                f"{path} was written by a newer coordd (schema {found}, this one knows "
                f"{SCHEMA_VERSION})"
            )
        db.executescript(SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    finally:
        db.close()


class ContentDB:
    """The content database, used from worker threads: ``read`` and ``write`` run a
    function with a fresh connection, ``write`` inside one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def create(self) -> None:
        create(self.path)

    def read_sync(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        db = connect(self.path)
        try:
            db.execute("BEGIN")  # one snapshot for everything fn reads
            try:
                return fn(db)
            finally:
                db.execute("ROLLBACK")
        finally:
            db.close()

    def write_sync(self, fn: Callable[[sqlite3.Connection], _T], *, durable: bool = True) -> _T:
        db = connect(self.path, durable=durable)
        try:
            return transaction(db, fn)
        finally:
            db.close()

    async def read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return await anyio.to_thread.run_sync(self.read_sync, fn)

    async def write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return await anyio.to_thread.run_sync(self.write_sync, fn)
