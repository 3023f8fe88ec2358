"""Publish, copy, counts and delete, on repositories synced from real fixture feeds."""

from __future__ import annotations

import gzip
import os
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import createrepo_c as cr
import pytest
from lxml import etree

from coordd.api.errors import OperationFailed
from coordd.engine.progress import Progress
from coordd.repo.publish import unpublish
from coordd.repo.yum.options import ImporterOptions
from tests.helpers.content import View, copy, publish
from tests.helpers.dnf import DNF, dnf_command
from tests.helpers.feeds import (  # noqa: F401 - fixture
    Pkg,
    build_feed,
    build_rpm_feed,
    content_store,
    package_docs,
    real_rpms,
    sync,
)
from tests.helpers.feedserver import FeedServer

PACKAGE_FIELDS = (
    *("name", "epoch", "version", "release", "arch", "pkgId", "checksum_type", "location_href"),
    *("summary", "description", "url", "rpm_license", "rpm_vendor", "rpm_group"),
    *("rpm_buildhost", "rpm_sourcerpm", "rpm_packager", "rpm_header_start", "rpm_header_end"),
    *("size_package", "size_installed", "size_archive", "time_file", "time_build"),
)
DEP_FIELDS = ("provides", "requires", "conflicts", "obsoletes", "suggests", "recommends")


async def synced_repo(tmp_path: Path, name: str = "repo", **feed_args: Any) -> tuple[Any, Path]:
    feed = build_feed(tmp_path / f"{name}-feed", **feed_args)
    repo = tmp_path / name
    await sync(repo, ImporterOptions(feed=feed.url), Progress())
    return feed, repo


def read_published(path: Path) -> tuple[dict[str, Any], list[Any], Any]:
    reader = cr.RepositoryReader.from_path(str(path))
    packages, warnings = reader.parse_packages()
    assert warnings == []
    return packages, reader.advisories(), reader.repomd


def inode(path: Path) -> int:
    return path.stat().st_ino


# -- publish ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_publish_reproduces_the_feed(tmp_path: Path) -> None:
    feed, repo = await synced_repo(tmp_path, deltas=True, treeinfo=True, comps=True)
    pub = tmp_path / "published" / "repo"
    summary = publish(repo, pub)
    assert summary["path"] == str(pub)
    assert summary["version"] == 1
    assert summary["packages"] == len(feed.packages)
    assert summary["linked"] == len(feed.packages) + len(feed.deltas) + 3 + 1  # + .treeinfo
    assert summary["copied"] == 0
    assert (summary["errata"], summary["delta_rpms"], summary["tree_files"]) == (2, 2, 4)

    # Read back with createrepo_c's own parser (not ours) and compare with what the feed
    # generated: everything a client sees survived sync → units → publish.
    packages, advisories, repomd = read_published(pub)
    assert len(packages) == len(feed.packages)
    for original in feed.packages:
        published = packages[original.pkgId]
        for name in PACKAGE_FIELDS:
            assert getattr(published, name) == getattr(original, name), name
        for name in DEP_FIELDS:
            assert sorted(map(str, getattr(published, name))) == sorted(
                map(str, getattr(original, name))
            ), name
        # The parser reports a plain file's type as None where the writer took "".
        assert {(t or "", d, n) for t, d, n in published.files} == set(original.files)
        assert published.changelogs == original.changelogs
        assert published.location_base is None
    assert sorted(a.id for a in advisories) == ["COORDD-2024-0001", "COORDD-2024-0002"]
    first = next(a for a in advisories if a.id == "COORDD-2024-0001")
    assert (first.type, first.severity, first.reboot_suggested) == ("security", "Important", True)
    assert first.issued_date.isoformat() == "2024-01-02T03:04:05"
    assert first.references[0].href == "https://bugs.example.org/100"
    assert first.collections[0].packages[0].sum == feed.packages[0].pkgId
    assert {r.type for r in repomd.records} == {
        "primary",
        "filelists",
        "other",
        "updateinfo",
        "prestodelta",
        "group",
    }
    group = next(r for r in repomd.records if r.type == "group")
    assert (pub / group.location_href).read_bytes() == (feed.root / "repodata").joinpath(
        next(p.name for p in (feed.root / "repodata").iterdir() if "comps" in p.name)
    ).read_bytes()
    presto = next(r for r in repomd.records if r.type == "prestodelta")
    data = gzip.decompress((pub / presto.location_href).read_bytes()).decode()
    for delta in feed.deltas:
        assert delta["href"] in data
        assert delta["checksum"] in data

    # Files are hard links to the pool's, not copies.
    view = View(repo)
    for href in [*feed.hrefs, *(d["href"] for d in feed.deltas), *feed.tree_files, ".treeinfo"]:
        assert inode(pub / href) == inode(view.path(href)), href


