"""The coordinator against a deliberately naive model of docs/design.md §2 to §4.

The model keeps every incomplete task in one global list, in arrival order, and answers every
question by brute force over that list: existence by replaying the whole list, conflicts by
scanning every earlier task, and what runs by one pass from the front that starts each
conflict-free task (a heavy one only while a slot is free, so the earliest ready heavy task
always gets the slot first). It is slow and obviously right; the coordinator is fast and
must agree with it after every step. The invariants of the coordinator's theory of operation
are checked on the coordinator itself after every step too.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from coordd.engine.coordinator import (
    SERVER_BUSY,
    Blocker,
    Claim,
    Coordinator,
    Decision,
    Kind,
    Recovery,
    Resource,
    StoredTask,
    TaskSpec,
    Verdict,
)

TRACKED = "repository"
# Few resources, so that tasks meet in the same lines.
REPOS = [Resource(TRACKED, f"r{i}") for i in range(2)]
LOCKS = [Resource("lock", f"l{i}") for i in range(2)]  # untracked: existence unknown
POOL = REPOS + LOCKS
# Creates and deletes rarer than reads and updates: most of them would be rejected anyway.
SOME_KIND = st.sampled_from(["create", "read", "read", "update", "update", "delete"])

# docs/design.md §2 (ahead ↓ / new →): True means the new task must wait.
MUST_WAIT: dict[Kind, dict[Kind, bool]] = {
    "create": {"create": True, "read": True, "update": True, "delete": True},
    "read": {"create": True, "read": False, "update": True, "delete": True},
    "update": {"create": True, "read": True, "update": True, "delete": True},
    "delete": {"create": True, "read": True, "update": True, "delete": True},
}


@dataclass
class ModelTask:
    spec: TaskSpec
    running: bool = False
    attempts: int = 0

    @property
    def id(self) -> str:
        return self.spec.id

    def kind_on(self, resource: Resource) -> Kind | None:
        for claim in self.spec.claims:
            if claim.resource == resource:
                return claim.kind
        return None


class Model:
    """The rules, by brute force over one global list of incomplete tasks."""

    def __init__(self, slots: int, existing: set[Resource]) -> None:
        self.slots = slots
        self.existing = set(existing)
        self.tasks: list[ModelTask] = []  # incomplete tasks, in arrival order

    def task(self, task_id: str) -> ModelTask:
        (found,) = [t for t in self.tasks if t.id == task_id]
        return found

    def running(self) -> set[str]:
        return {t.id for t in self.tasks if t.running}

    def waiting(self) -> list[str]:
        return [t.id for t in self.tasks if not t.running]

    def heavy_running(self) -> int:
        return sum(1 for t in self.tasks if t.running and t.spec.heavy)

    def order(self) -> list[str]:
        return [t.id for t in self.tasks if t.running] + self.waiting()

    def exists(self, resource: Resource) -> bool | None:
        return resource in self.existing if resource.type == TRACKED else None

    def rejections(self, spec: TaskSpec) -> tuple[Blocker, ...]:
        found = []
        for claim in spec.claims:
            state = self.exists(claim.resource)
            decider: ModelTask | None = None
            for t in self.tasks:
                kind = t.kind_on(claim.resource)
                if kind == "create":
                    state, decider = True, t
                elif kind == "delete":
                    state, decider = False, t
            if state is False and claim.kind != "create":
                reason = "pending delete" if decider else "does not exist"
            elif state is True and claim.kind == "create":
                reason = "pending create" if decider else "already exists"
            else:
                continue
            found.append(
                Blocker(
                    reason,
                    claim.resource,
                    decider.kind_on(claim.resource) if decider else None,
                    decider.id if decider else None,
                )
            )
        return tuple(found)

    def conflicts_ahead(self, spec: TaskSpec, position: int) -> tuple[Blocker, ...]:
        """For each claim, the nearest earlier incomplete task that it must wait for."""
        found = []
        for claim in spec.claims:
            for t in reversed(self.tasks[:position]):
                kind = t.kind_on(claim.resource)
                if kind is not None and MUST_WAIT[kind][claim.kind]:
                    found.append(Blocker("conflict", claim.resource, kind, t.id))
                    break
        return tuple(found)

    def waiting_for(self, task_id: str) -> tuple[Blocker, ...]:
        (position,) = [i for i, t in enumerate(self.tasks) if t.id == task_id]
        t = self.tasks[position]
        if t.running:
            return ()
        blockers = self.conflicts_ahead(t.spec, position)
        if not blockers and t.spec.heavy:
            blockers = (SERVER_BUSY,)
        return blockers

    def schedule(self) -> set[str]:
        """Start, front to back, every conflict-free task; heavy ones while slots last."""
        started = set()
        heavy = self.heavy_running()
        for position, t in enumerate(self.tasks):
            if t.running or self.conflicts_ahead(t.spec, position):
                continue
            if t.spec.heavy:
                if heavy >= self.slots:
                    continue
                heavy += 1
            t.running = True
            t.attempts += 1
            started.add(t.id)
        return started

    def submit(self, spec: TaskSpec) -> Decision:
        rejections = self.rejections(spec)
        if rejections:
            return Decision(Verdict.REJECTED, rejections)
        self.tasks.append(ModelTask(spec))
        blockers = self.conflicts_ahead(spec, len(self.tasks) - 1)
        started = self.schedule()
        if spec.id in started:
            assert started == {spec.id}
            return Decision(Verdict.ACCEPTED, start=(spec.id,))
        assert not started
        return Decision(Verdict.POSTPONED, blockers or (SERVER_BUSY,))

    def finish(self, task_id: str, succeeded: bool) -> set[str]:
        t = self.task(task_id)
        if succeeded:
            for claim in t.spec.claims:
                if claim.resource.type == TRACKED and claim.kind == "create":
                    self.existing.add(claim.resource)
                elif claim.resource.type == TRACKED and claim.kind == "delete":
                    self.existing.discard(claim.resource)
        self.tasks.remove(t)
        return self.schedule()

    def cancel(self, task_id: str) -> set[str]:
        self.tasks.remove(self.task(task_id))
        return self.schedule()

    def set_slots(self, slots: int) -> set[str]:
        self.slots = slots
        return self.schedule()

    def restart(
        self, restartable: set[str], held: set[str], max_attempts: int
    ) -> tuple[list[str], list[str], list[str], set[str]]:
        rerun, interrupted, kept = [], [], []
        for t in list(self.tasks):
            if not t.running:
                continue
            if t.id in held:
                kept.append(t.id)
            elif t.id in restartable and t.attempts < max_attempts:
                t.running = False
                rerun.append(t.id)
            else:
                self.tasks.remove(t)
                interrupted.append(t.id)
        return rerun, interrupted, kept, self.schedule()


class CoordinatorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.coord: Coordinator
        self.model: Model
        self.seq = 0
        self.next_id = 0
        # Heavy tasks running over the limit, allowed only after slots were lowered (or
        # held heavy tasks came back from a restart); it only shrinks as they end.
        self.excess = 0

    @initialize(slots=st.integers(1, 2), existing=st.sets(st.sampled_from(REPOS)))
    def start(self, slots: int, existing: set[Resource]) -> None:
        self.coord = Coordinator(slots, existing=existing)
        self.model = Model(slots, existing)

    # -- rules ---------------------------------------------------------------------------

    def _submit(self, claims: list[tuple[Resource, Kind]], heavy: bool, gap: int) -> None:
        self.seq += gap
        self.next_id += 1
        spec = TaskSpec(f"t{self.next_id}", self.seq, tuple(Claim(r, k) for r, k in claims), heavy)
        checked = self.coord.check(spec)
        decision = self.coord.submit(spec)
        assert decision == checked
        assert decision == self.model.submit(spec)

    @rule(
        claims=st.lists(
            st.tuples(st.sampled_from(POOL), SOME_KIND),
            min_size=1,
            max_size=3,
            unique_by=lambda claim: claim[0],
        ),
        heavy=st.booleans(),
        gap=st.integers(1, 3),
    )
    def submit(self, claims: list[tuple[Resource, Kind]], heavy: bool, gap: int) -> None:
        self._submit(claims, heavy, gap)

    @rule(
        resource=st.sampled_from(POOL),
        kind=st.sampled_from(["read", "update"]),
        heavy=st.booleans(),
    )
    def submit_read_or_update(self, resource: Resource, kind: Kind, heavy: bool) -> None:
        # Reads and updates build lines; random kinds alone would mostly be rejected.
        self._submit([(resource, kind)], heavy, 1)

    @precondition(lambda self: self.model.running())
    @rule(data=st.data(), succeeded=st.booleans())
    def finish(self, data: st.DataObject, succeeded: bool) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.model.running())), label="task")
        started = self.coord.finish(task_id, succeeded=succeeded)
        assert len(started) == len(set(started))
        assert set(started) == self.model.finish(task_id, succeeded)

    @precondition(lambda self: self.model.waiting())
    @rule(data=st.data())
    def cancel_waiting(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(self.model.waiting()), label="task")
        started = self.coord.cancel_waiting(task_id)
        assert len(started) == len(set(started))
        assert set(started) == self.model.cancel(task_id)

    # Only with tasks queued: runs where every other rule is switched off would otherwise
    # be long strings of set_slots and nothing else.
    @precondition(lambda self: self.model.tasks)
    @rule(slots=st.integers(1, 3))
    def set_slots(self, slots: int) -> None:
        self.excess = max(self.excess, self.coord.heavy_running)
        started = self.coord.set_slots(slots)
        assert set(started) == self.model.set_slots(slots)

    @precondition(lambda self: self.model.tasks)
    @rule(data=st.data(), max_attempts=st.integers(1, 3))
    def restart(self, data: st.DataObject, max_attempts: int) -> None:
        running = sorted(self.model.running())
        restartable = data.draw(st.sets(st.sampled_from(running)) if running else st.just(set()))
        held = data.draw(st.sets(st.sampled_from(running)) if running else st.just(set()))
        stored = [
            StoredTask(
                t.spec,
                running=t.running,
                restartable=t.id in restartable,
                held=t.id in held,
                attempts=t.attempts,
            )
            for t in self.model.tasks
        ]
        stored = data.draw(st.permutations(stored), label="stored order")

        self.coord = Coordinator(
            self.model.slots, existing={r for r in REPOS if self.model.exists(r)}
        )
        recovery = self.coord.recover(stored, max_attempts)
        rerun, interrupted, kept, start = self.model.restart(restartable, held, max_attempts)
        assert recovery == Recovery(tuple(rerun), tuple(interrupted), tuple(kept), recovery.start)
        assert len(recovery.start) == len(set(recovery.start))
        assert set(recovery.start) == start
        self.excess = sum(1 for t in self.model.tasks if t.id in held and t.spec.heavy)

    # -- agreement with the model --------------------------------------------------------

    @invariant()
    def agrees_with_model(self) -> None:
        coord, model = self.coord, self.model
        assert coord.order() == model.order()
        assert len(coord) == len(model.tasks)
        assert {t for t in coord.order() if coord.is_running(t)} == model.running()
        assert coord.heavy_running == model.heavy_running()
        assert coord.slots == model.slots
        for t in model.tasks:
            assert coord.waiting_for(t.id) == model.waiting_for(t.id)
        for resource in POOL:
            assert coord.exists(resource) == model.exists(resource)
            assert coord.line(resource) == [
                (t.id, t.kind_on(resource)) for t in model.tasks if t.kind_on(resource)
            ]

    # -- invariants, checked on the coordinator alone ---------------------------------

    @invariant()
    def nothing_conflicting_runs_together_or_out_of_order(self) -> None:
        for resource in POOL:
            line = self.coord.line(resource)
            for i, (task_id, kind) in enumerate(line):
                if not self.coord.is_running(task_id):
                    continue
                # Nothing conflicting ahead, running or waiting; so no two running tasks
                # conflict either.
                for _, ahead in line[:i]:
                    assert not MUST_WAIT[ahead][kind], (resource, line)

    @invariant()
    def heavy_tasks_within_slots(self) -> None:
        self.excess = min(self.excess, self.coord.heavy_running)
        assert self.coord.heavy_running <= max(self.coord.slots, self.excess)

    @invariant()
    def every_waiting_task_has_a_reason(self) -> None:
        for task_id in self.coord.order():
            if self.coord.is_running(task_id):
                assert self.coord.waiting_for(task_id) == ()
                continue
            reasons = self.coord.waiting_for(task_id)
            assert reasons
            spec = self.model.task(task_id).spec
            free = all(
                not any(
                    MUST_WAIT[ahead][claim.kind]
                    for _, ahead in self._ahead(claim.resource, task_id)
                )
                for claim in spec.claims
            )
            if free:
                # Runnable yet waiting: only a heavy task, with every slot taken.
                assert spec.heavy
                assert self.coord.heavy_running >= self.coord.slots
                assert reasons == (SERVER_BUSY,)
            else:
                assert SERVER_BUSY not in reasons

    def _ahead(self, resource: Resource, task_id: str) -> list[tuple[str, Kind]]:
        line = self.coord.line(resource)
        (position,) = [i for i, (tid, _) in enumerate(line) if tid == task_id]
        return line[:position]


# Long runs over few resources: the interesting states (a line several deep, a heavy task
# ready while the slots are taken and another freed by the same finish) need many steps.
CoordinatorMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCoordinator = CoordinatorMachine.TestCase
