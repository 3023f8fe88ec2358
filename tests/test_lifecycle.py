"""The task lifecycle table (DESIGN §4): every legal move allowed, every other refused."""

from __future__ import annotations

import itertools

import pytest

from coordd.engine.coordinator import Claim, Resource
from coordd.engine.tasks import ENDED, TRANSITIONS, IllegalTransition, State, Task

LEGAL = {
    (State.WAITING, State.RUNNING),
    (State.WAITING, State.CANCELED),
    (State.RUNNING, State.FINISHED),
    (State.RUNNING, State.ERROR),
    (State.RUNNING, State.CANCELED),
    (State.RUNNING, State.WAITING),  # recovery: re-run after a restart
}
ALL_MOVES = list(itertools.product(State, State))


def task_in(state: State) -> Task:
    return Task(
        id="t1",
        seq=1,
        operation="repo.sync",
        args_json="{}",
        claims=(Claim(Resource("repository", "demo"), "update"),),
        heavy=False,
        restartable=True,
        uid=0,
        state=state,
        submitted=0.0,
    )


def test_the_table_is_the_design():
    assert {(a, b) for a, targets in TRANSITIONS.items() for b in targets} == LEGAL
    assert set(TRANSITIONS) == set(State)


@pytest.mark.parametrize(("before", "after"), sorted(LEGAL))
def test_legal_move_is_made(before, after):
    task = task_in(before)
    assert task.change_state(after) is before
    assert task.state is after


@pytest.mark.parametrize(("before", "after"), [move for move in ALL_MOVES if move not in LEGAL])
def test_illegal_move_is_refused(before, after):
    task = task_in(before)
    with pytest.raises(IllegalTransition) as refused:
        task.change_state(after)
    assert task.state is before
    assert (refused.value.before, refused.value.after) == (before, after)
    assert f"from {before.value} to {after.value}" in str(refused.value)


@pytest.mark.parametrize("ended", sorted(ENDED))
def test_an_ended_task_stays_ended(ended):
    task = task_in(ended)
    for target in State:
        with pytest.raises(IllegalTransition):
            task.change_state(target)
