"""Repository versions: numbered, immutable sets of units (``coordd.content.database``).

A change (sync, copy, remove, upload, rollback) runs in one transaction: it writes the rows
of version N+1 (``added = N+1`` for units that come in, ``removed = N+1`` for units that
go), then ``finish`` either records the version with its counts or, when no row changed,
records nothing (a change that changes nothing makes no version). ``prune`` then drops the
versions retention no longer keeps (never the latest, never a published one) and the rows
only they needed. Everything here takes an open connection inside the caller's
transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Final, cast

from coordd.content.database import dumps
from coordd.content.units import KINDS, SUMMARY_COLUMNS, summary

__all__ = [
    "IN_VERSION",
    "Version",
    "content_page",
    "copy_repomd",
    "diff",
    "finish",
    "get",
    "latest",
    "latest_number",
    "listing",
    "prune",
    "published_version",
    "repomd_of",
    "rollback",
    "set_repomd",
]

#: Rows of ``repo_content rc`` in version ``?`` of repository ``?`` (parameters: repo id,
#: number, number).
IN_VERSION: Final = "rc.repo_id = ? AND rc.added <= ? AND (rc.removed IS NULL OR rc.removed > ?)"

MAX_PAGE: Final = 1000


@dataclass(frozen=True)
class Version:
    repo_id: str
    number: int
    created: float
    task_id: str | None
    base: int | None
    counts: dict[str, int]
    size: int
    added: dict[str, int]
    removed: dict[str, int]
    note: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Version:
        return cls(
            repo_id=row["repo_id"],
            number=row["number"],
            created=row["created"],
            task_id=row["task_id"],
            base=row["base"],
            counts=json.loads(row["counts"]),
            size=row["size"],
            added=json.loads(row["added"]),
            removed=json.loads(row["removed"]),
            note=row["note"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created)),
            "task_id": self.task_id,
            "base": self.base,
            "counts": self.counts,
            "size": self.size,
            "added": self.added,
            "removed": self.removed,
            "note": self.note,
        }


def latest_number(db: sqlite3.Connection, repo_id: str) -> int:
    """The number of the latest version, 0 when the repository has none."""
    row = db.execute("SELECT max(number) FROM versions WHERE repo_id = ?", (repo_id,)).fetchone()
    return row[0] or 0


def get(db: sqlite3.Connection, repo_id: str, number: int) -> Version | None:
    row = db.execute(
        "SELECT * FROM versions WHERE repo_id = ? AND number = ?", (repo_id, number)
    ).fetchone()
    return None if row is None else Version.from_row(row)


def latest(db: sqlite3.Connection, repo_id: str) -> Version | None:
    row = db.execute(
        "SELECT * FROM versions WHERE repo_id = ? ORDER BY number DESC LIMIT 1", (repo_id,)
    ).fetchone()
    return None if row is None else Version.from_row(row)


def listing(
    db: sqlite3.Connection, repo_id: str, *, limit: int, before: int | None = None
) -> list[Version]:
    """Versions newest first, ``limit`` of them, below ``before`` when given."""
    rows = db.execute(
        "SELECT * FROM versions WHERE repo_id = ? AND number < ? ORDER BY number DESC LIMIT ?",
        (repo_id, before if before is not None else 2**62, min(limit, MAX_PAGE)),
    )
    return [Version.from_row(row) for row in rows]


def published_version(db: sqlite3.Connection, repo_id: str) -> int | None:
    row = db.execute("SELECT version FROM publications WHERE repo_id = ?", (repo_id,)).fetchone()
    return None if row is None else int(row[0])


def _per_kind(db: sqlite3.Connection, sql: str, args: tuple[Any, ...]) -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0)
    for kind, count in db.execute(sql, args):
        counts[kind] = count
    return counts


def finish(
    db: sqlite3.Connection,
    repo_id: str,
    number: int,
    *,
    task_id: str | None,
    note: str,
) -> Version | None:
    """Record version ``number`` from the rows just written for it; None if none were."""
    join = "FROM repo_content rc JOIN units u ON u.id = rc.unit_id WHERE rc.repo_id = ? AND"
    added = _per_kind(
        db, f"SELECT u.kind, count(*) {join} rc.added = ? GROUP BY u.kind", (repo_id, number)
    )
    removed = _per_kind(
        db, f"SELECT u.kind, count(*) {join} rc.removed = ? GROUP BY u.kind", (repo_id, number)
    )
    if not any(added.values()) and not any(removed.values()):
        return None
    counts = dict.fromkeys(KINDS, 0)
    size = 0
    for kind, count, total in db.execute(
        f"SELECT u.kind, count(*), coalesce(sum(u.size), 0) {join} rc.removed IS NULL"
        " GROUP BY u.kind",
        (repo_id,),
    ):
        counts[kind] = count
        size += total
    version = Version(
        repo_id=repo_id,
        number=number,
        created=time.time(),
        task_id=task_id,
        base=number - 1 if number > 1 else None,
        counts=counts,
        size=size,
        added=added,
        removed=removed,
        note=note,
    )
    db.execute(
        "INSERT INTO versions (repo_id, number, created, task_id, base, counts, size, added,"
        " removed, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            repo_id,
            number,
            version.created,
            task_id,
            version.base,
            dumps(counts),
            size,
            dumps(added),
            dumps(removed),
            note,
        ),
    )
    # What the feed's repomd.xml said stays with the content (a sync, a rollback or a copy
    # then writes its own).
    db.execute(
        "INSERT OR IGNORE INTO version_repomd (repo_id, number, repomd)"
        " SELECT repo_id, ?, repomd FROM version_repomd WHERE repo_id = ? AND number = ?",
        (number, repo_id, number - 1),
    )
    return version


def prune(db: sqlite3.Connection, repo_id: str, retain: int) -> list[int]:
    """Drop the versions beyond the newest ``retain`` that are not published; return them.

    Then delete the rows no retained version needs: a row is needed while some retained
    version lies in its ``[added, removed)`` range.
    """
    keep = {
        number
        for (number,) in db.execute(
            "SELECT number FROM versions WHERE repo_id = ? ORDER BY number DESC LIMIT ?",
            (repo_id, max(retain, 1)),
        )
    }
    published = published_version(db, repo_id)
    if published is not None:
        keep.add(published)
    dropped = [
        number
        for (number,) in db.execute("SELECT number FROM versions WHERE repo_id = ?", (repo_id,))
        if number not in keep
    ]
    if not dropped:
        return []
    for table in ("versions", "version_repomd"):
        db.executemany(
            f"DELETE FROM {table} WHERE repo_id = ? AND number = ?",
            [(repo_id, n) for n in dropped],
        )
    db.execute(
        "DELETE FROM repo_content WHERE repo_id = ? AND removed IS NOT NULL AND NOT EXISTS ("
        " SELECT 1 FROM versions v WHERE v.repo_id = repo_content.repo_id"
        " AND v.number >= repo_content.added AND v.number < repo_content.removed)",
        (repo_id,),
    )
    return dropped


def rollback(db: sqlite3.Connection, repo_id: str, source: int, number: int) -> None:
    """Write the rows that make version ``number`` hold what version ``source`` held."""
    db.execute(
        "UPDATE repo_content SET removed = ? WHERE repo_id = ? AND removed IS NULL"
        " AND unit_id NOT IN (SELECT rc.unit_id FROM repo_content rc WHERE " + IN_VERSION + ")",
        (number, repo_id, repo_id, source, source),
    )
    db.execute(
        "INSERT INTO repo_content (repo_id, unit_id, added, removed, origin)"
        " SELECT rc.repo_id, rc.unit_id, ?, NULL, rc.origin FROM repo_content rc"
        " WHERE " + IN_VERSION + " AND rc.unit_id NOT IN (SELECT unit_id FROM repo_content"
        " WHERE repo_id = ? AND removed IS NULL)",
        (number, repo_id, source, source, repo_id),
    )


def _filters(kind: str | None, name: str | None, arch: str | None) -> tuple[str, tuple[Any, ...]]:
    sql = ""
    args: tuple[Any, ...] = ()
    if kind is not None:
        sql += " AND u.kind = ?"
        args += (kind,)
    if name is not None:
        sql += " AND u.name GLOB ?"
        args += (name,)
    if arch is not None:
        sql += " AND u.arch = ?"
        args += (arch,)
    return sql, args


def content_page(
    db: sqlite3.Connection,
    repo_id: str,
    number: int,
    *,
    kind: str | None = None,
    name: str | None = None,
    arch: str | None = None,
    after: int = 0,
    limit: int = 100,
) -> tuple[list[dict[str, Any]], int | None]:
    """One page of a version's units in unit-id order, and the cursor of the next page."""
    where, args = _filters(kind, name, arch)
    limit = max(1, min(limit, MAX_PAGE))
    rows = db.execute(
        f"SELECT {SUMMARY_COLUMNS} FROM repo_content rc JOIN units u ON u.id = rc.unit_id"
        f" WHERE {IN_VERSION} AND rc.unit_id > ?{where} ORDER BY rc.unit_id LIMIT ?",
        (repo_id, number, number, after, *args, limit + 1),
    ).fetchall()
    units = [summary(row) for row in rows[:limit]]
    return units, (units[-1]["id"] if len(rows) > limit else None)


