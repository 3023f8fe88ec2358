"""Unit tests of the coordinator, driven directly: no daemon, no store, no clock.

The expected answers are written out from docs/design.md §2 to §4 rather than derived from the
coordinator's own helpers, so a wrong rule in ``coordd/coordinator.py`` fails here.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable

import pytest

from coordd.engine import coordinator
from coordd.engine.coordinator import (
    KINDS,
    SERVER_BUSY,
    Blocker,
    Claim,
    Coordinator,
    Decision,
    Kind,
    Resource,
    StoredTask,
    TaskSpec,
    Verdict,
)

ACCEPTED = Verdict.ACCEPTED
POSTPONED = Verdict.POSTPONED
REJECTED = Verdict.REJECTED

# A type named only by external locks (`coordctl run`): its existence is unknown.
LOCK = "lock"

# docs/design.md §2, row by row (ahead ↓ / new →): True means the new task must wait.
MUST_WAIT: dict[Kind, dict[Kind, bool]] = {
    "create": {"create": True, "read": True, "update": True, "delete": True},
    "read": {"create": True, "read": False, "update": True, "delete": True},
    "update": {"create": True, "read": True, "update": True, "delete": True},
    "delete": {"create": True, "read": True, "update": True, "delete": True},
}
CELLS = list(itertools.product(KINDS, KINDS))


def repo(name: str) -> Resource:
    return Resource("repository", name)


def lock(name: str) -> Resource:
    return Resource(LOCK, name)


def spec(task_id: str, seq: int, claims: dict[Resource, Kind], *, heavy: bool = False) -> TaskSpec:
    return TaskSpec(
        task_id, seq, tuple(Claim(resource, kind) for resource, kind in claims.items()), heavy
    )


def conflict(resource: Resource, kind: Kind, task_id: str) -> Blocker:
    return Blocker(reason="conflict", resource=resource, kind=kind, task_id=task_id)


class Harness:
    """A coordinator plus the arrival counter the runtime would keep."""

    def __init__(self, slots: int = 4, existing: Iterable[Resource] = ()) -> None:
        self.coord = Coordinator(slots, existing=existing)
        self.seq = 0

    def submit(
        self, task_id: str, claims: dict[Resource, Kind], *, heavy: bool = False
    ) -> Decision:
        self.seq += 1
        return self.coord.submit(spec(task_id, self.seq, claims, heavy=heavy))

    def running(self) -> set[str]:
        return {tid for tid in self.coord.order() if self.coord.is_running(tid)}

    def waiting(self) -> list[str]:
        return [tid for tid in self.coord.order() if not self.coord.is_running(tid)]


def accepted(decision: Decision, task_id: str) -> bool:
    return decision == Decision(ACCEPTED, start=(task_id,))


# -- the conflict matrix -----------------------------------------------------------------


@pytest.mark.parametrize("ahead_running", [True, False], ids=["ahead-running", "ahead-waiting"])
@pytest.mark.parametrize(("ahead", "new"), CELLS)
def test_matrix_on_untracked_type(ahead: Kind, new: Kind, ahead_running: bool) -> None:
    h = Harness()
    r = lock("x")
    if not ahead_running:
        # Hold the "ahead" task back through a second resource so it waits, unstarted.
        h.submit("holder", {lock("other"): "update"})
        assert h.submit("ahead", {r: ahead, lock("other"): "update"}).verdict is POSTPONED
    else:
        assert accepted(h.submit("ahead", {r: ahead}), "ahead")

    decision = h.submit("new", {r: new})

    # An unknown resource rejects nothing by itself; a create or delete ahead still decides
    # what it will be when the new task's turn comes.
    if ahead == "create" and new == "create":
        assert decision == Decision(REJECTED, (Blocker("pending create", r, "create", "ahead"),))
    elif ahead == "delete" and new != "create":
        assert decision == Decision(REJECTED, (Blocker("pending delete", r, "delete", "ahead"),))
    elif MUST_WAIT[ahead][new]:
        assert decision == Decision(POSTPONED, (conflict(r, ahead, "ahead"),))
        assert h.coord.waiting_for("new") == (conflict(r, ahead, "ahead"),)
    else:
        assert accepted(decision, "new")


@pytest.mark.parametrize(("ahead", "new"), CELLS)
def test_matrix_on_repository(ahead: Kind, new: Kind) -> None:
    r = repo("demo")
    # The "ahead" task must itself be admissible: a create needs an absent repository.
    h = Harness(existing=[] if ahead == "create" else [r])
    assert accepted(h.submit("ahead", {r: ahead}), "ahead")

    decision = h.submit("new", {r: new})

    if ahead == "create" and new == "create":
        expected = Decision(REJECTED, (Blocker("pending create", r, "create", "ahead"),))
    elif ahead == "delete" and new != "create":
        expected = Decision(REJECTED, (Blocker("pending delete", r, "delete", "ahead"),))
    elif ahead in ("read", "update") and new == "create":
        expected = Decision(REJECTED, (Blocker("already exists", r),))
    elif MUST_WAIT[ahead][new]:
        expected = Decision(POSTPONED, (conflict(r, ahead, "ahead"),))
    else:
        expected = Decision(ACCEPTED, start=("new",))
    assert decision == expected
    assert ("new" in h.coord) is (decision.verdict is not REJECTED)


@pytest.mark.parametrize(("ahead", "new"), CELLS)
def test_matrix_without_existence(ahead: Kind, new: Kind) -> None:
    """Lines restored after a restart are not checked for existence again, so every cell,
    including those that existence would reject at submission, shows its wait rule."""
    r = lock("x")
    coord = Coordinator(4)
    recovery = coord.recover(
        [
            StoredTask(spec("new", 2, {r: new}), running=False),
            StoredTask(spec("ahead", 1, {r: ahead}), running=False),
        ],
        max_attempts=3,
    )
    if MUST_WAIT[ahead][new]:
        assert recovery.start == ("ahead",)
        assert coord.waiting_for("new") == (conflict(r, ahead, "ahead"),)
    else:
        assert recovery.start == ("ahead", "new")


# -- existence and rejection -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["read", "update", "delete"])
def test_absent_repository_rejects_all_but_create(kind: Kind) -> None:
    r = repo("demo")
    h = Harness()
    assert h.submit("t", {r: kind}) == Decision(
        REJECTED, (Blocker("does not exist", r, None, None),)
    )
    assert "t" not in h.coord
    assert len(h.coord) == 0
    assert accepted(h.submit("c", {r: "create"}), "c")


@pytest.mark.parametrize("kind", ["read", "update", "delete"])
def test_present_repository_rejects_create_only(kind: Kind) -> None:
    r = repo("demo")
    h = Harness(existing=[r])
    assert h.submit("c", {r: "create"}) == Decision(REJECTED, (Blocker("already exists", r),))
    assert accepted(h.submit("t", {r: kind}), "t")


@pytest.mark.parametrize("kind", ["read", "update", "delete"])
def test_behind_pending_delete_is_rejected_naming_it(kind: Kind) -> None:
    r = repo("demo")
    h = Harness(existing=[r])
    h.submit("sync", {r: "update"})
    assert h.submit("del", {r: "delete"}).verdict is POSTPONED
    decision = h.submit("late", {r: kind})
    assert decision.verdict is REJECTED
    assert decision.blockers == (
        Blocker(reason="pending delete", resource=r, kind="delete", task_id="del"),
    )
    assert decision.start == ()
    assert h.coord.order() == ["sync", "del"]


def test_create_behind_pending_delete_waits() -> None:
    r = repo("demo")
    h = Harness(existing=[r])
    h.submit("del", {r: "delete"})
    assert h.submit("re", {r: "create"}) == Decision(POSTPONED, (conflict(r, "delete", "del"),))


@pytest.mark.parametrize("kind", ["read", "update", "delete"])
def test_behind_delete_then_create_is_not_rejected(kind: Kind) -> None:
    r = repo("demo")
    h = Harness(existing=[r])
    h.submit("del", {r: "delete"})
    h.submit("re", {r: "create"})
    # A second create is refused: the first one will have re-created it...
    assert h.submit("re2", {r: "create"}) == Decision(
        REJECTED, (Blocker("pending create", r, "create", "re"),)
    )
    # ...and anything else will find it there.
    assert h.submit("t", {r: kind}) == Decision(POSTPONED, (conflict(r, "create", "re"),))


def test_behind_pending_create() -> None:
    r = repo("new")
    h = Harness()
    assert accepted(h.submit("mk", {r: "create"}), "mk")
    assert h.submit("mk2", {r: "create"}) == Decision(
        REJECTED, (Blocker("pending create", r, "create", "mk"),)
    )
    assert h.submit("cfg", {r: "update"}) == Decision(POSTPONED, (conflict(r, "create", "mk"),))


def test_every_rejecting_resource_is_named() -> None:
    a, b, c = repo("a"), repo("b"), repo("c")
    h = Harness(existing=[b, c])
    h.submit("del-c", {c: "delete"})
    decision = h.submit("t", {a: "read", b: "create", c: "update"})
    assert decision == Decision(
        REJECTED,
        (
            Blocker("does not exist", a),
            Blocker("already exists", b),
            Blocker("pending delete", c, "delete", "del-c"),
        ),
    )


def test_rejection_wins_over_conflict_and_leaves_no_trace() -> None:
    a, b = repo("a"), repo("b")
    h = Harness(existing=[a])
    h.submit("busy", {a: "update"})
    before = (h.coord.order(), h.coord.line(a), h.coord.line(b))
    rejected = h.coord.submit(spec("t", 5, {a: "update", b: "read"}))
    assert rejected == Decision(REJECTED, (Blocker("does not exist", b),))
    assert (h.coord.order(), h.coord.line(a), h.coord.line(b)) == before
    # Neither its id nor its place in the order was taken.
    assert h.coord.submit(spec("t", 5, {a: "update"})).verdict is POSTPONED


@pytest.mark.parametrize("kind", KINDS)
def test_untracked_type_rejects_nothing_by_itself(kind: Kind) -> None:
    coord = Coordinator(4)
    assert coord.exists(lock("x")) is None
    assert coord.submit(spec("t", 1, {lock("x"): kind})).verdict is ACCEPTED


def test_untracked_type_projects_through_delete_and_create_ahead() -> None:
    x = lock("x")
    h = Harness()
    h.submit("drop", {x: "delete"})
    assert h.submit("use", {x: "update"}) == Decision(
        REJECTED, (Blocker("pending delete", x, "delete", "drop"),)
    )
    h.submit("make", {x: "create"})
    assert h.submit("make2", {x: "create"}) == Decision(
        REJECTED, (Blocker("pending create", x, "create", "make"),)
    )
    assert h.submit("use", {x: "update"}).verdict is POSTPONED
    # Once the queue has drained, an untracked resource is unknown again.
    for tid in ["drop", "make", "use"]:
        h.coord.finish(tid, succeeded=True)
    assert len(h.coord) == 0
    assert h.coord.exists(x) is None
    assert accepted(h.submit("any", {x: "read"}), "any")
    assert accepted(h.submit("new", {lock("y"): "create"}), "new")


def test_existence_changes_only_when_create_or_delete_succeeds() -> None:
    r = repo("demo")
    h = Harness()
    h.submit("mk", {r: "create"})
    h.submit("cfg", {r: "update"})
    assert h.coord.exists(r) is False  # a running create is not a repository yet

    # A failed create leaves it absent; the task admitted behind it meets that when it runs.
    assert h.coord.finish("mk", succeeded=False) == ("cfg",)
    assert h.coord.exists(r) is False
    h.coord.finish("cfg", succeeded=True)
    assert h.submit("cfg2", {r: "update"}) == Decision(REJECTED, (Blocker("does not exist", r),))

    h.submit("mk2", {r: "create"})
    h.coord.finish("mk2", succeeded=True)
    assert h.coord.exists(r) is True
    assert h.submit("mk3", {r: "create"}) == Decision(REJECTED, (Blocker("already exists", r),))

    h.submit("upd", {r: "update"})
    h.coord.finish("upd", succeeded=True)
    assert h.coord.exists(r) is True

    h.submit("del", {r: "delete"})
    h.coord.finish("del", succeeded=False)
    assert h.coord.exists(r) is True
    h.submit("del2", {r: "delete"})
    h.coord.finish("del2", succeeded=True)
    assert h.coord.exists(r) is False


def test_canceled_create_or_delete_changes_nothing() -> None:
    a, b = repo("a"), repo("b")
    h = Harness(existing=[a])
    h.submit("busy-a", {a: "update"})
    h.submit("del-a", {a: "delete"})
    h.submit("busy-b", {b: "create"})
    h.submit("mk-b", {b: "update"})
    h.coord.cancel_waiting("del-a")
    h.coord.cancel_waiting("mk-b")
    assert (h.coord.exists(a), h.coord.exists(b)) == (True, False)


def test_set_exists() -> None:
    r = repo("found")
    coord = Coordinator(1)
    coord.set_exists(r, True)
    assert coord.exists(r) is True
    coord.set_exists(r, False)
    assert coord.exists(r) is False


# -- the Pulp v2 scenario -------------------------------------------------------------------


def test_pulp_scenario() -> None:
    demo = repo("demo")
    h = Harness(slots=2, existing=[demo])

    assert h.submit("sync", {demo: "update"}, heavy=True) == Decision(ACCEPTED, start=("sync",))
    assert h.submit("update", {demo: "update"}) == Decision(
        POSTPONED,
        (Blocker(reason="conflict", resource=demo, kind="update", task_id="sync"),),
    )
    assert h.submit("delete", {demo: "delete"}) == Decision(
        POSTPONED, (conflict(demo, "update", "update"),)
    )
    refused = h.submit("update-2", {demo: "update"})
    assert refused == Decision(
        REJECTED,
        (Blocker(reason="pending delete", resource=demo, kind="delete", task_id="delete"),),
    )
    assert h.coord.order() == ["sync", "update", "delete"]

    # Cancel of the waiting update: the delete now waits for the sync itself.
    assert h.coord.cancel_waiting("update") == ()
    assert h.coord.waiting_for("delete") == (conflict(demo, "update", "sync"),)
    assert h.coord.order() == ["sync", "delete"]

    # Cancel of the delete: the same request is now postponed, not rejected.
    assert h.coord.cancel_waiting("delete") == ()
    assert h.submit("update-2", {demo: "update"}) == Decision(
        POSTPONED, (conflict(demo, "update", "sync"),)
    )
    assert h.coord.finish("sync", succeeded=True) == ("update-2",)
    assert h.coord.order() == ["update-2"]


def test_order_lists_running_first_then_waiting_in_run_order() -> None:
    a, b = repo("a"), repo("b")
    h = Harness(existing=[a, b])
    h.submit("a1", {a: "update"})
    h.submit("a2", {a: "update"})
    h.submit("b1", {b: "update"})
    h.submit("a3", {a: "read"})
    h.submit("b2", {b: "read"})
    assert h.coord.order() == ["a1", "b1", "a2", "a3", "b2"]
    h.coord.finish("a1", succeeded=True)
    assert h.coord.order() == ["a2", "b1", "a3", "b2"]


# -- order: no overtaking, reads share, runnable set ---------------------------------------


def test_reads_share() -> None:
    r = repo("demo")
    h = Harness(existing=[r])
    for i in range(5):
        assert accepted(h.submit(f"r{i}", {r: "read"}), f"r{i}")
    assert h.running() == {f"r{i}" for i in range(5)}


def test_read_behind_waiting_update_waits() -> None:
    r = repo("demo")
    h = Harness(existing=[r])
    h.submit("r0", {r: "read"})
    assert h.submit("u1", {r: "update"}) == Decision(POSTPONED, (conflict(r, "read", "r0"),))
    assert h.submit("r2", {r: "read"}) == Decision(POSTPONED, (conflict(r, "update", "u1"),))
    assert h.submit("r3", {r: "read"}) == Decision(POSTPONED, (conflict(r, "update", "u1"),))
    assert h.coord.finish("r0", succeeded=True) == ("u1",)
    assert set(h.coord.finish("u1", succeeded=True)) == {"r2", "r3"}


def test_cancel_of_waiting_task_lets_those_behind_start() -> None:
    r = repo("demo")
    h = Harness(existing=[r])
    h.submit("r0", {r: "read"})
    h.submit("u1", {r: "update"})
    h.submit("r2", {r: "read"})
    h.submit("u3", {r: "update"})
    assert h.coord.cancel_waiting("u1") == ("r2",)
    assert h.running() == {"r0", "r2"}
    assert h.coord.waiting_for("u3") == (conflict(r, "read", "r2"),)


def test_copy_waits_for_either_side() -> None:
    a, b = repo("a"), repo("b")
    h = Harness(existing=[a, b])

    h.submit("sync-a", {a: "update"})
    assert h.submit("copy1", {a: "read", b: "update"}) == Decision(
        POSTPONED, (conflict(a, "update", "sync-a"),)
    )
    h.coord.finish("sync-a", succeeded=True)
    h.coord.finish("copy1", succeeded=True)

    h.submit("publish-b", {b: "read"})
    assert h.submit("copy2", {a: "read", b: "update"}) == Decision(
        POSTPONED, (conflict(b, "read", "publish-b"),)
    )
    h.coord.finish("publish-b", succeeded=True)
    h.coord.finish("copy2", succeeded=True)

    h.submit("sync-a2", {a: "update"})
    h.submit("sync-b2", {b: "update"})
    assert h.submit("copy3", {a: "read", b: "update"}) == Decision(
        POSTPONED, (conflict(a, "update", "sync-a2"), conflict(b, "update", "sync-b2"))
    )
    # Both sides must clear: one is not enough.
    assert h.coord.finish("sync-a2", succeeded=True) == ()
    assert h.coord.waiting_for("copy3") == (conflict(b, "update", "sync-b2"),)
    assert h.coord.finish("sync-b2", succeeded=True) == ("copy3",)


def test_running_copy_shares_its_source_and_holds_its_target() -> None:
    a, b = repo("a"), repo("b")
    h = Harness(existing=[a, b])
    assert accepted(h.submit("copy", {a: "read", b: "update"}), "copy")
    assert accepted(h.submit("publish-a", {a: "read"}), "publish-a")
    assert h.submit("sync-a", {a: "update"}) == Decision(
        POSTPONED, (conflict(a, "read", "publish-a"),)
    )
    assert h.submit("read-b", {b: "read"}) == Decision(POSTPONED, (conflict(b, "update", "copy"),))


def test_crossed_copies_do_not_deadlock() -> None:
    a, b = repo("a"), repo("b")
    h = Harness(existing=[a, b])
    h.submit("sync-a", {a: "update"})
    h.submit("sync-b", {b: "update"})
    h.submit("ab", {a: "read", b: "update"})
    h.submit("ba", {b: "read", a: "update"})
    assert h.coord.finish("sync-b", succeeded=True) == ()
    assert h.coord.finish("sync-a", succeeded=True) == ("ab",)
    assert h.coord.finish("ab", succeeded=True) == ("ba",)
    assert h.coord.finish("ba", succeeded=True) == ()
    assert len(h.coord) == 0


def test_one_busy_repository_does_not_hold_up_others() -> None:
    a, b, c = repo("a"), repo("b"), repo("c")
    h = Harness(existing=[a, b, c])
    h.submit("a0", {a: "update"})
    for i in range(1, 5):
        h.submit(f"a{i}", {a: "update"})
    h.submit("b0", {b: "update"})
    h.submit("b1", {b: "update"})
    assert accepted(h.submit("c0", {c: "update"}), "c0")
    # b1 is behind waiting a-tasks in arrival order, but not on any of its lines.
    assert h.coord.finish("b0", succeeded=True) == ("b1",)
    assert h.waiting() == ["a1", "a2", "a3", "a4"]


# -- heavy slots ---------------------------------------------------------------------------


def test_second_heavy_task_waits_for_a_slot_and_light_ones_do_not() -> None:
    a, b, c = repo("a"), repo("b"), repo("c")
    h = Harness(slots=1, existing=[a, b, c])
    assert accepted(h.submit("sync-a", {a: "update"}, heavy=True), "sync-a")
    assert h.submit("sync-b", {b: "update"}, heavy=True) == Decision(POSTPONED, (SERVER_BUSY,))
    assert h.coord.waiting_for("sync-b") == (SERVER_BUSY,)
    assert (SERVER_BUSY.reason, SERVER_BUSY.resource, SERVER_BUSY.task_id) == (
        "server busy",
        None,
        None,
    )
    assert accepted(h.submit("cfg-c", {c: "update"}), "cfg-c")
    assert accepted(h.submit("mk-d", {repo("d"): "create"}), "mk-d")
    assert h.coord.heavy_running == 1


def test_heavy_task_keeps_its_place_in_line() -> None:
    a, b = repo("a"), repo("b")
    h = Harness(slots=1, existing=[a, b])
    h.submit("sync-a", {a: "update"}, heavy=True)
    assert h.submit("sync-b", {b: "update"}, heavy=True) == Decision(POSTPONED, (SERVER_BUSY,))
    # A light update on b is free of slots but not of sync-b, which stands ahead of it.
    assert h.submit("cfg-b", {b: "update"}) == Decision(
        POSTPONED, (conflict(b, "update", "sync-b"),)
    )
    assert h.submit("read-b", {b: "read"}) == Decision(POSTPONED, (conflict(b, "update", "cfg-b"),))
    assert h.coord.finish("sync-a", succeeded=True) == ("sync-b",)
    assert h.coord.finish("sync-b", succeeded=True) == ("cfg-b",)


def test_freed_slot_goes_to_the_earliest_ready_heavy_task() -> None:
    a, b, c, d = repo("a"), repo("b"), repo("c"), repo("d")
    h = Harness(slots=1, existing=[a, b, c, d])
    h.submit("h-a", {a: "update"}, heavy=True)
    h.submit("h-b", {b: "update"}, heavy=True)
    h.submit("h-c", {c: "update"}, heavy=True)
    h.submit("h-d", {d: "read"}, heavy=True)
    assert h.coord.finish("h-a", succeeded=True) == ("h-b",)
    assert h.coord.finish("h-b", succeeded=True) == ("h-c",)
    assert h.coord.finish("h-c", succeeded=True) == ("h-d",)


def test_task_freed_with_the_slot_goes_first_when_it_is_earlier() -> None:
    a, b = repo("a"), repo("b")
    h = Harness(slots=1, existing=[a, b])
    h.submit("sync-a", {a: "update"}, heavy=True)
    h.submit("publish-a", {a: "read"}, heavy=True)  # waits for sync-a itself
    h.submit("sync-b", {b: "update"}, heavy=True)  # ready, waits for the slot only
    assert h.coord.waiting_for("sync-b") == (SERVER_BUSY,)
    # The finish frees both the slot and publish-a, which arrived before sync-b.
    assert h.coord.finish("sync-a", succeeded=True) == ("publish-a",)
    assert h.coord.waiting_for("sync-b") == (SERVER_BUSY,)
    assert h.coord.finish("publish-a", succeeded=True) == ("sync-b",)


def test_task_freed_with_the_slot_waits_when_an_earlier_one_is_ready() -> None:
    a, b = repo("a"), repo("b")
    h = Harness(slots=1, existing=[a, b])
    h.submit("sync-a", {a: "update"}, heavy=True)
    h.submit("sync-b", {b: "update"}, heavy=True)  # ready
    h.submit("publish-a", {a: "read"}, heavy=True)  # waits for sync-a
    assert h.coord.finish("sync-a", succeeded=True) == ("sync-b",)
    assert h.coord.waiting_for("publish-a") == (SERVER_BUSY,)
    assert h.coord.finish("sync-b", succeeded=True) == ("publish-a",)


def test_ready_heavy_task_freed_by_a_light_one_waits_for_the_slot() -> None:
    a, b = repo("a"), repo("b")
    h = Harness(slots=1, existing=[a, b])
    h.submit("sync-a", {a: "update"}, heavy=True)
    h.submit("cfg-b", {b: "update"})
    h.submit("sync-b", {b: "update"}, heavy=True)
    assert h.coord.waiting_for("sync-b") == (conflict(b, "update", "cfg-b"),)
    assert h.coord.finish("cfg-b", succeeded=True) == ()
    assert h.coord.waiting_for("sync-b") == (SERVER_BUSY,)
    assert h.coord.finish("sync-a", succeeded=True) == ("sync-b",)


def test_cancel_of_a_slot_waiting_task() -> None:
    a, b, c = repo("a"), repo("b"), repo("c")
    h = Harness(slots=1, existing=[a, b, c])
    h.submit("sync-a", {a: "update"}, heavy=True)
    h.submit("sync-b", {b: "update"}, heavy=True)
    h.submit("cfg-b", {b: "update"})
    h.submit("sync-c", {c: "update"}, heavy=True)
    assert h.coord.cancel_waiting("sync-b") == ("cfg-b",)
    assert h.coord.finish("sync-a", succeeded=True) == ("sync-c",)


def test_set_slots_raise_starts_ready_tasks_in_order() -> None:
    names = [f"r{i}" for i in range(5)]
    h = Harness(slots=1, existing=[repo(n) for n in names])
    for n in names:
        h.submit(f"sync-{n}", {repo(n): "update"}, heavy=True)
    assert h.running() == {"sync-r0"}
    assert h.coord.set_slots(3) == ("sync-r1", "sync-r2")
    assert h.coord.set_slots(3) == ()
    assert h.coord.set_slots(5) == ("sync-r3", "sync-r4")
    assert h.coord.heavy_running == 5


def test_set_slots_lower_stops_nothing() -> None:
    names = [f"r{i}" for i in range(5)]
    h = Harness(slots=3, existing=[repo(n) for n in names])
    for n in names:
        h.submit(f"sync-{n}", {repo(n): "update"}, heavy=True)
    assert h.coord.set_slots(1) == ()
    assert h.running() == {"sync-r0", "sync-r1", "sync-r2"}
    # New heavy ones wait until the count falls below the new limit...
    assert h.coord.finish("sync-r0", succeeded=True) == ()
    assert h.coord.finish("sync-r1", succeeded=True) == ()
    assert h.coord.heavy_running == 1
    assert h.coord.finish("sync-r2", succeeded=True) == ("sync-r3",)
    # ...and light ones never wait for a slot.
    h.coord.set_exists(repo("x"), True)
    assert accepted(h.submit("cfg", {repo("x"): "update"}), "cfg")


def test_slots_must_be_positive() -> None:
    with pytest.raises(ValueError, match="slots"):
        Coordinator(0)
    coord = Coordinator(1)
    with pytest.raises(ValueError, match="slots"):
        coord.set_slots(0)
    assert coord.slots == 1


# -- waiting_for -----------------------------------------------------------------------------


def test_waiting_for_names_the_nearest_conflict_on_each_resource() -> None:
    a, b = repo("a"), repo("b")
    h = Harness(existing=[a, b])
    h.submit("u0", {a: "update"})
    h.submit("r1", {a: "read"})
    h.submit("r2", {a: "read"})
    h.submit("u3", {a: "update"})
    h.submit("b0", {b: "update"})
    h.submit("copy", {a: "read", b: "update"})
    # A read skips the reads ahead of it, which share, to the update it waits for.
    assert h.coord.waiting_for("r2") == (conflict(a, "update", "u0"),)
    assert h.coord.waiting_for("u3") == (conflict(a, "read", "r2"),)
    assert h.coord.waiting_for("copy") == (
        conflict(a, "update", "u3"),
        conflict(b, "update", "b0"),
    )
    assert h.coord.waiting_for("u0") == ()
    assert h.coord.waiting_for("b0") == ()
    h.coord.finish("b0", succeeded=True)
    assert h.coord.waiting_for("copy") == (conflict(a, "update", "u3"),)


def test_waiting_for_unknown_task() -> None:
    with pytest.raises(KeyError):
        Coordinator(1).waiting_for("nope")


def test_check_decides_without_changing_anything() -> None:
    r = repo("demo")
    h = Harness(existing=[r])
    h.submit("u0", {r: "update"})
    probe = spec("u1", 10, {r: "update"})
    assert h.coord.check(probe) == Decision(POSTPONED, (conflict(r, "update", "u0"),))
    assert h.coord.line(r) == [("u0", "update")]
    assert "u1" not in h.coord
    assert h.coord.submit(probe) == Decision(POSTPONED, (conflict(r, "update", "u0"),))
    assert h.coord.line(r) == [("u0", "update"), ("u1", "update")]
    assert h.coord.check(spec("u2", 11, {r: "read"})) == Decision(
        POSTPONED, (conflict(r, "update", "u1"),)
    )


# -- recovery ----------------------------------------------------------------------------------


def stored(
    task_id: str,
    seq: int,
    claims: dict[Resource, Kind],
    *,
    running: bool = False,
    heavy: bool = False,
    restartable: bool = False,
    held: bool = False,
    attempts: int = 0,
) -> StoredTask:
    return StoredTask(spec(task_id, seq, claims, heavy=heavy), running, restartable, held, attempts)


def test_recover_keeps_waiting_order() -> None:
    a, b = repo("a"), repo("b")
    tasks = [
        stored("w3", 30, {a: "read"}),
        stored("w1", 10, {a: "update"}),
        stored("w4", 40, {b: "update"}),
        stored("w2", 20, {a: "update"}),
    ]
    coord = Coordinator(2, existing=[a, b])
    recovery = coord.recover(tasks, max_attempts=3)
    assert recovery.start == ("w1", "w4")
    assert coord.order() == ["w1", "w4", "w2", "w3"]
    assert coord.line(a) == [("w1", "update"), ("w2", "update"), ("w3", "read")]
    assert coord.finish("w1", succeeded=True) == ("w2",)
    # Submissions continue after the highest stored seq.
    with pytest.raises(ValueError, match="seq"):
        coord.submit(spec("late", 40, {b: "read"}))
    assert coord.submit(spec("late", 41, {b: "read"})).verdict is POSTPONED


def test_recover_running_tasks() -> None:
    a, b, c, d, e = (repo(n) for n in "abcde")
    tasks = [
        stored("sync-a", 1, {a: "update"}, running=True, restartable=True, attempts=1),
        stored("sync-b", 2, {b: "update"}, running=True, restartable=True, attempts=3),
        stored("cfg-c", 3, {c: "update"}, running=True, restartable=False, attempts=1),
        stored("lock-d", 4, {d: "update"}, running=True, held=True, attempts=1),
        stored("after-a", 5, {a: "read"}),
        stored("after-b", 6, {b: "read"}),
        stored("after-c", 7, {c: "read"}),
        stored("after-d", 8, {d: "read"}),
        stored("e", 9, {e: "update"}),
    ]
    coord = Coordinator(4)
    recovery = coord.recover(tasks[::-1], max_attempts=3)  # the store's order does not matter
    assert recovery.rerun == ("sync-a",)
    assert recovery.interrupted == ("sync-b", "cfg-c")
    assert recovery.held == ("lock-d",)
    # The rerun goes back to its place, at the head of its line; interrupted tasks are gone.
    assert recovery.start == ("sync-a", "after-b", "after-c", "e")
    assert "sync-b" not in coord
    assert "cfg-c" not in coord
    assert coord.is_running("lock-d")
    assert coord.waiting_for("after-a") == (conflict(a, "update", "sync-a"),)
    assert coord.waiting_for("after-d") == (conflict(d, "update", "lock-d"),)
    assert coord.order() == ["sync-a", "lock-d", "after-b", "after-c", "e", "after-a", "after-d"]
    assert coord.finish("lock-d", succeeded=True) == ("after-d",)


def test_recover_heavy_tasks_respect_slots() -> None:
    a, b, c = repo("a"), repo("b"), repo("c")
    tasks = [
        stored("held", 1, {a: "update"}, running=True, held=True, heavy=True),
        stored("rerun", 2, {b: "update"}, running=True, restartable=True, heavy=True),
        stored("wait", 3, {c: "update"}, heavy=True),
    ]
    coord = Coordinator(2)
    recovery = coord.recover(tasks, max_attempts=2)
    assert recovery.start == ("rerun",)
    assert coord.heavy_running == 2
    assert coord.waiting_for("wait") == (SERVER_BUSY,)
    assert coord.finish("held", succeeded=True) == ("wait",)


def test_recover_needs_an_empty_coordinator() -> None:
    coord = Coordinator(1)
    coord.submit(spec("t", 1, {lock("x"): "update"}))
    with pytest.raises(ValueError, match="empty"):
        coord.recover([], max_attempts=1)


# -- cost ----------------------------------------------------------------------------------------


class _TouchLog(dict):
    """A dict that records which keys were looked up or stored."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.touched: set = set()

    def __getitem__(self, key):
        self.touched.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.touched.add(key)
        return super().get(key, default)

    def setdefault(self, key, default=None):
        self.touched.add(key)
        return super().setdefault(key, default)

    def __setitem__(self, key, value) -> None:
        self.touched.add(key)
        super().__setitem__(key, value)

    def __delitem__(self, key) -> None:
        self.touched.add(key)
        super().__delitem__(key)

    def __contains__(self, key) -> bool:
        self.touched.add(key)
        return super().__contains__(key)

    def __iter__(self):
        raise AssertionError("a decision iterated over every queued task or line")

    def items(self):
        raise AssertionError("a decision iterated over every queued task or line")

    keys = values = items


