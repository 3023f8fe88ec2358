"""The start-up migration of a previous release's state directory (``coordd.content.migrate``).

The state directory is real: ``tests/fixtures/legacy-state.tar.gz`` was written by the
release before the content store, driven over its socket by
``tests/fixtures/make_legacy_state.py`` (two repositories synced from one feed, a package
copied from one to the other, one published), together with the feed it synced. Here the
current daemon starts on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemon import DaemonProcess
from tests.helpers.dnf import DNF, dnf_command
from tests.helpers.feedserver import FeedServer

FIXTURE = Path(__file__).parent / "fixtures" / "legacy-state.tar.gz"
REPOS = ("full", "newest")
PUBLISHED = "newest"
COPIED = "Packages/a/alpha-1.0-1.x86_64.rpm"  # copied from full into newest
KINDS = ("rpm", "erratum", "delta", "file", "metadata")


@dataclass(frozen=True)
class Legacy:
    state: Path
    feed: Path
    reference: Path  # a second, untouched copy of the state directory
    info: dict[str, Any]  # legacy.json: the feed's URL then, and what each operation said


def extract(dest: Path, prefix: str = "") -> None:
    with tarfile.open(FIXTURE) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        tar.extractall(dest, members=members, filter="data")


@pytest.fixture
def legacy(tmp_path: Path) -> Legacy:
    extract(tmp_path)
    extract(tmp_path / "reference", "state")
    info = json.loads((tmp_path / "legacy.json").read_text())
    return Legacy(tmp_path / "state", tmp_path / "feed", tmp_path / "reference" / "state", info)


@pytest.fixture
def daemon(legacy: Legacy) -> Iterator[DaemonProcess]:
    """The current daemon on the legacy state directory (not started: starting migrates)."""
    process = DaemonProcess(legacy.state)
    try:
        yield process
    finally:
        process.cleanup()


def finished(daemon: DaemonProcess, answer: dict[str, Any]) -> dict[str, Any]:
    task = daemon.call("task.wait", task_id=answer["task"]["id"], timeout=60)
    assert task["state"] == "finished", task
    return task  # type: ignore[no-any-return]


def units(daemon: DaemonProcess, repo_id: str) -> list[dict[str, Any]]:
    page = daemon.call("repo.content", repo_id=repo_id, limit=1000)
    assert page["next"] is None
    return page["units"]  # type: ignore[no-any-return]


def content_db(state: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{state / 'content.db'}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def old_files(state: Path) -> dict[str, dict[str, Any]]:
    """Each legacy repository's content.json records and the inodes of their files."""
    out = {}
    for repo_id in REPOS:
        root = state / "repositories" / repo_id
        index = json.loads((root / "content.json").read_text())
        records = [*index["packages"], *index["deltas"], *index["tree_files"], index["treeinfo"]]
        records += index["metadata_files"]
        inodes = {r["href"]: (root / "content" / r["href"]).stat().st_ino for r in records}
        out[repo_id] = {"index": index, "inodes": inodes}
    return out


def pool(state: Path) -> dict[str, os.stat_result]:
    """The pool's files by sha256, each checked to hold what its name says."""
    files = {}
    for path in (state / "content" / "sha256").rglob("*"):
        if path.is_file():
            sha256 = path.parent.name + path.name
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256, path
            files[sha256] = path.stat()
    return files


def by_checksum(files: dict[str, os.stat_result], state: Path) -> dict[str, os.stat_result]:
    """The pool's files by ``type:digest`` for the checksum types the fixture's feed uses."""
    out = {}
    for sha256, stat in files.items():
        data = (state / "content" / "sha256" / sha256[:2] / sha256[2:]).read_bytes()
        for ctype in ("sha256", "sha512"):
            out[f"{ctype}:{hashlib.new(ctype, data).hexdigest()}"] = stat
    return out


