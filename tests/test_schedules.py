"""Schedules and publish after sync, on the real daemon over its socket.

The daemon reads the time of day from a file the test writes (``COORDD_TEST_CLOCK_FILE``),
so a day passes when the test says, and no test sleeps on the wall clock.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import createrepo_c as cr
import pytest

from coordd.api.errors import InvalidRequest, NotFound
from tests.helpers import nginx
from tests.helpers.clock import ClockFile, at
from tests.helpers.daemon import DaemonProcess, coordctl, held, wait_for
from tests.helpers.dnf import DNF, dnf_command
from tests.helpers.feeds import Pkg, build_feed, default_packages
from tests.helpers.feedserver import FeedServer

DAY = 86400.0
START = at("2026-12-01T00:00")
FIRST = at("2026-12-01T02:00")  # the first run of the daily schedules here
DAILY = "2026-12-01T02:00Z/P1D"


@pytest.fixture
def clock(tmp_path: Path) -> ClockFile:
    return ClockFile(tmp_path / "clock", START)


@pytest.fixture
def daemon(tmp_path: Path, clock: ClockFile) -> Iterator[DaemonProcess]:
    process = clock.use(DaemonProcess(tmp_path / "state"))
    try:
        yield process.start()
    finally:
        process.cleanup()


@pytest.fixture
def feed_server(tmp_path: Path) -> Iterator[tuple[Any, FeedServer]]:
    feed = build_feed(tmp_path / "feed", default_packages(4))
    with FeedServer(feed.root) as server:
        yield feed, server


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return str(result.stdout)


def field(text: str, name: str) -> list[str]:
    """The values of ``Name:`` lines in coordctl's output."""
    prefix = f"{name}:"
    return [line[len(prefix) :].strip() for line in text.splitlines() if line.startswith(prefix)]


def schedule_of(daemon: DaemonProcess, schedule_id: str, **where: Any) -> dict[str, Any]:
    return daemon.call("schedule.show", schedule_id=schedule_id, **where)


def fired(daemon: DaemonProcess, schedule_id: str, runs: int) -> dict[str, Any]:
    """The schedule once it has run ``runs`` times and the last run's task (if any) ended."""

    def done() -> dict[str, Any] | None:
        schedule = schedule_of(daemon, schedule_id)
        fire = schedule["last_fire"]
        if schedule["runs"] < runs or fire is None:
            return None
        if fire["task_id"] is not None and fire["task_state"] is None:
            return None
        return schedule

    return wait_for(done, f"run {runs} of schedule {schedule_id}")


def ended(daemon: DaemonProcess, task_id: str) -> dict[str, Any]:
    task = daemon.call("task.wait", task_id=task_id, timeout=60)
    assert task["state"] in ("finished", "error", "canceled"), task
    return task


def publishes(daemon: DaemonProcess) -> list[dict[str, Any]]:
    tasks = daemon.call("task.list", state="all")["tasks"]
    return sorted(
        (t for t in tasks if t["operation"] == "repo.publish"), key=lambda t: t["submitted"]
    )


def published_names(daemon: DaemonProcess, repo_id: str) -> set[str]:
    path = daemon.call("repo.show", repo_id=repo_id)["published_path"]
    assert path is not None
    reader = cr.RepositoryReader.from_path(path)
    packages, _warnings = reader.parse_packages()
    return {p.name for p in packages.values()}


