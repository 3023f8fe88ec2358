"""The content store: the pool and the content database together, as operations use them.

``ContentStore`` owns ``<state>/content/`` (``Pool``) and ``<state>/content.db``
(``ContentDB``). Every method that changes content runs in a worker thread inside one
transaction, so a crash leaves the change done or not done; each one that makes a version
returns it (or None when nothing changed).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from coordd.content import versions
from coordd.content.carry import carry_with
from coordd.content.database import ContentDB, dumps
from coordd.content.modules import MODULES
from coordd.content.pool import Pool
from coordd.content.units import ERRATUM, METADATA, RPM, insert_units, listed_files, package_row
from coordd.content.uploads import Nevra, Uploaded, nevra_of, nevra_text, upload_plan
from coordd.content.versions import IN_VERSION, Version

__all__ = [
    "DEFAULT_RETAIN",
    "ContentStore",
    "PoolStats",
    "RepoState",
]

DEFAULT_RETAIN: Final = 10


@dataclass(frozen=True)
class RepoState:
    """What queries show of a repository's content without touching the database."""

    latest: Version | None
    published: int | None  # the published version
    synced: dict[str, Any] | None  # the last sync's fingerprint, revision, feed, time
    repomd: dict[str, Any] | None = None  # the latest version's tags, records not carried


@dataclass(frozen=True)
class PoolStats:
    files: int
    bytes: int
    orphan_units: int
    orphan_files: int
    orphan_bytes: int

    def to_json(self) -> dict[str, int]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "orphan_units": self.orphan_units,
            "orphan_files": self.orphan_files,
            "orphan_bytes": self.orphan_bytes,
        }


# Units no repository version holds (a running sync's staged units excepted), and files no
# unit of a version names.
_ORPHAN_UNITS: Final = (
    "SELECT u.id FROM units u WHERE NOT EXISTS (SELECT 1 FROM repo_content rc"
    " WHERE rc.unit_id = u.id) AND NOT EXISTS (SELECT 1 FROM staged s WHERE s.unit_id = u.id)"
)
_LIVE_FILES: Final = (
    "SELECT u.sha256 FROM units u WHERE u.sha256 IS NOT NULL AND u.id NOT IN ("
    + _ORPHAN_UNITS
    + ")"
)
_ORPHAN_FILES: Final = (
    "SELECT f.sha256, f.size FROM files f WHERE f.sha256 NOT IN (" + _LIVE_FILES + ")"
)


