"""What a test repository holds, read from the content store as a test wants to see it.

``View(repo_dir)`` reads the latest version (or ``version=N``) of the repository
``repo_dir.name`` in the store beside it (``tests.helpers.feeds.content_store``): its records
by kind, and the pool file of each. ``assert_consistent`` checks the invariants every test
after a sync relies on.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from coordd.content import versions
from coordd.content.fragments import Fragments
from coordd.content.records import Delta, Erratum, MetadataFile, Package, TreeFile
from coordd.content.units import package_from
from coordd.content.versions import IN_VERSION
from tests.helpers.feeds import content_store


class View:
    def __init__(self, repo_dir: Path, version: int | None = None) -> None:
        self.store = content_store(repo_dir)
        self.repo_id = repo_dir.name
        db = sqlite3.connect(self.store.db.path)
        db.row_factory = sqlite3.Row
        try:
            latest = versions.latest(db, self.repo_id)
            self.version = version if version is not None else (latest.number if latest else 0)
            self.info = versions.get(db, self.repo_id, self.version)
            rows = db.execute(
                "SELECT u.*, rc.origin, f.files, c.changelogs, xf.xml AS files_xml,"
                " xo.xml AS other_xml FROM repo_content rc"
                " JOIN units u ON u.id = rc.unit_id"
                " LEFT JOIN rpm_files f ON f.pkgid = u.pkgid"
                " LEFT JOIN rpm_changelogs c ON c.pkgid = u.pkgid"
                " LEFT JOIN rpm_xml xf ON xf.pkgid = u.pkgid AND xf.type = 'filelists'"
                " LEFT JOIN rpm_xml xo ON xo.pkgid = u.pkgid AND xo.type = 'other'"
                f" WHERE {IN_VERSION} ORDER BY u.id",
                (self.repo_id, self.version, self.version),
            ).fetchall()
        finally:
            db.close()
        self.packages: dict[str, Package] = {}
        self.errata: list[Erratum] = []
        self.deltas: list[Delta] = []
        self.tree_files: list[TreeFile] = []
        self.metadata_files: list[MetadataFile] = []
        self.sha256: dict[str, str | None] = {}  # href → pool key
        self.treeinfo: TreeFile | None = None
        fragments = Fragments()
        for row in rows:
            kind = row["kind"]
            if kind == "rpm":
                files, changelogs = row["files"], row["changelogs"]
                if files is None and row["files_xml"] is not None:  # kept as the feed wrote it
                    files = json.dumps(fragments.entries("filelists", row["files_xml"]))
                if changelogs is None and row["other_xml"] is not None:
                    changelogs = json.dumps(fragments.entries("other", row["other_xml"]))
                package = package_from(row["data"], files, changelogs, row["origin"])
                self.packages[package["href"]] = package
            elif kind == "erratum":
                self.errata.append(json.loads(row["data"]))
            elif kind == "delta":
                self.deltas.append(json.loads(row["data"]))
            elif kind == "metadata":
                self.metadata_files.append(json.loads(row["data"]))
            elif row["href"] == ".treeinfo":
                self.treeinfo = json.loads(row["data"])
            else:
                self.tree_files.append(json.loads(row["data"]))
            if row["href"] is not None:
                self.sha256[row["href"]] = row["sha256"]

    def path(self, href: str) -> Path:
        """The pool file of the record at ``href``."""
        sha256 = self.sha256[href]
        assert sha256 is not None, f"{href} has no file in the pool"
        return self.store.pool.path(sha256)

    def records(self) -> list[Any]:
        return [
            *self.packages.values(),
            *self.deltas,
            *self.tree_files,
            *self.metadata_files,
            *([self.treeinfo] if self.treeinfo else []),
        ]

    def assert_consistent(self) -> View:
        """Every file the version names is in the pool, verified; no temporary is left."""
        for record in self.records():
            path = self.path(record["href"])
            assert path.is_file(), record["href"]
            data = path.read_bytes()
            if record.get("size") is not None:
                assert len(data) == record["size"], record["href"]
            assert hashlib.sha256(data).hexdigest() == self.sha256[record["href"]]
            if record.get("checksum_type") == "sha256":
                assert self.sha256[record["href"]] == record["checksum"], record["href"]
        assert stray_temp_files(self.store.pool.root) == []
        return self


def stray_temp_files(pool_root: Path) -> list[Path]:
    return [p for p in (pool_root / ".tmp").rglob("*") if p.is_file()]


def assert_consistent(repo_dir: Path) -> View:
    return View(repo_dir).assert_consistent()


def publish(
    repo_dir: Path,
    pub: Path,
    *,
    version: int | None = None,
    grace: float = 300.0,
    signing: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Publish ``version`` (default: the latest, or the empty version 0) of the test
    repository ``repo_dir`` at ``pub``, in this thread; ``signing``: ``{"key",
    "passphrase_file"}`` to sign repomd.xml with."""
    from coordd.repo.publish import publish_version

    view = View(repo_dir, version)
    args = {
        "db": str(view.store.db.path),
        "pool": str(view.store.pool.root),
        "repo_id": view.repo_id,
        "number": view.version,
        "revision": None,
        "publish_dir": str(pub),
        "grace": grace,
        "signing": signing,
    }
    return publish_version(args, lambda _progress: None)


def copy(source: Path, target: Path, name: str | None) -> dict[str, Any]:
    """Copy the packages of the latest version of ``source`` whose name matches ``name``
    into a new version of ``target`` (both test repositories of one store)."""
    store = content_store(source)
    return store.copy(
        source.name, View(source).version, target.name, name=name, task_id=None, retain=10
    )
