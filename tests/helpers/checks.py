"""Checks of what the daemon left on disk, by readers of the tests' own: every retained
version complete in the pool, every published tree valid (``check_versions``,
``check_publications``), and a daemon with nothing left to do (``settle``)."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import createrepo_c as cr

from tests.helpers.daemon import DaemonProcess, wait_for


def settle(daemon: DaemonProcess) -> None:
    """Wait until no task is waiting or running."""

    def idle() -> bool:
        tasks = daemon.call("task.list", state=["waiting", "running"])["tasks"]
        return not tasks

    wait_for(idle, "the daemon to finish what it accepted", timeout=120)


def check_versions(state: Path, where: str) -> None:
    db = sqlite3.connect(f"file:{state / 'content.db'}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", where
        retained = db.execute("SELECT repo_id, number FROM versions").fetchall()
        for repo_id, number in retained:
            rows = db.execute(
                "SELECT u.href, u.sha256, u.size FROM repo_content rc JOIN units u"
                " ON u.id = rc.unit_id WHERE rc.repo_id = ? AND rc.added <= ?"
                " AND (rc.removed IS NULL OR rc.removed > ?) AND u.href IS NOT NULL",
                (repo_id, number, number),
            ).fetchall()
            assert rows, f"{where}: version {number} of {repo_id} is empty"
            for href, sha256, size in rows:
                assert sha256 is not None, f"{where}: {repo_id} v{number} {href} has no file"
                path = state / "content" / "sha256" / sha256[:2] / sha256[2:]
                data = path.read_bytes()
                assert hashlib.sha256(data).hexdigest() == sha256, f"{where}: {path}"
                assert size is None or len(data) == size, f"{where}: {href}"
    finally:
        db.close()


def check_publications(state: Path, where: str) -> None:
    published = state / "published"
    if not published.is_dir():
        return
    for entry in published.iterdir():
        if entry.name.startswith("."):
            continue
        tree = Path(os.path.realpath(entry))
        repomd = cr.Repomd(str(tree / "repodata" / "repomd.xml"))
        for record in repomd.records:
            data = (tree / record.location_href).read_bytes()
            assert hashlib.sha256(data).hexdigest() == record.checksum, f"{where}: {record.type}"
        packages, _warnings = cr.RepositoryReader.from_path(str(tree)).parse_packages()
        for package in packages.values():
            assert (tree / package.location_href).is_file(), f"{where}: {package.location_href}"
