"""Repodata from stored units: createrepo_c records of packages and errata, and prestodelta.

``write_repodata`` streams a version's units from the content database into primary,
filelists and other (createrepo_c's XML writers), updateinfo, prestodelta and the extra
records kept as files (comps, modules, …), then repomd.xml. Nothing holds more than one
package's record at a time.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, Literal

from lxml import etree

from coordd.api.errors import OperationFailed
from coordd.content.fragments import Fragments
from coordd.content.paths import fsync_dir
from coordd.content.pool import Pool, link_or_copy
from coordd.content.records import DEPENDENCY_KINDS, Delta, Erratum, Package
from coordd.content.units import DELTA, ERRATUM, METADATA, RPM
from coordd.content.versions import IN_VERSION
from coordd.repo.createrepo import cr

__all__ = [
    "PACKAGE_FILES",
    "cr_package",
    "cr_update",
    "prestodelta_xml",
    "write_package_file",
    "write_repodata",
]

_HEX_PREFIX = re.compile(r"^[0-9a-f]{32,128}-")
_CHECKSUM_TYPES = {
    "sha224": cr.SHA224,
    "sha256": cr.SHA256,
    "sha384": cr.SHA384,
    "sha512": cr.SHA512,
}
_DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")


def _split_path(path: str) -> tuple[str, str]:
    head, slash, tail = path.rpartition("/")
    return head + slash, tail  # a src.rpm's files have no directory


def cr_package(record: Package) -> Any:
    """A createrepo_c Package from an index record."""
    pkg = cr.Package()
    pkg.pkgId = record["checksum"]
    pkg.checksum_type = record["checksum_type"]
    pkg.name = record["name"]
    pkg.arch = record["arch"]
    pkg.epoch = str(record.get("epoch") or "0")
    pkg.version = record["version"]
    pkg.release = record["release"]
    pkg.summary = record.get("summary") or ""
    pkg.description = record.get("description") or ""
    pkg.url = record.get("url") or ""
    pkg.rpm_packager = record.get("packager") or ""
    pkg.rpm_license = record.get("license") or ""
    pkg.rpm_vendor = record.get("vendor") or ""
    pkg.rpm_group = record.get("group") or ""
    pkg.rpm_buildhost = record.get("buildhost") or ""
    pkg.rpm_sourcerpm = record.get("sourcerpm") or ""
    pkg.rpm_header_start = int(record.get("header_start") or 0)
    pkg.rpm_header_end = int(record.get("header_end") or 0)
    pkg.time_file = int(record.get("time_file") or 0)
    pkg.time_build = int(record.get("time_build") or 0)
    pkg.size_package = int(record.get("size") or 0)
    pkg.size_installed = int(record.get("size_installed") or 0)
    pkg.size_archive = int(record.get("size_archive") or 0)
    pkg.location_href = record["href"]
    for kind in DEPENDENCY_KINDS:  # stored as [name, flags, epoch, ver, rel, pre (a bool)]
        setattr(pkg, kind, _as_listed(record.get(kind)))
    pkg.files = _as_listed([(kind, *_split_path(path)) for kind, path in record.get("files") or []])
    pkg.changelogs = _as_listed(record.get("changelogs"))  # [author, date, text]
    return pkg


def _as_listed(entries: Iterable[Iterable[Any]] | None) -> list[tuple[Any, ...]]:
    """A list to assign to a createrepo_c ``Package`` attribute so that it reads back, and
    is written, in the order given: the binding (1.2.5) reverses a list assigned to one."""
    listed = [tuple(entry) for entry in entries or ()]
    listed.reverse()
    return listed


def _date(value: Any) -> datetime.datetime | None:
    if not value:
        return None
    text = str(value).strip()
    if text.isdigit():
        return datetime.datetime.fromtimestamp(int(text), tz=datetime.UTC).replace(tzinfo=None)
    for fmt in _DATE_FORMATS:
        with contextlib.suppress(ValueError):
            return datetime.datetime.strptime(text, fmt)  # updateinfo dates carry no zone
    return None


_ErratumText = Literal[
    "from",
    "status",
    "type",
    "version",
    "id",
    "title",
    "rights",
    "release",
    "pushcount",
    "severity",
    "summary",
    "description",
    "solution",
]
# (UpdateRecord attribute, erratum key) for the text fields, in the order they are set.
_UPDATE_TEXT: Final[tuple[tuple[str, _ErratumText], ...]] = (
    ("fromstr", "from"),
    ("status", "status"),
    ("type", "type"),
    ("version", "version"),
    ("id", "id"),
    ("title", "title"),
    ("rights", "rights"),
    ("release", "release"),
    ("pushcount", "pushcount"),
    ("severity", "severity"),
    ("summary", "summary"),
    ("description", "description"),
    ("solution", "solution"),
)
_PackageText = Literal["name", "version", "release", "epoch", "arch", "src", "filename", "sum"]
_UPDATE_PACKAGE_TEXT: Final[tuple[_PackageText, ...]] = (
    "name",
    "version",
    "release",
    "epoch",
    "arch",
    "src",
    "filename",
    "sum",
)


def cr_update(erratum: Erratum) -> Any:
    """A createrepo_c UpdateRecord from an index erratum."""
    rec = cr.UpdateRecord()
    for attr, key in _UPDATE_TEXT:
        if erratum.get(key) is not None:
            setattr(rec, attr, str(erratum[key]))
    rec.issued_date = _date(erratum.get("issued_date"))
    rec.updated_date = _date(erratum.get("updated_date"))
    rec.reboot_suggested = bool(erratum.get("reboot_suggested"))
    for ref in erratum.get("references") or []:
        reference = cr.UpdateReference()
        for attr in ("href", "id", "type", "title"):
            if ref.get(attr) is not None:
                setattr(reference, attr, str(ref[attr]))
        rec.append_reference(reference)
    for coll in erratum.get("collections") or []:
        collection = cr.UpdateCollection()
        if coll.get("short") is not None:
            collection.shortname = coll["short"]
        if coll.get("name") is not None:
            collection.name = coll["name"]
        module = coll.get("module")
        if module:
            mod = cr.UpdateCollectionModule()
            for attr in ("name", "stream", "context", "arch"):
                if module.get(attr) is not None:
                    setattr(mod, attr, str(module[attr]))
            with contextlib.suppress(TypeError, ValueError):
                mod.version = int(module.get("version") or 0)
            collection.module = mod
        for p in coll.get("packages") or []:
            package = cr.UpdateCollectionPackage()
            for attr in _UPDATE_PACKAGE_TEXT:
                if p.get(attr) is not None:
                    setattr(package, attr, str(p[attr]))
            sum_type = _CHECKSUM_TYPES.get(str(p.get("sum_type") or "").lower())
            if sum_type is not None:
                package.sum_type = sum_type
            package.reboot_suggested = bool(p.get("reboot_suggested"))
            package.restart_suggested = bool(p.get("restart_suggested"))
            package.relogin_suggested = bool(p.get("relogin_suggested"))
            collection.append(package)
        rec.append_collection(collection)
    return rec


def prestodelta_xml(deltas: Iterable[Delta]) -> bytes:
    """prestodelta.xml for the index's delta RPMs, grouped by their new package."""
    root = etree.Element("prestodelta")
    groups: dict[tuple[str, ...], Any] = {}
    for d in deltas:
        key = tuple(str(d.get(k) or "") for k in ("name", "epoch", "version", "release", "arch"))
        newpackage = groups.get(key)
        if newpackage is None:
            newpackage = etree.SubElement(
                root,
                "newpackage",
                name=key[0],
                epoch=key[1] or "0",
                version=key[2],
                release=key[3],
                arch=key[4],
            )
            groups[key] = newpackage
        delta = etree.SubElement(
            newpackage,
            "delta",
            oldepoch=str(d.get("oldepoch") or "0"),
            oldversion=str(d.get("oldversion") or ""),
            oldrelease=str(d.get("oldrelease") or ""),
        )
        etree.SubElement(delta, "filename").text = d["href"]
        etree.SubElement(delta, "sequence").text = str(d.get("sequence") or "")
        etree.SubElement(delta, "size").text = str(d["size"])
        etree.SubElement(delta, "checksum", type=d["checksum_type"]).text = d["checksum"]
    data: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return data


