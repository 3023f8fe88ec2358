"""The task runtime: carries out the coordinator's decisions with anyio.

The coordinator decides; the runtime keeps the ``Task`` records, persists every change through
the store (the statements and queries on task rows are ``coordd.store.taskrows``), moves each
task through its lifecycle (``Task.change_state``), starts operations in the daemon's task
group, cancels them, publishes events, and recovers after a restart. How a task is run and
ended, and the events, are ``coordd.engine.execution``; ``Runtime`` builds on it and takes
the requests: start-up and recovery, submission, cancel, wait, queries, retention and
shutdown. Its rules:

- A submission is answered only after the transaction storing it committed. A task that
  starts later is recorded ``running`` (durably) before its operation runs, so a crash never
  re-runs a non-restartable task by mistake. An operation that only changes the database
  (``Operation.apply``) is applied when its task starts: its start, its change and its end
  are one transaction (with the submission's, when it starts at once).
- An ending is recorded before the tasks behind it are started, and shown (state, counts,
  the operation's change) only once it is committed.
- On shutdown, running tasks get ``shutdown_grace`` to finish, then are cancelled without
  recording an end: at the next start restartable ones run again and the others end
  ``error`` "interrupted". External locks stay held so their clients can re-attach.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from coordd import __version__
from coordd.api.errors import Conflict, InvalidRequest, InvalidState, NotFound, Unavailable
from coordd.engine.coordinator import (
    Coordinator,
    Decision,
    Resource,
    StoredTask,
    TaskSpec,
    Verdict,
)
from coordd.engine.execution import Execution, claims_for_log, kept_change
from coordd.engine.operations import Registry
from coordd.engine.settings import EngineSettings
from coordd.engine.tasks import ENDED, State, Task, blocker_to_json, new_task_id
from coordd.store import taskrows
from coordd.store.database import PendingWrite, Statement, Store, dumps

log = logging.getLogger("coordd.runtime")


class Runtime(Execution):
    """Tasks in memory, mirrored to SQLite, run in one task group."""

    def __init__(
        self,
        settings: EngineSettings,
        store: Store,
        operations: Registry,
        existing: Iterable[Resource] = (),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``clock``: the wall clock (seconds since the epoch) tasks are timed by."""
        coordinator = Coordinator(settings.heavy_slots, existing=existing)
        super().__init__(settings, store, operations, coordinator, clock)
        self.started_at = clock()
        self._seq = 0
        # Submissions with a request id whose row is not yet committed, by (uid, request id).
        self._requests: dict[tuple[int, str], tuple[Task, Decision, PendingWrite]] = {}

    # -- start-up and recovery -----------------------------------------------------------

    async def start(self, tg: TaskGroup) -> None:
        """Load incomplete tasks, decide what each becomes, and start what may run."""
        self._tg = tg
        queued = await taskrows.incomplete(self.store)
        self.counts.update(await taskrows.count_by_state(self.store))
        self._seq = await taskrows.last_seq(self.store)
        stored: list[StoredTask] = []
        for task in queued:
            self.tasks[task.id] = task
            stored.append(
                StoredTask(
                    task.spec,
                    running=task.state is State.RUNNING,
                    restartable=task.restartable,
                    held=task.held,
                    attempts=task.attempts,
                )
            )
        recovery = self.coordinator.recover(stored, self.settings.max_attempts)
        for task_id in recovery.interrupted:
            task = self.tasks[task_id]
            log.warning("task %s (%s) was interrupted by a restart", task_id, task.operation)
            await self._record_end(
                task, State.ERROR, None, {"message": "interrupted", "detail": None}
            )
        for task_id in recovery.rerun:
            self._move(self.tasks[task_id], State.WAITING)
            log.info(
                "task %s %s on %s: waiting, to run again after a restart",
                task_id,
                self.tasks[task_id].operation,
                claims_for_log(self.tasks[task_id]),
            )
        if recovery.rerun:
            await self.store.write(*(taskrows.mark_requeued(task_id) for task_id in recovery.rerun))
        for task_id in recovery.held:
            self._launch(self.tasks[task_id], resumed=True, stored_running=True)
        for task_id in recovery.start:
            self._launch(self.tasks[task_id], resumed=task_id in recovery.rerun)
        tg.start_soon(self._progress_loop)
        tg.start_soon(self._purge_loop)
        log.info(
            "recovered %d incomplete tasks (%d re-run, %d interrupted, %d held)",
            len(queued),
            len(recovery.rerun),
            len(recovery.interrupted),
            len(recovery.held),
        )

    # -- submission ----------------------------------------------------------------------

    async def submit_once(
        self,
        operation: str,
        args: dict[str, Any],
        uid: int,
        request_id: str | None,
        *,
        before_start: Callable[[Task], None] | None = None,
    ) -> tuple[Task, Decision, bool]:
        """``submit``, unless ``uid`` already submitted ``request_id``: then the task that
        submission made, once it is committed, and True (repeated).

        A client that gave up waiting (a stalled disk, say) sends its request again with
        the same id and gets the task it made, not a second one. The id is found while the
        task's row is kept (its history's retention). The same id for another operation or
        other arguments is refused.
        """
        if request_id is None:
            task, decision = await self.submit(operation, args, uid, before_start=before_start)
            return task, decision, False
        key = (uid, request_id)
        stored: Task | None = None
        if key not in self._requests:
            stored = await taskrows.by_request(self.store, uid, request_id)
        pending = self._requests.get(key)  # again: it may have come in during the read
        if pending is not None:
            task, decision, committed = pending
            _same_request(task, operation, args, request_id)
            await committed
            return task, decision, True
        if stored is not None:
            _same_request(stored, operation, args, request_id)
            task = self.tasks.get(stored.id) or self.recent.get(stored.id) or stored
            started = task.started is not None
            verdict = Verdict.ACCEPTED if started else Verdict.POSTPONED
            return task, Decision(verdict, tuple(self.waiting_for(task))), True
        task, decision = await self.submit(
            operation, args, uid, before_start=before_start, request_id=request_id
        )
        return task, decision, False

    async def submit(
        self,
        operation: str,
        args: dict[str, Any],
        uid: int,
        *,
        before_start: Callable[[Task], None] | None = None,
        request_id: str | None = None,
        parent: str | None = None,
        reason: str | None = None,
        also: Callable[[Task, Decision], Iterable[Statement]] | None = None,
    ) -> tuple[Task, Decision]:
        """Decide a new task and store it; raises ``Conflict`` when it is rejected.

        ``before_start`` runs once the task exists and before anything can start it (the
        lock methods attach the client's connection there). ``parent`` and ``reason`` say
        which task made coordd submit this one, and why (a schedule, a publish after a
        sync). ``also`` gives statements to store in the same transaction as the task (a
        schedule's record of its fire).
        """
        if self.stopping:
            raise Unavailable("coordd is shutting down; submit again once it is back")
        op = self.operations[operation]
        claims = op.claims(args)
        spec = TaskSpec(new_task_id(), self._seq + 1, claims, op.heavy)
        decision = self.coordinator.submit(spec)
        if decision.verdict is Verdict.REJECTED:
            raise Conflict(
                "the requested operation conflicts with operations already queued; "
                "it could never run",
                {"conflicts": [blocker_to_json(b) for b in decision.blockers]},
            )
        self._seq = spec.seq
        now = self._clock()
        task = Task(
            id=spec.id,
            seq=spec.seq,
            operation=operation,
            args_json=dumps(args),
            claims=claims,
            heavy=op.heavy,
            restartable=op.restartable,
            held=op.held,
            uid=uid,
            state=State.WAITING,
            submitted=now,
            request_id=request_id,
            parent=parent,
            reason=reason,
            _args=args,
        )
        accepted = decision.verdict is Verdict.ACCEPTED
        if accepted:
            # Stored as running in the same row: no second write before it starts.
            # (Counted once it is committed, in ``started``.)
            task.change_state(State.RUNNING)
            task.started, task.attempts = now, 1
        self.tasks[task.id] = task
        if before_start is not None:
            before_start(task)
        applied: Callable[[], None] | None = None
        if accepted and op.apply is not None:
            # It only changes the database: applied now, its change and its end are stored
            # with the task, in one row and one transaction.
            end, ctx = self._apply(task)
            writes = [*taskrows.insert(task, end), *kept_change(end, ctx)]
            applied = functools.partial(self._applied, task, end, ctx)
        else:
            writes = taskrows.insert(task)
        if also is not None:
            writes = [*writes, *also(task, decision)]

        # Decided. The row is queued, and the task started once it is committed, by the
        # writer's wake-up: neither can be stopped half-way by the caller going away.
        def started() -> None:
            if request_id is not None:
                self._requests.pop((uid, request_id), None)  # the store has it now
            self.counts[task.state] += 1
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "task %s %s on %s: %s",
                    task.id,
                    operation,
                    claims_for_log(task),
                    decision.verdict.value,
                )
            if applied is not None:
                applied()
                return
            self._emit_changed(task)
            for task_id in decision.start:
                self._launch(self.tasks[task_id], stored_running=task_id == task.id)

        committed = self.store.write_then(*writes, then=started)
        if request_id is not None:
            self._requests[(uid, request_id)] = (task, decision, committed)
        await committed
        return task, decision

    async def _uncancellable(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` to its end in the runtime's task group, and wait for it.

        A client hanging up cancels the method serving it. What must not stop half-way
        once the coordinator has decided (recording a canceled task's end and starting
        those behind it) runs here: the caller may stop waiting, the work still completes.
        (A submission needs no such task: ``Store.write_then`` does its after-commit work.)
        """
        done = anyio.Event()
        failure: list[Exception] = []

        async def run() -> None:
            try:
                await work()
            except Exception as exc:  # handed to the caller, who answers with it
                failure.append(exc)
            finally:
                done.set()

        assert self._tg is not None
        self._tg.start_soon(run)
        await done.wait()
        if failure:
            raise failure[0]

    def check(self, operation: str, args: dict[str, Any]) -> Decision:
        """What submitting would decide now, without storing anything."""
        op = self.operations[operation]
        return self.coordinator.check(
            TaskSpec(new_task_id(), self._seq + 1, op.claims(args), op.heavy)
        )

    # -- cancel, wait, query -------------------------------------------------------------

    async def cancel(self, task_id: str) -> Task:
        """Cancel a waiting task at once, or ask a running one to stop."""
        task = self.tasks.get(task_id)
        if task is None:
            ended = await self.get(task_id)
            raise InvalidState(
                f"task {task_id} has already ended ({ended.state.value}); nothing to cancel"
            )
        if (
            task.state is State.WAITING
            and not task.cancel_requested  # else already withdrawn, its end being recorded
            and not self.coordinator.is_running(task_id)
        ):
            task.cancel_requested = True
            starts = self.coordinator.cancel_waiting(task_id)

            async def end_and_start() -> None:  # out of the coordinator: record it all
                await self._record_end(task, State.CANCELED, None, None)
                for other in starts:
                    self._launch(self.tasks[other])

            await self._uncancellable(end_and_start)
            return task
        if not task.cancel_requested:
            task.cancel_requested = True
            self.store.write_later(taskrows.mark_cancel_requested(task.id))
            log.info("task %s: cancel requested", task.id)
            self._emit_changed(task)
            ctx = self._contexts.get(task_id)
            if ctx is not None:
                ctx.stop_requested.set()
            if self.operations[task.operation].cooperative:
                assert self._tg is not None
                self._tg.start_soon(self._cancel_after, task_id, self.settings.cancel_grace_s)
            else:
                self._hard_cancel(task_id)
        return task

    async def _cancel_after(self, task_id: str, grace: float) -> None:
        await anyio.sleep(grace)
        if task_id in self._scopes:
            log.warning("task %s did not stop within %.0f s; stopping it", task_id, grace)
            self._hard_cancel(task_id)

    def _hard_cancel(self, task_id: str) -> None:
        scope = self._scopes.get(task_id)
        if scope is not None:
            scope.cancel()

    async def wait(self, task_id: str, limit_s: float | None) -> Task:
        """Block until the task ends or ``limit_s`` passes; return it either way."""
        task = self.tasks.get(task_id)
        if task is None:
            return await self.get(task_id)
        event = self._ended.setdefault(task_id, anyio.Event())
        with anyio.move_on_after(limit_s):
            await event.wait()
        return self.recent.get(task_id, task)

    async def get(self, task_id: str) -> Task:
        """A task by id: in memory if incomplete or recent, else from history."""
        task = self.tasks.get(task_id) or self.recent.get(task_id)
        if task is not None:
            return task
        stored = await taskrows.get(self.store, task_id)
        if stored is None:
            raise NotFound(f"no task {task_id}", {"task_id": task_id})
        return stored

    async def has_child(self, task_id: str) -> bool:
        """Whether some task names ``task_id`` as its parent (every accepted task has its
        row: the store answers for those in memory too)."""
        return await taskrows.has_child(self.store, task_id)

    def incomplete(self, resource: Resource | None = None) -> list[Task]:
        """Running tasks first, then waiting ones in the order they will run."""
        if resource is None:
            return [self.tasks[t] for t in self.coordinator.order()]
        ids = [t for t, _ in self.coordinator.line(resource)]
        tasks = [self.tasks[t] for t in ids]
        return [t for t in tasks if t.state is State.RUNNING] + [
            t for t in tasks if t.state is not State.RUNNING
        ]

    async def history(
        self, resource: Resource | None, states: Iterable[str], limit: int
    ) -> list[Task]:
        """Ended tasks, newest first, from the store."""
        wanted = [s for s in states if s in {e.value for e in ENDED}]
        if not wanted:
            return []
        return await taskrows.history(self.store, resource, wanted, limit)

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "uptime_s": round(self._clock() - self.started_at, 3),
            "tasks": dict(self.counts),
            "slots": {"total": self.coordinator.slots, "in_use": self.coordinator.heavy_running},
            "commits": self.store.commits,
            "stopping": self.stopping,
        }

    def set_slots(self, slots: int) -> None:
        for task_id in self.coordinator.set_slots(slots):
            self._launch(self.tasks[task_id])

    # -- retention -----------------------------------------------------------------------

    async def _purge_loop(self) -> None:
        """Drop ended tasks older than the retention period."""
        with contextlib.suppress(Unavailable):  # the database failed: the daemon stops
            await self._purge_forever()

    async def _purge_forever(self) -> None:
        while True:
            await self.purge()
            await anyio.sleep(min(max(self.settings.retention_s / 10, 1.0), 3600.0))

    async def purge(self) -> int:
        """Drop ended tasks older than the retention period, once; how many went."""
        retention = self.settings.retention_s
        cutoff = self._clock() - retention
        purged = await taskrows.purge(self.store, cutoff)
        if purged:
            for state, count in purged.items():
                self.counts[state] -= count
            for task_id in [t for t, task in self.recent.items() if (task.finished or 0) < cutoff]:
                del self.recent[task_id]
            log.info("purged %d ended tasks older than %.0f s", sum(purged.values()), retention)
        return sum(purged.values())

    # -- shutdown ------------------------------------------------------------------------

    async def shutdown(self, grace: float) -> None:
        """Stop starting tasks; give running ones ``grace`` seconds, then cancel them."""
        self.stopping = True
        with anyio.move_on_after(grace):
            while any(not self.tasks[t].held for t in self._scopes if t in self.tasks):
                await self._runner_ended.wait()
        for task_id, scope in list(self._scopes.items()):
            task = self.tasks.get(task_id)
            if task is not None:
                log.info(
                    "task %s %s on %s: stopped by shutdown; it resumes at the next start",
                    task_id,
                    task.operation,
                    claims_for_log(task),
                )
            scope.cancel()
        with anyio.move_on_after(max(grace, 1.0)):
            while self._scopes:
                await self._runner_ended.wait()


def _same_request(task: Task, operation: str, args: dict[str, Any], request_id: str) -> None:
    """Refuse a request id sent again for a different request."""
    if task.operation != operation or task.args_json != dumps(args):
        raise InvalidRequest(
            f"request_id {request_id!r} was already used for another request (task {task.id},"
            f" {task.operation}); send a new request id with every new request",
            {"param": "request_id", "task_id": task.id},
        )
