"""Schedules: tasks coordd submits by itself, at the times a recurrence names.

A schedule syncs or publishes one repository, or removes orphaned content, at the
occurrences of an ISO 8601 repeating interval (``coordd.engine.recurrence``). Its rules:

- At fire time it submits an ordinary task through the coordinator, as the user who made
  the schedule would: accepted, postponed or rejected like theirs. The fire is recorded
  (when, the verdict, the task) in the same transaction that stores the task.
- A fire while the schedule's previous task is still waiting or running submits nothing:
  it is recorded ``skipped``. Tasks of one schedule never stack up.
- Fires missed while the daemon was down (or busy) are run once, at the first look after
  it is back, not once per missed occurrence; the next run is then the first occurrence
  after that moment. ``Rn`` counts fires, a skipped or rejected one too.
- A schedule with a failure threshold N is disabled when N of its tasks in a row end in
  error; the reason names the last and its error. A task that finished resets the count;
  a canceled one leaves it as it was. Enabling it again clears the count and the reason.
- Deleting a repository deletes its schedules, in the transaction that ends the delete
  task (``Repositories.delete``); ``schedule.delete`` deletes one.
- The time comes from a ``Clock`` (``coordd.engine.clock``), never from ``time``: tests
  drive it.

``[content] orphan_cleanup_interval`` is a schedule too, kept in memory from the
configuration (id ``orphan_cleanup_interval``): listed, fired and recorded like the others,
changed only by the configuration.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from coordd.api import params
from coordd.api.errors import Conflict, InvalidRequest, NotFound, Unavailable
from coordd.engine.clock import Clock
from coordd.engine.coordinator import Decision, Verdict
from coordd.engine.recurrence import Recurrence, parse
from coordd.engine.runtime import Runtime
from coordd.engine.tasks import State, Task, blocker_to_json, iso, new_task_id
from coordd.repo.repositories import ORPHANS, Repositories
from coordd.store import taskrows
from coordd.store.database import Statement, Store

log = logging.getLogger("coordd.schedules")

# What each kind of schedule submits.
KINDS: Mapping[str, str] = {"sync": "repo.sync", "publish": "repo.publish", "orphans": ORPHANS}
REPOSITORY_KINDS = frozenset({"sync", "publish"})
# What a fire became.
ACCEPTED, POSTPONED, REJECTED, SKIPPED = "accepted", "postponed", "rejected", "skipped"
CONFIGURED = "orphan_cleanup_interval"  # the id of the schedule the configuration sets
MAX_SCHEDULES = 10_000
MAX_THRESHOLD = 1000
FIRES_KEPT = 100  # a schedule's newest fires kept in its history
IDLE_LOOK_S = 3600.0  # with nothing scheduled, look again this often anyway
RETRY_S = 5.0  # after an unexpected failure to fire


@dataclass
class Schedule:
    """One schedule, as kept in memory and in the ``schedules`` table."""

    id: str
    kind: str
    repo_id: str | None
    recurrence: Recurrence
    enabled: bool
    failure_threshold: int | None
    uid: int
    created: float
    updated: float
    failures: int = 0  # consecutive failed tasks
    disabled_reason: str | None = None
    runs: int = 0  # fires so far (what Rn counts)
    next_run: float | None = None
    last_task: str | None = None
    configured: bool = False  # set by the configuration, not stored
    last_fire: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def operation(self) -> str:
        return KINDS[self.kind]

    @property
    def args(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id} if self.repo_id is not None else {}

    @property
    def reason(self) -> str:
        return f"schedule {self.id} ({self.kind} {self.recurrence.text})"

    def exhausted(self) -> bool:
        repeats = self.recurrence.repeats
        return repeats is not None and self.runs >= repeats

    def plan(self, now: float) -> None:
        """Set the next run: the first occurrence at or after ``now`` (none if disabled or
        its repetitions are spent)."""
        if not self.enabled or self.exhausted():
            self.next_run = None
        elif now <= self.recurrence.start:
            self.next_run = self.recurrence.start
        else:
            self.next_run = self.recurrence.first_after(now - 1e-6)

    def insert(self) -> Statement:
        return (
            "INSERT INTO schedules (id, kind, repo_id, schedule, enabled, failure_threshold,"
            " failures, disabled_reason, runs, next_run, last_task, uid, created, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.id,
                self.kind,
                self.repo_id,
                self.recurrence.text,
                int(self.enabled),
                self.failure_threshold,
                self.failures,
                self.disabled_reason,
                self.runs,
                self.next_run,
                self.last_task,
                self.uid,
                self.created,
                self.updated,
            ),
        )

    def save(self) -> Statement:
        """Its changing fields (an UPDATE: a deleted schedule is not brought back)."""
        return (
            "UPDATE schedules SET schedule = ?, enabled = ?, failure_threshold = ?,"
            " failures = ?, disabled_reason = ?, runs = ?, next_run = ?, last_task = ?,"
            " updated = ? WHERE id = ?",
            (
                self.recurrence.text,
                int(self.enabled),
                self.failure_threshold,
                self.failures,
                self.disabled_reason,
                self.runs,
                self.next_run,
                self.last_task,
                self.updated,
                self.id,
            ),
        )

    def to_json(self) -> dict[str, Any]:
        repeats = self.recurrence.repeats
        return {
            "id": self.id,
            "kind": self.kind,
            "operation": self.operation,
            "repo_id": self.repo_id,
            "schedule": self.recurrence.text,
            "enabled": self.enabled,
            "next_run": iso(self.next_run),
            "failure_threshold": self.failure_threshold,
            "consecutive_failures": self.failures,
            "disabled_reason": self.disabled_reason,
            "runs": self.runs,
            "remaining_runs": None if repeats is None else max(repeats - self.runs, 0),
            "last_task": self.last_task,
            "last_fire": self.last_fire,
            "uid": self.uid,
            "created": iso(self.created),
            "updated": iso(self.updated),
            "configured": self.configured,
        }


def _fire_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "at": iso(row["at"]),
        "outcome": row["outcome"],
        "task_id": row["task_id"],
        "detail": row["detail"],
        "task_state": row["task_state"],
    }


def _blockers_text(blockers: list[dict[str, Any]]) -> str | None:
    """What a fire's task waits for, or why it was rejected, as the history shows it."""
    parts = []
    for blocker in blockers:
        text = str(blocker.get("reason", ""))
        if blocker.get("task_id"):
            text += f": task {blocker['task_id']}"
        resource = blocker.get("resource")
        if resource and blocker.get("operation"):
            text += f" ({blocker['operation']} on {resource['type']} {resource['id']})"
        parts.append(text)
    return "; ".join(parts) or None


