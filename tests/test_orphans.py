"""Orphaned content: what deletes and pruning leave, removed by cleanup, never what a version
needs, whether cleanup is asked for beside syncs or runs on its schedule."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tests.helpers.checks import check_publications, check_versions, settle
from tests.helpers.daemon import DaemonProcess, wait_for
from tests.helpers.feeds import Pkg, build_feed, default_packages
from tests.helpers.feedserver import FeedServer


def finished(daemon: DaemonProcess, answer: dict[str, Any]) -> dict[str, Any]:
    task = daemon.call("task.wait", task_id=answer["task"]["id"], timeout=60)
    assert task["state"] == "finished", task
    return task


def test_cleanup_raced_against_syncs_never_removes_a_needed_file(
    make_daemon: Any, tmp_path: Path
) -> None:
    """Syncs of changing feeds, copies and cleanups submitted together, in a random order:
    the coordinator keeps cleanup apart from every operation that adds to the pool, so
    each committed version keeps all its files."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    base = default_packages(8)
    feeds = [
        build_feed(tmp_path / f"feed{n}", [*base[n:], Pkg(f"extra{n}", "1", "1")], seed=n)
        for n in range(3)
    ]
    daemon: DaemonProcess = make_daemon(name="race").start()
    servers = [FeedServer(feed.root).__enter__() for feed in feeds]
    try:
        for repo_id in ("a", "b", "c"):
            daemon.call("repo.create", repo_id=repo_id, retain_versions=1)
        for _ in range(12):
            repo_id = rng.choice(["a", "b", "c"])
            url = rng.choice(servers).url
            daemon.call("repo.update", repo_id=repo_id, importer={"feed": url})
            daemon.call("repo.sync", repo_id=repo_id)
            if rng.random() < 0.3:
                target = rng.choice([r for r in ("a", "b", "c") if r != repo_id])
                daemon.call("repo.copy", source=repo_id, target=target)
            daemon.call("content.orphans.remove")
        settle(daemon)
        where = f"seed {seed}"
        check_versions(daemon.state_dir, where)
        errors = daemon.call("task.list", state=["error"])["tasks"]
        assert [t for t in errors if t["operation"] != "repo.copy"] == [], where
        # Every version still publishes, straight from the pool.
        for repo_id in ("a", "b", "c"):
            finished(daemon, daemon.call("repo.publish", repo_id=repo_id))
        check_publications(daemon.state_dir, where)
    finally:
        for server in servers:
            server.__exit__(None, None, None)


def test_scheduled_cleanup_removes_what_a_delete_left(make_daemon: Any, tmp_path: Path) -> None:
    feed = build_feed(tmp_path / "feed", default_packages(5))
    daemon: DaemonProcess = make_daemon(name="scheduled")
    daemon.config_file().write_text('[content]\norphan_cleanup_interval = "1s"\n')
    daemon.start()
    with FeedServer(feed.root) as server:
        daemon.call("repo.create", repo_id="gone", importer={"feed": server.url})
        finished(daemon, daemon.call("repo.sync", repo_id="gone"))
    pool = daemon.call("server.status")["content"]
    assert pool["files"] == 5  # the packages
    assert pool["orphan_files"] == 0
    finished(daemon, daemon.call("repo.delete", repo_id="gone"))

    def cleaned() -> dict[str, Any] | None:
        content = daemon.call("server.status")["content"]
        return content if content["files"] == 0 else None

    content = wait_for(cleaned, "the scheduled cleanup", timeout=30)
    assert (content["orphan_files"], content["orphan_bytes"], content["bytes"]) == (0, 0, 0)
    assert [p for p in (daemon.state_dir / "content" / "sha256").rglob("*") if p.is_file()] == []
    tasks = daemon.call("task.list", state=["finished"])["tasks"]
    assert any(t["operation"] == "content.orphans.remove" for t in tasks)
