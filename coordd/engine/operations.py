"""The operation registry: what a task does, and what it declares before it may run.

Each operation states, from its arguments alone, every resource it touches and how
(``claims``), whether it needs a heavy slot, whether it may be re-run after a crash
(``restartable``: it must then be idempotent), and what does the work:

- ``run``, a coroutine receiving a ``TaskContext`` with a progress report, run in a task of
  its own; it honours cancellation: the runtime cancels its anyio scope, at once, or after
  ``cancel_grace`` for ``cooperative`` operations that watch ``stop_requested`` and wind
  down themselves;
- or ``apply``, for an operation that only changes the database (a repository's
  configuration): a plain function, called when the task starts, that hands its change to
  ``commit_at_end``. The task's start, the change and its end are then one transaction, so
  such a task is never seen half-done, after a crash or otherwise, and costs no task of its
  own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from coordd.engine.coordinator import Claim
from coordd.engine.progress import Progress
from coordd.engine.settings import EngineSettings
from coordd.engine.tasks import Task
from coordd.store.database import Statement


@dataclass
class TaskContext:
    """What a running operation gets: its task, the engine's settings as the task started,
    a progress report, a stop request, and where to put its change."""

    task: Task
    settings: EngineSettings
    _stop: anyio.Event | None = None
    resumed: bool = False  # re-run or re-attached after a restart
    final_writes: list[Statement] = field(default_factory=list)
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def commit_at_end(self, *statements: Statement, then: Callable[[], None] | None = None) -> None:
        """Store ``statements`` in the same transaction that records the task finished.

        The operation's own change and the task's end are then durable together, or not at
        all; ``then`` runs after that commit (to update what queries see in memory). Nothing
        is written, and ``then`` never runs, if the task does not finish successfully.
        """
        self.final_writes.extend(statements)
        if then is not None:
            self.after_commit.append(then)

    @property
    def stop_requested(self) -> anyio.Event:
        """Set when the task is asked to stop (cooperative operations watch it)."""
        if self._stop is None:
            self._stop = anyio.Event()  # made on demand: most operations never look
        return self._stop

    @property
    def args(self) -> dict[str, Any]:
        return self.task.args

    @property
    def progress(self) -> Progress:
        return self.task.progress


@dataclass(frozen=True)
class Operation:
    """One kind of task. ``claims`` and ``heavy`` see only the task's arguments."""

    name: str
    summary: str
    claims: Callable[[Mapping[str, Any]], tuple[Claim, ...]]
    run: Callable[[TaskContext], Awaitable[Any]] | None = None
    apply: Callable[[TaskContext], Any] | None = None
    heavy: bool = False
    restartable: bool = False
    held: bool = False  # an external lock: a client holds it; see coordd.engine.locks
    cooperative: bool = False

    def __post_init__(self) -> None:
        if (self.run is None) == (self.apply is None):
            raise ValueError(f"operation {self.name} needs exactly one of run and apply")


class Registry:
    """The explicit table of operations the daemon can run."""

    def __init__(self, operations: list[Operation] | None = None) -> None:
        self._ops: dict[str, Operation] = {}
        for op in operations or ():
            self.add(op)

    def add(self, op: Operation) -> None:
        if op.name in self._ops:
            raise ValueError(f"operation {op.name} registered twice")
        self._ops[op.name] = op

    def __getitem__(self, name: str) -> Operation:
        return self._ops[name]

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def names(self) -> list[str]:
        return sorted(self._ops)