class Scheduler:
    """The schedules, in memory and in the task store, and the loop that fires them."""

    def __init__(
        self, store: Store, runtime: Runtime, repos: Repositories, clock: Clock, own_uid: int
    ) -> None:
        """``own_uid``: the daemon's uid, which the configured schedule submits as."""
        self.store = store
        self.own_uid = own_uid
        self.runtime = runtime
        self.repos = repos
        self.clock = clock
        self.schedules: dict[str, Schedule] = {}
        self._open: dict[str, tuple[str, int]] = {}  # task id → (schedule id, fire seq)
        self._fire_seq = 0
        self._wake = anyio.Event()
        self._firing = anyio.Lock()
        runtime.watch_ends(self._task_ended)

    # -- start-up ------------------------------------------------------------------------

    async def start(self, tg: TaskGroup) -> None:
        """Load the schedules and the fires whose task had not ended; start the loop.
        After ``Runtime.start``: the tasks still waiting or running are known then."""
        await self.load()
        tg.start_soon(self.run)

    async def load(self) -> None:
        now = self.clock.now()
        for row in await self.store.fetch("SELECT * FROM schedules ORDER BY created, id"):
            schedule = Schedule(
                id=row["id"],
                kind=row["kind"],
                repo_id=row["repo_id"],
                recurrence=parse(row["schedule"]),
                enabled=bool(row["enabled"]),
                failure_threshold=row["failure_threshold"],
                uid=row["uid"],
                created=row["created"],
                updated=row["updated"],
                failures=row["failures"],
                disabled_reason=row["disabled_reason"],
                runs=row["runs"],
                next_run=row["next_run"],
                last_task=row["last_task"],
            )
            self.schedules[schedule.id] = schedule
        last = await self.store.fetch(
            "SELECT * FROM schedule_fires WHERE seq IN"
            " (SELECT max(seq) FROM schedule_fires GROUP BY schedule_id)"
        )
        for row in last:
            if row["schedule_id"] in self.schedules:
                self.schedules[row["schedule_id"]].last_fire = _fire_json(row)
        top = await self.store.fetch("SELECT max(seq) AS s FROM schedule_fires")
        self._fire_seq = int(top[0]["s"] or 0)
        pending = await self.store.fetch(
            "SELECT seq, schedule_id, task_id FROM schedule_fires"
            " WHERE task_id IS NOT NULL AND task_state IS NULL ORDER BY seq"
        )
        for row in pending:
            task_id = row["task_id"]
            if task_id in self.runtime.tasks:
                self._open[task_id] = (row["schedule_id"], row["seq"])
                continue
            # It ended while this daemon was not watching (a restart found it interrupted).
            task = await taskrows.get(self.store, task_id)
            self._ended(row["schedule_id"], row["seq"], task_id, task)
        due = sum(
            1 for s in self.schedules.values() if s.next_run is not None and s.next_run <= now
        )
        log.info("%d schedules loaded; %d due now", len(self.schedules), due)

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Fire what is due, then sleep until the next run or a change of the schedules."""
        while not self.runtime.stopping:
            self._wake = anyio.Event()
            try:
                await self.fire_due()
            except Unavailable:
                return  # the database failed, or the daemon is stopping
            except Exception:  # a bug here must not take the daemon down with it
                log.exception("firing the schedules that are due failed; trying again soon")
                await anyio.sleep(RETRY_S)
            runs = [s.next_run for s in self.schedules.values() if s.next_run is not None]
            now = self.clock.now()
            deadline = min(runs) if runs else now + IDLE_LOOK_S
            await self.clock.sleep_until(deadline, self._wake)

    async def fire_due(self) -> int:
        """Fire every schedule that is due now, earliest first; how many fired."""
        fired = 0
        async with self._firing:
            now = self.clock.now()
            due = sorted(
                (
                    s
                    for s in self.schedules.values()
                    if s.next_run is not None and s.next_run <= now
                ),
                key=lambda s: (s.next_run, s.created, s.id),
            )
            for schedule in due:
                if self.runtime.stopping:
                    break
                if self.schedules.get(schedule.id) is schedule:  # not deleted meanwhile
                    await self._fire(schedule, now)
                    fired += 1
        return fired

    async def _fire(self, schedule: Schedule, now: float) -> None:
        self._fire_seq += 1
        seq = self._fire_seq
        schedule.runs += 1
        schedule.next_run = None
        if not schedule.exhausted():
            schedule.next_run = schedule.recurrence.first_after(now)
        schedule.updated = now

        def fire(outcome: str, task_id: str | None, detail: str | None) -> list[Statement]:
            schedule.last_fire = {
                "at": iso(now),
                "outcome": outcome,
                "task_id": task_id,
                "detail": detail,
                "task_state": None,
            }
            log.info(
                "schedule %s (%s%s): %s%s",
                schedule.id,
                schedule.kind,
                f" {schedule.repo_id}" if schedule.repo_id else "",
                outcome,
                f", task {task_id}" if task_id else f": {detail}",
            )
            statements: list[Statement] = [
                (
                    "INSERT INTO schedule_fires (seq, schedule_id, at, outcome, task_id, detail)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (seq, schedule.id, now, outcome, task_id, detail),
                ),
                (
                    "DELETE FROM schedule_fires WHERE schedule_id = ? AND seq NOT IN (SELECT seq"
                    " FROM schedule_fires WHERE schedule_id = ? ORDER BY seq DESC LIMIT ?)",
                    (schedule.id, schedule.id, FIRES_KEPT),
                ),
            ]
            if not schedule.configured:
                statements.append(schedule.save())
            return statements

        previous = self.runtime.tasks.get(schedule.last_task) if schedule.last_task else None
        if previous is not None:
            detail = f"the previous task {previous.id} is still {previous.state.value}"
            await self.store.write(*fire(SKIPPED, None, detail))
            return

        def stored(task: Task, decision: Decision) -> list[Statement]:
            verdict = ACCEPTED if decision.verdict is Verdict.ACCEPTED else POSTPONED
            schedule.last_task = task.id
            self._open[task.id] = (schedule.id, seq)
            waits = _blockers_text([blocker_to_json(b) for b in decision.blockers])
            return fire(verdict, task.id, waits)

        try:
            await self.runtime.submit(
                schedule.operation,
                schedule.args,
                schedule.uid,
                reason=schedule.reason,
                also=stored,
            )
        except Conflict as exc:
            detail = _blockers_text((exc.data or {}).get("conflicts", [])) or exc.message
            await self.store.write(*fire(REJECTED, None, detail))

    # -- task ends -----------------------------------------------------------------------

    def _task_ended(self, task: Task) -> None:
        if task.operation == "repo.delete" and task.state is State.FINISHED:
            repo_id = task.args.get("repo_id")
            for schedule_id in [s.id for s in self.schedules.values() if s.repo_id == repo_id]:
                del self.schedules[schedule_id]  # its rows went with the delete's end
        entry = self._open.pop(task.id, None)
        if entry is not None:
            self._ended(entry[0], entry[1], task.id, task)

    def _ended(self, schedule_id: str, seq: int, task_id: str, task: Task | None) -> None:
        """Record how a fire's task ended, and count it against the failure threshold."""
        state = task.state.value if task is not None else "unknown"
        statements: list[Statement] = [
            ("UPDATE schedule_fires SET task_state = ? WHERE seq = ?", (state, seq))
        ]
        schedule = self.schedules.get(schedule_id)
        if schedule is not None:
            if schedule.last_fire is not None and schedule.last_fire.get("task_id") == task_id:
                # A new dict, never a change in place: an answer holding the old one may
                # not be encoded yet (``schedule.show`` reads the history first).
                schedule.last_fire = {**schedule.last_fire, "task_state": state}
            if task is not None and task.state is State.ERROR:
                schedule.failures += 1
                threshold = schedule.failure_threshold
                if threshold is not None and schedule.failures >= threshold and schedule.enabled:
                    message = (task.error or {}).get("message", "error")
                    schedule.enabled = False
                    schedule.next_run = None
                    schedule.disabled_reason = (
                        f"disabled after {schedule.failures} consecutive failed tasks; the"
                        f" last, task {task_id}, failed: {message}"
                    )
                    log.warning("schedule %s: %s", schedule.id, schedule.disabled_reason)
            elif task is not None and task.state is State.FINISHED:
                schedule.failures = 0
            if not schedule.configured:
                statements.append(schedule.save())
        self.store.write_later(*statements)

    # -- requests ------------------------------------------------------------------------

    async def create(
        self,
        kind: Any,
        repo_id: str | None,
        text: Any,
        *,
        failure_threshold: Any = None,
        enabled: Any = True,
        uid: int,
    ) -> Schedule:
        if kind not in KINDS:
            raise InvalidRequest(
                f"kind must be one of {', '.join(KINDS)}, not {kind!r}", {"param": "kind"}
            )
        if kind in REPOSITORY_KINDS:
            if repo_id is None:
                raise InvalidRequest(f"a {kind} schedule needs repo_id", {"param": "repo_id"})
            self.repos.get(repo_id)
        elif repo_id is not None:
            raise InvalidRequest(
                "an orphans schedule is for the whole pool: give no repo_id", {"param": "repo_id"}
            )
        recurrence = parse(text)
        threshold = _threshold(failure_threshold)
        is_enabled = params.boolean(enabled, "enabled")
        if len(self.schedules) >= MAX_SCHEDULES:
            raise InvalidRequest(f"there are already {MAX_SCHEDULES} schedules; delete some first")
        operation = KINDS[kind]
        args = {"repo_id": repo_id} if repo_id is not None else {}
        decision = self.runtime.check(operation, args)
        if decision.verdict is Verdict.REJECTED:  # a delete of the repository is queued
            raise Conflict(
                f"a {kind} schedule could never fire for repository {repo_id}",
                {"conflicts": [blocker_to_json(b) for b in decision.blockers]},
            )
        now = self.clock.now()
        schedule = Schedule(
            id=new_task_id(),
            kind=kind,
            repo_id=repo_id,
            recurrence=recurrence,
            enabled=is_enabled,
            failure_threshold=threshold,
            uid=uid,
            created=now,
            updated=now,
        )
        schedule.plan(now)
        await self.store.write(schedule.insert())
        self.schedules[schedule.id] = schedule
        self._wake.set()
        return schedule

    def get(
        self, schedule_id: Any, *, kind: str | None = None, repo_id: str | None = None
    ) -> Schedule:
        sid = params.required_text(schedule_id, "schedule_id", max_len=64)
        schedule = self.schedules.get(sid)
        if (
            schedule is None
            or (kind is not None and schedule.kind != kind)
            or (repo_id is not None and schedule.repo_id != repo_id)
        ):
            where = f" {kind}" if kind else ""
            where += f" of repository {repo_id}" if repo_id else ""
            raise NotFound(f"no{where} schedule {sid}", {"schedule_id": sid})
        return schedule

    def _changeable(self, schedule: Schedule) -> None:
        if schedule.configured:
            raise InvalidRequest(
                f"schedule {schedule.id} is set by the configuration ([content]"
                " orphan_cleanup_interval); change it there and reload coordd",
                {"param": "schedule_id"},
            )

    async def update(
        self,
        schedule: Schedule,
        *,
        text: Any = None,
        failure_threshold: Any = None,
        clear_threshold: bool = False,
        enabled: Any = None,
    ) -> Schedule:
        """Change what is given (``None``: unchanged; ``clear_threshold``: no threshold)."""
        self._changeable(schedule)
        recurrence = parse(text) if text is not None else None
        threshold = _threshold(failure_threshold) if failure_threshold is not None else None
        is_enabled = params.boolean(enabled, "enabled") if enabled is not None else None
        if recurrence is None and threshold is None and is_enabled is None and not clear_threshold:
            raise InvalidRequest("nothing to update: give schedule, failure_threshold or enabled")
        now = self.clock.now()
        replan = False
        if recurrence is not None:
            schedule.recurrence, schedule.runs, replan = recurrence, 0, True
        if threshold is not None or clear_threshold:
            schedule.failure_threshold = threshold
        if is_enabled is not None and is_enabled != schedule.enabled:
            schedule.enabled, replan = is_enabled, True
            if is_enabled:
                schedule.failures, schedule.disabled_reason = 0, None
        if replan:
            schedule.plan(now)
        schedule.updated = now
        await self.store.write(schedule.save())
        self._wake.set()
        return schedule

    async def delete(self, schedule: Schedule) -> None:
        self._changeable(schedule)
        self.schedules.pop(schedule.id, None)
        await self.store.write(
            ("DELETE FROM schedules WHERE id = ?", (schedule.id,)),
            ("DELETE FROM schedule_fires WHERE schedule_id = ?", (schedule.id,)),
        )
        self._wake.set()

    def listed(self, kind: str | None = None, repo_id: str | None = None) -> list[Schedule]:
        return [
            s
            for s in self.schedules.values()
            if (kind is None or s.kind == kind) and (repo_id is None or s.repo_id == repo_id)
        ]

    async def history(self, schedule: Schedule, limit: int) -> list[dict[str, Any]]:
        rows = await self.store.fetch(
            "SELECT * FROM schedule_fires WHERE schedule_id = ? ORDER BY seq DESC LIMIT ?",
            (schedule.id, limit),
        )
        return [_fire_json(row) for row in rows]

    # -- the configured schedule ---------------------------------------------------------

    def configure_orphan_cleanup(self, interval_s: float) -> None:
        """``[content] orphan_cleanup_interval`` as a schedule from now on (0: none)."""
        current = self.schedules.get(CONFIGURED)
        if current is not None and current.recurrence.interval == interval_s:
            return
        if interval_s <= 0:
            self.schedules.pop(CONFIGURED, None)
            return
        now = self.clock.now()
        text = f"{iso(now)}/PT{interval_s:g}S"
        schedule = Schedule(
            id=CONFIGURED,
            kind="orphans",
            repo_id=None,
            recurrence=Recurrence(text, now, interval_s, None),
            enabled=True,
            failure_threshold=None,
            uid=self.own_uid,
            created=now,
            updated=now,
            configured=True,
            next_run=now + interval_s,
        )
        if current is not None:
            schedule.last_task, schedule.last_fire = current.last_task, current.last_fire
        self.schedules[CONFIGURED] = schedule
        self._wake.set()


def _threshold(value: Any) -> int | None:
    if value is None:
        return None
    return params.integer(value, "failure_threshold", 1, MAX_THRESHOLD)
