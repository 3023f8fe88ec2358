"""Task rows: every statement and query on the ``tasks`` and ``task_resources`` tables.

The runtime keeps ``Task`` records in memory and persists each change through the statements
built here (``Store.write`` runs them in a group commit); the queries read history and the
queue back. The SQL of each kind of statement is one constant string: the writer groups
statements by table and SQL text (``coordd.store.writer.grouped``), so a burst of
submissions becomes one multi-row INSERT per table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from coordd.engine.coordinator import Resource
from coordd.engine.progress import Progress
from coordd.engine.tasks import State, Task, TaskEnd, claims_from_json, claims_to_json
from coordd.store.database import Statement, Store, dumps

# -- statements ---------------------------------------------------------------------------


def insert(task: Task, end: TaskEnd | None = None) -> list[Statement]:
    """The statements storing a new task, with its ``end`` if it already has one, and the
    resources it claims (``task_resources``, for the history of one resource)."""
    row = (
        "INSERT INTO tasks (seq, id, operation, args, claims, heavy, restartable, held, uid,"
        " state, submitted, started, attempts, finished, result, error, request_id, parent,"
        " reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            task.seq,
            task.id,
            task.operation,
            task.args_json,
            dumps(claims_to_json(task.claims)),
            int(task.heavy),
            int(task.restartable),
            int(task.held),
            task.uid,
            (end.state if end is not None else task.state).value,
            task.submitted,
            task.started,
            task.attempts,
            *((end.finished, dumps(end.result), dumps(end.error)) if end else (None,) * 3),
            task.request_id,
            task.parent,
            task.reason,
        ),
    )
    return [
        row,
        *(
            (
                "INSERT INTO task_resources (type, id, seq) VALUES (?, ?, ?)",
                (claim.resource.type, claim.resource.id, task.seq),
            )
            for claim in task.claims
        ),
    ]


def mark_started(task: Task) -> Statement:
    """A waiting task has started: its start time and attempt count."""
    return (
        "UPDATE tasks SET state = 'running', started = ?, attempts = ? WHERE id = ?",
        (task.started, task.attempts, task.id),
    )


def mark_requeued(task_id: str) -> Statement:
    """A task found running after a restart waits to run again."""
    return ("UPDATE tasks SET state = 'waiting' WHERE id = ?", (task_id,))


def mark_cancel_requested(task_id: str) -> Statement:
    return ("UPDATE tasks SET cancel_requested = 1 WHERE id = ?", (task_id,))


def save_progress(task_id: str, snapshot: dict[str, Any]) -> Statement:
    return ("UPDATE tasks SET progress = ? WHERE id = ?", (dumps(snapshot), task_id))


def mark_ended(task: Task, end: TaskEnd) -> Statement:
    """The statement recording a task's end (and its start, for one applied at once)."""
    return (
        "UPDATE tasks SET state = ?, started = ?, attempts = ?, finished = ?, result = ?,"
        " error = ?, progress = ?, cancel_requested = ? WHERE id = ?",
        (
            end.state.value,
            task.started,
            task.attempts,
            end.finished,
            dumps(end.result),
            dumps(end.error),
            dumps(task.progress_snapshot()),
            int(task.cancel_requested),
            task.id,
        ),
    )


# -- queries ------------------------------------------------------------------------------


async def incomplete(store: Store) -> list[Task]:
    """The waiting and running tasks, in submission order (the start-up path)."""
    rows = await store.fetch(
        f"SELECT {', '.join(_QUEUE_COLUMNS)} FROM tasks"  # noqa: S608 - constant names
        " WHERE state IN ('waiting', 'running') ORDER BY seq",
        named=False,
    )
    return [_queued_task(row) for row in rows]


async def count_by_state(store: Store) -> dict[str, int]:
    rows = await store.fetch("SELECT state, count(*) AS n FROM tasks GROUP BY state")
    return {row["state"]: int(row["n"]) for row in rows}


async def last_seq(store: Store) -> int:
    """The highest ``seq`` ever stored (0 for none)."""
    last = await store.fetch("SELECT max(seq) AS s FROM tasks")
    return int(last[0]["s"] or 0)


async def get(store: Store, task_id: str) -> Task | None:
    rows = await store.fetch("SELECT * FROM tasks WHERE id = ?", (task_id,))
    return _task_from_row(rows[0]) if rows else None