def _units(db: sqlite3.Connection, repo_id: str, number: int, kind: str, order: str) -> Any:
    return db.execute(
        "SELECT u.* FROM repo_content rc JOIN units u ON u.id = rc.unit_id"
        f" WHERE {IN_VERSION} AND u.kind = ? ORDER BY {order}",
        (repo_id, number, number, kind),
    )


#: What each package file reads besides the package's identity.
_PACKAGE_FILES: Final = {
    "primary": (cr.PrimaryXmlFile, "u.data"),
    "filelists": (cr.FilelistsXmlFile, "f.files"),
    "other": (cr.OtherXmlFile, "c.changelogs"),
}
PACKAGE_FILES: Final = tuple(_PACKAGE_FILES)


def _package(rtype: str, row: sqlite3.Row) -> Any:
    """The createrepo_c Package that the writer of ``rtype`` needs, and no more."""
    if rtype == "primary":  # its data holds the files primary.xml lists
        return cr_package(json.loads(row["data"]))
    pkg = cr.Package()
    pkg.pkgId = row["pkgid"]
    pkg.name, pkg.arch = row["name"], row["arch"]
    pkg.epoch, pkg.version, pkg.release = row["epoch"] or "0", row["version"], row["release"]
    if rtype == "filelists":  # stored split, as the writer takes them (ListedFile)
        pkg.files = _as_listed(json.loads(row["files"] or "[]"))
    else:
        pkg.changelogs = _as_listed(json.loads(row["changelogs"] or "[]"))
    return pkg


