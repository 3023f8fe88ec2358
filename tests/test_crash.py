"""kill -9 of the daemon while clients submit: what was acknowledged survives, in order.

docs/design.md §5: a request is answered only after the transaction storing it committed. So after
any crash, every task a client got an answer for is in the database: waiting ones back in
their original order, ended ones in the history. Requests that got no answer may or may not
be there. The database file passes ``PRAGMA integrity_check`` after every crash.
"""

from __future__ import annotations

import random
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordctl.client import Client
from coordd.api.errors import CoorddError
from tests.helpers.daemon import DaemonProcess, wait_for

ROUNDS = 20
PER_THREAD = 12  # submissions per thread per round, at most
HELD = "held"
EXIT_RUNNING = 75  # coordd.service.main.EXIT_RUNNING (EX_TEMPFAIL), as documented in coordd(8)


def integrity(db: Path) -> str:
    """``PRAGMA integrity_check`` through a separate, read-only connection."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


@dataclass
class Ack:
    task_id: str
    kind: str  # "create" or "update"
    thread: int
    sent: float
    acked: float
    verdict: str
    repo_id: str


class Submitter(threading.Thread):
    """Submits tasks on its own connection until the daemon goes away; records each answer."""

    def __init__(self, daemon: DaemonProcess, index: int, kind: str, label: str) -> None:
        super().__init__(daemon=True)
        self.socket = daemon.socket
        self.index = index
        self.kind = kind
        self.label = label
        self.acks: list[Ack] = []

    def run(self) -> None:
        try:
            with Client(self.socket, timeout=10) as client:
                for i in range(PER_THREAD):
                    if self.kind == "create":
                        repo_id = f"c-{self.label}-{self.index}-{i}"
                        method, params = "repo.create", {"repo_id": repo_id}
                    else:
                        repo_id = HELD
                        method, params = "repo.update", {"repo_id": HELD, "notes": f"{i}"}
                    sent = time.monotonic()
                    result = client.call(method, params)
                    self.acks.append(
                        Ack(
                            result["task"]["id"],
                            self.kind,
                            self.index,
                            sent,
                            time.monotonic(),
                            result["verdict"],
                            repo_id,
                        )
                    )
        except (CoorddError, OSError):
            return  # the daemon was killed under us


class LockHolder:
    """Holds ``repository held`` for the whole test, re-attaching after each restart."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.daemon = daemon
        self.client = daemon.client()
        result = self.client.call(
            "lock.acquire", resources=[{"type": "repository", "id": HELD, "kind": "update"}]
        )
        assert result["verdict"] == "accepted"
        self.task_id: str = result["task"]["id"]

    def reattach(self) -> None:
        self.client.close()
        self.client = self.daemon.client()
        task = self.client.call("lock.attach", task_id=self.task_id)
        assert task["state"] == "running"

    def close(self) -> None:
        self.client.close()


def check_order(acks: list[Ack], position: dict[str, int]) -> None:
    """A task acknowledged before another was sent stands ahead of it in the queue."""
    by_ack = sorted(acks, key=lambda a: a.acked)
    done = 0
    furthest: Ack | None = None
    for ack in sorted(acks, key=lambda a: a.sent):
        while done < len(by_ack) and by_ack[done].acked < ack.sent:
            earlier = by_ack[done]
            if furthest is None or position[earlier.task_id] > position[furthest.task_id]:
                furthest = earlier
            done += 1
        if furthest is not None:
            assert position[furthest.task_id] < position[ack.task_id], (
                f"{furthest.task_id} was acknowledged before {ack.task_id} was sent, "
                "yet stands behind it"
            )


@pytest.fixture
def crashing(make_daemon: Any) -> DaemonProcess:
    daemon: DaemonProcess = make_daemon(name="crash")
    daemon.config_file().write_text("[tasks]\nreattach_grace = 60\n")
    return daemon.start()


def test_acknowledged_tasks_survive_kill9(crashing: DaemonProcess) -> None:
    daemon = crashing
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    db = daemon.state_dir / "coordd.db"
    created = daemon.call("repo.create", repo_id=HELD)
    assert (
        daemon.call("task.wait", task_id=created["task"]["id"], timeout=10)["state"] == "finished"
    )
    holder = LockHolder(daemon)
    acks: list[Ack] = []
    try:
        for round_number in range(ROUNDS):
            label = f"{round_number}"
            threads = [
                Submitter(daemon, 0, "create", label),
                Submitter(daemon, 1, "update", label),
                Submitter(daemon, 2, "update", label),
            ]
            for thread in threads:
                thread.start()
            # Kill at a random moment while they submit (after the first answer, so that
            # every round has something to check).
            wait_for(lambda: any(t.acks for t in threads), "a first answer")  # noqa: B023
            time.sleep(rng.uniform(0, 0.03))
            daemon.kill9()
            for thread in threads:
                thread.join(15)
                assert not thread.is_alive()
                acks += thread.acks
            assert integrity(db) == "ok", f"seed {seed}, round {round_number}"

            daemon.start()
            holder.reattach()
            check_after_restart(daemon, holder.task_id, acks, f"seed {seed}, round {round_number}")
    finally:
        holder.close()
    assert daemon.stop() == 0
    assert integrity(db) == "ok"
    assert sum(a.kind == "update" for a in acks) >= ROUNDS


