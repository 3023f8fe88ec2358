"""Stream a feed's metadata into units: the parsing half of a sync, run in worker processes.

Two jobs, run at once in two processes (``python -m coordd.repo.yum.ingest``) or, for
small metadata, one after the other in a thread of the daemon:

``packages``
    primary.xml → rpm units, in batches of ``BATCH`` per transaction, each staged for the
    repository with the ``xml:base`` it was listed under; then the newest-only choice
    (unstaging the rest); then updateinfo.xml → errata and prestodelta.xml → deltas of the
    chosen packages. modules.yaml is split into its documents (``module_documents``), and
    a module stream's packages are kept whatever newest-only would choose; package
    retention (``retention``) unstages the older versions. When the feed has no
    filelists.xml, primary's file entries are the package's file list.
``lists``
    filelists.xml and other.xml → each package's entry as the feed wrote it, by pkgid
    (``rpm_xml``); only an entry that cannot be kept so is parsed into ``rpm_files`` or
    ``rpm_changelogs``. Packages the database already has are not written again (a second
    repository of the same feed parses but writes nothing).

The packages job keeps each package's primary entry the same way; those entries are what
a publication writes (``coordd.content.fragments``).

Neither holds more than a batch of records (and one small tuple per package) in memory.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from coordd.api.errors import OperationFailed
from coordd.content.database import connect, dumps, transaction
from coordd.content.fragments import Fragments
from coordd.content.modules import nevra, store_documents
from coordd.content.paths import RESERVED_TOP, UnsafePath, check_href
from coordd.content.units import (
    delta_row,
    erratum_row,
    insert_units,
    listed_files,
    package_row,
)
from coordd.content.worker import FAILED, METADATA, Emit, serve
from coordd.repo.yum.errors import MetadataError
from coordd.repo.yum.modulemd import read_documents
from coordd.repo.yum.prestodelta import read_deltas
from coordd.repo.yum.primary import (
    NS_COMMON,
    NS_FILELISTS,
    NS_OTHER,
    parse_primary_package,
)
from coordd.repo.yum.repomd import FetchedMetadata, RepomdRecord
from coordd.repo.yum.retention import newest_versions
from coordd.repo.yum.safexml import int_field
from coordd.repo.yum.updateinfo import read_errata
from coordd.repo.yum.versions import epoch_number, newest_only

__all__ = ["BATCH", "metadata_args", "run_job"]

BATCH: Final = 1000
_INSERT_XML: Final = "INSERT OR IGNORE INTO rpm_xml (pkgid, type, xml) VALUES (?, ?, ?)"
_PROGRESS_EVERY: Final = 2000


def metadata_args(fetched: FetchedMetadata) -> dict[str, Any]:
    """A fetched metadata file as JSON arguments of a job."""
    r = fetched.record
    return {
        "path": str(fetched.path),
        "cap": fetched.cap,
        "record": {
            "type": r.type,
            "href": r.href,
            "base": r.base,
            "size": r.size,
            "open_size": r.open_size,
            "checksum": list(r.checksum),
            "open_checksum": list(r.open_checksum) if r.open_checksum else None,
        },
    }


def _metadata(args: dict[str, Any] | None) -> FetchedMetadata | None:
    if args is None:
        return None
    r = args["record"]
    record = RepomdRecord(
        type=r["type"],
        href=r["href"],
        base=r["base"],
        size=r["size"],
        open_size=r["open_size"],
        checksum=(r["checksum"][0], r["checksum"][1]),
        open_checksum=(r["open_checksum"][0], r["open_checksum"][1])
        if r["open_checksum"]
        else None,
    )
    return FetchedMetadata(record, Path(args["path"]), args["cap"])


class _Batches:
    """One connection, one transaction per batch."""

    def __init__(self, path: str) -> None:
        self.db = connect(Path(path), durable=False)

    def write(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        return transaction(self.db, fn)

    def close(self) -> None:
        self.db.close()


def _packages(args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    primary = _metadata(args["primary"])
    assert primary is not None
    repo_id: str = args["repo_id"]
    allow_weak: bool = args["allow_weak"]
    with_files: bool = args["with_files"]
    what = primary.record.what()
    out = _Batches(args["db"])
    hrefs: dict[str, str] = {}
    chosen: list[dict[str, Any]] = []  # name, arch, EVR and unit id of each package
    batch: list[tuple[Any, str | None]] = []
    fragments = Fragments()
    batch_xml: list[tuple[str, bytes]] = []
    count = 0

    def flush() -> None:
        def write(db: sqlite3.Connection) -> None:
            ids = insert_units(db, [row for row, _base in batch])
            db.executemany(
                "INSERT OR REPLACE INTO staged (repo_id, unit_id, base) VALUES (?, ?, ?)",
                [(repo_id, uid, base) for uid, (_row, base) in zip(ids, batch, strict=True)],
            )
            if with_files:
                db.executemany(
                    "INSERT OR IGNORE INTO rpm_files (pkgid, files) VALUES (?, ?)",
                    [(row[12], files) for row, files in batch_files],
                )
            db.executemany(_INSERT_XML, [(pkgid, "primary", xml) for pkgid, xml in batch_xml])
            for uid, (row, _base) in zip(ids, batch, strict=True):
                chosen.append(
                    {
                        "id": uid,
                        "name": row[2],
                        "epoch": row[3],
                        "version": row[4],
                        "release": row[5],
                        "arch": row[6],
                    }
                )

        out.write(write)
        batch.clear()
        batch_files.clear()
        batch_xml.clear()

    batch_files: list[tuple[Any, str]] = []
    try:
        for element in primary.elements(NS_COMMON + "package", NS_COMMON + "metadata"):
            parsed = parse_primary_package(element, what, allow_weak)
            if parsed is None:
                continue
            package, location = parsed
            href = package["href"]
            try:
                check_href(href)
            except UnsafePath as exc:
                raise MetadataError(
                    f"{what}: package {package['name']}: unsafe location href: {exc}"
                ) from exc
            if href.split("/", 1)[0] == RESERVED_TOP:
                raise MetadataError(
                    f"{href!r} lies in {RESERVED_TOP}/, which a publication generates"
                )
            other = hrefs.get(href)
            if other is not None:
                if other != package["checksum"]:
                    raise MetadataError(f"primary metadata: two different packages at {href!r}")
                continue
            hrefs[href] = package["checksum"]
            row = package_row(package)
            batch.append((row, location.base))
            xml = fragments.make("primary", element)
            if xml is not None:
                batch_xml.append((row[12], xml))
            if with_files:
                batch_files.append((row, listed_files(package["files"])))
            count += 1
            if len(batch) >= BATCH:
                flush()
            if count % _PROGRESS_EVERY == 0:
                emit({"packages": count})
        if batch:
            flush()
        hrefs.clear()
        emit({"packages": count})

        artifacts: set[str] = set()
        modules = _metadata(args.get("modules"))
        if modules is not None:
            docs = read_documents(modules)
            artifacts = {a for d in docs for a in d.artifacts}
            checksum = ":".join(modules.record.checksum)
            out.write(lambda db: store_documents(db, checksum, docs))

        kept = chosen
        if args["only_newest"]:
            # A module stream's packages all stay, so every stream modules.yaml offers can
            # be installed; the newest-only choice is made among the other packages.
            modular = [p for p in chosen if _nevra(p) in artifacts]
            kept = [*newest_only([p for p in chosen if _nevra(p) not in artifacts]), *modular]
            keep_ids = {p["id"] for p in kept}
            dropped = [(repo_id, p["id"]) for p in chosen if p["id"] not in keep_ids]
            out.write(
                lambda db: db.executemany(
                    "DELETE FROM staged WHERE repo_id = ? AND unit_id = ?", dropped
                )
            )
        retain = args.get("retain_package_versions", 0)
        if retain:  # module streams' packages stay here too
            ordinary = [p for p in kept if _nevra(p) not in artifacts]
            fewer = [
                *newest_versions(ordinary, retain),
                *(p for p in kept if _nevra(p) in artifacts),
            ]
            keep_ids = {p["id"] for p in fewer}
            older = [(repo_id, p["id"]) for p in kept if p["id"] not in keep_ids]
            out.write(
                lambda db: db.executemany(
                    "DELETE FROM staged WHERE repo_id = ? AND unit_id = ?", older
                )
            )
            kept = fewer
        nevras = {
            (p["name"], epoch_number(p["epoch"]), p["version"], p["release"], p["arch"])
            for p in kept
        }
        chosen.clear()

        errata = 0
        updateinfo = _metadata(args.get("updateinfo"))
        if updateinfo is not None:
            rows = [erratum_row(e) for e in read_errata(updateinfo)]
            errata = len(rows)
            out.write(lambda db: _stage(db, repo_id, rows))

        deltas = 0
        prestodelta = _metadata(args.get("prestodelta"))
        if prestodelta is not None:
            rows = []
            for delta in read_deltas(prestodelta, allow_weak=allow_weak):
                key = (
                    delta["name"],
                    epoch_number(delta["epoch"]),
                    delta["version"],
                    delta["release"],
                    delta["arch"],
                )
                if key in nevras:
                    try:
                        check_href(delta["href"])
                    except UnsafePath as exc:
                        raise MetadataError(f"prestodelta metadata: unsafe href: {exc}") from exc
                    rows.append(delta_row(delta))
            deltas = len(rows)
            out.write(lambda db: _stage(db, repo_id, rows))
    finally:
        out.close()
    return {"packages": count, "chosen": len(nevras), "errata": errata, "deltas": deltas}


def _nevra(package: dict[str, Any]) -> str:
    return nevra(
        package["name"], package["epoch"], package["version"], package["release"], package["arch"]
    )


def _stage(db: sqlite3.Connection, repo_id: str, rows: list[Any]) -> None:
    ids = insert_units(db, rows)
    db.executemany(
        "INSERT OR REPLACE INTO staged (repo_id, unit_id, base) VALUES (?, ?, NULL)",
        [(repo_id, uid) for uid in ids],
    )


def _file_entry(child: Any, what: str) -> list[Any]:
    head, slash, tail = (child.text or "").rpartition("/")  # stored split: see ListedFile
    return [child.get("type") or "", head + slash, tail]  # a src.rpm's: no directory


def _changelog(child: Any, what: str) -> list[Any]:
    date = int_field(child.get("date"), what, "changelog date")
    return [child.get("author") or "", date, child.text or ""]


# metadata type: (table, column, namespace, root tag, entry tag, entry parser)
_LISTS: Final = {
    "filelists": ("rpm_files", "files", NS_FILELISTS, "filelists", "file", _file_entry),
    "other": ("rpm_changelogs", "changelogs", NS_OTHER, "otherdata", "changelog", _changelog),
}


def _store_list(out: _Batches, kind: str, metadata: FetchedMetadata, emit: Emit) -> int:
    """Stream one of filelists.xml and other.xml into the database; return the packages
    written. A package's entry is kept as the feed wrote it (``rpm_xml``); only one that
    cannot be is parsed into the entries of its table."""
    table, column, ns, root, child_tag, parse = _LISTS[kind]
    what = metadata.record.what()
    tag = ns + child_tag
    batch: dict[str, list[Any]] = {}
    fragments = Fragments()
    batch_xml: dict[str, bytes] = {}
    written = 0

    def write(db: sqlite3.Connection) -> int:
        keys = list(batch)
        marks = ", ".join("?" * len(keys))
        have = {
            pkgid
            for (pkgid,) in db.execute(f"SELECT pkgid FROM {table} WHERE pkgid IN ({marks})", keys)
        }
        rows = [(k, dumps(v)) for k, v in batch.items() if k not in have]
        db.executemany(f"INSERT OR IGNORE INTO {table} (pkgid, {column}) VALUES (?, ?)", rows)
        before = db.total_changes
        db.executemany(_INSERT_XML, [(k, kind, xml) for k, xml in batch_xml.items()])
        return len(rows) + db.total_changes - before

    for count, element in enumerate(metadata.elements(ns + "package", ns + root), 1):
        pkgid = (element.get("pkgid") or "").lower()
        if pkgid in batch_xml:  # listed twice: the first entry stands
            continue
        xml = fragments.make(kind, element) if pkgid not in batch else None
        if xml is not None:
            batch_xml[pkgid] = xml
        else:
            batch.setdefault(pkgid, []).extend(parse(c, what) for c in element if c.tag == tag)
        if len(batch) + len(batch_xml) >= BATCH:
            written += out.write(write)
            batch.clear()
            batch_xml.clear()
        if count % _PROGRESS_EVERY == 0:
            emit({kind: count})
    if batch or batch_xml:
        written += out.write(write)
    return written


def _lists(args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    out = _Batches(args["db"])
    written = {}
    try:
        for kind in _LISTS:
            metadata = _metadata(args.get(kind))
            if metadata is not None:
                written[kind] = _store_list(out, kind, metadata, emit)
    finally:
        out.close()
    return written


JOBS: Final = {"packages": _packages, "lists": _lists}


def run_job(args: dict[str, Any], emit: Emit) -> dict[str, Any]:
    """Run the job ``args["job"]`` (in this process)."""
    try:
        return JOBS[args["job"]](args, emit)
    except sqlite3.Error as exc:
        raise OperationFailed(f"cannot store units: {exc}") from exc


def main() -> int:
    return serve(run_job, {MetadataError: METADATA, OperationFailed: FAILED, OSError: FAILED})


if __name__ == "__main__":
    sys.exit(main())