async def has_child(store: Store, parent: str) -> bool:
    """Whether a task was ever submitted with ``parent`` as its parent (and is still kept)."""
    rows = await store.fetch("SELECT 1 FROM tasks WHERE parent = ? LIMIT 1", (parent,))
    return bool(rows)


async def by_request(store: Store, uid: int, request_id: str) -> Task | None:
    """The task ``uid`` submitted with ``request_id``, if its row is still kept."""
    rows = await store.fetch(
        "SELECT * FROM tasks WHERE uid = ? AND request_id = ?", (uid, request_id)
    )
    return _task_from_row(rows[0]) if rows else None


async def history(
    store: Store, resource: Resource | None, states: Iterable[str], limit: int
) -> list[Task]:
    """Ended tasks in ``states`` (names), newest first; of one resource if given."""
    wanted = list(states)
    params: tuple[Any, ...] = (*wanted, limit)
    source, newest = "tasks", "tasks.seq"
    if resource is not None:  # walk its index backwards: no scan of every task, no sort
        source = "task_resources r JOIN tasks ON r.type = ? AND r.id = ? AND tasks.seq = r.seq"
        newest = "r.seq"
        params = (resource.type, resource.id, *params)
    states_in = f"tasks.state IN ({','.join('?' * len(wanted))})"
    # Only constants and placeholders are formatted into the SQL.
    sql = f"SELECT tasks.* FROM {source} WHERE {states_in} ORDER BY {newest} DESC LIMIT ?"  # noqa: S608
    return [_task_from_row(r) for r in await store.fetch(sql, params)]


async def purge(store: Store, cutoff: float) -> dict[str, int]:
    """Delete the tasks that ended before ``cutoff``; how many of each state went."""
    rows = await store.fetch(
        "SELECT state, count(*) AS n FROM tasks WHERE finished IS NOT NULL"
        " AND finished < ? GROUP BY state",
        (cutoff,),
    )
    if rows:
        await store.write(
            (
                "DELETE FROM task_resources WHERE seq IN (SELECT seq FROM tasks"
                " WHERE finished IS NOT NULL AND finished < ?)",
                (cutoff,),
            ),
            ("DELETE FROM tasks WHERE finished IS NOT NULL AND finished < ?", (cutoff,)),
        )
    return {row["state"]: int(row["n"]) for row in rows}


# -- rows to records ----------------------------------------------------------------------

_QUEUE_COLUMNS = (
    "id",
    "seq",
    "operation",
    "args",
    "claims",
    "heavy",
    "restartable",
    "held",
    "uid",
    "state",
    "submitted",
    "started",
    "attempts",
    "cancel_requested",
    "request_id",
    "parent",
    "reason",
)
_STATES = {state.value: state for state in State}


def _queued_task(row: tuple[Any, ...]) -> Task:
    """A waiting or running task from a tuple of ``_QUEUE_COLUMNS`` (the start-up path)."""
    (tid, seq, operation, args, claims, heavy, restartable, held, uid, state, submitted,
     started, attempts, cancel_requested, request_id, parent, reason) = row  # fmt: skip
    return Task(
        id=tid,
        seq=seq,
        operation=operation,
        args_json=args,
        claims=claims_from_json(claims),
        heavy=bool(heavy),
        restartable=bool(restartable),
        held=bool(held),
        uid=uid,
        state=_STATES[state],
        submitted=submitted,
        started=started,
        attempts=attempts,
        cancel_requested=bool(cancel_requested),
        request_id=request_id,
        parent=parent,
        reason=reason,
    )


def _task_from_row(row: Any) -> Task:
    report = json.loads(row["progress"]) if row["progress"] else {}
    return Task(
        id=row["id"],
        seq=row["seq"],
        operation=row["operation"],
        args_json=row["args"],
        claims=claims_from_json(row["claims"]),
        heavy=bool(row["heavy"]),
        restartable=bool(row["restartable"]),
        held=bool(row["held"]),
        uid=row["uid"],
        state=State(row["state"]),
        submitted=row["submitted"],
        started=row["started"],
        finished=row["finished"],
        result=json.loads(row["result"]) if row["result"] else None,
        error=json.loads(row["error"]) if row["error"] else None,
        progress_report=Progress(report if isinstance(report, dict) else {}),
        attempts=row["attempts"],
        cancel_requested=bool(row["cancel_requested"]),
        request_id=row["request_id"],
        parent=row["parent"],
        reason=row["reason"],
    )
