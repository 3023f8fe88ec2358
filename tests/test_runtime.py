"""The runtime and the method table in process (tests/helpers/harness.py): a real store on a
real SQLite file, the daemon's own wiring, no subprocess and no socket."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from coordd.api.errors import Conflict, NotFound, PermissionDenied
from coordd.engine.coordinator import Claim, Resource
from coordd.engine.operations import Operation, TaskContext
from tests.helpers.harness import READ, Client, Harness, running

pytestmark = pytest.mark.anyio

WAIT_S = 5.0  # a bound on what should happen within milliseconds


async def until(condition: Callable[[], Any], what: str) -> Any:
    """Let the event loop run until ``condition`` is true; fail naming ``what``."""
    with anyio.move_on_after(WAIT_S):
        while not (value := condition()):
            await anyio.sleep(0.001)
        return value
    raise AssertionError(f"timed out waiting for {what}")


def lock_on(repo_id: str, kind: str) -> list[dict[str, str]]:
    return [{"type": "repository", "id": repo_id, "kind": kind}]


async def hold(client: Client, repo_id: str = "demo", kind: str = "update") -> str:
    """An external lock on ``repository repo_id``, granted to ``client``; its task id."""
    answer = await client.call("lock.acquire", resources=lock_on(repo_id, kind), command=["x"])
    task_id = answer["task"]["id"]
    await until(
        lambda: any(n["task_id"] == task_id for n in client.notified("lock.granted")),
        f"lock {task_id} granted",
    )
    return str(task_id)


async def create(harness: Harness, repo_id: str = "demo") -> dict[str, Any]:
    answer = await harness.call("repo.create", repo_id=repo_id)
    assert answer["verdict"] == "accepted"
    return dict(answer["task"])


def stored_state(state_dir: Path, task_id: str) -> str:
    """The task's state as committed to the file, read by a connection of our own."""
    db = sqlite3.connect(state_dir / "coordd.db")
    try:
        return str(db.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()[0])
    finally:
        db.close()


def blocking(name: str, *, restartable: bool, gate: anyio.Event | None = None) -> Operation:
    """A stand-in for a long task on ``repository x``: it runs until ``gate`` is set."""

    async def run(ctx: TaskContext) -> dict[str, Any]:
        if gate is None:
            await anyio.sleep_forever()
        else:
            await gate.wait()
        return {"attempt": ctx.task.attempts, "resumed": ctx.resumed}

    return Operation(
        name,
        "wait for the test",
        lambda args: (Claim(Resource("test", "x"), "update"),),
        run,
        restartable=restartable,
    )


# -- decisions through the method table -------------------------------------------------------


async def test_accepted_apply_task_ends_in_its_submission(tmp_path):
    async with running(tmp_path) as harness:
        task = await create(harness)
        assert task["state"] == "finished"
        assert task["attempts"] == 1
        shown = await harness.call("repo.show", repo_id="demo")
        assert shown["id"] == "demo"
        assert stored_state(tmp_path, task["id"]) == "finished"


async def test_postponed_behind_a_lock_then_run_when_released(tmp_path):
    async with running(tmp_path) as harness:
        await create(harness)
        holder = harness.client()
        lock_id = await hold(holder)
        update = await harness.call("repo.update", repo_id="demo", description="new")
        assert update["verdict"] == "postponed"
        assert update["waiting_for"] == [
            {
                "reason": "conflict",
                "resource": {"type": "repository", "id": "demo"},
                "operation": "update",
                "task_id": lock_id,
            }
        ]
        assert update["task"]["state"] == "waiting"
        released = await holder.call("lock.release", task_id=lock_id, exit_status=0)
        assert released["state"] == "finished"
        ended = await harness.call("task.wait", task_id=update["task"]["id"], timeout=WAIT_S)
        assert ended["state"] == "finished"
        shown = await harness.call("repo.show", repo_id="demo")
        assert shown["description"] == "new"