def _file_name(href: str) -> str:
    return href.rpartition("/")[2]


#: The order createrepo_c writes packages in: by file name, then by the whole href (byte
#: order both), so a src.rpm sits beside its binaries whatever directories they are in.
PACKAGE_ORDER: Final = "file_name(u.href), u.href"


def package_order(db: sqlite3.Connection) -> None:
    """Give ``db`` the ``file_name`` function ``PACKAGE_ORDER`` sorts by."""
    db.create_function("file_name", 1, _file_name, deterministic=True)


def write_package_file(
    db: sqlite3.Connection,
    repo_id: str,
    number: int,
    rtype: str,
    repodata: Path,
    check_cancelled: Callable[[], None],
) -> dict[str, Any]:
    """Write primary, filelists or other (``rtype``) of version ``number`` into ``repodata``,
    streaming the packages in createrepo_c's order (``PACKAGE_ORDER``); return its repomd
    record (``record_from``).

    A package's entry is its feed's own (``coordd.content.fragments``) when the sync kept
    it, else one createrepo_c makes from the stored record.
    """
    package_order(db)
    cls, columns = _PACKAGE_FILES[rtype]
    count = db.execute(
        "SELECT count(*) FROM repo_content rc JOIN units u ON u.id = rc.unit_id"
        f" WHERE {IN_VERSION} AND u.kind = ?",
        (repo_id, number, number, RPM),
    ).fetchone()[0]
    stat = cr.ContentStat(cr.SHA256)
    path = repodata / f"{rtype}.xml.gz"
    writer = cls(str(path), cr.GZ_COMPRESSION, stat)  # gz: every yum and dnf reads it
    writer.set_num_of_pkgs(count)
    rows = db.execute(
        "SELECT u.pkgid, u.href, x.xml, u.name, u.epoch, u.version, u.release, u.arch,"
        # Not read at all for a package written from its fragment.
        f" CASE WHEN x.xml IS NULL THEN {columns} END AS {columns.partition('.')[2]}"
        " FROM repo_content rc JOIN units u ON u.id = rc.unit_id"
        " LEFT JOIN rpm_xml x ON x.pkgid = u.pkgid AND x.type = ?"
        " LEFT JOIN rpm_files f ON f.pkgid = u.pkgid"
        " LEFT JOIN rpm_changelogs c ON c.pkgid = u.pkgid"
        f" WHERE {IN_VERSION} AND u.kind = ? ORDER BY {PACKAGE_ORDER}",
        (rtype, repo_id, number, number, RPM),
    )
    fragments = Fragments()
    primary = rtype == "primary"
    for n, row in enumerate(rows):
        if n % 256 == 0:
            check_cancelled()
        if row["xml"] is not None:
            writer.add_chunk(fragments.text(row["xml"], row["href"] if primary else None))
        else:
            writer.add_pkg(_package(rtype, row))
    writer.close()
    rec = cr.RepomdRecord(rtype, str(path))
    rec.load_contentstat(stat)
    rec.fill(cr.SHA256)
    rec.rename_file()
    return {**_record_json(rec), "packages": count}


_RECORD_FIELDS: Final = (
    "location_href",
    "checksum",
    "checksum_type",
    "checksum_open",
    "checksum_open_type",
    "size",
    "size_open",
    "timestamp",
)


def _record_json(rec: Any) -> dict[str, Any]:
    return {
        "type": rec.type,
        "path": rec.location_real,
        **{f: getattr(rec, f) for f in _RECORD_FIELDS},
    }


