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
    """One request, from submission to its end (docs/design.md §4 lists the fields)."""

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
        }
