"""kill -9 of the daemon at random points of sync, copy, publish, rollback, pruning and orphan
cleanup: every committed version stays complete and every published tree valid.

Each round submits one content operation, kills the daemon after a random delay (from the
seeded generator; the seed is in every failure message), starts it again, lets it finish
what it had accepted (these operations are restartable), and checks the invariants on disk
with readers of its own, not the daemon's: every unit of every retained version has its
file in the pool, of the right sha256; every published tree's repomd.xml names files that
exist with the checksums it gives, and every package it lists is there.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.checks import check_publications, check_versions, settle
from tests.helpers.daemon import DaemonProcess
from tests.helpers.feeds import Pkg, build_feed, default_packages
from tests.helpers.feedserver import FeedServer

ROUNDS = 14
RETAIN = 2


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two versions of one feed (the second drops and adds packages), on two servers."""
    first = default_packages(12)
    second = [*first[3:], *(Pkg(f"new{i}", "1", "1", size=30_000) for i in range(8))]
    feed_a = build_feed(tmp_path / "feed-a", first, deltas=False, treeinfo=True, comps=True)
    feed_b = build_feed(tmp_path / "feed-b", second, errata=False, seed=3)
    with FeedServer(feed_a.root) as a, FeedServer(feed_b.root) as b:
        yield a.url, b.url


def submit(daemon: DaemonProcess, rng: random.Random, feeds: tuple[str, str]) -> dict[str, Any]:
    """One content operation, chosen at random."""
    choice = rng.choice(["sync", "sync", "publish", "copy", "rollback", "orphans"])
    if choice == "sync":
        url = rng.choice(feeds)
        daemon.call("repo.update", repo_id="main", importer={"feed": url})
        return daemon.call("repo.sync", repo_id="main")
    if choice == "publish":
        return daemon.call("repo.publish", repo_id=rng.choice(["main", "side"]))
    if choice == "copy":
        return daemon.call("repo.copy", source="main", target="side", name=rng.choice(["*", "a*"]))
    if choice == "rollback":
        versions = daemon.call("repo.versions.list", repo_id="main")["versions"]
        return daemon.call("repo.rollback", repo_id="main", version=versions[-1]["number"])
    return daemon.call("content.orphans.remove")


def test_kill_9_at_random_points_keeps_versions_and_publications(
    make_daemon: Any, served: tuple[str, str]
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    daemon: DaemonProcess = make_daemon(name="content-crash")
    daemon.start()
    state = daemon.state_dir
    for repo_id in ("main", "side"):
        daemon.call(
            "repo.create", repo_id=repo_id, importer={"feed": served[0]}, retain_versions=RETAIN
        )
    daemon.call("repo.sync", repo_id="main")
    daemon.call("repo.sync", repo_id="side")
    settle(daemon)
    for round_number in range(ROUNDS):
        where = f"seed {seed}, round {round_number}"
        submit(daemon, rng, served)
        time.sleep(rng.uniform(0, 0.6))
        daemon.kill9()
        check_versions(state, where + " (after the kill)")
        check_publications(state, where + " (after the kill)")
        daemon.start()
        settle(daemon)
        check_versions(state, where)
        check_publications(state, where)
    ended = daemon.call("task.list", state=["error"])["tasks"]
    assert ended == [], f"seed {seed}: {ended}"
    assert daemon.stop() == 0
