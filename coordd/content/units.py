"""Units: the typed records of ``coordd.content.records`` as rows of the ``units`` table.

Each kind has one function to a row (``*_row``) and the readers turn a row back into its
record; mypy checks both against the TypedDicts. A row's ``key`` is the unit's identity
within its kind, so two feeds that list the same package share one unit:

=========  =======================================================  ====================
kind       key                                                      ``name`` column
=========  =======================================================  ====================
rpm        checksum type, checksum (the pkgid), href                package name
erratum    id and a digest of the whole record                      erratum id
delta      checksum type and checksum                               package name
file       href and checksum (or size, for a tree file without)     href
metadata   repomd type and checksum                                 repomd type
=========  =======================================================  ====================
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Final, cast

from coordd.content.database import dumps
from coordd.content.records import (
    Changelog,
    Delta,
    Erratum,
    FileEntry,
    ListedFile,
    MetadataFile,
    Origin,
    Package,
    TreeFile,
)

__all__ = [
    "DELTA",
    "ERRATUM",
    "FILE",
    "INSERT_UNIT",
    "KINDS",
    "METADATA",
    "RPM",
    "delta_row",
    "erratum_row",
    "file_row",
    "insert_units",
    "listed_files",
    "metadata_row",
    "package_from",
    "package_row",
    "summary",
]

RPM: Final = "rpm"
ERRATUM: Final = "erratum"
DELTA: Final = "delta"
FILE: Final = "file"
METADATA: Final = "metadata"
KINDS: Final = (RPM, ERRATUM, DELTA, FILE, METADATA)

_COLUMNS: Final = (
    "kind, key, name, epoch, version, release, arch, href, size, checksum_type, checksum,"
    " sha256, pkgid, data"
)
INSERT_UNIT: Final = f"INSERT OR IGNORE INTO units ({_COLUMNS}) VALUES ({', '.join('?' * 14)})"

#: A row for ``INSERT_UNIT``, in its column order.
Row = tuple[Any, ...]

# A package's ``data`` keeps the files primary.xml lists (its ``files`` when the row is
# written); the whole list and the changelog are in rpm_files and rpm_changelogs.
_NOT_IN_DATA: Final = ("changelogs", "origin")


def _is_primary_file(path: str) -> bool:
    """Whether primary.xml lists the file (createrepo_c's rule, ``cr_is_primary``)."""
    return path.startswith("/etc/") or path == "/usr/lib/sendmail" or "bin/" in path


def _sha256(checksum_type: str | None, checksum: str | None) -> str | None:
    return checksum if checksum_type == "sha256" and checksum else None


def package_row(package: Package) -> Row:
    data = {k: v for k, v in package.items() if k not in _NOT_IN_DATA}
    data["files"] = [f for f in package["files"] if _is_primary_file(f[1])]
    ctype, csum = package["checksum_type"], package["checksum"]
    return (
        RPM,
        f"{ctype}:{csum}:{package['href']}",
        package["name"],
        package["epoch"],
        package["version"],
        package["release"],
        package["arch"],
        package["href"],
        package["size"],
        ctype,
        csum,
        _sha256(ctype, csum),
        csum,  # the pkgid filelists.xml and other.xml name the package by
        dumps(data),
    )


def package_from(
    data: str,
    files: str | None,
    changelogs: str | None,
    origin: Origin = "feed",
) -> Package:
    """The whole record again, from its row's ``data`` and its file list and changelog."""
    record = json.loads(data)
    if files:
        record["files"] = [[kind, directory + name] for kind, directory, name in json.loads(files)]
    record["changelogs"] = cast(list[Changelog], json.loads(changelogs)) if changelogs else []
    record["origin"] = origin
    return cast(Package, record)


def erratum_row(erratum: Erratum) -> Row:
    data = dumps(erratum)
    digest = hashlib.sha256(data.encode()).hexdigest()[:32]
    ident = erratum.get("id") or ""
    return (ERRATUM, f"{ident}:{digest}", ident, *(None,) * 10, data)


def delta_row(delta: Delta) -> Row:
    ctype, csum = delta["checksum_type"], delta["checksum"]
    return (
        DELTA,
        f"{ctype}:{csum}",
        delta["name"],
        delta["epoch"],
        delta["version"],
        delta["release"],
        delta["arch"],
        delta["href"],
        delta["size"],
        ctype,
        csum,
        _sha256(ctype, csum),
        None,
        dumps(delta),
    )


def file_row(record: TreeFile, sha256: str | None = None) -> Row:
    ctype, csum = record["checksum_type"], record["checksum"]
    ident = f"{ctype}:{csum}" if csum else f"size:{record['size']}"
    return (
        FILE,
        f"{record['href']}:{ident}",
        record["href"],
        *(None,) * 4,
        record["href"],
        record["size"],
        ctype,
        csum,
        sha256 or _sha256(ctype, csum),
        None,
        dumps(record),
    )


def metadata_row(record: MetadataFile) -> Row:
    ctype, csum = record["checksum_type"], record["checksum"]
    return (
        METADATA,
        f"{record['type']}:{ctype}:{csum}",
        record["type"],
        *(None,) * 4,
        record["href"],
        record["size"],
        ctype,
        csum,
        _sha256(ctype, csum),
        None,
        dumps(record),
    )


def listed_files(files: list[FileEntry]) -> str:
    """A package's whole file list as ``rpm_files`` keeps it: ``ListedFile`` entries."""
    listed: list[ListedFile] = []
    for kind, path in files:
        head, slash, tail = path.rpartition("/")
        listed.append([kind, head + slash, tail])  # a src.rpm's files have no directory
    return dumps(listed)


def insert_units(db: sqlite3.Connection, rows: Sequence[Row]) -> list[int]:
    """Insert ``rows`` (those already there are kept as they are); their unit ids, in order."""
    db.executemany(INSERT_UNIT, rows)
    ids: dict[tuple[str, str], int] = {}
    by_kind: dict[str, list[str]] = {}
    for row in rows:
        by_kind.setdefault(row[0], []).append(row[1])
    for kind, keys in by_kind.items():
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for unit_id, key in db.execute(
                f"SELECT id, key FROM units WHERE kind = ? AND key IN ({marks})", (kind, *chunk)
            ):
                ids[(kind, key)] = unit_id
    return [ids[(row[0], row[1])] for row in rows]


def summary(row: sqlite3.Row | Iterable[Any]) -> dict[str, Any]:
    """What a listing shows of a unit, from the columns ``SUMMARY_COLUMNS`` selects."""
    (unit_id, kind, name, epoch, version, release, arch, href, size, ctype, csum) = tuple(row)
    out: dict[str, Any] = {"id": unit_id, "type": kind, "name": name}
    if kind in (RPM, DELTA):
        out.update(epoch=epoch, version=version, release=release, arch=arch)
    if href is not None:
        out.update(href=href, size=size)
    if csum is not None:
        out["checksum"] = f"{ctype}:{csum}"
    return out


SUMMARY_COLUMNS: Final = (
    "u.id, u.kind, u.name, u.epoch, u.version, u.release, u.arch, u.href, u.size,"
    " u.checksum_type, u.checksum"
)