def dnf_names_over_http(base: str, work: Path) -> set[str]:
    """The package names dnf sees in the repository at ``base`` (fresh metadata)."""
    result = subprocess.run(
        [*dnf_command(base, work, work / "root", "--refresh"), "repoquery", "--qf", "%{name}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_a_daily_schedule_syncs_and_auto_publish_publishes_each_new_version(
    daemon: DaemonProcess, clock: ClockFile, feed_server: tuple[Any, FeedServer], tmp_path: Path
) -> None:
    feed, server = feed_server
    ok(
        coordctl(
            daemon, "repo", "create", "--repo-id", "demo", "--feed", server.url,
            "--auto-publish", "true", "--wait",
        )
    )  # fmt: skip
    assert daemon.call("repo.show", repo_id="demo")["auto_publish"] is True
    made = json.loads(
        ok(
            coordctl(
                daemon, "repo", "sync", "schedules", "create", "--repo-id", "demo",
                "--schedule", DAILY, "--json",
            )
        )
    )  # fmt: skip
    schedule_id = made["id"]
    assert (made["kind"], made["repo_id"], made["enabled"]) == ("sync", "demo", True)
    assert made["next_run"] == "2026-12-01T02:00:00Z"
    listed = ok(coordctl(daemon, "repo", "sync", "schedules", "list", "--repo-id", "demo"))
    assert schedule_id in listed
    assert field(listed, "Next Run") == ["2026-12-01T02:00:00Z"]
    assert field(listed, "Last Run") == ["Never"]

    # Day one: the schedule syncs; the sync makes version 1; its publish follows at once.
    clock.set(FIRST + 5)
    schedule = fired(daemon, schedule_id, 1)
    fire = schedule["last_fire"]
    assert (fire["outcome"], fire["task_state"]) == ("accepted", "finished"), fire
    assert schedule["next_run"] == "2026-12-02T02:00:00Z"
    sync = daemon.call("task.get", task_id=fire["task_id"])
    assert sync["operation"] == "repo.sync"
    assert sync["reason"] == f"schedule {schedule_id} (sync {DAILY})"
    assert sync["parent"] is None
    assert (sync["result"]["new_version"], sync["result"]["version"]) == (True, 1)
    publish = wait_for(lambda: publishes(daemon), "the publish after the first sync")[0]
    publish = ended(daemon, publish["id"])
    assert publish["state"] == "finished", publish
    assert publish["parent"] == sync["id"]
    assert publish["args"] == {"repo_id": "demo", "version": 1}
    assert publish["reason"] == f"auto_publish: version 1 made by sync {sync['id']}"
    assert published_names(daemon, "demo") == {"alpha", "bravo"}
    details = ok(coordctl(daemon, "tasks", "details", "--task-id", publish["id"]))
    assert field(details, "Parent Task") == [sync["id"]]
    assert field(details, "Reason") == [publish["reason"]]

    # Day two: the feed has a new package; the next run syncs it and publishes version 2.
    feed.add(Pkg("zulu", "1.0", "1"))
    clock.set(FIRST + DAY + 5)
    schedule = fired(daemon, schedule_id, 2)
    second = daemon.call("task.get", task_id=schedule["last_fire"]["task_id"])
    assert (second["result"]["new_version"], second["result"]["version"]) == (True, 2)

    def second_publish() -> dict[str, Any] | None:
        done = [p for p in publishes(daemon) if p["parent"] == second["id"]]
        return done[0] if done and done[0]["state"] == "finished" else None

    publish = wait_for(second_publish, "the publish after the second sync")
    assert publish["args"]["version"] == 2
    assert "zulu" in published_names(daemon, "demo")
    assert daemon.call("repo.show", repo_id="demo")["published_version"] == 2
    if nginx.NGINX is not None and DNF is not None:  # as a mirror's clients see it
        with nginx.serve(daemon.state_dir / "published", tmp_path / "nginx") as url:
            seen = dnf_names_over_http(url + "demo/", tmp_path / "dnf-cache")
        assert seen == published_names(daemon, "demo")
        assert "zulu" in seen
        assert "GET /demo/repodata/repomd.xml" in (tmp_path / "nginx" / "access.log").read_text()

    # Day three: nothing changed upstream; the sync makes no version and queues no publish.
    clock.set(FIRST + 2 * DAY + 5)
    schedule = fired(daemon, schedule_id, 3)
    third = daemon.call("task.get", task_id=schedule["last_fire"]["task_id"])
    assert third["result"]["new_version"] is False
    assert [p["parent"] for p in publishes(daemon)] == [sync["id"], second["id"]]


def test_a_sync_failing_three_times_disables_its_schedule(
    daemon: DaemonProcess, clock: ClockFile, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with FeedServer(empty) as server:  # no repodata: every sync fails (404)
        daemon.call("repo.create", repo_id="broken", importer={"feed": server.url})
        made = daemon.call(
            "schedule.create",
            kind="sync",
            repo_id="broken",
            schedule=DAILY,
            failure_threshold=3,
        )
        # A witness due a minute later: once it has run, every earlier due one has.
        witness = daemon.call("schedule.create", kind="orphans", schedule="2026-12-01T02:01Z/P1D")
        failed: list[str] = []
        for day in range(3):
            clock.set(FIRST + day * DAY + 120)
            schedule = fired(daemon, made["id"], day + 1)
            fire = schedule["last_fire"]
            # Postponed when the witness's cleanup of the day before still runs.
            assert fire["outcome"] in ("accepted", "postponed"), fire
            assert fire["task_state"] == "error", fire
            failed.append(fire["task_id"])
            assert schedule["consecutive_failures"] == day + 1
        assert len(set(failed)) == 3
        assert schedule["enabled"] is False
        assert schedule["next_run"] is None
        reason = schedule["disabled_reason"]
        assert reason.startswith("disabled after 3 consecutive failed tasks")
        assert failed[-1] in reason
        error = daemon.call("task.get", task_id=failed[-1])["error"]["message"]
        assert error in reason
        listed = ok(coordctl(daemon, "repo", "sync", "schedules", "list", "--repo-id", "broken"))
        assert field(listed, "State") == [f"disabled: {reason}"]

        # Disabled: the next day passes without a run.
        clock.set(FIRST + 3 * DAY + 120)
        fired(daemon, witness["id"], 4)
        assert schedule_of(daemon, made["id"])["runs"] == 3

        # Enabled again: the failures and the reason are cleared; it runs at the next time.
        updated = json.loads(
            ok(
                coordctl(
                    daemon, "repo", "sync", "schedules", "update", "--repo-id", "broken",
                    "--schedule-id", made["id"], "--enabled", "true", "--json",
                )
            )
        )  # fmt: skip
        assert (updated["enabled"], updated["disabled_reason"]) == (True, None)
        assert updated["consecutive_failures"] == 0
        assert updated["next_run"] == "2026-12-05T02:00:00Z"


def test_a_run_while_the_previous_task_waits_is_skipped(
    daemon: DaemonProcess, clock: ClockFile, feed_server: tuple[Any, FeedServer]
) -> None:
    _feed, server = feed_server
    daemon.call("repo.create", repo_id="demo", importer={"feed": server.url})
    made = daemon.call("schedule.create", kind="sync", repo_id="demo", schedule=DAILY)
    with held(daemon, "demo", "update") as lock:
        clock.set(FIRST + 5)
        first = wait_for(lambda: schedule_of(daemon, made["id"])["last_fire"], "the first run")
        assert first["outcome"] == "postponed", first
        assert lock in first["detail"]
        clock.set(FIRST + DAY + 5)
        schedule = wait_for(
            lambda: (s := schedule_of(daemon, made["id"]))["runs"] == 2 and s, "the second run"
        )
        second = schedule["last_fire"]
        assert second["outcome"] == "skipped"
        assert second["task_id"] is None
        assert second["detail"] == f"the previous task {first['task_id']} is still waiting"
        waiting = daemon.call("task.list", repo_id="demo")["tasks"]
        assert [t["operation"] for t in waiting] == ["lock", "repo.sync"]  # not stacked
    assert ended(daemon, first["task_id"])["state"] == "finished"
    history = wait_for(
        lambda: (h := schedule_of(daemon, made["id"])["history"])[1]["task_state"] and h,
        "the first run's task to be recorded as ended",
    )
    assert [(h["outcome"], h["task_state"]) for h in history] == [
        ("skipped", None),
        ("postponed", "finished"),
    ]
    shown = ok(
        coordctl(
            daemon, "repo", "sync", "schedules", "show", "--repo-id", "demo",
            "--schedule-id", made["id"],
        )
    )  # fmt: skip
    assert "skipped (the previous task" in shown
    assert f"postponed, task {first['task_id']} finished" in shown


def test_schedules_survive_a_restart_and_missed_runs_happen_once(
    daemon: DaemonProcess, clock: ClockFile, feed_server: tuple[Any, FeedServer]
) -> None:
    _feed, server = feed_server
    daemon.call("repo.create", repo_id="demo", importer={"feed": server.url})
    made = daemon.call("schedule.create", kind="sync", repo_id="demo", schedule=f"R10/{DAILY}")
    clock.set(FIRST + 5)
    fired(daemon, made["id"], 1)
    daemon.stop()
    clock.set(FIRST + 5 * DAY + 3600)  # five runs missed while it was down
    daemon.start()
    schedule = fired(daemon, made["id"], 2)
    assert schedule["last_fire"]["outcome"] == "accepted"
    assert schedule["last_fire"]["task_state"] == "finished"
    assert schedule["next_run"] == "2026-12-07T02:00:00Z"
    assert schedule["remaining_runs"] == 8
    assert [h["outcome"] for h in schedule["history"]] == ["accepted", "accepted"]
    syncs = [
        t for t in daemon.call("task.list", state="all")["tasks"] if t["operation"] == "repo.sync"
    ]
    assert len(syncs) == 2
    assert [s["id"] for s in daemon.call("schedule.list")["schedules"]] == [made["id"]]


def test_bad_schedules_are_refused_naming_the_field(daemon: DaemonProcess) -> None:
    daemon.call("repo.create", repo_id="demo")
    cases = [
        ({"kind": "sync", "repo_id": "demo", "schedule": "every day"}, "schedule"),
        ({"kind": "sync", "repo_id": "demo", "schedule": "2026-12-01T02:00/P1D"}, "schedule"),
        ({"kind": "sync", "repo_id": "demo", "schedule": "2026-12-01T02:00Z/P1M"}, "schedule"),
        ({"kind": "sync", "repo_id": "demo", "schedule": "R0/2026-12-01T02:00Z/P1D"}, "schedule"),
        ({"kind": "sync", "repo_id": "demo", "schedule": 7}, "schedule"),
        (
            {"kind": "sync", "repo_id": "demo", "schedule": DAILY, "failure_threshold": 0},
            "failure_threshold",
        ),
        ({"kind": "sync", "repo_id": "demo", "schedule": DAILY, "enabled": "yes"}, "enabled"),
        ({"kind": "mirror", "repo_id": "demo", "schedule": DAILY}, "kind"),
        ({"kind": "sync", "schedule": DAILY}, "repo_id"),
        ({"kind": "orphans", "repo_id": "demo", "schedule": DAILY}, "repo_id"),
    ]
    for params, field in cases:
        with pytest.raises(InvalidRequest) as caught:
            daemon.call("schedule.create", **params)
        assert caught.value.code == -32602
        assert caught.value.data == {"param": field}, (params, caught.value.message)
    with pytest.raises(NotFound):
        daemon.call("schedule.create", kind="sync", repo_id="nothere", schedule=DAILY)
    assert daemon.call("schedule.list")["schedules"] == []

    result = coordctl(
        daemon, "repo", "sync", "schedules", "create", "--repo-id", "demo",
        "--schedule", "2026-12-01T02:00Z/P1Y", "--json",
    )  # fmt: skip
    assert result.returncode != 0
    error = json.loads(result.stdout)["error"]
    assert error["code"] == -32602
    assert "months and years are not supported" in error["message"]
    made = daemon.call("schedule.create", kind="publish", repo_id="demo", schedule=DAILY)
    with pytest.raises(InvalidRequest) as caught:
        daemon.call("schedule.update", schedule_id=made["id"], schedule="tomorrow")
    assert caught.value.data == {"param": "schedule"}
    # A schedule is found only under its own kind.
    with pytest.raises(NotFound):
        daemon.call("schedule.delete", schedule_id=made["id"], kind="sync", repo_id="demo")


def test_deleting_a_repository_deletes_its_schedules(daemon: DaemonProcess) -> None:
    daemon.call("repo.create", repo_id="gone")
    daemon.call("repo.create", repo_id="kept")
    for kind in ("sync", "publish"):
        daemon.call("schedule.create", kind=kind, repo_id="gone", schedule=DAILY)
    kept = daemon.call("schedule.create", kind="sync", repo_id="kept", schedule=DAILY)
    ended(daemon, daemon.call("repo.delete", repo_id="gone")["task"]["id"])
    assert [s["id"] for s in daemon.call("schedule.list")["schedules"]] == [kept["id"]]
    daemon.restart()
    assert [s["id"] for s in daemon.call("schedule.list")["schedules"]] == [kept["id"]]
    listed = ok(coordctl(daemon, "repo", "publish", "schedules", "list", "--repo-id", "kept"))
    assert "There are no schedules." in listed


def test_a_publish_a_stop_lost_after_its_sync_is_queued_at_start_up(
    daemon: DaemonProcess, feed_server: tuple[Any, FeedServer]
) -> None:
    """The publish is submitted after the sync's end is committed; a stop in between (here,
    as after a crash: a finished sync, nothing queued after it, auto_publish on) is made up
    for when the daemon starts, once."""
    _feed, server = feed_server
    ok(coordctl(daemon, "repo", "create", "--repo-id", "demo", "--feed", server.url, "--wait"))
    sync = json.loads(ok(coordctl(daemon, "repo", "sync", "--repo-id", "demo", "--wait", "--json")))
    ok(coordctl(daemon, "repo", "update", "--repo-id", "demo", "--auto-publish", "true", "--wait"))
    assert publishes(daemon) == []
    daemon.stop()
    daemon.start()
    publish = wait_for(lambda: publishes(daemon), "the publish made up for at start-up")[0]
    publish = ended(daemon, publish["id"])
    assert publish["state"] == "finished", publish
    assert publish["parent"] == sync["task"]["id"]
    assert publish["args"] == {"repo_id": "demo", "version": 1}
    assert daemon.call("repo.show", repo_id="demo")["published_version"] == 1
    daemon.stop()
    daemon.start()
    assert len(publishes(daemon)) == 1  # made up for once: the sync has a follower now