class ContentStore:
    def __init__(self, state_dir: Path) -> None:
        self.db = ContentDB(state_dir / "content.db")
        self.pool = Pool(state_dir / "content")

    def open(self) -> None:
        """Create what is missing and clear temporaries (run before anything uses it)."""
        self.pool.prepare()
        self.pool.reset_tmp()
        self.db.create()

    # -- reading ---------------------------------------------------------------------------

    def states(self) -> dict[str, RepoState]:
        """Every repository's latest version, publication and last sync (at start-up)."""

        def read(db: sqlite3.Connection) -> dict[str, RepoState]:
            latest = {
                row["repo_id"]: Version.from_row(row)
                for row in db.execute(
                    "SELECT v.* FROM versions v JOIN (SELECT repo_id, max(number) AS number"
                    " FROM versions GROUP BY repo_id) m USING (repo_id, number)"
                )
            }
            published = {r: v for r, v in db.execute("SELECT repo_id, version FROM publications")}
            synced = {
                row["repo_id"]: _synced(row) for row in db.execute("SELECT * FROM sync_state")
            }
            return {
                repo_id: RepoState(
                    latest.get(repo_id),
                    published.get(repo_id),
                    synced.get(repo_id),
                    versions.repomd_of(db, repo_id, latest[repo_id].number)
                    if repo_id in latest
                    else None,
                )
                for repo_id in {*latest, *published, *synced}
            }

        return self.db.read_sync(read)

    def state(self, repo_id: str) -> RepoState:
        def read(db: sqlite3.Connection) -> RepoState:
            row = db.execute("SELECT * FROM sync_state WHERE repo_id = ?", (repo_id,)).fetchone()
            latest = versions.latest(db, repo_id)
            return RepoState(
                latest,
                versions.published_version(db, repo_id),
                None if row is None else _synced(row),
                None if latest is None else versions.repomd_of(db, repo_id, latest.number),
            )

        return self.db.read_sync(read)

    def stats(self) -> PoolStats:
        def read(db: sqlite3.Connection) -> PoolStats:
            files, size = db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM files"
            ).fetchone()
            units = db.execute(f"SELECT count(*) FROM ({_ORPHAN_UNITS})").fetchone()[0]
            ofiles, obytes = db.execute(
                f"SELECT count(*), coalesce(sum(size), 0) FROM ({_ORPHAN_FILES})"
            ).fetchone()
            return PoolStats(files, size, units, ofiles, obytes)

        return self.db.read_sync(read)

    def missing_files(self, repo_id: str, number: int) -> int:
        """How many files version ``number`` names that the pool does not hold (a stat each)."""

        def read(db: sqlite3.Connection) -> list[tuple[str | None, int | None]]:
            return db.execute(
                "SELECT u.sha256, u.size FROM repo_content rc JOIN units u ON u.id = rc.unit_id"
                f" WHERE {IN_VERSION} AND (u.href IS NOT NULL)",
                (repo_id, number, number),
            ).fetchall()

        rows = self.db.read_sync(read)
        return sum(1 for sha, size in rows if sha is None or not self.pool.present(sha, size))

    # -- changing --------------------------------------------------------------------------

    def commit_staged(
        self,
        repo_id: str,
        *,
        task_id: str | None,
        fingerprint: dict[str, Any],
        metadata: str,
        revision: str | None,
        feed: str | None,
        entered: Iterable[tuple[str, int]],
        resolved: Sequence[tuple[int, str, str | None, str | None]] = (),
        retain: int,
        repomd: dict[str, Any] | None = None,
    ) -> Version | None:
        """The sync's commit: the staged units become the repository's feed content.

        Units the latest version holds from the feed and the staged set lacks go; staged
        units it lacks come in; copies and uploads stay, but for one at a path the feed now
        gives another file: a published tree has one file per path, and the feed's wins.
        Recorded in the same transaction: the sha256 each unit declared with another
        checksum was found to have (``resolved``: unit id, sha256, declared type and
        checksum), with that checksum as an alias; the pool file of every staged unit (the
        sync has made sure the pool holds them all), and the files of ``entered`` (sha256,
        size: those of no unit, or of a unit of no declared size); and what the sync saw:
        the ``fingerprint``, and the staged set under ``metadata`` (``feed_units``); and
        ``repomd`` (tags, records not carried) for the new version, or for the latest one
        when the content did not change.
        """

        def write(db: sqlite3.Connection) -> Version | None:
            db.executemany(
                "UPDATE units SET sha256 = ? WHERE id = ?", [(s, u) for u, s, _t, _c in resolved]
            )
            db.executemany(
                "INSERT OR REPLACE INTO aliases (checksum_type, checksum, sha256) VALUES (?, ?, ?)",
                [(t, c, s) for _u, s, t, c in resolved if t is not None and c is not None],
            )
            db.execute(
                "INSERT OR IGNORE INTO files (sha256, size) SELECT u.sha256, u.size"
                " FROM staged s JOIN units u ON u.id = s.unit_id WHERE s.repo_id = ?"
                " AND u.href IS NOT NULL AND u.sha256 IS NOT NULL AND u.size IS NOT NULL",
                (repo_id,),
            )
            db.executemany("INSERT OR IGNORE INTO files (sha256, size) VALUES (?, ?)", entered)
            number = versions.latest_number(db, repo_id) + 1
            db.execute(
                "INSERT INTO repo_content (repo_id, unit_id, added, removed, origin)"
                " SELECT s.repo_id, s.unit_id, ?, NULL, 'feed' FROM staged s WHERE s.repo_id = ?"
                " AND NOT EXISTS (SELECT 1 FROM repo_content rc WHERE rc.repo_id = s.repo_id"
                " AND rc.unit_id = s.unit_id AND rc.removed IS NULL)",
                (number, repo_id),
            )
            db.execute(
                "UPDATE repo_content SET removed = ? WHERE repo_id = ? AND removed IS NULL"
                " AND origin = 'feed' AND added < ? AND unit_id NOT IN"
                " (SELECT unit_id FROM staged WHERE repo_id = ?)",
                (number, repo_id, number, repo_id),
            )
            db.execute(
                "UPDATE repo_content SET removed = ? WHERE repo_id = ? AND removed IS NULL"
                " AND origin != 'feed' AND unit_id NOT IN"
                " (SELECT unit_id FROM staged WHERE repo_id = ?)"
                " AND (SELECT href FROM units WHERE id = repo_content.unit_id) IN"
                " (SELECT u.href FROM staged s JOIN units u ON u.id = s.unit_id"
                " WHERE s.repo_id = ? AND u.href IS NOT NULL)",
                (number, repo_id, repo_id, repo_id),
            )
            version = versions.finish(db, repo_id, number, task_id=task_id, note="sync")
            described = number if version is not None else number - 1
            if repomd is not None and described > 0:
                versions.set_repomd(db, repo_id, described, dumps(repomd))
            db.execute(
                "INSERT OR IGNORE INTO feed_units (metadata, unit_id, base)"
                " SELECT ?, unit_id, base FROM staged WHERE repo_id = ?",
                (metadata, repo_id),
            )
            db.execute("DELETE FROM staged WHERE repo_id = ?", (repo_id,))
            db.execute(
                "INSERT OR REPLACE INTO sync_state (repo_id, fingerprint, metadata, revision,"
                " feed, synced_at) VALUES (?, ?, ?, ?, ?, ?)",
                (repo_id, dumps(fingerprint), metadata, revision, feed, time.time()),
            )
            db.execute(
                "DELETE FROM feed_units WHERE metadata NOT IN"
                " (SELECT metadata FROM sync_state WHERE metadata IS NOT NULL)"
            )
            if version is not None:
                versions.prune(db, repo_id, retain)
            return version

        return self.db.write_sync(write)

    def copy(
        self,
        source: str,
        number: int,
        target: str,
        *,
        name: str | None,
        task_id: str | None,
        retain: int,
    ) -> dict[str, Any]:
        """Copy the packages of version ``number`` of ``source`` (those whose name matches
        the glob ``name``) into a new version of ``target``, with what applies to them.

        A package whose href the target already gives to another package is left out (a
        publication has one file per path) and reported as a conflict. Without ``name``
        everything else comes too; with it, what applies to the target's packages after
        the copy (``coordd.content.carry`` says what and why).
        """
        where = f"{IN_VERSION} AND u.kind = ?"
        args: tuple[Any, ...] = (source, number, number, RPM)
        if name is not None:
            where += " AND u.name GLOB ?"
            args += (name,)

        def write(db: sqlite3.Connection) -> dict[str, Any]:
            matched = db.execute(
                "SELECT u.id, u.href FROM repo_content rc JOIN units u ON u.id = rc.unit_id"
                f" WHERE {where}",
                args,
            ).fetchall()
            held = {
                href: uid
                for uid, href in db.execute(
                    "SELECT u.id, u.href FROM repo_content rc JOIN units u ON u.id = rc.unit_id"
                    " WHERE rc.repo_id = ? AND rc.removed IS NULL AND u.href IS NOT NULL",
                    (target,),
                )
            }
            present = [uid for uid, href in matched if held.get(href) == uid]
            conflicts = sorted(href for uid, href in matched if held.get(href, uid) != uid)
            wanted = [uid for uid, href in matched if href not in held]
            number_to = versions.latest_number(db, target) + 1
            db.executemany(
                "INSERT INTO repo_content (repo_id, unit_id, added, removed, origin)"
                " VALUES (?, ?, ?, NULL, 'copy')",
                [(target, uid, number_to) for uid in wanted],
            )
            carried = carry_with(
                db,
                self.pool,
                (source, number),
                target,
                number_to,
                whole=name is None,
                with_records=name is None or bool(matched),
            )
            version = versions.finish(
                db, target, number_to, task_id=task_id, note=f"copy from {source} version {number}"
            )
            if version is not None:
                # The target's own tags stand (``finish`` kept them); a target without any
                # takes the source's.
                versions.copy_repomd(db, (target, number_to), (source, number), (target, number_to))
                versions.prune(db, target, retain)
            return {
                "matched": len(matched),
                "copied": len(wanted),
                "already_present": len(present),
                "conflicts": conflicts,
                **carried,
                "version": version.number if version else None,
            }

        return self.db.write_sync(write)

    def upload(
        self, repo_id: str, files: Sequence[Uploaded], *, task_id: str | None, retain: int
    ) -> dict[str, Any]:
        """Enter the uploaded files into the pool and make a version holding their packages.

        All or nothing: a package whose NEVRA or path the latest version already gives to
        another file raises ``ContentConflict`` and no version is made. A package the
        version already holds (the same file) is counted, not added again. The
        temporary copies are renamed into the pool once checked, before the transaction
        (a crash between the two leaves pool files without rows, which are harmless).
        """
        # Checked before the files enter the pool (a refused upload leaves nothing behind),
        # and again in the transaction that commits; nothing else changes the repository
        # meanwhile (the coordinator sees to that).
        self.db.read_sync(lambda db: upload_plan(db, repo_id, files))
        for item in files:
            if self.pool.present(item.sha256, item.size):
                item.tmp.unlink(missing_ok=True)
            else:
                self.pool.enter(item.tmp, item.sha256)

        def write(db: sqlite3.Connection) -> dict[str, Any]:
            wanted, present = upload_plan(db, repo_id, files)
            db.executemany(
                "INSERT OR IGNORE INTO files (sha256, size) VALUES (?, ?)",
                [(item.sha256, item.size) for item in wanted],
            )
            ids = insert_units(db, [package_row(item.package) for item in wanted])
            db.executemany(
                "INSERT OR IGNORE INTO rpm_files (pkgid, files) VALUES (?, ?)",
                [(item.sha256, listed_files(item.package["files"])) for item in wanted],
            )
            db.executemany(
                "INSERT OR IGNORE INTO rpm_changelogs (pkgid, changelogs) VALUES (?, ?)",
                [(item.sha256, dumps(item.package["changelogs"])) for item in wanted],
            )
            number = versions.latest_number(db, repo_id) + 1
            db.executemany(
                "INSERT INTO repo_content (repo_id, unit_id, added, removed, origin)"
                " VALUES (?, ?, ?, NULL, 'upload')",
                [(repo_id, unit_id, number) for unit_id in ids],
            )
            version = versions.finish(db, repo_id, number, task_id=task_id, note="upload")
            if version is not None:
                versions.prune(db, repo_id, retain)
            return {
                "uploaded": [nevra_text(nevra_of(item.package)) for item in wanted],
                "already_present": present,
                "version": version.number if version else None,
            }

        return self.db.write_sync(write)

    def remove(
        self,
        repo_id: str,
        *,
        names: Sequence[str] = (),
        nevras: Sequence[Nevra] = (),
        errata: Sequence[str] = (),
        task_id: str | None,
        retain: int,
    ) -> dict[str, Any]:
        """Make a version without the packages whose name matches a glob of ``names`` or
        whose NEVRA is one of ``nevras``, and without the errata of the ids ``errata``.

        Nothing matched: no version, and a result that says so (a rerun after a crash, or
        the same removal twice, changes nothing). A removal makes the next sync compare
        its feed again (as Pulp's syncs do, it brings back what the feed still lists),
        rather than skip an unchanged feed.
        """
        clauses: list[str] = []
        args: list[Any] = []
        for glob in names:
            clauses.append("(u.kind = ? AND u.name GLOB ?)")
            args += [RPM, glob]
        for name, epoch, version, release, arch in nevras:
            clauses.append(
                "(u.kind = ? AND u.name = ? AND coalesce(nullif(u.epoch, ''), '0') = ?"
                " AND u.version = ? AND u.release = ? AND u.arch = ?)"
            )
            args += [RPM, name, epoch, version, release, arch]
        for ident in errata:
            clauses.append("(u.kind = ? AND u.name = ?)")
            args += [ERRATUM, ident]
        if not clauses:
            raise ValueError("remove needs at least one selector")

        def write(db: sqlite3.Connection) -> dict[str, Any]:
            number = versions.latest_number(db, repo_id) + 1
            db.execute(
                "UPDATE repo_content SET removed = ? WHERE repo_id = ? AND removed IS NULL"
                " AND unit_id IN (SELECT u.id FROM repo_content rc JOIN units u"
                " ON u.id = rc.unit_id WHERE rc.repo_id = ? AND rc.removed IS NULL AND ("
                + " OR ".join(clauses)
                + "))",
                (number, repo_id, repo_id, *args),
            )
            version = versions.finish(db, repo_id, number, task_id=task_id, note="remove")
            if version is not None:
                versions.prune(db, repo_id, retain)
                db.execute(
                    "UPDATE sync_state SET fingerprint = ? WHERE repo_id = ?",
                    (dumps({"changed_by": "remove", "version": number}), repo_id),
                )
            removed = version.removed if version else dict.fromkeys((RPM, ERRATUM), 0)
            return {"version": version.number if version else None, "removed": removed}

        return self.db.write_sync(write)

    def rollback(
        self, repo_id: str, source: int, *, task_id: str | None, retain: int
    ) -> Version | None:
        def write(db: sqlite3.Connection) -> Version | None:
            if versions.get(db, repo_id, source) is None:
                raise LookupError(source)
            number = versions.latest_number(db, repo_id) + 1
            versions.rollback(db, repo_id, source, number)
            version = versions.finish(
                db, repo_id, number, task_id=task_id, note=f"rollback to version {source}"
            )
            if version is not None:  # the older version's tags describe its content
                db.execute(
                    "DELETE FROM version_repomd WHERE repo_id = ? AND number = ?",
                    (repo_id, number),
                )
                versions.copy_repomd(db, (repo_id, source), (repo_id, number))
            if version is not None:
                versions.prune(db, repo_id, retain)
            return version

        return self.db.write_sync(write)

    def stage_known(self, repo_id: str, metadata: str) -> int:
        """Stage the units an earlier sync chose from the same metadata; how many (0: none
        is known, parse it)."""

        def write(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM staged WHERE repo_id = ?", (repo_id,))
            return db.execute(
                "INSERT INTO staged (repo_id, unit_id, base)"
                " SELECT ?, unit_id, base FROM feed_units WHERE metadata = ?",
                (repo_id, metadata),
            ).rowcount

        return self.db.write_sync(write)

    def record_publication(
        self, repo_id: str, number: int, path: str, revision: str | None, task_id: str | None
    ) -> None:
        self.db.write_sync(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO publications (repo_id, version, path, revision,"
                " published, task_id) VALUES (?, ?, ?, ?, ?, ?)",
                (repo_id, number, path, revision, time.time(), task_id),
            )
        )

    def forget(self, repo_id: str) -> None:
        """Drop every version, publication record and staged unit of a repository (its units
        become orphans, which cleanup removes)."""

        def write(db: sqlite3.Connection) -> None:
            for table in (
                "repo_content",
                "versions",
                "sync_state",
                "publications",
                "staged",
                "version_repomd",
            ):
                db.execute(f"DELETE FROM {table} WHERE repo_id = ?", (repo_id,))
            db.execute(
                "DELETE FROM feed_units WHERE metadata NOT IN"
                " (SELECT metadata FROM sync_state WHERE metadata IS NOT NULL)"
            )

        self.db.write_sync(write)

    # -- orphans ---------------------------------------------------------------------------

    def orphans(self, limit: int) -> dict[str, Any]:
        def read(db: sqlite3.Connection) -> dict[str, Any]:
            files = db.execute(f"{_ORPHAN_FILES} ORDER BY f.sha256 LIMIT ?", (limit,)).fetchall()
            units = db.execute(
                "SELECT u.id, u.kind, u.name, u.href FROM units u WHERE u.id IN"
                f" ({_ORPHAN_UNITS}) ORDER BY u.id LIMIT ?",
                (limit,),
            ).fetchall()
            return {
                "units": [{"id": i, "type": k, "name": n, "href": h} for i, k, n, h in units],
                "files": [{"sha256": s, "size": z} for s, z in files],
            }

        return self.db.read_sync(read)

    def remove_orphans(self) -> dict[str, int]:
        """Delete orphan units and their rows, then the pool files no unit names.

        Runs only while no operation adds to the pool (the coordinator sees to it). The
        rows go first, in one transaction; a crash after it leaves files without rows,
        which are harmless and which the next cleanup, or a sync naming them, finds.
        """

        def write(db: sqlite3.Connection) -> tuple[int, list[tuple[str, int]]]:
            db.execute("DELETE FROM staged")  # no sync runs now; what one staged is stale
            units = db.execute(f"DELETE FROM units WHERE id IN ({_ORPHAN_UNITS})").rowcount
            db.execute(  # a set that lost a unit can no longer stand for its metadata
                "DELETE FROM feed_units WHERE metadata IN (SELECT metadata FROM feed_units"
                " WHERE unit_id NOT IN (SELECT id FROM units))"
            )
            for table in ("rpm_files", "rpm_changelogs", "rpm_xml"):
                db.execute(
                    f"DELETE FROM {table} WHERE pkgid NOT IN"
                    " (SELECT pkgid FROM units WHERE pkgid IS NOT NULL)"
                )
            db.execute(
                "DELETE FROM module_documents WHERE checksum NOT IN (SELECT checksum_type"
                " || ':' || checksum FROM units WHERE kind = ? AND name = ?)",
                (METADATA, MODULES),
            )
            files = db.execute(_ORPHAN_FILES).fetchall()
            db.executemany("DELETE FROM files WHERE sha256 = ?", [(s,) for s, _ in files])
            db.execute("DELETE FROM aliases WHERE sha256 NOT IN (SELECT sha256 FROM files)")
            return units, files

        units, files = self.db.write_sync(write)
        freed = sum(self.pool.remove(sha256) for sha256, _size in files)
        return {"units": units, "files": len(files), "bytes": freed}


def _synced(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "fingerprint": json.loads(row["fingerprint"]),
        "revision": row["revision"],
        "feed": row["feed"],
        "synced_at": row["synced_at"],
    }
