"""Migration of a state directory from per-repository content to the content store.

Releases before the content store kept each repository under
``<state>/repositories/<id>/``: ``content.json`` (every record of the repository, format 1),
its files under ``content/<href>``, and a small stamp. At start-up, ``migrate`` turns each
such repository into version 1 of the same repository: every file is hard-linked into the
pool (hashed when its recorded checksum is not sha256: the unit then learns its sha256 and
the recorded checksum becomes an alias, as a sync records them), every record becomes a
unit, the last sync's fingerprint is kept (so the next sync of an unchanged feed downloads
and changes nothing), and an existing publication is recorded as showing version 1. One
transaction per repository; the old directory is removed only after it commits, so an
interrupted migration is simply done again at the next start.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coordd.content import versions
from coordd.content.database import dumps
from coordd.content.paths import UnsafePath, resolve_in
from coordd.content.pool import hash_file, link_or_copy
from coordd.content.records import Package
from coordd.content.store import ContentStore
from coordd.content.units import (
    Row,
    delta_row,
    erratum_row,
    file_row,
    insert_units,
    listed_files,
    metadata_row,
    package_row,
)

__all__ = ["LEGACY_DIR", "migrate"]

log = logging.getLogger("coordd.migrate")

LEGACY_DIR = "repositories"
_INDEX = "content.json"


def migrate(state_dir: Path, store: ContentStore, repo_ids: set[str]) -> list[str]:
    """Migrate every legacy repository directory of ``repo_ids``; return the ids migrated.

    Directories of repositories the table does not know (deleted before their directory
    was) are removed.
    """
    root = state_dir / LEGACY_DIR
    if not root.is_dir():
        return []
    migrated = []
    for name in sorted(os.listdir(root)):
        path = root / name
        if name.startswith(".") or name not in repo_ids:
            _remove(path)
            continue
        index = path / _INDEX
        done = functools.partial(_has_versions, repo_id=name)
        if index.is_file() and not store.db.read_sync(done):
            _migrate_one(state_dir, store, name, path, json.loads(index.read_bytes()))
            migrated.append(name)
            log.info("repository %s migrated to the content store", name)
        _remove(path)
    with contextlib.suppress(OSError):
        root.rmdir()
    return migrated


def _has_versions(db: sqlite3.Connection, repo_id: str) -> bool:
    return versions.latest_number(db, repo_id) > 0


def _remove(path: Path) -> None:
    tombstone = path.with_name(f".{path.name.lstrip('.')}.deleting")
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, tombstone)
    shutil.rmtree(tombstone, ignore_errors=True)


def _enter(store: ContentStore, content: Path, record: dict[str, Any]) -> tuple[str, int] | None:
    """Link the record's file into the pool; its (sha256, size), or None if it is gone."""
    try:
        source = resolve_in(content, record["href"])
        size = os.stat(source).st_size
    except (OSError, UnsafePath):
        return None
    if record.get("size") is not None and record["size"] != size:
        return None
    if record.get("checksum_type") == "sha256" and record.get("checksum"):
        sha256 = str(record["checksum"])
    else:
        size, sha256 = hash_file(source)
    if not store.pool.present(sha256, size):
        # Linked (or copied) beside the pool, then renamed in: never a partial pool file.
        tmp = store.pool.tmp_file("migrate")
        link_or_copy(source, tmp)
        store.pool.enter(tmp, sha256)
    return sha256, size


def _migrate_one(
    state_dir: Path, store: ContentStore, repo_id: str, path: Path, index: dict[str, Any]
) -> None:
    content = path / "content"
    rows: list[Row] = []
    origins: list[str] = []
    # (row, sha256, size, checksum type, checksum) of each file entered into the pool: a unit
    # named by another checksum than sha256 learns the sha256 its file hashed to, and that
    # checksum becomes an alias, as a sync records them.
    entered: list[tuple[int, str, int, str | None, str | None]] = []
    packages: list[Package] = list(index.get("packages", []))
    lists: list[tuple[str, str, str]] = []

    def add(row: Row, record: Mapping[str, Any] | None = None, origin: str = "feed") -> None:
        if record is not None and (found := _enter(store, content, dict(record))) is not None:
            sha256, size = found
            ctype, csum = record.get("checksum_type"), record.get("checksum")
            entered.append((len(rows), sha256, size, ctype, csum))
        rows.append(row)
        origins.append(origin)

    for package in packages:
        add(package_row(package), package, package.get("origin", "feed"))
        lists.append(
            (package["checksum"], listed_files(package["files"]), dumps(package["changelogs"]))
        )
    for erratum in index.get("errata", []):
        add(erratum_row(erratum))
    for delta in index.get("deltas", []):
        add(delta_row(delta), delta)
    tree = list(index.get("tree_files", []))
    if index.get("treeinfo"):
        tree.append(index["treeinfo"])
    for record in tree:
        add(file_row(record), record)
    for extra in index.get("metadata_files", []):
        add(metadata_row(extra), extra)
    fingerprint = {
        "repomd_checksum": index.get("repomd_checksum"),
        "treeinfo_checksum": index.get("treeinfo_checksum"),
        **(index.get("sync_options") or {}),
    }
    published = state_dir / "published" / repo_id

    def write(db: sqlite3.Connection) -> None:
        db.executemany(
            "INSERT OR IGNORE INTO files (sha256, size) VALUES (?, ?)",
            [(sha256, size) for _r, sha256, size, _t, _c in entered],
        )
        ids = insert_units(db, rows)
        db.executemany(
            "UPDATE units SET sha256 = ? WHERE id = ? AND sha256 IS NULL",
            [(sha256, ids[row]) for row, sha256, _s, _t, _c in entered],
        )
        db.executemany(
            "INSERT OR REPLACE INTO aliases (checksum_type, checksum, sha256) VALUES (?, ?, ?)",
            [(t, c, sha256) for _r, sha256, _s, t, c in entered if t not in (None, "sha256") and c],
        )
        db.executemany(
            "INSERT OR IGNORE INTO rpm_files (pkgid, files) VALUES (?, ?)",
            [(pkgid, files) for pkgid, files, _c in lists],
        )
        db.executemany(
            "INSERT OR IGNORE INTO rpm_changelogs (pkgid, changelogs) VALUES (?, ?)",
            [(pkgid, changelogs) for pkgid, _f, changelogs in lists],
        )
        db.executemany(
            "INSERT OR IGNORE INTO repo_content (repo_id, unit_id, added, removed, origin)"
            " VALUES (?, ?, 1, NULL, ?)",
            [(repo_id, uid, origin) for uid, origin in zip(ids, origins, strict=True)],
        )
        versions.finish(db, repo_id, 1, task_id=None, note="migrated")
        if index.get("repomd_checksum"):
            db.execute(
                "INSERT OR REPLACE INTO sync_state (repo_id, fingerprint, revision, feed,"
                " synced_at) VALUES (?, ?, ?, ?, ?)",
                (
                    repo_id,
                    dumps(fingerprint),
                    index.get("revision"),
                    index.get("feed"),
                    index.get("synced_at") or time.time(),
                ),
            )
        if published.is_symlink() or published.exists():
            db.execute(
                "INSERT OR REPLACE INTO publications (repo_id, version, path, revision,"
                " published, task_id) VALUES (?, 1, ?, ?, ?, NULL)",
                (repo_id, str(published), index.get("revision"), time.time()),
            )

    store.db.write_sync(write)
