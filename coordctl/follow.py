"""Following a task to its end (``--wait``): events, not polling.

The client subscribes to the task's events on its connection (``events.subscribe`` with
``task_ids``), then reads the task once, so an end that happened between the submission and
the subscription is not missed. From then on ``task.changed`` notifications carry the whole
task and ``task.progress`` its report; a progress line is redrawn as they arrive. A slow
``task.get`` every few seconds guards against an event lost to a dropped connection; if the
daemon restarts, the client reconnects and carries on (a waiting task survives a restart).

Ctrl-C is left to the caller: it detaches, the task goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from coordctl.bar import Bar
from coordctl.client import Client, NotReachable
from coordd.api import names
from coordd.api.errors import ProtocolError

TICK_S = 0.1  # redraw the spinner this often when drawing
CHECK_S = 5.0  # re-read the task this often, in case an event was lost
RECONNECT_S = 60.0  # how long to keep trying to reach a restarting daemon


def follow(
    connect: Callable[[], Client],
    client: Client,
    task: Mapping[str, Any],
    bar: Bar | None = None,
) -> dict[str, Any]:
    """Block until ``task`` ends; return it as it ended. ``KeyboardInterrupt`` propagates."""
    task_id = str(task["id"])
    current = _watch(client, task_id)
    last_check = time.monotonic()
    try:
        while current.get("state") not in names.ENDED:
            if bar is not None:
                bar.draw(current)
            try:
                message = client.next_notification(TICK_S if bar is not None else CHECK_S)
                if message is not None:
                    current = _apply(current, message, task_id)
                if time.monotonic() - last_check >= CHECK_S:
                    last_check = time.monotonic()
                    current = dict(client.call("task.get", {"task_id": task_id}))
            except ProtocolError:
                client.close()
                client = _reconnect(connect)
                current = _watch(client, task_id)
    finally:
        if bar is not None:
            bar.clear()
        client.close()
    return current


def _watch(client: Client, task_id: str) -> dict[str, Any]:
    client.call("events.subscribe", {"task_ids": [task_id]})
    return dict(client.call("task.get", {"task_id": task_id}))


def _apply(current: dict[str, Any], message: Mapping[str, Any], task_id: str) -> dict[str, Any]:
    params = message.get("params") or {}
    method = message.get("method")
    if method == "task.changed":
        task = params.get("task") or {}
        if task.get("id") == task_id:
            return dict(task)
    elif method == "task.progress" and params.get("id") == task_id:
        return {**current, "progress": params.get("progress")}
    return current


def _reconnect(connect: Callable[[], Client]) -> Client:
    deadline = time.monotonic() + RECONNECT_S
    while True:
        try:
            return connect()
        except NotReachable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