async def test_rejected_stores_nothing(tmp_path):
    async with running(tmp_path) as harness:
        with pytest.raises(Conflict) as rejected:
            await harness.call("repo.sync", repo_id="nowhere")
        assert rejected.value.data["conflicts"][0]["resource"] == {
            "type": "repository",
            "id": "nowhere",
        }
        assert (await harness.call("task.list", state="all"))["tasks"] == []
        assert harness.runtime.status()["tasks"]["waiting"] == 0


async def test_read_only_caller_may_not_submit(tmp_path):
    async with running(tmp_path) as harness:
        reader = harness.client(uid=2000, access=READ)
        with pytest.raises(PermissionDenied):
            await reader.call("repo.create", repo_id="demo")
        assert (await reader.call("server.status"))["caller"] == {"uid": 2000, "access": ["read"]}


async def test_cancel_of_a_waiting_delete_lets_a_rejected_request_in(tmp_path):
    async with running(tmp_path) as harness:
        await create(harness)
        holder = harness.client()
        await hold(holder, kind="read")
        delete = await harness.call("repo.delete", repo_id="demo")
        assert delete["verdict"] == "postponed"
        with pytest.raises(Conflict):
            await harness.call("repo.sync", repo_id="demo")  # behind the pending delete
        canceled = await harness.call("task.cancel", task_id=delete["task"]["id"])
        assert canceled["state"] == "canceled"
        sync = await harness.call("repo.sync", repo_id="demo")
        assert sync["verdict"] == "postponed"  # behind the read lock, no longer rejected


async def test_cancel_of_a_waiting_task_starts_those_behind_it(tmp_path):
    async with running(tmp_path) as harness:
        first, second, third = harness.client(), harness.client(), harness.client()
        thing = [{"type": "thing", "id": "x", "kind": "read"}]
        await first.call("lock.acquire", resources=thing)
        update = await second.call("lock.acquire", resources=[{**thing[0], "kind": "update"}])
        assert update["verdict"] == "postponed"
        read = await third.call("lock.acquire", resources=thing)
        assert read["verdict"] == "postponed"  # a read behind a waiting update waits
        assert read["waiting_for"][0]["task_id"] == update["task"]["id"]
        await harness.call("task.cancel", task_id=update["task"]["id"])
        await until(lambda: third.notified("lock.granted"), "the second read granted")
        shown = await harness.call("task.get", task_id=read["task"]["id"])
        assert shown["state"] == "running"
        assert second.notified("lock.granted") == []


# -- durability --------------------------------------------------------------------------------


async def test_an_end_is_shown_only_once_committed(tmp_path):
    seen: list[tuple[str, str, str]] = []

    def on_event(method: str, params: dict[str, Any]) -> None:
        if method == "task.changed" and params["task"]["state"] in ("finished", "canceled"):
            task = params["task"]
            seen.append((task["id"], task["state"], stored_state(tmp_path, task["id"])))

    async with running(tmp_path) as harness:
        harness.runtime.subscribe(on_event)
        created = await create(harness)
        holder = harness.client()
        lock_id = await hold(holder)
        waiting = await harness.call("repo.update", repo_id="demo", notes="n")
        await harness.call("task.cancel", task_id=waiting["task"]["id"])
        await holder.call("lock.release", task_id=lock_id, exit_status=0)
    assert seen == [
        (created["id"], "finished", "finished"),
        (waiting["task"]["id"], "canceled", "canceled"),
        (lock_id, "finished", "finished"),
    ]


async def test_history_and_counts_come_back_after_a_restart(tmp_path):
    async with running(tmp_path) as harness:
        created = await create(harness)
        with pytest.raises(NotFound):
            await harness.call("task.get", task_id="0" * 32)
    async with running(tmp_path) as harness:
        assert harness.runtime.recent == {}  # so this comes from the file
        again = await harness.call("task.get", task_id=created["id"])
        assert again["state"] == "finished"
        assert again["result"] == {"repo_id": "demo"}
        listed = await harness.call("task.list", repo_id="demo", state="finished")
        assert [t["id"] for t in listed["tasks"]] == [created["id"]]
        assert harness.runtime.status()["tasks"]["finished"] == 1