def _published_elements(pub: Path, rtype: str) -> dict[str, Any]:
    """The ``<package>`` elements of the published ``rtype`` file, by pkgid."""
    repomd = cr.Repomd(str(pub / "repodata" / "repomd.xml"))
    record = next(r for r in repomd.records if r.type == rtype)
    root = etree.fromstring(gzip.decompress((pub / record.location_href).read_bytes()))
    return {_pkgid(element): element for element in root}


def _pkgid(element: Any) -> str:
    checksum = element.find(f"{{{COMMON_NS}}}checksum")
    return str(checksum.text if checksum is not None else element.get("pkgid"))


COMMON_NS = "http://linux.duke.edu/metadata/common"


@pytest.mark.anyio
async def test_publish_writes_each_package_as_its_feed_did(tmp_path: Path) -> None:
    feed = build_feed(tmp_path / "feed", errata=False)
    listed_under_base = feed.packages[0]
    listed_under_base.location_base = feed.url  # where the feed's files are, spelt out
    listed_under_base.description = "Crème brûlée: <b>&amp;</b> 日本語"
    feed.write_metadata(docs=package_docs(feed.packages))
    repo = tmp_path / "repo"
    await sync(repo, ImporterOptions(feed=feed.url), Progress())
    pub = tmp_path / "published" / "repo"
    publish(repo, pub)
    with sqlite3.connect(View(repo).store.db.path) as db:  # written from the feed's entries
        (kept,) = db.execute("SELECT count(*) FROM rpm_xml").fetchone()
    assert kept == 3 * len(feed.packages)

    for rtype in ("primary", "filelists", "other"):
        root = etree.fromstring(feed.docs[rtype])
        fed = {_pkgid(element): element for element in root}
        published = _published_elements(pub, rtype)
        assert published.keys() == fed.keys()
        for pkgid, element in published.items():
            original = fed[pkgid]
            if rtype == "primary":  # the location is the publication's own
                location = element.find(f"{{{COMMON_NS}}}location")
                assert location.attrib == {
                    "href": original.find(f"{{{COMMON_NS}}}location").get("href")
                }
                for each in (element, original):
                    each.remove(each.find(f"{{{COMMON_NS}}}location"))
            assert etree.tostring(element, method="c14n") == etree.tostring(original, method="c14n")
    assert f'xml:base="{feed.url}"' in feed.docs["primary"].decode()  # the case was there