def tree(root: Path) -> dict[str, str]:
    """Every file below ``root`` (symlinks followed from the top) and its sha256."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def dnf_packages(published: Path, tmp_path: Path) -> set[str]:
    """What dnf lists of the publication at ``published``."""
    dnf = dnf_command(published.as_uri(), tmp_path / "dnf-cache", tmp_path / "installroot")
    listed = subprocess.run(
        [*dnf, "repoquery", "--qf", "%{name}-%{version}-%{release}.%{arch}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    return set(listed.stdout.split())


def snapshot(daemon: DaemonProcess, state: Path) -> dict[str, Any]:
    """All a client and the disk show of the repositories' content."""
    return {
        "list": daemon.call("repo.list"),
        **{
            repo_id: {
                "show": daemon.call("repo.show", repo_id=repo_id),
                "versions": daemon.call("repo.versions.list", repo_id=repo_id),
                "units": units(daemon, repo_id),
            }
            for repo_id in REPOS
        },
        "pool": {sha: (st.st_ino, st.st_size) for sha, st in pool(state).items()},
        "published": os.readlink(state / "published" / PUBLISHED),
        "tree": tree(state / "published" / PUBLISHED),
        "content.db": content_db(
            state, "SELECT repo_id, unit_id, added, removed, origin FROM repo_content ORDER BY 1, 2"
        ),
    }


def test_migration_keeps_everything_and_happens_once(legacy: Legacy, daemon: DaemonProcess) -> None:
    before = old_files(legacy.state)
    daemon.start()

    assert not (legacy.state / "repositories").exists()
    listed = {r["id"]: r for r in daemon.call("repo.list")["repositories"]}
    assert sorted(listed) == list(REPOS)
    assert (listed["full"]["display_name"], listed["full"]["description"]) == (
        "Everything",
        "every package of the feed",
    )
    assert (listed["newest"]["display_name"], listed["newest"]["notes"]) == (
        "Newest",
        "only the newest of each name",
    )
    for repo_id, repo in listed.items():
        assert repo["importer"]["feed"] == legacy.info["feed_url"]
        assert repo["importer"]["only_newest"] is (repo_id == "newest")
        assert repo["latest_version"] == 1

    results = legacy.info["results"]
    copied = results["copy"]["copied"]
    assert copied == 1
    for repo_id in REPOS:
        synced = results[f"sync {repo_id}"]
        expected = {
            "rpm": synced["packages"] + (copied if repo_id == "newest" else 0),
            "erratum": synced["errata"],
            "delta": synced["delta_rpms"],
            "file": synced["tree_files"] + 1,  # and the .treeinfo
            "metadata": synced["metadata_files"],
        }
        (version,) = daemon.call("repo.versions.list", repo_id=repo_id)["versions"]
        assert (version["number"], version["note"]) == (1, "migrated")
        assert version["counts"] == version["added"] == expected
        assert version["published"] is (repo_id == PUBLISHED)

        found = units(daemon, repo_id)
        assert {kind: sum(u["type"] == kind for u in found) for kind in KINDS} == expected
        index = before[repo_id]["index"]
        records = {p["href"]: p for p in index["packages"]}
        assert {u["href"]: u["checksum"] for u in found if u["type"] == "rpm"} == {
            href: f"{p['checksum_type']}:{p['checksum']}" for href, p in records.items()
        }
        assert sorted(u["name"] for u in found if u["type"] == "erratum") == sorted(
            e["id"] for e in index["errata"]
        )
        origins = dict(
            content_db(
                legacy.state,
                "SELECT u.href, rc.origin FROM repo_content rc JOIN units u ON u.id = rc.unit_id"
                " WHERE rc.repo_id = ? AND u.kind = 'rpm'",
                repo_id,
            )
        )
        assert origins == {h: p.get("origin", "feed") for h, p in records.items()}
        assert (origins.get(COPIED) == "copy") is (repo_id == "newest")

    # Every file a unit names is in the pool, as a hard link to the file the old
    # repository held (not a copy), and the pool holds nothing else.
    files = pool(legacy.state)
    checksums = by_checksum(files, legacy.state)
    named = set()
    for repo_id in REPOS:
        for unit in units(daemon, repo_id):
            if "href" not in unit:
                continue
            stat = checksums[unit["checksum"]]
            assert stat.st_size == unit["size"], unit
            # Both repositories had a file of their own; the pool keeps one of them.
            assert stat.st_ino in {before[r]["inodes"].get(unit["href"]) for r in REPOS}, unit
            named.add(stat.st_ino)
    assert named == {stat.st_ino for stat in files.values()}
    orphans = daemon.call("content.orphans.list")
    assert (orphans["orphan_units"], orphans["orphan_files"]) == (0, 0)

    # The publication is the one the old release made, byte for byte, and recorded as
    # showing version 1.
    shown = daemon.call("repo.show", repo_id=PUBLISHED)
    assert shown["published_version"] == 1
    assert shown["published_path"] == str(legacy.state / "published" / PUBLISHED)
    assert daemon.call("repo.show", repo_id="full")["published_version"] is None
    published = legacy.state / "published" / PUBLISHED
    reference = legacy.reference / "published" / PUBLISHED
    assert os.readlink(published) == os.readlink(reference)
    assert tree(published) == tree(reference)
    assert set(tree(published)) >= {COPIED, ".treeinfo", "repodata/repomd.xml"}

    migrated = snapshot(daemon, legacy.state)
    assert daemon.stop() == 0

    # A second start has nothing to migrate and changes nothing.
    daemon.start()
    assert snapshot(daemon, legacy.state) == migrated
    assert daemon.stop() == 0

    # A migration interrupted after its transactions committed, before the old directories
    # were removed: the next start removes them and migrates nothing twice.
    extract(legacy.state.parent, "state/repositories")
    assert (legacy.state / "repositories" / "full" / "content.json").is_file()
    daemon.start()
    assert not (legacy.state / "repositories").exists()
    assert snapshot(daemon, legacy.state) == migrated
    assert daemon.log_text().count("migrated to the content store") == len(REPOS)


