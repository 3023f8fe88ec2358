"""The scheduler in process, on a real task store, its clock a fake one the test moves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from coordd.api.errors import Conflict, InvalidRequest
from coordd.repo.schedules import Scheduler
from tests.helpers.clock import FakeClock, at
from tests.helpers.harness import Client, Harness, running

pytestmark = pytest.mark.anyio

WAIT_S = 5.0
DAY = 86400.0
FIRST = at("2026-12-01T02:00")


async def until(condition: Callable[[], Any], what: str) -> Any:
    with anyio.move_on_after(WAIT_S):
        while not (value := condition()):
            await anyio.sleep(0.001)
        return value
    raise AssertionError(f"timed out waiting for {what}")


def scheduler(harness: Harness) -> Scheduler:
    found = harness.services.scheduler
    assert found is not None
    return found


async def hold(client: Client, repo_id: str) -> str:
    resources = [{"type": "repository", "id": repo_id, "kind": "update"}]
    answer = await client.call("lock.acquire", resources=resources, command=["x"])
    task_id = str(answer["task"]["id"])
    await until(
        lambda: any(n["task_id"] == task_id for n in client.notified("lock.granted")),
        "the lock",
    )
    return task_id


async def test_nothing_runs_before_its_time_and_rn_counts_the_runs(tmp_path):
    clock = FakeClock(FIRST - DAY)
    async with running(tmp_path, clock=clock.now, schedule_clock=clock) as harness:
        await harness.call("repo.create", repo_id="demo")
        made = await harness.call(
            "schedule.create", kind="publish", repo_id="demo", schedule="R2/2026-12-01T02:00Z/P1D"
        )
        assert (made["next_run"], made["remaining_runs"]) == ("2026-12-01T02:00:00Z", 2)
        schedules = scheduler(harness)
        clock.advance(DAY - 1)
        await schedules.fire_due()
        assert (await harness.call("schedule.show", schedule_id=made["id"]))["runs"] == 0
        for run in (1, 2):
            clock.advance(DAY if run == 2 else 1)
            await schedules.fire_due()
            shown = await harness.call("schedule.show", schedule_id=made["id"])
            assert shown["runs"] == run
            task = await harness.call(
                "task.wait", task_id=shown["last_fire"]["task_id"], timeout=WAIT_S
            )
            assert (task["operation"], task["state"]) == ("repo.publish", "finished")
        shown = await harness.call("schedule.show", schedule_id=made["id"])
        assert (shown["next_run"], shown["remaining_runs"], shown["enabled"]) == (None, 0, True)
        clock.advance(10 * DAY)
        assert await schedules.fire_due() == 0
        assert len(shown["history"]) == 2


async def test_a_run_behind_a_pending_delete_is_rejected(tmp_path):
    clock = FakeClock(FIRST - 60)
    async with running(tmp_path, clock=clock.now, schedule_clock=clock) as harness:
        await harness.call("repo.create", repo_id="demo")
        made = await harness.call(
            "schedule.create", kind="sync", repo_id="demo", schedule="2026-12-01T02:00Z/P1D"
        )
        holder = harness.client()
        lock = await hold(holder, "demo")
        delete = await harness.call("repo.delete", repo_id="demo")
        assert delete["verdict"] == "postponed"
        # A new schedule could never run: refused as the task itself would be.
        with pytest.raises(Conflict) as caught:
            await harness.call(
                "schedule.create", kind="publish", repo_id="demo", schedule="2026-12-01T02:00Z/P1D"
            )
        assert caught.value.data["conflicts"][0]["task_id"] == delete["task"]["id"]
        clock.advance(60)
        await scheduler(harness).fire_due()
        fire = (await harness.call("schedule.show", schedule_id=made["id"]))["last_fire"]
        assert (fire["outcome"], fire["task_id"]) == ("rejected", None)
        assert delete["task"]["id"] in fire["detail"], fire
        assert fire["detail"].startswith("pending delete: task")
        await holder.call("lock.release", task_id=lock, exit_status=0)
        deleted = await harness.call("task.wait", task_id=delete["task"]["id"], timeout=WAIT_S)
        assert deleted["state"] == "finished"  # and it took the schedule with it
        assert (await harness.call("schedule.list"))["schedules"] == []


async def test_the_configured_orphan_cleanup_is_a_schedule(tmp_path):
    clock = FakeClock(FIRST)
    async with running(
        tmp_path, clock=clock.now, schedule_clock=clock, orphan_cleanup_interval_s=600.0
    ) as harness:
        (configured,) = (await harness.call("schedule.list"))["schedules"]
        assert (configured["id"], configured["kind"], configured["configured"]) == (
            "orphan_cleanup_interval",
            "orphans",
            True,
        )
        assert configured["next_run"] == "2026-12-01T02:10:00Z"
        with pytest.raises(InvalidRequest, match="set by the configuration"):
            await harness.call("schedule.update", schedule_id=configured["id"], enabled=False)
        with pytest.raises(InvalidRequest, match="set by the configuration"):
            await harness.call("schedule.delete", schedule_id=configured["id"])
        clock.advance(600)
        await scheduler(harness).fire_due()
        fire = (await harness.call("schedule.show", schedule_id=configured["id"]))["last_fire"]
        task = await harness.call("task.wait", task_id=fire["task_id"], timeout=WAIT_S)
        assert (task["operation"], task["state"]) == ("content.orphans.remove", "finished")
        assert task["reason"].startswith("schedule orphan_cleanup_interval (orphans ")
        scheduler(harness).configure_orphan_cleanup(0)  # a reload that turns it off
        assert (await harness.call("schedule.list"))["schedules"] == []