PER_LINE = 100


def build_queue(n_lines: int) -> Coordinator:
    """``n_lines`` busy repositories, each with a running update and 99 waiting tasks."""
    names = [f"r{i:04}" for i in range(n_lines)]
    coord = Coordinator(1, existing=[repo(n) for n in names])
    seq = 0
    for n in names:
        for i in range(PER_LINE):
            seq += 1
            kind: Kind = "update" if i % 3 == 0 else "read"
            coord.submit(spec(f"{n}-{i}", seq, {repo(n): kind}, heavy=i % 5 == 4))
    return coord


def count_work(coord: Coordinator, action: Callable[[Coordinator], object]):
    """Run ``action`` counting the coordinator's executed lines of code and the lines and
    tasks it looks up: a deterministic measure of work, unlike a timing."""
    coord._lines = _TouchLog(coord._lines)
    coord._entries = _TouchLog(coord._entries)
    executed = 0

    def tracer(frame, event, arg):
        nonlocal executed
        if frame.f_code.co_filename != coordinator.__file__:
            return None
        if event == "line":
            executed += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        result = action(coord)
    finally:
        sys.settrace(previous)
    touched = ({r.id for r in coord._lines.touched}, set(coord._entries.touched))
    coord._lines = dict(super(_TouchLog, coord._lines).items())
    coord._entries = dict(super(_TouchLog, coord._entries).items())
    return result, executed, touched