def check_after_restart(daemon: DaemonProcess, lock_id: str, acks: list[Ack], where: str) -> None:
    listed = daemon.call("task.list", limit=10_000)["tasks"]
    ids = [t["id"] for t in listed]
    assert len(ids) == len(set(ids)), where
    assert listed[0]["id"] == lock_id, where
    assert listed[0]["state"] == "running", where
    for task in listed[1:]:  # nothing else runs: the held lock blocks the updates
        assert task["state"] == "waiting", (where, task)
        assert task["operation"] == "repo.update", (where, task)
    position = {task_id: i for i, task_id in enumerate(ids)}
    updates = [a for a in acks if a.kind == "update"]
    missing = [a.task_id for a in updates if a.task_id not in position]
    assert not missing, f"{where}: acknowledged and lost: {missing}"
    assert all(a.verdict == "postponed" for a in updates)
    check_order(updates, position)

    status = daemon.call("server.status")
    assert status["tasks"]["running"] == 1, where
    assert status["tasks"]["waiting"] == len(listed) - 1, where

    repos = {r["id"] for r in daemon.call("repo.list")["repositories"]}
    with daemon.client() as client:
        for ack in (a for a in acks if a.kind == "create"):
            task = client.call("task.get", task_id=ack.task_id)
            assert task["state"] in ("finished", "error"), (where, task)
            if task["state"] == "error":
                # Killed while it ran: not restartable, so interrupted (never canceled),
                # and its change is not half there.
                assert task["error"]["message"] == "interrupted", (where, task)
                assert ack.repo_id not in repos, (where, task)
            else:
                assert ack.repo_id in repos, (where, task)


# -- a task running at the crash ---------------------------------------------------------


@pytest.fixture
def silent_feed() -> Iterator[str]:
    """An HTTP "server" that accepts connections and never answers: a sync hangs on it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # the kernel completes handshakes; nobody ever reads or answers
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/repo/"
    finally:
        listener.close()


def test_running_task_is_rerun_then_interrupted_never_canceled(
    make_daemon: Any, silent_feed: str
) -> None:
    daemon: DaemonProcess = make_daemon(name="interrupted")
    daemon.config_file().write_text("[tasks]\nmax_attempts = 2\n")
    daemon.start()
    created = daemon.call("repo.create", repo_id="slow", importer={"feed": silent_feed})
    assert (
        daemon.call("task.wait", task_id=created["task"]["id"], timeout=10)["state"] == "finished"
    )
    sync = daemon.call("repo.sync", repo_id="slow")
    assert sync["verdict"] == "accepted"
    sync_id = sync["task"]["id"]
    assert daemon.call("task.get", task_id=sync_id)["state"] == "running"
    assert daemon.call("server.status")["slots"]["in_use"] == 1
    behind = daemon.call("repo.update", repo_id="slow", notes="after the sync")
    assert behind["verdict"] == "postponed"

    # Restartable, with an attempt left: it runs again after the crash, in its place.
    daemon.kill9()
    daemon.start()
    again = wait_for(
        lambda: (
            (t := daemon.call("task.get", task_id=sync_id))["state"] == "running"
            and t["attempts"] == 2
            and t
        ),
        "the sync to run again",
    )
    assert again["error"] is None
    assert [t["id"] for t in daemon.call("task.list")["tasks"]] == [sync_id, behind["task"]["id"]]

    # Out of attempts: interrupted, an error, and never "canceled".
    daemon.kill9()
    daemon.start()
    ended = daemon.call("task.get", task_id=sync_id)
    assert ended["state"] == "error"
    assert ended["error"]["message"] == "interrupted"
    assert ended["attempts"] == 2
    assert ended["cancel_requested"] is False
    # The task behind it runs now.
    done = daemon.call("task.wait", task_id=behind["task"]["id"], timeout=10)
    assert done["state"] == "finished"
    status = daemon.call("server.status")
    assert status["tasks"]["canceled"] == 0
    assert status["slots"]["in_use"] == 0


# -- one daemon per state directory and socket -------------------------------------------


def test_second_daemon_on_the_same_state_refuses_to_start(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None
    second = DaemonProcess(daemon.state_dir)  # another socket, the same state
    try:
        log_start = len(daemon.log_text())
        second.start(wait=False)
        assert second.proc is not None
        assert second.proc.wait(20) == EXIT_RUNNING
        message = second.log_text()[log_start:]
        assert f"another coordd is running on state {daemon.state_dir}" in message
        assert f"pid {daemon.proc.pid}" in message
        assert str(daemon.socket) in message
    finally:
        second.cleanup()
    assert daemon.call("server.status")["stopping"] is False


def test_second_daemon_on_the_same_socket_refuses_to_start(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    second = DaemonProcess(tmp_path / "other-state")
    second.socket = daemon.socket  # another state, the same socket
    try:
        second.start(wait=False)
        assert second.proc is not None
        assert second.proc.wait(20) == EXIT_RUNNING
        assert f"another coordd is serving {daemon.socket}" in second.log_text()
    finally:
        second.cleanup()
    # The first one still owns its socket (the second did not remove or replace it).
    assert daemon.socket.exists()
    assert daemon.call("server.status")["stopping"] is False
