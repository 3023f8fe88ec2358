"""The yum importer against real feeds on a real HTTP server (no daemon)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from coordd.api.errors import InvalidRequest, OperationFailed
from coordd.engine.progress import CANCELED, FAILED, FINISHED, IN_PROGRESS, NOT_STARTED, Progress
from coordd.repo.yum.options import ImporterOptions, Limits
from tests.helpers.content import View, assert_consistent
from tests.helpers.feeds import COMPRESSIONS, Pkg, build_feed, content_store, default_packages, sync
from tests.helpers.feedserver import STALL, TRICKLE, FeedServer, make_self_signed

ROOT = Path(__file__).resolve().parents[1]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def run(
    repo: Path, url: str, limits: Limits | None = None, retain: int | None = None, **options: Any
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"limits": limits} if limits is not None else {}
    if retain is not None:
        kwargs["retain"] = retain
    return await sync(repo, ImporterOptions(feed=url, **options), Progress(), **kwargs)


# -- full syncs ---------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("misleading", [False, True], ids=["named", "misnamed"])
async def test_full_sync(tmp_path: Path, compression: str, misleading: bool) -> None:
    feed = build_feed(
        tmp_path / "feed",
        compression=compression,
        deltas=True,
        treeinfo=True,
        comps=True,
        misleading_names=misleading,
    )
    repo = tmp_path / "repo"
    progress = Progress()
    with FeedServer(feed.root) as server:
        summary = await sync(repo, ImporterOptions(feed=server.url), progress)

    index = assert_consistent(repo)
    assert set(index.packages) == feed.hrefs
    for pkg in feed.packages:
        record = index.packages[pkg.location_href]
        assert record["checksum"] == pkg.pkgId
        assert (record["name"], record["version"], record["release"]) == (
            pkg.name,
            pkg.version,
            pkg.release,
        )
        assert record["summary"] == pkg.summary
        assert record["description"] == pkg.description
        for kind in ("provides", "requires", "conflicts", "obsoletes"):
            assert {tuple(d) for d in record[kind]} == set(getattr(pkg, kind)), kind
        # The full file list comes from filelists, changelogs from other.
        assert {path for _type, path in record["files"]} == {d + n for _t, d, n in pkg.files}
        assert record["changelogs"][0][2] == "- build"
    assert [e["id"] for e in index.errata] == ["COORDD-2024-0001", "COORDD-2024-0002"]
    assert index.errata[0]["references"][0]["id"] == "100"
    assert index.errata[0]["collections"][0]["packages"][0]["name"] == "alpha"
    assert {d["href"] for d in index.deltas} == {d["href"] for d in feed.deltas}
    assert sorted(r["href"] for r in index.tree_files) == feed.tree_files
    assert index.treeinfo is not None
    assert index.path(".treeinfo").read_bytes() == (feed.root / ".treeinfo").read_bytes()
    assert [m["type"] for m in index.metadata_files] == ["group"]
    for pkg in feed.packages:
        assert (
            index.path(pkg.location_href).read_bytes()
            == (feed.root / pkg.location_href).read_bytes()
        )

    n_files = len(feed.packages) + len(feed.deltas) + len(feed.tree_files) + 1
    assert summary["changed"] is True
    assert summary["version"] == 1
    assert summary["new_version"] is True
    assert summary["added"] == len(feed.packages)
    assert summary["downloaded"] == n_files
    assert summary["errata"] == 2

    report = progress.snapshot()["importer"]
    assert report["metadata"]["state"] == FINISHED
    assert report["errata"]["state"] == FINISHED
    content = report["content"]
    assert content["state"] == FINISHED
    assert content["items_total"] == n_files
    assert content["num_success"] == n_files
    assert (content["items_left"], content["size_left"], content["num_error"]) == (0, 0, 0)
    assert content["details"]["rpm"]["items_total"] == len(feed.packages)
    assert content["details"]["delta_rpm"]["num_success"] == len(feed.deltas)
    assert content["details"]["tree_file"]["num_success"] == 3
    assert content["details"]["file"]["num_success"] == 1
    assert content["size_total"] == summary["bytes_downloaded"]


@pytest.mark.anyio
async def test_file_feed(tmp_path: Path) -> None:
    feed = build_feed(tmp_path / "feed", compression="xz", treeinfo=True)
    summary = await run(tmp_path / "repo", feed.url)
    index = assert_consistent(tmp_path / "repo")
    assert set(index.packages) == feed.hrefs
    assert summary["tree_files"] == 4  # the three files it names, and .treeinfo itself


@pytest.mark.anyio
async def test_progress_has_every_key_from_the_start(tmp_path: Path) -> None:
    feed = build_feed(tmp_path / "feed")
    progress = Progress()
    with FeedServer(feed.root) as server:
        server.misbehave("repodata/repomd.xml", STALL)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sync, tmp_path / "repo", ImporterOptions(feed=server.url), progress)
            with anyio.fail_after(10):
                while server.count("repomd.xml") == 0:
                    await anyio.sleep(0.01)
            early = progress.snapshot()
            tg.cancel_scope.cancel()
    counters = {"items_total", "items_left", "size_total", "size_left", "num_success", "num_error"}
    importer = early["importer"]
    assert set(importer) == {"metadata", "content", "errata"}
    assert importer["metadata"] == {"state": IN_PROGRESS}
    assert importer["errata"] == {"state": NOT_STARTED}
    content = importer["content"]
    assert set(content) == counters | {"state", "error_details", "details"}
    assert set(content["details"]) == {"rpm", "delta_rpm", "file", "tree_file"}
    for kind in content["details"].values():
        assert set(kind) == counters
    assert progress.snapshot()["importer"]["metadata"]["state"] == CANCELED
    assert View(tmp_path / "repo").info is None  # no version


# -- selection, re-sync, removal ----------------------------------------------------------------


@pytest.mark.anyio
async def test_only_newest(tmp_path: Path) -> None:
    feed = build_feed(tmp_path / "feed", deltas=True)
    summary = await run(tmp_path / "repo", feed.url, only_newest=True)
    index = assert_consistent(tmp_path / "repo")
    alphas = [p for p in index.packages.values() if p["name"] == "alpha"]
    # 1.10 > 1.9 > 1.0 numerically, whatever the release says.
    assert [(p["version"], p["release"]) for p in alphas] == [("1.10", "1")]
    assert len(index.packages) == len(feed.packages) - 2
    assert summary["packages"] == len(feed.packages) - 2
    # Only the delta that builds the chosen alpha is kept.
    assert [(d["version"], d["oldversion"]) for d in index.deltas] == [("1.10", "1.0")]
    assert "Packages/a/alpha-1.0-1.x86_64.rpm" not in index.sha256  # nor downloaded
    assert summary["downloaded"] == len(feed.packages) - 2 + 1

    # Turning the option off on the next sync brings the older versions in.
    summary = await run(tmp_path / "repo", feed.url)
    assert summary["added"] == 2
    assert len(assert_consistent(tmp_path / "repo").packages) == len(feed.packages)


@pytest.mark.anyio
async def test_resync_downloads_nothing(tmp_path: Path) -> None:
    feed = build_feed(tmp_path / "feed", deltas=True, treeinfo=True, comps=True)
    repo = tmp_path / "repo"
    with FeedServer(feed.root) as server:
        await run(repo, server.url)
        before = View(repo)
        server.reset_counts()
        progress = Progress()
        summary = await sync(repo, ImporterOptions(feed=server.url), progress)
        assert summary["changed"] is False
        assert summary["new_version"] is False
        assert summary["version"] == 1
        assert summary["downloaded"] == 0
        # Only repomd.xml and .treeinfo were asked for.
        assert dict(server.requests) == {"repodata/repomd.xml": 1, ".treeinfo": 1}
        assert progress.snapshot()["importer"]["content"]["state"] == FINISHED
        assert View(repo).packages == before.packages

        # New metadata (revision bump) with the same packages: parsed, nothing downloaded,
        # and no version: the content is the same.
        feed.bump()
        server.reset_counts()
        summary = await run(repo, server.url)
        assert summary["changed"] is True
        assert summary["new_version"] is False
        assert summary["version"] == 1
        assert summary["kept"] == len(feed.packages)
        assert summary["downloaded"] == 0
        assert server.count(".rpm") == server.count(".drpm") == server.count(".img") == 0


@pytest.mark.anyio
async def test_a_short_pool_file_is_fetched_again(tmp_path: Path) -> None:
    """The last sync's state is trusted only while the pool holds every file of the
    version: a file a power cut left short is fetched again, even from an unchanged feed."""
    feed = build_feed(tmp_path / "feed")
    repo = tmp_path / "repo"
    with FeedServer(feed.root) as server:
        await run(repo, server.url)
        href = feed.packages[0].location_href
        path = View(repo).path(href)
        path.write_bytes(path.read_bytes()[:10])
        server.reset_counts()
        summary = await run(repo, server.url)
        assert summary["changed"] is True
        assert summary["new_version"] is False  # the same units: no version
        assert summary["downloaded"] == 1
        assert dict(server.requests)[href] == 1
    assert_consistent(repo)


@pytest.mark.anyio
async def test_dropped_packages_leave_the_version_then_the_pool(tmp_path: Path) -> None:
    feed = build_feed(tmp_path / "feed")
    repo = tmp_path / "repo"
    await run(repo, feed.url)
    gone = "Packages/b/bravo-2.0-3.x86_64.rpm"
    path = View(repo).path(gone)
    size = feed.package(gone).size_package
    feed.drop(gone)
    summary = await run(repo, feed.url, retain=1)
    assert summary["removed"] == 1
    assert summary["version"] == 2
    index = assert_consistent(repo)
    assert gone not in index.packages
    # Version 1 was pruned (retain 1): the package is an orphan until cleanup removes it.
    store = content_store(repo)
    assert View(repo, version=1).info is None
    assert path.exists()
    assert store.stats().orphan_files == 1
    assert store.remove_orphans() == {
        "units": 1,
        "files": 1,
        "bytes": size,
    }
    assert not path.exists()
    assert_consistent(repo)


@pytest.mark.anyio
async def test_changed_file_at_same_path(tmp_path: Path) -> None:
    """The feed serves new bytes under an old href: a new unit, a new pool file."""
    feed = build_feed(tmp_path / "feed")
    repo = tmp_path / "repo"
    await run(repo, feed.url)
    href = "Packages/c/charlie-2.0-3.x86_64.rpm"
    old = View(repo).path(href)
    feed2 = build_feed(tmp_path / "feed", seed=99)  # same names, new random bytes
    summary = await run(repo, feed2.url)
    assert summary["added"] == len(feed2.packages)
    assert summary["removed"] == len(feed.packages)
    index = assert_consistent(repo)
    assert index.packages[href]["checksum"] == feed2.package(href).pkgId
    assert index.path(href) != old
    assert old.exists()  # version 1 still holds the old one
    assert View(repo, version=1).packages[href]["checksum"] == feed.package(href).pkgId


@pytest.mark.anyio
async def test_a_bad_checksum_never_enters_the_pool(tmp_path: Path) -> None:
    feed = build_feed(tmp_path / "feed")
    href = "Packages/d/delta-2.0-3.x86_64.rpm"
    data = bytearray((feed.root / href).read_bytes())
    data[0] ^= 0xFF
    (feed.root / href).write_bytes(bytes(data))
    for verify in (True, False):  # the pool is shared: the option cannot waive it
        with pytest.raises(OperationFailed, match="checksum mismatch"):
            await run(tmp_path / "repo", feed.url, verify_checksum=verify)
    assert View(tmp_path / "repo").info is None
    pool = tmp_path / "state" / "content"
    assert hashlib.sha256(bytes(data)).hexdigest()[2:] not in {
        p.name for p in (pool / "sha256").rglob("*")
    }


@pytest.mark.anyio
async def test_weak_checksums_need_the_option(tmp_path: Path) -> None:
    feed = build_feed(tmp_path / "feed", errata=False)
    for pkg in feed.packages:
        pkg.checksum_type = "sha1"
        pkg.pkgId = hashlib.sha1((feed.root / pkg.location_href).read_bytes()).hexdigest()
    from tests.helpers.feeds import package_docs

    feed.write_metadata(docs=package_docs(feed.packages))
    with pytest.raises(OperationFailed, match="sha1 is weaker than sha256"):
        await run(tmp_path / "repo", feed.url)
    summary = await run(tmp_path / "repo", feed.url, allow_weak_checksums=True)
    assert summary["packages"] == len(feed.packages)


@pytest.mark.anyio
async def test_files_declared_with_another_checksum_are_keyed_by_their_sha256(
    tmp_path: Path,
) -> None:
    feed = build_feed(tmp_path / "feed", errata=False)
    for pkg in feed.packages:
        pkg.checksum_type = "sha512"
        pkg.pkgId = hashlib.sha512((feed.root / pkg.location_href).read_bytes()).hexdigest()
    from tests.helpers.feeds import package_docs

    feed.write_metadata(docs=package_docs(feed.packages))
    summary = await run(tmp_path / "repo", feed.url)
    assert summary["packages"] == len(feed.packages)
    pool = tmp_path / "state" / "content" / "sha256"
    stored = {p.parent.name + p.name: p for p in pool.rglob("*") if p.is_file()}
    for pkg in feed.packages:
        digest = hashlib.sha256((feed.root / pkg.location_href).read_bytes()).hexdigest()
        assert stored[digest].read_bytes() == (feed.root / pkg.location_href).read_bytes()
    assert_consistent(tmp_path / "repo")


@pytest.mark.anyio
async def test_sync_without_feed(tmp_path: Path) -> None:
    progress = Progress()
    with pytest.raises(OperationFailed, match="no feed"):
        await sync(tmp_path / "repo", ImporterOptions(), progress)
    assert progress.snapshot()["importer"]["metadata"]["state"] == FAILED


@pytest.mark.anyio
async def test_https_feed_with_ca_file(tmp_path: Path) -> None:
    if subprocess.run(["which", "openssl"], capture_output=True).returncode != 0:
        pytest.skip("openssl CLI is not installed")
    tls = make_self_signed(tmp_path)
    feed = build_feed(tmp_path / "feed", errata=False)
    with FeedServer(feed.root, tls=tls) as server:
        assert server.url.startswith("https://")
        with pytest.raises(OperationFailed, match=r"CERTIFICATE_VERIFY_FAILED|certificate"):
            await run(tmp_path / "repo", server.url)
        summary = await run(tmp_path / "repo", server.url, ca_file=str(tls.cert))
        assert summary["packages"] == len(feed.packages)
        summary = await run(tmp_path / "repo2", server.url, tls_verify=False)
        assert summary["packages"] == len(feed.packages)


# -- cancellation and crashes -------------------------------------------------------------------


@pytest.mark.anyio
async def test_cancel_mid_download_keeps_previous_state(tmp_path: Path) -> None:
    packages = default_packages(6)
    feed = build_feed(tmp_path / "feed", packages, treeinfo=True)
    repo = tmp_path / "repo"
    with FeedServer(feed.root) as server:
        await run(repo, server.url)
        before = View(repo).packages

        more = [*packages, *(Pkg(f"zulu{i}", "1", "1", size=200_000) for i in range(6))]
        feed = build_feed(tmp_path / "feed", more, treeinfo=True)
        slow = "Packages/z/zulu0-1-1.x86_64.rpm"
        server.misbehave(slow, TRICKLE)
        progress = Progress()

        def rpm_successes() -> int:
            return int(progress.snapshot()["importer"]["content"]["details"]["rpm"]["num_success"])

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    sync, repo, ImporterOptions(feed=server.url, parallel_downloads=2), progress
                )
                await anyio.sleep(0.01)  # let the sync initialise its report
                while rpm_successes() < 3 or server.count(slow) == 0:
                    await anyio.sleep(0.005)
                tg.cancel_scope.cancel()
        report = progress.snapshot()["importer"]
        assert report["content"]["state"] == CANCELED
        assert report["content"]["items_left"] > 0
        # The repository is exactly as before; no temporary file survived.
        assert View(repo).packages == before
        assert_consistent(repo)

        # The new packages the pool took before the cancel (from_pool also counts any other
        # file that was entered, when the cancel came late).
        pool = tmp_path / "state" / "content" / "sha256"
        stored = {p.parent.name + p.name for p in pool.rglob("*") if p.is_file()}
        pooled = sum(
            sha256_file(feed.root / pkg.location_href) in stored
            for pkg in feed.packages
            if pkg.location_href.startswith("Packages/z/zulu")
        )
        server.behave()
        server.reset_counts()
        summary = await run(repo, server.url)
        assert pooled >= 3  # completed before the cancel: not fetched again
        assert summary["from_pool"] >= pooled
        assert server.count(".rpm") == 6 - pooled
        index = assert_consistent(repo)
        assert set(index.packages) == feed.hrefs


def _sync_in_subprocess(repo: Path, url: str) -> subprocess.Popen[bytes]:
    code = (
        "import sys, anyio\n"
        "from pathlib import Path\n"
        "from coordd.repo.yum.options import ImporterOptions\n"
        "from tests.helpers.feeds import sync\n"
        "from coordd.engine.progress import Progress\n"
        "anyio.run(sync, Path(sys.argv[1]), ImporterOptions(feed=sys.argv[2],"
        " parallel_downloads=2), Progress())\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(repo), url],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.anyio
async def test_kill_9_mid_sync_then_rerun(tmp_path: Path) -> None:
    # Large enough that the verified files are entered into the pool while the slow one
    # trickles (small ones wait to be entered in batches).
    packages = [Pkg(f"pkg{i}", "1", "1", size=1_500_000) for i in range(8)]
    feed = build_feed(tmp_path / "feed", packages, errata=False)
    repo = tmp_path / "repo"
    pool = tmp_path / "state" / "content"
    slow = packages[0].href
    with FeedServer(feed.root) as server:
        server.misbehave(slow, TRICKLE)
        proc = _sync_in_subprocess(repo, server.url)
        try:
            deadline = time.monotonic() + 20
            while True:
                placed = [p for p in (pool / "sha256").rglob("*") if p.is_file()]
                parts = list((pool / ".tmp").glob("*.part")) if (pool / ".tmp").exists() else []
                if len(placed) >= 3 and parts and server.count(slow):
                    break
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "sync made no progress"
                await anyio.sleep(0.01)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            if proc.stderr:
                proc.stderr.close()
        assert list((pool / ".tmp").glob("*.part"))  # it left a partial file behind
        assert View(repo).info is None  # and was killed before its commit

        server.behave()
        server.reset_counts()
        summary = await run(repo, server.url)  # (opening the store clears the temporaries)
        assert summary["packages"] == 8
        assert summary["from_pool"] >= 3
        assert server.count(".rpm") == 8 - summary["from_pool"]
        assert set(assert_consistent(repo).packages) == feed.hrefs


@pytest.mark.anyio
async def test_a_second_repository_takes_every_file_from_the_pool(tmp_path: Path) -> None:
    feed = build_feed(tmp_path / "feed", deltas=True, treeinfo=True, comps=True)
    with FeedServer(feed.root) as server:
        first = await run(tmp_path / "one", server.url)
        server.reset_counts()
        second = await run(tmp_path / "two", server.url)
        assert server.count(".rpm") == server.count(".drpm") == server.count(".img") == 0
    assert second["downloaded"] == 0
    assert second["bytes_downloaded"] == 0
    assert second["from_pool"] == first["downloaded"]
    one, two = assert_consistent(tmp_path / "one"), assert_consistent(tmp_path / "two")
    assert one.packages == two.packages
    for href in one.sha256:
        assert one.path(href).stat().st_ino == two.path(href).stat().st_ino


# -- options and versions -----------------------------------------------------------------------


def test_importer_options_json() -> None:
    options = ImporterOptions.from_json(
        {"feed": "https://example.org/repo/", "only_newest": True, "parallel_downloads": 3}
    )
    assert options.to_json()["parallel_downloads"] == 3
    assert ImporterOptions.from_json(options.to_json()) == options
    assert ImporterOptions.from_json({}).feed is None
    bad: list[tuple[dict[str, Any], str]] = [
        ({"feed": "ftp://example.org/"}, "feed"),
        ({"feed": "https:///nohost"}, "feed"),
        ({"feed": "https://example.org/?token=1"}, "feed"),
        ({"feed": 3}, "feed"),
        ({"only_newest": "yes"}, "only_newest"),
        ({"verify_checksum": 1}, "verify_checksum"),
        ({"parallel_downloads": 0}, "parallel_downloads"),
        ({"parallel_downloads": 65}, "parallel_downloads"),
        ({"parallel_downloads": True}, "parallel_downloads"),
        ({"parallel_downloads": "8"}, "parallel_downloads"),
        ({"proxy": "socks5://p:1080"}, "proxy"),
        ({"ca_file": ""}, "ca_file"),
        ({"colour": "blue"}, "colour"),
    ]
    for value, key in bad:
        with pytest.raises(InvalidRequest) as info:
            ImporterOptions.from_json(value)
        assert info.value.data == {"key": key}, value
        assert key in info.value.message
    with pytest.raises(InvalidRequest):
        ImporterOptions.from_json(["feed"])  # type: ignore[arg-type]