@pytest.mark.anyio
async def test_publish_swaps_whole_trees(tmp_path: Path) -> None:
    feed, repo = await synced_repo(tmp_path, errata=False)
    parent = tmp_path / "published"
    pub = parent / "repo"
    neighbour = parent / "repo.x"  # a name sharing the prefix must not be touched
    publish(repo, neighbour, grace=3600)
    neighbour_tree = os.readlink(neighbour)

    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                generation = Path(os.path.realpath(pub))
            except OSError:
                continue
            if not pub.exists():
                continue
            try:
                repomd = cr.Repomd(str(generation / "repodata" / "repomd.xml"))
            except Exception as exc:  # a half-written repomd would land here
                problems.append(f"repomd: {exc}")
                continue
            for record in repomd.records:
                if not (generation / record.location_href).is_file():
                    problems.append(f"missing {record.location_href} in {generation.name}")

    targets = []
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(6):
            publish(repo, pub, grace=3600)
            targets.append(os.readlink(pub))
    finally:
        stop.set()
        thread.join()
    assert problems == []
    assert len(set(targets)) == 6  # each publish is a new generation…

    def generations() -> list[str]:
        return sorted(p.name for p in parent.iterdir() if p.name.startswith(".repo.gen-"))

    assert generations() == sorted(targets)  # …and those swapped out stay for the grace period
    publish(repo, pub, grace=0)
    assert generations() == [os.readlink(pub)]  # once it is over, they go
    assert os.readlink(neighbour) == neighbour_tree
    assert (parent / neighbour_tree).is_dir()
    packages, _, _ = read_published(pub)
    assert {p.location_href for p in packages.values()} == feed.hrefs


@pytest.mark.anyio
async def test_publish_cleans_up_after_an_interrupted_run(tmp_path: Path) -> None:
    _feed, repo = await synced_repo(tmp_path, errata=False)
    parent = tmp_path / "published"
    pub = parent / "repo"
    publish(repo, pub)
    stale_tmp = parent / f".repo.tmp-{'a' * 32}"
    (stale_tmp / "repodata").mkdir(parents=True)
    (stale_tmp / "repodata" / "repomd.xml").write_text("half")
    stale_link = parent / f".repo.link-{'b' * 32}"
    stale_link.symlink_to("nowhere")
    stray_generation = parent / f".repo.gen-{'c' * 32}"
    stray_generation.mkdir()
    os.utime(stray_generation, (0, 0))  # retired long ago
    publish(repo, pub)
    assert not stale_tmp.exists()
    assert not stale_link.is_symlink()
    assert not stray_generation.exists()
    assert len(read_published(pub)[0]) == len(View(repo).packages)


@pytest.mark.anyio
async def test_publish_refuses_a_version_whose_file_is_gone(tmp_path: Path) -> None:
    feed, repo = await synced_repo(tmp_path, errata=False)
    pub = tmp_path / "published" / "repo"
    publish(repo, pub)
    before = os.readlink(pub)
    View(repo).path(next(iter(sorted(feed.hrefs)))).unlink()
    with pytest.raises(OperationFailed, match="its file is missing from the pool"):
        publish(repo, pub)
    assert os.readlink(pub) == before  # the previous publication still stands
    assert [p.name for p in pub.parent.iterdir() if ".tmp-" in p.name] == []


def test_publish_empty_repository(tmp_path: Path) -> None:
    pub = tmp_path / "published" / "empty"
    summary = publish(tmp_path / "empty", pub)  # version 0: the empty one
    assert (summary["version"], summary["packages"]) == (0, 0)
    packages, advisories, _ = read_published(pub)
    assert (packages, advisories) == ({}, [])


