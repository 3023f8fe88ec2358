"""The coordinator: which task runs now, which waits, and which can never run.

This module is pure: no I/O, no clock, no anyio, no SQLite. The runtime tells it what happened
(a task was submitted, ended, was canceled, slots changed, the daemon restarted) and it answers
with decisions (accept, postpone with reasons, reject with reasons) and with the tasks the
runtime must start now. Everything here is tested without sockets.

Theory of operation
===================

A task declares up front every resource it touches, each with an operation kind
(``create``, ``read``, ``update``, ``delete``); it never acquires more later. Each resource has
a *line*: the tasks on it that are running or waiting, in arrival order. A task is "ahead" of
another on a resource if it stands earlier in that resource's line.

Two questions are asked of each declared resource when a task is submitted:

1. *Can it ever run?* Project the resource's existence through its line: start from what is
   known now (a tracked type such as ``repository`` is present or absent; an untracked type,
   used by external locks, is unknown), then apply each ``create`` (present) and ``delete``
   (absent) ahead, in order. Projected absent rejects anything but ``create``; projected
   present rejects ``create``; unknown rejects nothing. The reason names the task ahead that
   decides it, or says the resource does (not) exist. Rejected tasks leave no trace.

2. *Must it wait?* Reads share with reads; every other pair conflicts. A task may start when,
   on every one of its resources, no conflicting task stands ahead of it. Because a task waits
   for every earlier conflicting task, waiting or running, nothing overtakes (a read behind a
   waiting update waits: no writer starvation), and because the order is one global arrival
   order, multi-resource tasks cannot deadlock.

Heavy tasks additionally need one of ``slots``. A heavy task with no conflict but no free slot
is *ready*: it keeps its place in every line (later conflicting tasks still wait behind it)
and waits with the reason "server busy"; when a slot frees, the earliest ready heavy task takes
it. Light tasks never wait for slots.

Invariants (checked after every step by the stateful test):

- no two running tasks conflict on any resource;
- every running task is conflict-free in its lines (nothing conflicting ahead of it);
- running heavy tasks never exceed the slots (except after ``set_slots`` lowered them: running
  tasks are not stopped, new ones wait until the count falls below the new limit);
- every waiting task has at least one reason: a conflicting task ahead, or "server busy";
- a waiting task is runnable only if it is heavy and every slot is taken.

Cost: a decision looks only at the lines of the task's own resources. To find whether a task
is conflict-free on a line we walk the line from its head while the entries are reads, so the
work is bounded by the line's length, never by the total number of queued tasks.

Existence of tracked resources changes only when a ``create`` or ``delete`` task *succeeds*
(``finish(..., succeeded=True)``); a failed create leaves the resource absent and the tasks
admitted behind it will meet that at run time.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from coordd.api import names

Kind = Literal["create", "read", "update", "delete"]
KINDS: tuple[Kind, ...] = names.KINDS


@dataclass(frozen=True, order=True)
class Resource:
    """A named thing tasks operate on, e.g. ``Resource("repository", "demo")``."""

    type: str
    id: str

    def __str__(self) -> str:
        return f"{self.type} - {self.id}"


@dataclass(frozen=True)
class Claim:
    """One resource a task touches and the kind of operation it performs on it."""

    resource: Resource
    kind: Kind


def conflicts(ahead: Kind, new: Kind) -> bool:
    """The conflict matrix: reads share, every other pair conflicts."""
    return not (ahead == "read" and new == "read")


@dataclass(frozen=True)
class TaskSpec:
    """What the coordinator needs to know of a task: identity, order, claims, weight."""

    id: str
    seq: int
    claims: tuple[Claim, ...]
    heavy: bool = False


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    POSTPONED = "postponed"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Blocker:
    """Why a task waits, or why it was rejected.

    ``task_id`` is the task ahead that causes it (``None`` for "server busy", or when a
    rejection comes from the resource's current existence rather than from a task ahead).
    ``kind`` is that task's operation on ``resource``.
    """

    reason: str
    resource: Resource | None = None
    kind: Kind | None = None
    task_id: str | None = None


SERVER_BUSY = Blocker(reason="server busy")


@dataclass(frozen=True)
class Decision:
    """The answer to a submission; ``start`` lists tasks to start now (this one, if accepted)."""

    verdict: Verdict
    blockers: tuple[Blocker, ...] = ()
    start: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recovery:
    """What to do with tasks found in the store at start-up."""

    rerun: tuple[str, ...]  # were running, restartable: back to waiting, attempt + 1
    interrupted: tuple[str, ...]  # were running, not restartable or out of attempts
    held: tuple[str, ...]  # were running and are held by an external client: stay running
    start: tuple[str, ...]  # waiting tasks (rerun ones included) that may start at once


@dataclass(frozen=True)
class StoredTask:
    """A task as the store hands it back at start-up."""

    spec: TaskSpec
    running: bool
    restartable: bool = False
    held: bool = False
    attempts: int = 0


@dataclass
class _Entry:
    spec: TaskSpec
    running: bool = False
    ready: bool = False  # heavy, conflict-free, waiting for a slot


class _Line:
    """One resource's line: tasks in arrival order with their kind on this resource.

    Kept as parallel sorted lists by ``seq`` so removal of any member is a bisect.
    """

    __slots__ = ("kinds", "seqs", "task_ids")

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.task_ids: list[str] = []
        self.kinds: list[Kind] = []

    def __len__(self) -> int:
        return len(self.seqs)

    def append(self, seq: int, task_id: str, kind: Kind) -> None:
        if self.seqs and seq < self.seqs[-1]:
            i = bisect.bisect(self.seqs, seq)
            self.seqs.insert(i, seq)
            self.task_ids.insert(i, task_id)
            self.kinds.insert(i, kind)
        else:
            self.seqs.append(seq)
            self.task_ids.append(task_id)
            self.kinds.append(kind)

    def index(self, seq: int) -> int:
        i = bisect.bisect_left(self.seqs, seq)
        if i == len(self.seqs) or self.seqs[i] != seq:
            raise KeyError(seq)
        return i

    def remove(self, seq: int) -> None:
        i = self.index(seq)
        del self.seqs[i], self.task_ids[i], self.kinds[i]

    def free_at(self, i: int) -> bool:
        """True when nothing ahead of position ``i`` conflicts with its kind."""
        if i == 0:
            return True
        if self.kinds[i] != "read":
            return False
        return all(kind == "read" for kind in self.kinds[:i])

    def nearest_conflict(self, i: int) -> int | None:
        """The position of the closest task ahead of ``i`` that conflicts with it."""
        kind = self.kinds[i]
        for j in range(i - 1, -1, -1):
            if conflicts(self.kinds[j], kind):
                return j
        return None

    def free_prefix(self) -> Iterator[str]:
        """Task ids that are conflict-free on this line: the head, and reads following reads."""
        for i, kind in enumerate(self.kinds):
            if i > 0 and kind != "read":
                return
            yield self.task_ids[i]
            if kind != "read":
                return


class Coordinator:
    """Decides, for tasks on named resources, what runs now, what waits, what is refused."""

    def __init__(
        self,
        slots: int,
        *,
        tracked_types: Iterable[str] = ("repository",),
        existing: Iterable[Resource] = (),
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        self.tracked_types = frozenset(tracked_types)
        self._existing: set[Resource] = set(existing)
        self._entries: dict[str, _Entry] = {}
        self._lines: dict[Resource, _Line] = {}
        self._ready: list[tuple[int, str]] = []  # heavy tasks waiting only for a slot, by seq
        self._heavy_running = 0
        self._last_seq = -1

    # -- queries -----------------------------------------------------------------------

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def heavy_running(self) -> int:
        return self._heavy_running

    def exists(self, resource: Resource) -> bool | None:
        """Whether a resource exists now: ``None`` for untracked types."""
        if resource.type not in self.tracked_types:
            return None
        return resource in self._existing

    def is_running(self, task_id: str) -> bool:
        return self._entries[task_id].running

    def line(self, resource: Resource) -> list[tuple[str, Kind]]:
        """The tasks on a resource, in arrival order, with their kinds."""
        line = self._lines.get(resource)
        if line is None:
            return []
        return list(zip(line.task_ids, line.kinds, strict=True))

    def order(self) -> list[str]:
        """Incomplete tasks: running first, then waiting in the order they will run."""
        running = sorted((e.spec.seq, tid) for tid, e in self._entries.items() if e.running)
        waiting = sorted((e.spec.seq, tid) for tid, e in self._entries.items() if not e.running)
        return [tid for _, tid in running] + [tid for _, tid in waiting]

    def waiting_for(self, task_id: str) -> tuple[Blocker, ...]:
        """What a waiting task waits for: per resource, the nearest conflicting task ahead;
        or "server busy". Empty for a running task."""
        entry = self._entries[task_id]
        if entry.running:
            return ()
        blockers: list[Blocker] = []
        for claim in entry.spec.claims:
            line = self._lines[claim.resource]
            i = line.index(entry.spec.seq)
            j = line.nearest_conflict(i)
            if j is not None:
                blockers.append(
                    Blocker(
                        reason="conflict",
                        resource=claim.resource,
                        kind=line.kinds[j],
                        task_id=line.task_ids[j],
                    )
                )
        if not blockers and entry.spec.heavy:
            blockers.append(SERVER_BUSY)
        return tuple(blockers)

    # -- decisions ---------------------------------------------------------------------

    def check(self, spec: TaskSpec) -> Decision:
        """What ``submit`` would decide, without changing anything."""
        if spec.id in self._entries:
            raise ValueError(f"task {spec.id} is already known")
        rejections = self._rejections(spec)
        if rejections:
            return Decision(Verdict.REJECTED, rejections)
        blockers = self._conflicts_ahead(spec)
        if blockers:
            return Decision(Verdict.POSTPONED, blockers)
        if spec.heavy and not self._slot_free():
            return Decision(Verdict.POSTPONED, (SERVER_BUSY,))
        return Decision(Verdict.ACCEPTED, start=(spec.id,))

    def submit(self, spec: TaskSpec) -> Decision:
        """Decide a new task; unless rejected, it joins the lines of its resources."""
        if spec.seq <= self._last_seq:
            raise ValueError("tasks must be submitted in increasing seq order")
        decision = self.check(spec)
        if decision.verdict is Verdict.REJECTED:
            return decision
        self._last_seq = spec.seq
        entry = self._join(spec)
        if decision.verdict is Verdict.ACCEPTED:
            self._mark_running(entry)
        elif decision.blockers == (SERVER_BUSY,):
            self._make_ready(entry)
        return decision

    def finish(self, task_id: str, *, succeeded: bool) -> tuple[str, ...]:
        """A running task ended; returns the tasks to start now."""
        entry = self._entries[task_id]
        if not entry.running:
            raise ValueError(f"task {task_id} is not running")
        if succeeded:
            for claim in entry.spec.claims:
                if claim.resource.type in self.tracked_types:
                    if claim.kind == "create":
                        self._existing.add(claim.resource)
                    elif claim.kind == "delete":
                        self._existing.discard(claim.resource)
        if entry.spec.heavy:
            self._heavy_running -= 1
        return self._remove(entry)

    def cancel_waiting(self, task_id: str) -> tuple[str, ...]:
        """Withdraw a waiting task; returns the tasks behind it that may start now."""
        entry = self._entries[task_id]
        if entry.running:
            raise ValueError(f"task {task_id} is running")
        if entry.ready:
            self._ready.remove((entry.spec.seq, task_id))
        return self._remove(entry)

    def set_slots(self, slots: int) -> tuple[str, ...]:
        """Change the number of heavy slots; returns ready tasks that may start now."""
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        return self._fill_slots()

    def set_exists(self, resource: Resource, exists: bool) -> None:
        """Record a tracked resource's existence found outside any task (start-up)."""
        if exists:
            self._existing.add(resource)
        else:
            self._existing.discard(resource)

    def recover(self, tasks: Sequence[StoredTask], max_attempts: int) -> Recovery:
        """Take back the tasks found in the store after a restart.

        Running tasks held by an external client stay running (the client re-attaches);
        running restartable tasks with attempts left go back to waiting in their original
        place; other running tasks end as interrupted. Waiting tasks keep their order.
        """
        if self._entries:
            raise ValueError("recover() must be called on an empty coordinator")
        rerun: list[str] = []
        interrupted: list[str] = []
        held: list[str] = []
        for stored in sorted(tasks, key=lambda t: t.spec.seq):
            if stored.running and stored.held:
                held.append(stored.spec.id)
            elif stored.running and (not stored.restartable or stored.attempts >= max_attempts):
                interrupted.append(stored.spec.id)
                continue
            elif stored.running:
                rerun.append(stored.spec.id)
            entry = self._join(stored.spec)
            self._last_seq = max(self._last_seq, stored.spec.seq)
            if stored.running and stored.held:
                self._mark_running(entry)
        start = self._start_runnable(
            sorted((e.spec.seq, tid) for tid, e in self._entries.items() if not e.running)
        )
        return Recovery(tuple(rerun), tuple(interrupted), tuple(held), start)

    # -- internals ---------------------------------------------------------------------

    def _join(self, spec: TaskSpec) -> _Entry:
        """Add a task to the end of the lines of its resources."""
        entry = _Entry(spec)
        self._entries[spec.id] = entry
        for claim in spec.claims:
            line = self._lines.get(claim.resource)
            if line is None:
                line = self._lines[claim.resource] = _Line()
            line.append(spec.seq, spec.id, claim.kind)
        return entry

    def _slot_free(self) -> bool:
        return self._heavy_running < self.slots

    def _mark_running(self, entry: _Entry) -> None:
        entry.running = True
        entry.ready = False
        if entry.spec.heavy:
            self._heavy_running += 1

    def _make_ready(self, entry: _Entry) -> None:
        entry.ready = True
        bisect.insort(self._ready, (entry.spec.seq, entry.spec.id))

    def _rejections(self, spec: TaskSpec) -> tuple[Blocker, ...]:
        found: list[Blocker] = []
        for claim in spec.claims:
            state = self.exists(claim.resource)
            decider: tuple[str, Kind] | None = None
            line = self._lines.get(claim.resource)
            if line is not None:
                for task_id, kind in zip(line.task_ids, line.kinds, strict=True):
                    if kind == "create":
                        state, decider = True, (task_id, kind)
                    elif kind == "delete":
                        state, decider = False, (task_id, kind)
            if state is False and claim.kind != "create":
                reason = "pending delete" if decider else "does not exist"
            elif state is True and claim.kind == "create":
                reason = "pending create" if decider else "already exists"
            else:
                continue
            found.append(
                Blocker(
                    reason=reason,
                    resource=claim.resource,
                    kind=decider[1] if decider else None,
                    task_id=decider[0] if decider else None,
                )
            )
        return tuple(found)

    def _conflicts_ahead(self, spec: TaskSpec) -> tuple[Blocker, ...]:
        """For a task about to join the end of its lines: the nearest conflict on each."""
        blockers: list[Blocker] = []
        for claim in spec.claims:
            line = self._lines.get(claim.resource)
            if not line:
                continue
            for j in range(len(line) - 1, -1, -1):
                if conflicts(line.kinds[j], claim.kind):
                    blockers.append(
                        Blocker(
                            reason="conflict",
                            resource=claim.resource,
                            kind=line.kinds[j],
                            task_id=line.task_ids[j],
                        )
                    )
                    break
        return tuple(blockers)

    def _free(self, entry: _Entry) -> bool:
        """True when no conflicting task stands ahead of ``entry`` on any of its lines."""
        for claim in entry.spec.claims:
            line = self._lines[claim.resource]
            if not line.free_at(line.index(entry.spec.seq)):
                return False
        return True

    def _remove(self, entry: _Entry) -> tuple[str, ...]:
        del self._entries[entry.spec.id]
        candidates: set[tuple[int, str]] = set()
        for claim in entry.spec.claims:
            line = self._lines[claim.resource]
            line.remove(entry.spec.seq)
            if not line:
                del self._lines[claim.resource]
                continue
            for task_id in line.free_prefix():
                other = self._entries[task_id]
                if not other.running and not other.ready:
                    candidates.add((other.spec.seq, task_id))
        started = self._start_runnable(sorted(candidates))
        if entry.spec.heavy and entry.running:
            started += self._fill_slots()
        return started

    def _start_runnable(self, candidates: Iterable[tuple[int, str]]) -> tuple[str, ...]:
        """Start, in arrival order, each candidate that is conflict-free (heavy: with a slot)."""
        started: list[str] = []
        for _, task_id in candidates:
            entry = self._entries[task_id]
            if entry.running or entry.ready or not self._free(entry):
                continue
            if entry.spec.heavy and not self._slot_free():
                self._make_ready(entry)
                continue
            if entry.spec.heavy and self._ready and self._ready[0][0] < entry.spec.seq:
                # An earlier ready task takes the slot first; this one waits its turn.
                self._make_ready(entry)
                continue
            self._mark_running(entry)
            started.append(task_id)
        return tuple(started) + self._fill_slots()

    def _fill_slots(self) -> tuple[str, ...]:
        started: list[str] = []
        while self._ready and self._slot_free():
            _, task_id = self._ready.pop(0)
            entry = self._entries[task_id]
            entry.ready = False
            self._mark_running(entry)
            started.append(task_id)
        return tuple(started)