# Each operation works on its own line, so all of them can run one after the other on the
# same queue: (action, the resources it may look up, the tasks it may look up).
OPERATIONS: dict[str, tuple[Callable[[Coordinator], object], set[str], set[str]]] = {
    "submit on a fresh resource": (
        lambda c: c.submit(spec("fresh", 10**9, {lock("fresh"): "update"})),
        {"fresh"},
        {"fresh"},
    ),
    "submit on a busy resource": (
        lambda c: c.submit(spec("busy", 10**9 + 1, {repo("r0000"): "update"})),
        {"r0000"},
        {"busy"},
    ),
    "heavy submit on a busy resource": (
        lambda c: c.submit(spec("heavy", 10**9 + 2, {repo("r0001"): "read"}, heavy=True)),
        {"r0001"},
        {"heavy"},
    ),
    "finish the head of a busy line": (
        lambda c: c.finish("r0002-0", succeeded=True),
        {"r0002"},
        {"r0002-0", "r0002-1", "r0002-2"},
    ),
    "cancel a waiting task": (
        lambda c: c.cancel_waiting("r0003-3"),
        {"r0003"},
        {"r0003-3", "r0003-0"},
    ),
}


def test_cost_does_not_depend_on_the_total_queued() -> None:
    work: dict[int, list[tuple[object, int]]] = {}
    for n_lines in (10, 1000):
        coord = build_queue(n_lines)
        assert len(coord) == n_lines * PER_LINE
        work[n_lines] = []
        for name, (action, resource_ids, task_ids) in OPERATIONS.items():
            result, executed, (lines, entries) = count_work(coord, action)
            assert executed > 0, "the tracer saw no coordinator code"
            assert lines == resource_ids, name
            assert entries <= task_ids, name
            work[n_lines].append((result, executed))
    # The same answers for the same work, whether 1,000 or 100,000 tasks are queued.
    assert work[10] == work[1000]
    assert [result for result, _ in work[10]] == [
        Decision(ACCEPTED, start=("fresh",)),
        Decision(POSTPONED, (conflict(repo("r0000"), "update", "r0000-99"),)),
        Decision(POSTPONED, (conflict(repo("r0001"), "update", "r0001-99"),)),
        ("r0002-1", "r0002-2"),
        (),
    ]