@pytest.mark.anyio
@pytest.mark.skipif(DNF is None, reason="dnf is not installed")
async def test_dnf_installs_from_a_publication(
    tmp_path: Path,
    real_rpms: list[Path],  # noqa: F811 - the fixture imported above
) -> None:
    feed = build_rpm_feed(tmp_path / "feed", real_rpms, compression="zst")
    repo = tmp_path / "repo"
    with FeedServer(feed.root) as server:
        await sync(repo, ImporterOptions(feed=server.url), Progress())
    pub = tmp_path / "published" / "repo"
    publish(repo, pub)
    root = tmp_path / "installroot"
    dnf = dnf_command(pub.as_uri(), tmp_path / "dnf-cache", root)

    def run(*args: str) -> str:
        result = subprocess.run([*dnf, *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    available = run("repoquery", "--qf", "%{name}-%{version}-%{release}.%{arch}")
    assert set(available.split()) == {
        "coordd-hello-1.0-1.noarch",
        "coordd-hello-1.1-1.noarch",
        "coordd-world-2.0-1.noarch",
    }
    run("install", "coordd-hello-1.0")
    assert (root / "usr/share/coordd-hello/hello.txt").read_text() == "coordd-hello 1.0\n"
    # The advisory for the newer package applies to what is installed now.
    assert "COORDD-2024-0002" in run("updateinfo", "list")


# -- copy ---------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_copy_with_glob_shares_units_and_survives_sync(tmp_path: Path) -> None:
    feed_a, repo_a = await synced_repo(tmp_path, "a")
    other = [Pkg("zulu", "1", "1"), Pkg("bravo", "2.0", "3", size=999)]  # bravo: other bytes
    feed_b, repo_b = await synced_repo(tmp_path, "b", packages=other, errata=False, seed=7)
    bravo = "Packages/b/bravo-2.0-3.x86_64.rpm"
    bravo_b = View(repo_b).path(bravo)

    summary = copy(repo_a, repo_b, "alph?")
    assert summary["matched"] == summary["copied"] == 3
    assert summary["version"] == 2
    view_a, view_b = View(repo_a), View(repo_b)
    alphas = [h for h, p in view_b.packages.items() if p["name"] == "alpha"]
    assert len(alphas) == 3
    for href in alphas:
        assert view_b.packages[href]["origin"] == "copy"
        assert view_b.path(href) == view_a.path(href)  # one file in the pool

    again = copy(repo_a, repo_b, "alpha")
    assert (again["copied"], again["already_present"], again["version"]) == (0, 3, None)

    everything = copy(repo_a, repo_b, None)
    assert everything["conflicts"] == [bravo]  # same path, other bytes: left alone
    assert View(repo_b).path(bravo) == bravo_b
    assert everything["copied"] == len(feed_a.packages) - 3 - 1

    # Copied packages are not the feed's to drop: a changed feed keeps them.
    feed_b.bump()
    feed_b.add(Pkg("yankee", "1", "1"))
    summary = await sync(repo_b, ImporterOptions(feed=feed_b.url), Progress())
    assert (summary["removed"], summary["added"]) == (0, 1)
    assert set(View(repo_b).packages) == feed_a.hrefs | feed_b.hrefs
    pub = tmp_path / "published" / "b"
    publish(repo_b, pub)
    assert len(read_published(pub)[0]) == len(feed_a.hrefs | feed_b.hrefs)


@pytest.mark.anyio
async def test_copy_into_a_new_repository_and_from_an_older_version(tmp_path: Path) -> None:
    feed, repo_a = await synced_repo(tmp_path, "a")
    target = tmp_path / "fresh"
    summary = copy(repo_a, target, "bravo")
    assert (summary["copied"], summary["version"]) == (1, 1)
    assert copy(repo_a, tmp_path / "none", "no-such-*") == {
        "matched": 0,
        "copied": 0,
        "already_present": 0,
        "conflicts": [],
        "version": None,
        "errata": 0,
        "delta_rpms": 0,
        "tree_files": 0,
        "metadata": [],
        "metadata_kept": [],
    }
    # A version of the source that a later sync replaced can still be copied from.
    gone = "Packages/b/bravo-2.0-3.x86_64.rpm"
    feed.drop(gone)
    await sync(repo_a, ImporterOptions(feed=feed.url), Progress())
    assert gone not in View(repo_a).packages
    old = content_store(repo_a).copy("a", 1, "older", name="bravo", task_id=None, retain=10)
    assert old["copied"] == 1
    assert gone in View(tmp_path / "older").packages


@pytest.mark.anyio
async def test_version_counts(tmp_path: Path) -> None:
    feed, repo = await synced_repo(tmp_path, deltas=True, treeinfo=True)
    info = View(repo).info
    assert info is not None
    assert info.counts == {
        "rpm": len(feed.packages),
        "erratum": 2,
        "delta": 2,
        "file": 4,
        "metadata": 0,
    }
    assert info.added == info.counts
    assert info.size >= sum(p.size_package for p in feed.packages)
    assert info.note == "sync"


@pytest.mark.anyio
async def test_forgetting_a_repository_leaves_orphans_and_its_neighbours(tmp_path: Path) -> None:
    _feed, repo = await synced_repo(tmp_path, errata=False)
    await sync(tmp_path / "twin", ImporterOptions(feed=_feed.url), Progress())
    parent = tmp_path / "published"
    pub = parent / "repo"
    publish(repo, pub)
    publish(repo, pub)
    keep = parent / "other"
    publish(repo, keep)
    store = content_store(repo)

    removed = unpublish(pub)
    assert str(pub) in removed
    store.forget("repo")
    assert unpublish(pub) == []
    store.forget("repo")  # again: nothing left to do
    assert not pub.is_symlink()
    assert [p.name for p in parent.iterdir() if p.name.startswith(".repo.")] == []
    assert keep.is_symlink()
    assert (keep / "repodata" / "repomd.xml").is_file()
    # Its units are orphans; the twin's are the same files, so no file is an orphan.
    assert View(repo).info is None
    stats = store.stats()
    assert stats.orphan_units == 0  # the twin holds the same units
    assert stats.orphan_files == 0
    store.forget("twin")
    assert store.stats().orphan_files == stats.files
    removed_orphans = store.remove_orphans()
    assert removed_orphans["files"] == stats.files
    assert store.stats().files == 0
    # The other publication keeps its hard links: still complete.
    packages, _, _ = read_published(keep)
    assert all((keep / p.location_href).is_file() for p in packages.values())


@pytest.mark.skipif(DNF is None, reason="dnf is not installed")
def test_dnf_installs_from_an_older_version_after_a_rollback(
    tmp_path: Path,
    make_daemon: Any,
    real_rpms: list[Path],  # noqa: F811 - the fixture imported above
) -> None:
    """Through the daemon: version 1 has hello 1.0, version 2 only hello 1.1 (the feed
    dropped 1.0); a rollback to version 1 makes version 3, which publishes hello 1.0 from
    the pool without a download, and dnf installs it."""
    hello_10 = [p for p in real_rpms if p.name.startswith("coordd-hello-1.0")]
    hello_11 = [p for p in real_rpms if p.name.startswith("coordd-hello-1.1")]
    first = build_rpm_feed(tmp_path / "feed1", hello_10)
    second = build_rpm_feed(tmp_path / "feed2", hello_11)
    daemon = make_daemon(name="rollback").start()

    def done(answer: dict[str, Any]) -> dict[str, Any]:
        task = daemon.call("task.wait", task_id=answer["task"]["id"], timeout=60)
        assert task["state"] == "finished", task
        return task["result"]

    with FeedServer(first.root) as one, FeedServer(second.root) as two:
        daemon.call("repo.create", repo_id="r", importer={"feed": one.url})
        assert done(daemon.call("repo.sync", repo_id="r"))["version"] == 1
        daemon.call("repo.update", repo_id="r", importer={"feed": two.url})
        assert done(daemon.call("repo.sync", repo_id="r"))["version"] == 2
        rolled = done(daemon.call("repo.rollback", repo_id="r", version=1))
        assert rolled["version"] == 3
        assert (rolled["added"]["rpm"], rolled["removed"]["rpm"]) == (1, 1)
        assert one.count(".rpm") == 1  # fetched once, at the first sync
    assert done(daemon.call("repo.publish", repo_id="r"))["version"] == 3
    shown = daemon.call("repo.show", repo_id="r")
    assert (shown["latest_version"], shown["published_version"]) == (3, 3)
    pub = Path(shown["published_path"])
    root = tmp_path / "installroot"
    dnf = dnf_command(pub.as_uri(), tmp_path / "dnf-cache", root)
    result = subprocess.run(
        [*dnf, "install", "coordd-hello"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert (root / "usr/share/coordd-hello/hello.txt").read_text() == "coordd-hello 1.0\n"
