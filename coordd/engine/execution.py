"""Running tasks: how a task the coordinator lets run is run, ended and shown.

``Execution`` holds the runtime's tasks in memory (incomplete ones, recently ended ones,
counts by state), starts each task the coordinator marks running in the daemon's task group
(or, for an operation that only changes the database, applies it at once), records its end
and starts the tasks behind it, and publishes events. ``coordd.engine.runtime.Runtime``
builds on it and takes the requests: start-up and recovery, submission, cancel, wait,
queries, retention and shutdown; the rules both follow are in that module's docstring.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from coordd.api.errors import CoorddError, Unavailable
from coordd.engine.coordinator import Coordinator
from coordd.engine.operations import Registry, TaskContext
from coordd.engine.settings import EngineSettings
from coordd.engine.tasks import State, Task, TaskEnd
from coordd.store import taskrows
from coordd.store.database import Statement, Store

log = logging.getLogger("coordd.runtime")

RECENT_CAP = 2000  # ended tasks kept in memory for task.get; older ones come from the store
PROGRESS_TICK = 0.25  # seconds between progress events for a task that reported


Listener = Callable[[str, dict[str, Any]], None]
EndWatcher = Callable[[Task], None]


class Execution:
    """Tasks in memory, mirrored to SQLite, run in one task group."""

    def __init__(
        self,
        settings: EngineSettings,
        store: Store,
        operations: Registry,
        coordinator: Coordinator,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.store = store
        self.operations = operations
        self.coordinator = coordinator
        self._clock = clock
        self.tasks: dict[str, Task] = {}
        self.recent: OrderedDict[str, Task] = OrderedDict()
        self.counts: dict[str, int] = {state.value: 0 for state in State}
        self.stopping = False
        self._tg: TaskGroup | None = None
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._contexts: dict[str, TaskContext] = {}
        self._ended: dict[str, anyio.Event] = {}
        self._listeners: set[Listener] = set()
        self._end_watchers: list[EndWatcher] = []
        self._progress_seen: dict[str, int] = {}
        self._progress_saved: dict[str, tuple[int, float]] = {}
        self._runner_ended = anyio.Event()  # replaced after each set: "some runner ended"

    # -- running -------------------------------------------------------------------------

    def _launch(self, task: Task, *, resumed: bool = False, stored_running: bool = False) -> None:
        """Start a task the coordinator marked running.

        ``stored_running``: its row already says running (accepted at submission, or a
        held lock after a restart), so the runner does not record the start again.
        """
        if self.stopping and not stored_running:
            return  # stays waiting on disk; the next start picks it up
        if not stored_running:
            self._move(task, State.RUNNING)
        if self.operations[task.operation].apply is not None:
            task.started = self._clock()
            task.attempts += 1
            end, ctx = self._apply(task)
            # The database failed: the daemon is stopping, the task stays waiting on disk.
            with contextlib.suppress(Unavailable):
                self.store.write_then(
                    *kept_change(end, ctx),
                    taskrows.mark_ended(task, end),
                    then=functools.partial(self._applied, task, end, ctx),
                )
            return
        assert self._tg is not None
        self._tg.start_soon(self._run, task, resumed, stored_running)

    def _apply(self, task: Task) -> tuple[TaskEnd, TaskContext]:
        """Run an ``apply`` operation at once.

        The caller stores the end with the operation's change (``kept_change``) and calls
        ``_applied`` once that is committed; until then the task is running, for queries
        and for the coordinator.
        """
        op = self.operations[task.operation]
        assert op.apply is not None
        ctx = TaskContext(task, self.settings)
        try:
            return TaskEnd(State.FINISHED, op.apply(ctx), None, self._clock()), ctx
        except Exception as exc:
            return TaskEnd(State.ERROR, None, _failure(task, exc), self._clock()), ctx

    def _applied(self, task: Task, end: TaskEnd, ctx: TaskContext) -> None:
        self._emit_changed(task)  # running: subscribers see the whole lifecycle
        self._after_end(task, end, ctx)
        self._release(task, succeeded=end.state is State.FINISHED)

    async def _run(self, task: Task, resumed: bool, stored_running: bool) -> None:
        op = self.operations[task.operation]
        ctx = TaskContext(task, self.settings, resumed=resumed)
        scope = anyio.CancelScope()
        self._scopes[task.id] = scope
        self._contexts[task.id] = ctx
        if task.cancel_requested:
            scope.cancel()  # cancelled between the coordinator's start and this point
        state, result, error = State.FINISHED, None, None
        try:
            with scope:
                if not stored_running:
                    task.started = self._clock()
                    task.attempts += 1
                    await self.store.write(taskrows.mark_started(task))
                    log.info(
                        "task %s %s on %s: running (attempt %d)",
                        task.id,
                        task.operation,
                        claims_for_log(task),
                        task.attempts,
                    )
                    self._emit_changed(task)
                assert op.run is not None
                result = await op.run(ctx)
            if scope.cancelled_caught:
                if self.stopping and not task.cancel_requested:
                    return  # shutdown: leave it running on disk, recovery decides
                state, result = State.CANCELED, None
                error = {"message": "canceled", "detail": None}
            elif op.cooperative and task.cancel_requested:
                # It wound down when asked to (a lock's command stopped): canceled, not
                # finished; the result (the command's exit status) is kept.
                state, error = State.CANCELED, {"message": "canceled", "detail": None}
        except Exception as exc:
            state, error = State.ERROR, _failure(task, exc)
        finally:
            self._scopes.pop(task.id, None)
            self._contexts.pop(task.id, None)
            self._runner_ended.set()
            self._runner_ended = anyio.Event()
        with anyio.CancelScope(shield=True):
            try:
                await self._end(task, state, result, error, ctx)
            except Unavailable:
                if self.store.fatal is None:
                    raise
                # The database failed: the daemon is stopping; the task stays running on
                # disk and recovery decides at the next start.

    async def _end(
        self,
        task: Task,
        state: State,
        result: Any,
        error: dict[str, Any] | None,
        ctx: TaskContext,
    ) -> None:
        """Record a running task's end durably, then let the tasks behind it start."""
        await self._record_end(task, state, result, error, ctx)
        self._release(task, succeeded=state is State.FINISHED)

    def _release(self, task: Task, *, succeeded: bool) -> None:
        """An ended task leaves the coordinator: start what it held back."""
        if task.id in self.coordinator:
            for task_id in self.coordinator.finish(task.id, succeeded=succeeded):
                self._launch(self.tasks[task_id])

    async def _record_end(
        self,
        task: Task,
        state: State,
        result: Any,
        error: dict[str, Any] | None,
        ctx: TaskContext | None = None,
    ) -> None:
        end = TaskEnd(state, result, error, self._clock())
        await self.store.write(*kept_change(end, ctx), taskrows.mark_ended(task, end))
        self._after_end(task, end, ctx)

    def _after_end(self, task: Task, end: TaskEnd, ctx: TaskContext | None) -> None:
        """Once a task's end is committed, and not before: show it, and its change."""
        if ctx is not None and end.state is State.FINISHED:
            for then in ctx.after_commit:
                then()
        self._move(task, end.state)
        task.result = end.result
        task.error = end.error
        task.finished = end.finished
        del self.tasks[task.id]
        self.recent[task.id] = task
        while len(self.recent) > RECENT_CAP:
            self.recent.popitem(last=False)
        self._progress_seen.pop(task.id, None)
        self._progress_saved.pop(task.id, None)
        if log.isEnabledFor(logging.INFO):
            outcome = end.state.value
            if end.error is not None:
                outcome += f": {end.error['message']}"
            log.info("task %s %s on %s: %s", task.id, task.operation, claims_for_log(task), outcome)
        self._emit_changed(task)
        event = self._ended.pop(task.id, None)
        if event is not None:
            event.set()
        for watcher in self._end_watchers:
            try:
                watcher(task)
            except Exception:  # a watcher's bug must not stop the tasks behind this one
                log.exception("a watcher of task ends failed on task %s", task.id)

    def _move(self, task: Task, state: State) -> None:
        """Change a counted task's state (through the lifecycle table), and the counts."""
        before = task.change_state(state)
        self.counts[before] -= 1
        self.counts[state] += 1

    # -- events --------------------------------------------------------------------------

    def waiting_for(self, task: Task) -> Any:
        if task.state is State.WAITING and task.id in self.coordinator:
            return self.coordinator.waiting_for(task.id)
        return ()

    def describe(self, task: Task) -> dict[str, Any]:
        return task.to_json(self.waiting_for(task))

    def watch_ends(self, watcher: EndWatcher) -> None:
        """Call ``watcher`` with each task once its end is committed (a schedule counts its
        task's failures there, a sync queues its publish)."""
        self._end_watchers.append(watcher)

    def start_soon(self, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` in the runtime's task group."""
        assert self._tg is not None
        self._tg.start_soon(func, *args)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def _emit(self, method: str, params: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            listener(method, params)

    def _emit_changed(self, task: Task) -> None:
        if self._listeners:
            self._emit("task.changed", {"task": self.describe(task)})

    async def _progress_loop(self) -> None:
        """Publish progress events and persist reports at a bounded rate."""
        interval = self.settings.progress_persist_interval_s
        while True:
            await anyio.sleep(PROGRESS_TICK)
            now = time.monotonic()
            for task_id in list(self._scopes):
                task = self.tasks.get(task_id)
                if task is None:
                    continue
                version = task.progress.version
                if self._progress_seen.get(task_id) == version:
                    continue
                self._progress_seen[task_id] = version
                snapshot = task.progress.snapshot()
                if self._listeners:
                    self._emit("task.progress", {"id": task_id, "progress": snapshot})
                saved_version, saved_at = self._progress_saved.get(task_id, (-1, 0.0))
                if saved_version != version and now - saved_at >= interval:
                    self._progress_saved[task_id] = (version, now)
                    self.store.write_later(taskrows.save_progress(task_id, snapshot))


def claims_for_log(task: Task) -> str:
    """A task's claims as a log line shows them: ``repository/demo:update, ...``."""
    return ", ".join(f"{c.resource.type}/{c.resource.id}:{c.kind}" for c in task.claims)


def _failure(task: Task, exc: Exception) -> dict[str, Any]:
    """The error an operation's exception ends its task with."""
    if isinstance(exc, CoorddError):
        return {"message": exc.message, "detail": exc.data}
    log.exception("task %s (%s) failed unexpectedly", task.id, task.operation)
    return {"message": f"internal error: {type(exc).__name__}: {exc}", "detail": None}


def kept_change(end: TaskEnd, ctx: TaskContext | None) -> list[Statement]:
    """The operation's own change (``TaskContext.commit_at_end``), kept only if it finished."""
    return ctx.final_writes if ctx is not None and end.state is State.FINISHED else []
