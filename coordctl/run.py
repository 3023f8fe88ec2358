"""``coordctl run``: hold resources in coordd's queue while a local command runs.

The protocol (see coordd-api(7), "External locks"):

1. ``lock.acquire`` submits a task on the named resources. Rejected: print why, exit
   REJECTED. Postponed with ``--no-wait``: nothing is queued; exit POSTPONED.
2. Wait for ``lock.granted``. Leaving before that (Ctrl-C, or this process dying) withdraws
   the request: the daemon sees the connection close.
3. Run the command. Its exit releases the lock (``lock.release`` with the status) and becomes
   ours. The command dies with us (``PR_SET_PDEATHSIG``), so a lock released because this
   client died never leaves a second holder running.
4. ``lock.cancel`` (someone cancelled the task): SIGTERM the command, then SIGKILL after
   ``KILL_AFTER_S``; ``lock.revoked`` (the daemon's grace ran out): SIGKILL at once.
5. The daemon restarting drops the connection: reconnect and ``lock.attach`` until the
   re-attach grace is nearly over; if that fails while the command runs, stop the command —
   the daemon will withdraw the lock when its grace ends, and nobody may hold it twice.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from coordctl import exitcodes
from coordctl.client import Client, NotReachable
from coordd.api import names
from coordd.api.errors import Conflict, CoorddError, ProtocolError

KILL_AFTER_S = 5.0
POLL_S = 0.2
GIVE_UP_FRACTION = 0.8  # re-attach attempts stop at this share of the daemon's grace
PR_SET_PDEATHSIG = 1


class LockLost(Exception):
    """The lock could not be re-attached after the daemon went away."""


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if coordctl dies, so no orphan holds the lock."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _say(message: str) -> None:
    print(f"coordctl run: {message}", file=sys.stderr, flush=True)


def _describe(blockers: list[dict[str, Any]]) -> str:
    parts = []
    for blocker in blockers:
        res = blocker.get("resource")
        if res is None:
            parts.append(blocker.get("reason", "server busy"))
        else:
            parts.append(
                f"{res['type']} - {res['id']} ({blocker.get('operation')}, "
                f"task {blocker.get('task_id')})"
            )
    return "; ".join(parts)


class LockSession:
    """One lock task seen from the client, across reconnections."""

    def __init__(self, socket_path: Path | None, json_output: bool) -> None:
        self.socket_path = socket_path
        self.json_output = json_output
        self.client: Client | None = None
        self.task_id: str | None = None
        self.grace = 30.0

    def connect(self) -> Client:
        self.client = Client(self.socket_path, timeout=30.0).connect()
        return self.client

    def acquire(self, resources: list[dict[str, str]], command: list[str], wait: bool) -> Any:
        client = self.connect()
        result = client.call(
            "lock.acquire",
            {
                "resources": resources,
                "command": command,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "wait": wait,
            },
        )
        if result.get("task"):
            self.task_id = result["task"]["id"]
        self.grace = float(result.get("reattach_grace_s", self.grace))
        return result

    def reattach(self) -> dict[str, Any]:
        """Reconnect and attach again; raise ``LockLost`` when the grace runs out."""
        deadline = time.monotonic() + self.grace * GIVE_UP_FRACTION
        _say("lost the connection to coordd; re-attaching")
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                client = self.connect()
                task: dict[str, Any] = client.call("lock.attach", {"task_id": self.task_id})
                _say(f"re-attached to task {self.task_id} ({task['state']})")
                return task
            except NotReachable as exc:
                last = exc.reason
            except ProtocolError as exc:
                # Not an answer: the dying daemon's socket took the connection, or the new
                # one is still starting. Try again.
                last = exc.message
            except CoorddError as exc:
                raise LockLost(exc.message) from exc
            time.sleep(0.2)
        raise LockLost(f"coordd did not come back in time ({last})")

    def next_event(self, timeout: float) -> dict[str, Any] | None:
        assert self.client is not None
        return self.client.next_notification(timeout)

    def release(self, status: int | None) -> None:
        for _ in range(2):
            try:
                assert self.client is not None
                self.client.call("lock.release", {"task_id": self.task_id, "exit_status": status})
                return
            except ProtocolError:
                try:
                    self.reattach()
                except LockLost:
                    return
            except CoorddError:
                return


def run_locked(
    socket_path: Path | str | None,
    resources: list[dict[str, str]],
    command: list[str],
    *,
    wait: bool = True,
    json_output: bool = False,
) -> int:
    """Acquire, run ``command`` while holding the resources, release; return the status."""
    session = LockSession(Path(socket_path) if socket_path else None, json_output)
    try:
        result = session.acquire(resources, command, wait)
    except Conflict as exc:
        conflicts = (exc.data or {}).get("conflicts", [])
        if json_output:
            print(json.dumps({"error": exc.to_json()}))
        else:
            _say(f"rejected: {exc.message}: {_describe(conflicts)}")
        return exitcodes.REJECTED
    except CoorddError as exc:
        if json_output:
            print(json.dumps({"error": exc.to_json()}))
        else:
            _say(exc.message)
        return exitcodes.for_error(exc)
    if result["task"] is None:
        if not json_output:
            _say(f"resources busy, not waiting: {_describe(result['waiting_for'])}")
        else:
            print(json.dumps(result))
        return exitcodes.POSTPONED
    if result["verdict"] == "postponed" and not json_output:
        _say(f"postponed behind {_describe(result['waiting_for'])}; task {session.task_id}")
    try:
        if not _wait_for_grant(session):
            return exitcodes.CANCELED
    except KeyboardInterrupt:
        _say(f"interrupted; request {session.task_id} withdrawn")
        return exitcodes.INTERRUPTED
    except LockLost as exc:
        _say(f"lost the request: {exc}")
        return exitcodes.UNAVAILABLE
    return _run_holding(session, command)


def _wait_for_grant(session: LockSession) -> bool:
    """Block until ``lock.granted``; False if the request was cancelled meanwhile."""
    while True:
        try:
            event = session.next_event(60.0)
        except ProtocolError:
            task = session.reattach()
            if task["state"] == names.RUNNING:
                return True
            continue
        if event is None:
            continue
        method = event.get("method")
        if method == "lock.granted":
            session.grace = float(event["params"].get("reattach_grace_s", session.grace))
            return True
        if method in ("lock.cancel", "lock.revoked"):
            _say(f"request {session.task_id} was canceled before it was granted")
            return False


def _run_holding(session: LockSession, command: list[str]) -> int:
    try:
        child = subprocess.Popen(command, preexec_fn=_die_with_parent)
    except OSError as exc:
        _say(f"cannot run {command[0]}: {exc.strerror}")
        session.release(127)
        return 127
    forwarded = _forward_signals(child)
    kill_at: float | None = None
    try:
        while True:
            status = child.poll()
            if status is not None:
                break
            if kill_at is not None and time.monotonic() >= kill_at:
                child.kill()
            try:
                event = _poll_event(session)
            except ProtocolError:
                try:
                    session.reattach()
                except LockLost as exc:
                    _say(f"lost the lock ({exc}); stopping the command")
                    _stop(child)
                    return exitcodes.UNAVAILABLE
                continue
            if event is None:
                continue
            method = event.get("method")
            if method == "lock.cancel":
                _say("the task was canceled; stopping the command")
                child.terminate()
                kill_at = time.monotonic() + KILL_AFTER_S
            elif method == "lock.revoked":
                _say("the lock was revoked; killing the command")
                child.kill()
    finally:
        for signum, previous in forwarded.items():
            signal.signal(signum, previous)
    code = status if status >= 0 else 128 - status
    session.release(code)
    return code


def _poll_event(session: LockSession) -> dict[str, Any] | None:
    client = session.client
    assert client is not None
    if client.notifications:
        return client.notifications.popleft()
    ready, _, _ = select.select([client.fileno()], [], [], POLL_S)
    if not ready:
        return None
    return client.next_notification(0.5)


def _stop(child: subprocess.Popen[bytes]) -> None:
    child.terminate()
    try:
        child.wait(KILL_AFTER_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _forward_signals(child: subprocess.Popen[bytes]) -> dict[int, Any]:
    """SIGTERM/SIGHUP/SIGINT to coordctl go to the command; we stay to release the lock."""
    previous: dict[int, Any] = {}

    def forward(signum: int, _frame: Any) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        previous[signum] = signal.signal(signum, forward)
    return previous
