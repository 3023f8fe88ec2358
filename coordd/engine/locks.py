"""External locks: tasks on arbitrary resources, held by a client while it runs a command.

``coordctl run`` submits a ``lock`` task naming any resources; the coordinator orders it like
any other task. When it may run, the daemon tells the client (``lock.granted``) and the client
runs its command; the task ends when the client releases it (``lock.release`` with the exit
status) or when its connection closes (the client died: released, ``error``). A waiting
request whose client left is withdrawn.

A lock task is *attached* to one connection at a time. After a daemon restart, running lock
tasks stay held and waiting ones keep their place; each client reconnects and re-attaches
(``lock.attach``) within ``reattach_grace_s``. A task not re-attached by then is withdrawn,
so a resource is never held by a client that is gone, and never by two: the client gives up
(and stops its command) before the daemon's grace ends.

Cancel of a running lock is cooperative: the client is asked to stop its command
(``lock.cancel``) and to release; after ``cancel_grace_s`` the daemon revokes the lock
(``lock.revoked``) and the client kills the command.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio

from coordd.api.errors import CoorddError, InvalidRequest, OperationFailed
from coordd.engine.coordinator import KINDS, Claim, Kind, Resource
from coordd.engine.operations import Operation, TaskContext
from coordd.engine.settings import EngineSettings
from coordd.engine.tasks import State, Task

log = logging.getLogger("coordd.locks")

Notify = Callable[[str, dict[str, Any]], None]
MAX_RESOURCES = 32
MAX_NAME = 200


class TaskTable(Protocol):
    """What ``withdraw_unattached`` needs of the runtime."""

    @property
    def settings(self) -> EngineSettings: ...

    @property
    def tasks(self) -> Mapping[str, Task]:
        """The incomplete tasks by id."""
        ...

    async def cancel(self, task_id: str) -> Task: ...


@dataclass
class Holder:
    """The client connection a lock task is attached to, and what it said."""

    notify: Notify
    closed: anyio.Event = field(default_factory=anyio.Event)


@dataclass
class _Lock:
    attached: anyio.Event = field(default_factory=anyio.Event)
    released: anyio.Event = field(default_factory=anyio.Event)
    holder: Holder | None = None
    exit_status: int | None = None
    gone: bool = False  # the client disconnected without releasing


class Locks:
    """Which connection holds which lock task; the ``lock`` operation waits on it."""

    def __init__(self) -> None:
        self._locks: dict[str, _Lock] = {}

    def _lock(self, task_id: str) -> _Lock:
        return self._locks.setdefault(task_id, _Lock())

    def attach(self, task_id: str, holder: Holder) -> None:
        lock = self._lock(task_id)
        lock.holder = holder
        lock.attached.set()

    def is_attached(self, task_id: str) -> bool:
        lock = self._locks.get(task_id)
        return lock is not None and lock.holder is not None and not lock.holder.closed.is_set()

    def holder_of(self, task_id: str) -> Holder | None:
        lock = self._locks.get(task_id)
        return lock.holder if lock is not None else None

    def release(self, task_id: str, exit_status: int | None) -> None:
        lock = self._lock(task_id)
        lock.exit_status = exit_status
        lock.released.set()

    def detach(self, task_id: str) -> None:
        """The holder's connection closed without a release."""
        lock = self._locks.get(task_id)
        if lock is not None:
            lock.holder = None
            lock.attached = anyio.Event()
            lock.gone = True
            lock.released.set()

    async def withdraw_unattached(self, runtime: TaskTable) -> None:
        """After a restart's grace, withdraw waiting lock requests nobody re-attached to.

        (Held locks are withdrawn by their own ``run``, which waits the same grace.)
        """
        await anyio.sleep(runtime.settings.reattach_grace_s)
        for task in list(runtime.tasks.values()):
            if task.held and task.state is State.WAITING and not self.is_attached(task.id):
                log.info("task %s: no client re-attached; request withdrawn", task.id)
                with contextlib.suppress(CoorddError):
                    await runtime.cancel(task.id)

    def forget(self, task_id: str) -> None:
        self._locks.pop(task_id, None)

    async def run(self, ctx: TaskContext) -> dict[str, Any]:
        """The ``lock`` operation: wait for a holder, grant, wait for the release."""
        task_id = ctx.task.id
        lock = self._lock(task_id)
        grace = ctx.settings.reattach_grace_s
        try:
            if lock.holder is None:
                with anyio.move_on_after(grace) as waited:
                    await lock.attached.wait()
                if waited.cancelled_caught:
                    raise OperationFailed(
                        f"the client did not re-attach within {grace:.0f} s; lock withdrawn"
                    )
            if not ctx.resumed or not ctx.task.held or ctx.task.started is None:
                self._tell(lock, "lock.granted", {"task_id": task_id, "reattach_grace_s": grace})
            try:
                await _first(lock.released.wait, ctx.stop_requested.wait)
                if ctx.stop_requested.is_set() and not lock.released.is_set():
                    self._tell(lock, "lock.cancel", {"task_id": task_id})
                    await lock.released.wait()
            except anyio.get_cancelled_exc_class():
                self._tell(lock, "lock.revoked", {"task_id": task_id})
                raise
            if lock.gone and lock.exit_status is None:
                raise OperationFailed("the client disconnected before releasing the lock")
            status = lock.exit_status
            if ctx.task.cancel_requested:
                return {"exit_status": status}
            if status not in (0, None):
                raise OperationFailed(
                    f"the command exited with status {status}", {"exit_status": status}
                )
            return {"exit_status": status}
        finally:
            self.forget(task_id)

    def _tell(self, lock: _Lock, method: str, params: dict[str, Any]) -> None:
        if lock.holder is not None:
            lock.holder.notify(method, params)