# -- errors ------------------------------------------------------------------------------------


def test_duplicate_id_is_refused() -> None:
    h = Harness(existing=[repo("a")])
    h.submit("t", {repo("a"): "update"})
    h.submit("w", {repo("a"): "update"})
    for tid in ["t", "w"]:
        with pytest.raises(ValueError, match="already known"):
            h.submit(tid, {lock("x"): "read"})
        with pytest.raises(ValueError, match="already known"):
            h.coord.check(spec(tid, 100, {lock("x"): "read"}))
    assert h.coord.order() == ["t", "w"]


@pytest.mark.parametrize("seq", [4, 5])
def test_seq_must_increase(seq: int) -> None:
    coord = Coordinator(1)
    coord.submit(spec("a", 5, {lock("x"): "read"}))
    with pytest.raises(ValueError, match="increasing seq"):
        coord.submit(spec("b", seq, {lock("y"): "read"}))
    assert "b" not in coord


def test_finish_of_a_task_that_is_not_running() -> None:
    h = Harness()
    h.submit("run", {lock("x"): "update"})
    h.submit("wait", {lock("x"): "update"})
    with pytest.raises(ValueError, match="not running"):
        h.coord.finish("wait", succeeded=True)
    assert h.coord.order() == ["run", "wait"]
    with pytest.raises(KeyError):
        h.coord.finish("gone", succeeded=True)


def test_cancel_waiting_of_a_running_task() -> None:
    h = Harness()
    h.submit("run", {lock("x"): "update"})
    with pytest.raises(ValueError, match="is running"):
        h.coord.cancel_waiting("run")
    assert h.coord.is_running("run")