# -- recovery ----------------------------------------------------------------------------------


async def test_restart_keeps_the_waiting_order(tmp_path):
    async with running(tmp_path) as harness:
        await create(harness)
        lock_id = await hold(harness.client())
        waiting = []
        for notes in ("a", "b", "c"):
            answer = await harness.call("repo.update", repo_id="demo", notes=notes)
            waiting.append(answer["task"]["id"])
        sync = await harness.call("repo.publish", repo_id="demo")
        waiting.append(sync["task"]["id"])
    async with running(tmp_path) as harness:
        listed = await harness.call("task.list", repo_id="demo")
        assert [(t["id"], t["state"]) for t in listed["tasks"]] == [
            (lock_id, "running"),  # held: its client re-attaches
            *((task_id, "waiting") for task_id in waiting),
        ]
        assert [t.id for t in harness.runtime.incomplete()] == [lock_id, *waiting]


async def test_restart_reruns_a_restartable_running_task(tmp_path):
    async with running(tmp_path, operations=[blocking("test.block", restartable=True)]) as harness:
        first = await harness.call("task.list")  # nothing yet
        assert first["tasks"] == []
        task, _ = await harness.runtime.submit("test.block", {}, 1000)
        assert task.state == "running"
    gate = anyio.Event()
    gate.set()
    op = blocking("test.block", restartable=True, gate=gate)
    async with running(tmp_path, operations=[op]) as harness:
        ended = await harness.call("task.wait", task_id=task.id, timeout=WAIT_S)
        assert ended["state"] == "finished"
        assert ended["attempts"] == 2
        assert ended["result"] == {"attempt": 2, "resumed": True}


async def test_restart_ends_a_non_restartable_running_task_interrupted(tmp_path):
    op = blocking("test.once", restartable=False)
    async with running(tmp_path, operations=[op]) as harness:
        task, _ = await harness.runtime.submit("test.once", {}, 1000)
    async with running(tmp_path, operations=[op]) as harness:
        ended = await harness.call("task.get", task_id=task.id)
        assert ended["state"] == "error"
        assert ended["error"] == {"message": "interrupted", "detail": None}
        assert stored_state(tmp_path, task.id) == "error"


async def test_restart_after_the_last_attempt_ends_interrupted(tmp_path):
    op = blocking("test.block", restartable=True)
    async with running(tmp_path, operations=[op], max_attempts=1) as harness:
        task, _ = await harness.runtime.submit("test.block", {}, 1000)
    async with running(tmp_path, operations=[op], max_attempts=1) as harness:
        ended = await harness.call("task.get", task_id=task.id)
        assert (ended["state"], ended["attempts"]) == ("error", 1)
        assert ended["error"]["message"] == "interrupted"


# -- retention ---------------------------------------------------------------------------------


async def test_purge_drops_what_ended_before_the_retention(tmp_path):
    now = [1_000_000.0]
    async with running(tmp_path, clock=lambda: now[0], retention_s=60.0) as harness:
        old = await create(harness, "old")
        now[0] += 50
        young = await create(harness, "young")
        assert await harness.runtime.purge() == 0
        now[0] += 20  # old ended 70 s ago, young 20 s ago
        assert await harness.runtime.purge() == 1
        with pytest.raises(NotFound):
            await harness.call("task.get", task_id=old["id"])
        assert (await harness.call("task.get", task_id=young["id"]))["state"] == "finished"
        assert harness.runtime.status()["tasks"]["finished"] == 1
    async with running(tmp_path, clock=lambda: now[0], retention_s=60.0) as harness:
        with pytest.raises(NotFound):
            await harness.call("task.get", task_id=old["id"])
        listed = await harness.call("task.list", state="finished")
        assert [t["id"] for t in listed["tasks"]] == [young["id"]]