async def _first(*waiters: Callable[[], Any]) -> None:
    """Return as soon as one of ``waiters`` returns."""
    async with anyio.create_task_group() as tg:

        async def one(waiter: Callable[[], Any]) -> None:
            await waiter()
            tg.cancel_scope.cancel()

        for waiter in waiters:
            tg.start_soon(one, waiter)


def parse_resources(items: Any) -> tuple[Claim, ...]:
    """Validate ``[{"type", "id", "kind"}, …]`` from a request into claims."""
    if not isinstance(items, list) or not items:
        raise InvalidRequest("resources must be a non-empty list of {type, id, kind}")
    if len(items) > MAX_RESOURCES:
        raise InvalidRequest(f"at most {MAX_RESOURCES} resources per task")
    claims: list[Claim] = []
    seen: set[Resource] = set()
    for item in items:
        if not isinstance(item, dict) or set(item) != {"type", "id", "kind"}:
            raise InvalidRequest("each resource must be an object with type, id and kind")
        rtype, rid, kind = item["type"], item["id"], item["kind"]
        for label, value in (("type", rtype), ("id", rid)):
            if not isinstance(value, str) or not value or len(value) > MAX_NAME:
                raise InvalidRequest(f"resource {label} must be a string of 1 to {MAX_NAME}")
            if not value.isprintable():
                raise InvalidRequest(f"resource {label} {value!r} has unprintable characters")
        if kind not in KINDS:
            raise InvalidRequest(f"resource kind must be one of {', '.join(KINDS)}")
        resource = Resource(rtype, rid)
        if resource in seen:
            raise InvalidRequest(f"resource {resource} is named twice")
        seen.add(resource)
        claim_kind: Kind = kind
        claims.append(Claim(resource, claim_kind))
    return tuple(claims)


def lock_operation(locks: Locks) -> Operation:
    def claims(args: Mapping[str, Any]) -> tuple[Claim, ...]:
        return parse_resources(args["resources"])

    return Operation(
        name="lock",
        summary="hold resources while a client runs a command",
        claims=claims,
        run=locks.run,
        held=True,
        cooperative=True,
    )
