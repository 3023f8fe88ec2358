"""What a copy carries with the packages it copies, and why.

A copy (``ContentStore.copy``) takes packages from a version of one repository into a new
version of another. Packages alone would leave the target describing less than it holds,
or more: an erratum names packages, a delta RPM turns one package into another, a module
stream lists its artifacts. So ``carry_with`` adds, in the same transaction, what comes
along:

- a whole copy (no name filter) brings everything else too: errata, delta RPMs, tree files
  and every metadata record;
- a filtered copy brings what applies to the target's packages after the copy: the errata
  all of whose packages it holds, the delta RPMs of its packages, and, when the filter
  matched a package, the module streams all of whose artifacts it holds (with the defaults
  and other documents of their modules) and the other metadata records (comps, productid,
  …) whole.

A metadata record of a type the target already has is not copied (its own stands), except
modules.yaml, whose documents are merged into one file (``_modules_for``). A delta RPM or
tree file whose path the target already gives to another unit is left out.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from coordd.content.modules import MODULES, choose, documents, nevra, store_documents, write_modules
from coordd.content.pool import Pool
from coordd.content.units import DELTA, ERRATUM, FILE, METADATA, RPM, insert_units, metadata_row
from coordd.content.versions import IN_VERSION

__all__ = ["carry_with"]


def _latest_units(db: sqlite3.Connection, repo_id: str, kind: str) -> list[sqlite3.Row]:
    """The identity of the units of ``kind`` the latest version holds (not their data)."""
    return db.execute(
        "SELECT u.id, u.name, u.epoch, u.version, u.release, u.arch, u.href, u.checksum_type,"
        " u.checksum FROM repo_content rc JOIN units u ON u.id = rc.unit_id"
        " WHERE rc.repo_id = ? AND rc.removed IS NULL AND u.kind = ?",
        (repo_id, kind),
    ).fetchall()


def _nevras(rows: Iterable[sqlite3.Row]) -> set[str]:
    return {nevra(r["name"], r["epoch"], r["version"], r["release"], r["arch"]) for r in rows}


def _erratum_nevras(data: str) -> set[str]:
    erratum = json.loads(data)
    return {
        nevra(
            p.get("name") or "",
            p.get("epoch"),
            p.get("version") or "",
            p.get("release") or "",
            p.get("arch") or "",
        )
        for collection in erratum.get("collections") or []
        for p in collection.get("packages") or []
    }


def carry_with(
    db: sqlite3.Connection,
    pool: Pool,
    source: tuple[str, int],
    target: str,
    number: int,
    *,
    whole: bool,
    with_records: bool,
) -> dict[str, Any]:
    """Add to version ``number`` of ``target`` (whose packages are written) what comes with
    the packages of a copy from version ``source``: everything when ``whole``, else what
    applies to the target's packages (the module's docstring says what), and the metadata
    records only if ``with_records``; what it added, by kind."""
    repo_id, version = source

    def in_source(kind: str) -> list[sqlite3.Row]:
        return db.execute(
            "SELECT u.* FROM repo_content rc JOIN units u ON u.id = rc.unit_id"
            f" WHERE {IN_VERSION} AND u.kind = ? ORDER BY u.id",
            (repo_id, version, version, kind),
        ).fetchall()

    held = {
        uid
        for (uid,) in db.execute(
            "SELECT unit_id FROM repo_content WHERE repo_id = ? AND removed IS NULL", (target,)
        )
    }
    hrefs = {
        href
        for (href,) in db.execute(
            "SELECT u.href FROM repo_content rc JOIN units u ON u.id = rc.unit_id"
            " WHERE rc.repo_id = ? AND rc.removed IS NULL AND u.href IS NOT NULL",
            (target,),
        )
    }
    packages = _nevras(_latest_units(db, target, RPM))
    added: list[int] = []
    errata = [
        row["id"]
        for row in in_source(ERRATUM)
        if row["id"] not in held
        and (whole or (bool(nevras := _erratum_nevras(row["data"])) and nevras <= packages))
    ]
    added += errata
    deltas = [
        row["id"]
        for row in in_source(DELTA)
        if row["id"] not in held
        and row["href"] not in hrefs
        and (whole or _nevras([row]) <= packages)
    ]
    added += deltas
    tree = [
        r["id"] for r in in_source(FILE) if whole and r["id"] not in held and r["href"] not in hrefs
    ]
    added += tree
    own = {row["name"]: row for row in _latest_units(db, target, METADATA)}
    records: list[str] = []
    kept: list[str] = []
    removed: list[int] = []
    for row in in_source(METADATA) if with_records else ():
        rtype = row["name"]
        if row["id"] in held:
            continue
        if rtype == MODULES:
            mine = own.get(MODULES)
            made = _modules_for(db, pool, row, mine, packages, whole=whole)
            if made is None:
                continue
            added.append(made)
            records.append(rtype)
            if mine is not None:
                removed.append(mine["id"])
        elif rtype in own:
            kept.append(rtype)
        else:
            added.append(row["id"])
            records.append(rtype)
    db.executemany(
        "INSERT INTO repo_content (repo_id, unit_id, added, removed, origin)"
        " VALUES (?, ?, ?, NULL, 'copy')",
        [(target, uid, number) for uid in added],
    )
    db.executemany(
        "UPDATE repo_content SET removed = ? WHERE repo_id = ? AND unit_id = ? AND removed IS NULL",
        [(number, target, uid) for uid in removed],
    )
    return {
        "errata": len(errata),
        "delta_rpms": len(deltas),
        "tree_files": len(tree),
        "metadata": sorted(records),
        "metadata_kept": sorted(kept),
    }


def _modules_for(
    db: sqlite3.Connection,
    pool: Pool,
    source: sqlite3.Row,
    mine: sqlite3.Row | None,
    packages: set[str],
    *,
    whole: bool,
) -> int | None:
    """The modules.yaml unit a copy gives its target: the source's when all of it applies
    and the target has none, else one of the target's documents and those of the source's
    that apply (``choose``); None when that changes nothing."""
    docs = documents(db, f"{source['checksum_type']}:{source['checksum']}")
    if docs is None:  # never split (not readable as YAML): all or nothing
        return source["id"] if whole and mine is None else None
    chosen = docs if whole else choose(docs, packages)
    if mine is None and chosen == docs:
        return int(source["id"])
    theirs = [] if mine is None else documents(db, f"{mine['checksum_type']}:{mine['checksum']}")
    if theirs is None:
        return None  # the target's own file cannot be merged: it stands
    texts = {d.text for d in theirs}
    merged = [*theirs, *(d for d in chosen if d.text not in texts)]
    if merged == theirs:
        return None
    record, size = write_modules(pool, merged)
    (unit_id,) = insert_units(db, [metadata_row(record)])
    db.execute(
        "INSERT OR IGNORE INTO files (sha256, size) VALUES (?, ?)", (record["checksum"], size)
    )
    store_documents(db, f"sha256:{record['checksum']}", merged)
    return unit_id
