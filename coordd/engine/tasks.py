"""The task record: what a request became, and everything a user may ask about it."""

from __future__ import annotations

import enum
import functools
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any

from coordd.api import names
from coordd.engine.coordinator import Blocker, Claim, Kind, Resource, TaskSpec
from coordd.engine.progress import Progress


class State(enum.StrEnum):
    WAITING = names.WAITING
    RUNNING = names.RUNNING
    FINISHED = names.FINISHED
    ERROR = names.ERROR
    CANCELED = names.CANCELED

    @property
    def ended(self) -> bool:
        return self in ENDED


ENDED = frozenset(State(value) for value in names.ENDED)

# The lifecycle (DESIGN §4), as the only moves a task's state may make:
#
#     waiting ──> running ──> finished | error | canceled
#        │           │
#        │           └──> waiting    recovery only: a running restartable task found
#        │                           after a restart goes back to its place in line
#        └──> canceled               withdrawn before it started
#
# A task is created ``waiting`` (or loaded from the store in the state it was stored in);
# from then on its state changes only through ``change_state``, which refuses any move not
# listed here. An ended state has no way out.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.WAITING: frozenset({State.RUNNING, State.CANCELED}),
    State.RUNNING: frozenset({State.FINISHED, State.ERROR, State.CANCELED, State.WAITING}),
    State.FINISHED: frozenset(),
    State.ERROR: frozenset(),
    State.CANCELED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A task was asked to make a move the lifecycle does not allow: a bug in coordd."""

    def __init__(self, task_id: str, before: State, after: State) -> None:
        super().__init__(f"task {task_id}: no move from {before.value} to {after.value}")
        self.task_id = task_id
        self.before = before
        self.after = after


@dataclass(frozen=True, slots=True)
class TaskEnd:
    """How a task ended; applied to the task once it is committed."""

    state: State
    result: Any
    error: dict[str, Any] | None
    finished: float


def new_task_id() -> str:
    """A random (version 4) UUID as 32 hex digits: ``uuid.uuid4().hex`` without the object."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return raw.hex()


def iso(timestamp: float | None) -> str | None:
    """ISO 8601 UTC with a ``Z``, to the second; ``None`` stays ``None``."""
    if timestamp is None:
        return None
    return _iso_second(math.floor(timestamp))


@functools.lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    # Cached: a task's times, and a list of tasks submitted together, share their seconds.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


def claims_to_json(claims: tuple[Claim, ...]) -> list[dict[str, str]]:
    return [{"type": c.resource.type, "id": c.resource.id, "kind": c.kind} for c in claims]


@functools.lru_cache(maxsize=65536)
def claims_from_json(text: str) -> tuple[Claim, ...]:
    """Claims from their stored JSON. Cached: tasks queued on the same resources share one
    tuple, which keeps a restart over a long queue fast and small."""
    claims: list[Claim] = []
    for item in json.loads(text):
        kind: Kind = item["kind"]
        claims.append(Claim(Resource(item["type"], item["id"]), kind))
    return tuple(claims)


def blocker_to_json(blocker: Blocker) -> dict[str, Any]:
    out: dict[str, Any] = {"reason": blocker.reason}
    if blocker.resource is not None:
        out["resource"] = {"type": blocker.resource.type, "id": blocker.resource.id}
    if blocker.kind is not None:
        out["operation"] = blocker.kind
    if blocker.task_id is not None:
        out["task_id"] = blocker.task_id
    return out


@dataclass(slots=True, eq=False)
class Task:
    """One request, from submission to its end (docs/design.md §4 lists the fields).

    ``state`` changes only through ``change_state``, which checks ``TRANSITIONS``.
    """

    id: str
    seq: int
    operation: str
    args_json: str  # as stored; parsed on first use (a long queue is mostly never read)
    claims: tuple[Claim, ...]
    heavy: bool
    restartable: bool
    uid: int
    state: State
    submitted: float
    started: float | None = None
    finished: float | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    progress_report: Progress | None = None  # created when first read or written
    attempts: int = 0
    held: bool = False  # an external lock: a client holds it, the daemon runs nothing
    cancel_requested: bool = False
    request_id: str | None = None  # the client's id of the submission, if it gave one
    parent: str | None = None  # the task that made coordd submit this one (a sync's publish)
    reason: str | None = None  # why coordd itself submitted it (a schedule, a publish after sync)
    _args: dict[str, Any] | None = None

    @property
    def progress(self) -> Progress:
        if self.progress_report is None:
            self.progress_report = Progress()
        return self.progress_report

    def progress_snapshot(self) -> dict[str, Any]:
        """The progress report as it is now (``{}`` if the task never reported)."""
        return {} if self.progress_report is None else self.progress_report.snapshot()

    @property
    def args(self) -> dict[str, Any]:
        if self._args is None:
            self._args = json.loads(self.args_json)
        return self._args

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(self.id, self.seq, self.claims, self.heavy)

    def change_state(self, new: State) -> State:
        """Move to ``new`` if ``TRANSITIONS`` allows it, else raise ``IllegalTransition``;
        returns the state it left."""
        old = self.state
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(self.id, old, new)
        self.state = new
        return old

    def touches(self, resource: Resource) -> bool:
        return any(c.resource == resource for c in self.claims)

    def to_json(self, waiting_for: tuple[Blocker, ...] = ()) -> dict[str, Any]:
        return {
            "id": self.id,
            "operation": self.operation,
            "resources": claims_to_json(self.claims),
            "args": self.args,
            "state": self.state.value,
            "waiting_for": [blocker_to_json(b) for b in waiting_for],
            "submitted": iso(self.submitted),
            "started": iso(self.started),
            "finished": iso(self.finished),
            "result": self.result,
            "error": self.error,
            "progress": self.progress_snapshot(),
            "uid": self.uid,
            "attempts": self.attempts,
            "heavy": self.heavy,
            "restartable": self.restartable,
            "cancel_requested": self.cancel_requested,
            "request_id": self.request_id,
            "parent": self.parent,
            "reason": self.reason,
        }