def _record_from(data: dict[str, Any]) -> Any:
    rec = cr.RepomdRecord(data["type"], data["path"])
    for name in _RECORD_FIELDS:
        if data.get(name) is not None:
            setattr(rec, name, data[name])
    return rec


def _described(db: sqlite3.Connection, repo_id: str, number: int) -> dict[str, Any]:
    """What the version keeps of its feed's repomd.xml (``version_repomd``): revision, tags."""
    row = db.execute(
        "SELECT repomd FROM version_repomd WHERE repo_id = ? AND number = ?", (repo_id, number)
    ).fetchone()
    return {} if row is None else dict(json.loads(row[0]))


def _set_tags(repomd: Any, tags: dict[str, Any]) -> None:
    """The feed's repomd tags, in the feed's order."""
    for tag in tags.get("content") or ():
        repomd.add_content_tag(tag)
    for tag in tags.get("repo") or ():
        repomd.add_repo_tag(tag)
    for cpeid, text in tags.get("distro") or ():
        repomd.add_distro_tag(text, cpeid)


def write_repodata(
    db: sqlite3.Connection,
    pool: Pool,
    repo_id: str,
    number: int,
    revision: str | None,
    repodata: Path,
    check_cancelled: Callable[[], None],
    written: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Write ``repodata/`` for version ``number``; return its revision and counts.

    The revision and tags are the feed's, as the version keeps them; ``revision`` (the last
    sync's) or the time stands in for a version that keeps none.

    ``written``: the records of primary, filelists and other when worker processes wrote
    them already (``write_package_file``); else they are written here, one after another.
    """
    repodata.mkdir(exist_ok=True)
    compression = cr.GZ_COMPRESSION
    if written is None:
        written = [
            write_package_file(db, repo_id, number, rtype, repodata, check_cancelled)
            for rtype in PACKAGE_FILES
        ]
    records: list[Any] = [_record_from(data) for data in written]

    def record(rtype: str, path: Path, stat: Any | None) -> None:
        rec = cr.RepomdRecord(rtype, str(path))
        if stat is not None:
            rec.load_contentstat(stat)
        rec.fill(cr.SHA256)
        rec.rename_file()
        records.append(rec)

    errata = 0
    for row in _units(db, repo_id, number, ERRATUM, "u.id"):
        if errata == 0:
            stat = cr.ContentStat(cr.SHA256)
            path = repodata / "updateinfo.xml.gz"
            updateinfo = cr.UpdateInfoXmlFile(str(path), compression, stat)
        updateinfo.add_chunk(cr.xml_dump_updaterecord(cr_update(json.loads(row["data"]))))
        errata += 1
    if errata:
        updateinfo.close()
        record("updateinfo", path, stat)

    deltas = [json.loads(row["data"]) for row in _units(db, repo_id, number, DELTA, "u.id")]
    if deltas:
        stat = cr.ContentStat(cr.SHA256)
        path = repodata / "prestodelta.xml.gz"
        out = cr.CrFile(str(path), cr.MODE_WRITE, compression, stat)
        out.write(prestodelta_xml(deltas).decode("utf-8"))
        out.close()
        record("prestodelta", path, stat)

    extras = 0
    for row in _units(db, repo_id, number, METADATA, "u.name"):
        extras += 1
        base = _HEX_PREFIX.sub("", row["href"].rsplit("/", 1)[-1]) or row["name"]
        target = repodata / base
        if target.exists():
            target = repodata / f"{row['name']}-{base}"
        if row["sha256"] is None:
            raise OperationFailed(f"publish failed: metadata file {row['href']} is not in the pool")
        try:
            link_or_copy(pool.path(row["sha256"]), target)
        except FileNotFoundError as exc:
            raise OperationFailed(
                f"publish failed: metadata file {row['href']} is missing from the pool;"
                " sync the repository again"
            ) from exc
        record(row["name"], target, None)

    repomd = cr.Repomd()
    described = _described(db, repo_id, number)
    revision = described.get("revision") or revision or str(int(time.time()))
    repomd.set_revision(revision)
    _set_tags(repomd, described.get("tags") or {})
    for rec in records:
        repomd.set_record(rec)
    repomd.sort_records()
    (repodata / "repomd.xml").write_text(repomd.xml_dump(), encoding="utf-8")
    for entry in os.listdir(repodata):
        fd = os.open(repodata / entry, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(repodata)
    return {
        "revision": revision,
        "packages": written[0]["packages"],
        "errata": errata,
        "delta_rpms": len(deltas),
        "metadata_files": extras,
    }
