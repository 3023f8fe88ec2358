"""The task API end to end: a real coordd, real ``coordctl run`` clients, kill -9 and restart.

The scenario is the Pulp v2 one: someone holds ``repository demo`` for an update through
``coordctl run``; an update and a delete queue behind it; a further update is rejected because
of the pending delete. Commands run by ``coordctl run`` are small shell loops that the test
releases by creating a file, so nothing waits on a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordctl.client import Client
from coordd.api.errors import Conflict, InvalidState, NotFound
from tests.helpers.daemon import DaemonProcess, wait_for

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
DEMO = {"type": "repository", "id": "demo"}


class Command:
    """A shell command for ``coordctl run`` that the test starts and ends through files."""

    def __init__(self, directory: Path, name: str, status: int = 0) -> None:
        self.started = directory / f"{name}.started"
        self.release = directory / f"{name}.release"
        self.argv = [
            "sh",
            "-c",
            f'echo $$ > "{self.started}"; while [ ! -e "{self.release}" ]; do sleep 0.05; done;'
            f" exit {status}",
        ]

    def pid(self) -> int:
        text = wait_for(lambda: self.started.exists() and self.started.read_text().strip(), "pid")
        return int(text)

    def running(self) -> bool:
        try:
            os.kill(self.pid(), 0)
        except ProcessLookupError:
            return False
        # A zombie has exited too: look at its state.
        with contextlib.suppress(FileNotFoundError):
            if Path(f"/proc/{self.pid()}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return False
        return True

    def finish(self) -> None:
        self.release.touch()


@pytest.fixture
def lock_clients() -> Iterator[list[subprocess.Popen[str]]]:
    """``coordctl run`` processes started by a test; killed at its end if still running."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def coordctl_run(
    daemon: DaemonProcess,
    clients: list[subprocess.Popen[str]],
    resources: list[str],
    command: list[str],
    *options: str,
) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "coordctl", "--socket", str(daemon.socket), "run"]
    for resource in resources:
        argv += ["--resource", resource]
    proc = subprocess.Popen(
        [*argv, *options, "--", *command],
        env=daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    clients.append(proc)
    return proc


def finish_client(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    _, stderr = proc.communicate(timeout=timeout)
    return proc.returncode, stderr


def tasks(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return daemon.call("task.list")["tasks"]


def create_repo(daemon: DaemonProcess, repo_id: str) -> None:
    created = daemon.call("repo.create", repo_id=repo_id)
    assert (
        daemon.call("task.wait", task_id=created["task"]["id"], timeout=10)["state"] == "finished"
    )


def held_lock(daemon: DaemonProcess, command: Command) -> dict[str, Any]:
    """The running lock task once ``command`` has started under it."""
    command.pid()
    locks = [t for t in tasks(daemon) if t["operation"] == "lock" and t["state"] == "running"]
    assert len(locks) == 1, locks
    return locks[0]


def configured(make_daemon: Any, text: str, name: str = "state") -> DaemonProcess:
    daemon: DaemonProcess = make_daemon(name=name)
    daemon.config_file().write_text(text)
    return daemon.start()


# -- the Pulp v2 scenario, through a restart ------------------------------------------------


def test_pulp_scenario_with_an_external_lock_across_kill9(
    make_daemon: Any, tmp_path: Path, lock_clients: list[subprocess.Popen[str]]
) -> None:
    daemon = configured(make_daemon, "[tasks]\nreattach_grace = 20\n")
    create_repo(daemon, "demo")
    hold = Command(tmp_path, "hold")
    client = coordctl_run(daemon, lock_clients, ["repository:demo=update"], hold.argv)
    lock = held_lock(daemon, hold)
    assert lock["resources"] == [{**DEMO, "kind": "update"}]
    assert lock["args"]["command"] == hold.argv
    assert lock["args"]["pid"] == client.pid

    # An update waits for the lock, naming it.
    update = daemon.call("repo.update", repo_id="demo", description="new")
    assert update["verdict"] == "postponed"
    assert update["waiting_for"] == [
        {"reason": "conflict", "resource": DEMO, "operation": "update", "task_id": lock["id"]}
    ]
    update_id = update["task"]["id"]
    # A delete waits too, for the task right ahead of it.
    delete = daemon.call("repo.delete", repo_id="demo")
    assert delete["verdict"] == "postponed"
    assert delete["waiting_for"] == [
        {"reason": "conflict", "resource": DEMO, "operation": "update", "task_id": update_id}
    ]
    delete_id = delete["task"]["id"]
    # A further update could never run: the repository will be gone by then.
    with pytest.raises(Conflict) as rejected:
        daemon.call("repo.update", repo_id="demo", notes="too late")
    assert rejected.value.code == -32001
    assert rejected.value.data == {
        "conflicts": [
            {
                "reason": "pending delete",
                "resource": DEMO,
                "operation": "delete",
                "task_id": delete_id,
            }
        ]
    }
    # Nothing was stored for the rejected request.
    listed = tasks(daemon)
    assert [(t["id"], t["state"]) for t in listed] == [
        (lock["id"], "running"),
        (update_id, "waiting"),
        (delete_id, "waiting"),
    ]
    assert listed[1]["waiting_for"] == update["waiting_for"]

    # Cancel of a waiting task is immediate, and the one behind is re-evaluated.
    canceled = daemon.call("task.cancel", task_id=update_id)
    assert canceled["state"] == "canceled"
    assert canceled["finished"] is not None
    with pytest.raises(InvalidState):
        daemon.call("task.cancel", task_id=update_id)
    assert [t["id"] for t in tasks(daemon)] == [lock["id"], delete_id]

    # task.get: every field docs/design.md §4 lists.
    details = daemon.call("task.get", task_id=delete_id)
    assert details["id"] == delete_id
    assert details["operation"] == "repo.delete"
    assert details["resources"] == [{**DEMO, "kind": "delete"}]
    assert details["args"] == {"repo_id": "demo"}
    assert details["state"] == "waiting"
    assert details["waiting_for"] == [
        {"reason": "conflict", "resource": DEMO, "operation": "update", "task_id": lock["id"]}
    ]
    assert ISO.match(details["submitted"])
    assert details["started"] is None
    assert details["finished"] is None
    assert details["result"] is None
    assert details["error"] is None
    assert details["progress"] == {}
    assert details["uid"] == os.getuid()
    assert details["attempts"] == 0
    assert details["restartable"] is True
    assert details["heavy"] is False
    assert daemon.call("task.get", task_id=update_id)["state"] == "canceled"  # from history

    # task.wait gives up after its timeout and returns the task as it is.
    before = time.monotonic()
    waited = daemon.call("task.wait", task_id=delete_id, timeout=0.3)
    assert time.monotonic() - before >= 0.25
    assert waited["state"] == "waiting"

    status = daemon.call("server.status")
    assert status["tasks"]["running"] == 1
    assert status["tasks"]["waiting"] == 1
    assert status["tasks"]["canceled"] == 1
    assert status["tasks"]["finished"] == 1  # the create
    assert status["slots"]["total"] >= 1
    assert status["slots"]["in_use"] == 0
    assert status["repositories"] == 1

    # kill -9: the queue comes back in order, the lock still held.
    daemon.kill9()
    daemon.start()
    assert [(t["id"], t["state"]) for t in tasks(daemon)] == [
        (lock["id"], "running"),
        (delete_id, "waiting"),
    ]
    assert daemon.call("task.get", task_id=update_id)["state"] == "canceled"
    # The client re-attaches; its command kept running all along.
    assert hold.running()
    assert client.poll() is None
    # When the command ends, the client releases the lock and the delete runs.
    hold.finish()
    status_code, stderr = finish_client(client)
    assert status_code == 0, stderr
    assert "re-attached to task" in stderr
    ended = daemon.call("task.wait", task_id=lock["id"], timeout=10)
    assert ended["state"] == "finished"
    assert ended["result"] == {"exit_status": 0}
    assert daemon.call("task.wait", task_id=delete_id, timeout=10)["state"] == "finished"
    assert daemon.call("repo.list")["repositories"] == []
    assert tasks(daemon) == []


def test_lock_client_that_does_not_come_back_is_withdrawn(
    make_daemon: Any, tmp_path: Path, lock_clients: list[subprocess.Popen[str]]
) -> None:
    daemon = configured(make_daemon, "[tasks]\nreattach_grace = 30\n")
    create_repo(daemon, "demo")
    hold = Command(tmp_path, "hold")
    holder = coordctl_run(daemon, lock_clients, ["repository:demo=update"], hold.argv)
    lock = held_lock(daemon, hold)
    queued = coordctl_run(daemon, lock_clients, ["repository:demo=read"], ["true"])
    wait_for(lambda: len(tasks(daemon)) == 2, "the second lock request")
    update = daemon.call("repo.update", repo_id="demo", description="after")
    assert update["verdict"] == "postponed"

    daemon.kill9()
    for client in (holder, queued):  # the clients die while the daemon is down
        client.send_signal(signal.SIGKILL)
        client.wait()
    wait_for(lambda: not hold.running(), "the command to die with its coordctl")
    daemon.config_file().write_text("[tasks]\nreattach_grace = 2\n")
    started = time.monotonic()
    daemon.start()
    assert [t["state"] for t in tasks(daemon)] == ["running", "waiting", "waiting"]

    withdrawn = daemon.call("task.wait", task_id=lock["id"], timeout=15)
    assert time.monotonic() - started >= 1.8
    assert withdrawn["state"] == "error"
    assert "did not re-attach" in withdrawn["error"]["message"]
    # The update behind runs; the abandoned read request ended one way or the other.
    assert daemon.call("task.wait", task_id=update["task"]["id"], timeout=15)["state"] == "finished"
    wait_for(lambda: tasks(daemon) == [], "the queue to empty")


# -- coordctl run --------------------------------------------------------------------------


def test_cancel_of_a_running_lock_stops_the_command(
    daemon: DaemonProcess, tmp_path: Path, lock_clients: list[subprocess.Popen[str]]
) -> None:
    command = Command(tmp_path, "cancel")
    client = coordctl_run(daemon, lock_clients, ["service:web=update"], command.argv)
    lock = held_lock(daemon, command)
    behind = daemon.call(
        "lock.acquire",
        resources=[{"type": "service", "id": "web", "kind": "read"}],
        command=["true"],
        wait=False,
    )
    assert behind["task"] is None  # --no-wait style: busy, nothing queued
    assert behind["waiting_for"][0]["task_id"] == lock["id"]

    asked = daemon.call("task.cancel", task_id=lock["id"])
    assert asked["state"] == "running"  # cooperative: asked to stop
    assert asked["cancel_requested"] is True
    status, stderr = finish_client(client)
    assert status == 128 + signal.SIGTERM  # the shell loop died of the SIGTERM
    assert "canceled" in stderr
    assert not command.running()
    ended = daemon.call("task.wait", task_id=lock["id"], timeout=10)
    assert ended["state"] == "canceled"
    assert ended["error"]["message"] == "canceled"
    assert ended["result"] == {"exit_status": status}
    assert tasks(daemon) == []


def test_no_wait_on_a_busy_resource_exits_75_and_queues_nothing(
    daemon: DaemonProcess, tmp_path: Path, lock_clients: list[subprocess.Popen[str]]
) -> None:
    command = Command(tmp_path, "busy")
    holder = coordctl_run(daemon, lock_clients, ["db:main=update"], command.argv)
    lock = held_lock(daemon, command)
    before = daemon.call("server.status")["tasks"]
    marker = tmp_path / "ran"
    blocked = coordctl_run(
        daemon, lock_clients, ["db:main=read"], ["touch", str(marker)], "--no-wait"
    )
    status, stderr = finish_client(blocked)
    assert status == 75, stderr
    assert "busy" in stderr
    assert lock["id"] in stderr
    assert not marker.exists()
    assert daemon.call("server.status")["tasks"] == before
    assert [t["id"] for t in tasks(daemon)] == [lock["id"]]
    # On a free resource --no-wait simply runs.
    free = coordctl_run(
        daemon, lock_clients, ["db:other=read"], ["touch", str(marker)], "--no-wait"
    )
    assert finish_client(free)[0] == 0
    assert marker.exists()
    command.finish()
    assert finish_client(holder)[0] == 0


@pytest.mark.parametrize("status", [0, 3, 7])
def test_run_exits_with_the_command_status(
    daemon: DaemonProcess, lock_clients: list[subprocess.Popen[str]], status: int
) -> None:
    client = coordctl_run(
        daemon, lock_clients, ["job:nightly=update"], ["sh", "-c", f"exit {status}"]
    )
    code, stderr = finish_client(client)
    assert code == status, stderr
    ended = daemon.call("task.list", state=["finished", "error"])["tasks"][0]
    assert ended["operation"] == "lock"
    assert ended["result"] == ({"exit_status": 0} if status == 0 else None)
    if status:
        assert ended["state"] == "error"
        assert ended["error"]["message"] == f"the command exited with status {status}"
    else:
        assert ended["state"] == "finished"


def test_run_of_a_missing_command_exits_127(
    daemon: DaemonProcess, lock_clients: list[subprocess.Popen[str]]
) -> None:
    client = coordctl_run(daemon, lock_clients, ["job:x=update"], ["/nonexistent/command"])
    code, stderr = finish_client(client)
    assert code == 127
    assert "/nonexistent/command" in stderr
    wait_for(lambda: tasks(daemon) == [], "the lock to be released")


# -- events ------------------------------------------------------------------------------


def changes(client: Client, task_id: str, until: str, timeout: float = 10) -> list[str]:
    """The states ``task.changed`` reports for ``task_id`` until one equals ``until``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1] != until:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {until!r} event for {task_id}; saw {seen}"
        event = client.next_notification(remaining)
        if event is None:
            continue
        assert event["method"] in ("task.changed", "task.progress")
        if event["method"] == "task.changed" and event["params"]["task"]["id"] == task_id:
            seen.append(event["params"]["task"]["state"])
    return seen


def test_events_report_state_changes(
    daemon: DaemonProcess, tmp_path: Path, lock_clients: list[subprocess.Popen[str]]
) -> None:
    create_repo(daemon, "demo")
    command = Command(tmp_path, "events")
    holder = coordctl_run(daemon, lock_clients, ["repository:demo=update"], command.argv)
    lock = held_lock(daemon, command)
    with daemon.client() as everything, daemon.client() as selective:
        assert everything.call("events.subscribe") == {"subscribed": ["*"]}
        update = daemon.call("repo.update", repo_id="demo", notes="n")
        update_id = update["task"]["id"]
        other = daemon.call("repo.update", repo_id="demo", notes="m")
        assert selective.call("events.subscribe", task_ids=[update_id]) == {
            "subscribed": [update_id]
        }
        assert changes(everything, update_id, "waiting") == ["waiting"]
        command.finish()
        assert finish_client(holder)[0] == 0
        assert changes(everything, lock["id"], "finished")[-1] == "finished"
        assert changes(everything, update_id, "finished") == ["running", "finished"]
        assert changes(everything, other["task"]["id"], "finished")[-2:] == ["running", "finished"]
        # The selective subscriber heard of its task only.
        assert changes(selective, update_id, "finished") == ["running", "finished"]
        while (event := selective.next_notification(0.2)) is not None:
            assert event["params"]["task"]["id"] == update_id
        # After unsubscribing, nothing more arrives.
        assert everything.call("events.unsubscribe") == {"subscribed": []}
        create = daemon.call("repo.create", repo_id="quiet")
        daemon.call("task.wait", task_id=create["task"]["id"], timeout=10)
        assert everything.call("server.status")  # a round trip after the task ended
        assert everything.next_notification(0.2) is None


# -- retention -------------------------------------------------------------------------------


def test_ended_tasks_are_purged_after_the_retention(make_daemon):
    daemon = configured(make_daemon, '[tasks]\nretention = "1s"\n')
    create_repo(daemon, "old")
    old = daemon.call("task.list", repo_id="old", state="all")["tasks"]
    assert [t["operation"] for t in old] == ["repo.create"]

    def purged() -> bool:
        return not daemon.call("task.list", repo_id="old", state="all")["tasks"]

    wait_for(purged, what="the ended task to be purged", timeout=15)
    with pytest.raises(NotFound):
        daemon.call("task.get", task_id=old[0]["id"])
    assert daemon.call("server.status")["tasks"]["finished"] == 0
    assert daemon.call("repo.show", repo_id="old")["id"] == "old"  # the repository stays
    # Nothing of it is left behind in the database, the per-resource index included.
    with contextlib.closing(sqlite3.connect(daemon.state_dir / "coordd.db")) as db:
        assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM task_resources").fetchone() == (0,)