def diff(
    db: sqlite3.Connection,
    repo_id: str,
    old: int,
    new: int,
    *,
    limit: int = 100,
) -> dict[str, Any]:
    """What version ``new`` holds that ``old`` does not (added), and the reverse (removed):
    counts per kind and the first ``limit`` units of each."""
    limit = max(1, min(limit, MAX_PAGE))
    out: dict[str, Any] = {"from": old, "to": new}
    for label, a, b in (("added", new, old), ("removed", old, new)):
        ids = (
            f"SELECT rc.unit_id FROM repo_content rc WHERE {IN_VERSION} EXCEPT"
            f" SELECT rc.unit_id FROM repo_content rc WHERE {IN_VERSION}"
        )
        args = (repo_id, a, a, repo_id, b, b)
        counts = _per_kind(
            db, f"SELECT u.kind, count(*) FROM units u WHERE u.id IN ({ids}) GROUP BY u.kind", args
        )
        rows = db.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM units u WHERE u.id IN ({ids}) ORDER BY u.id LIMIT ?",
            (*args, limit),
        )
        out[label] = {"counts": counts, "units": [summary(row) for row in rows]}
    return out


def repomd_of(db: sqlite3.Connection, repo_id: str, number: int) -> dict[str, Any] | None:
    """What version ``number`` keeps of its feed's repomd.xml (tags, records not carried)."""
    row = db.execute(
        "SELECT repomd FROM version_repomd WHERE repo_id = ? AND number = ?", (repo_id, number)
    ).fetchone()
    return None if row is None else cast(dict[str, Any], json.loads(row[0]))


def set_repomd(db: sqlite3.Connection, repo_id: str, number: int, repomd: str) -> None:
    """Give version ``number`` a repomd description (``repomd`` as JSON text)."""
    db.execute(
        "INSERT OR REPLACE INTO version_repomd (repo_id, number, repomd) VALUES (?, ?, ?)",
        (repo_id, number, repomd),
    )


def copy_repomd(db: sqlite3.Connection, *sources_then_target: tuple[str, int]) -> None:
    """Give the last (repository, version) the repomd description of the first of the others
    that has one."""
    *sources, (repo_id, number) = sources_then_target
    for source_repo, source_number in sources:
        row = db.execute(
            "SELECT repomd FROM version_repomd WHERE repo_id = ? AND number = ?",
            (source_repo, source_number),
        ).fetchone()
        if row is not None:
            set_repomd(db, repo_id, number, row[0])
            return