def test_publish_and_sync_after_migration(
    legacy: Legacy, daemon: DaemonProcess, tmp_path: Path
) -> None:
    daemon.start()
    # The migrated version publishes as it is, before any sync, from the pool.
    checksums = by_checksum(pool(legacy.state), legacy.state)
    result = finished(daemon, daemon.call("repo.publish", repo_id="full"))["result"]
    assert (result["version"], result["packages"], result["copied"]) == (1, 4, 0)
    for unit in units(daemon, "full"):
        if unit["type"] != "metadata" and "href" in unit:
            path = legacy.state / "published" / "full" / unit["href"]
            assert path.stat().st_ino == checksums[unit["checksum"]].st_ino, unit

    migrated = {
        repo_id: json.loads(fingerprint)
        for repo_id, fingerprint in content_db(
            legacy.state, "SELECT repo_id, fingerprint FROM sync_state"
        )
    }
    before = {repo_id: units(daemon, repo_id) for repo_id in REPOS}

    with FeedServer(legacy.feed) as server:  # the same bytes, on another port
        for repo_id in REPOS:
            finished(
                daemon, daemon.call("repo.update", repo_id=repo_id, importer={"feed": server.url})
            )
            result = finished(daemon, daemon.call("repo.sync", repo_id=repo_id))["result"]
            assert (result["downloaded"], result["bytes_downloaded"]) == (0, 0), result
            assert (result["version"], result["new_version"]) == (1, False), result
            assert result["removed"] == 0  # newest keeps the package copied into it
            assert units(daemon, repo_id) == before[repo_id]
        assert server.count(".rpm") == server.count(".drpm") == 0
        assert server.count(".img") == 0

    # What the old release recorded of its last sync is what a sync of the same feed
    # records now, but for the URL: at the old URL, the sync would have stopped at once.
    now = dict(content_db(legacy.state, "SELECT repo_id, fingerprint FROM sync_state"))
    for repo_id in REPOS:
        assert migrated[repo_id] == {**json.loads(now[repo_id]), "feed": legacy.info["feed_url"]}

    for repo_id in REPOS:
        result = finished(daemon, daemon.call("repo.publish", repo_id=repo_id))["result"]
        assert (result["version"], result["packages"]) == (1, 4)
        assert daemon.call("repo.show", repo_id=repo_id)["published_version"] == 1
    published = legacy.state / "published" / PUBLISHED
    assert os.readlink(published) != os.readlink(legacy.reference / "published" / PUBLISHED)
    if DNF is not None:
        assert dnf_packages(published, tmp_path) == {
            "alpha-1.0-1.x86_64",  # the copy
            "alpha-1.10-1.x86_64",
            "bravo-2.0-3.x86_64",
            "charlie-2.0-3.x86_64",  # named by sha512 in the feed
        }
