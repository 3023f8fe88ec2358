"""Turns for large requests: round-robin over connections, one per pass of the event loop."""

from __future__ import annotations

import itertools

import anyio
import anyio.lowlevel
import pytest

from coordd.api.turns import LARGE_BYTES, Turns

pytestmark = pytest.mark.anyio


async def test_turns_go_round_the_connections_not_the_requests() -> None:
    turns = Turns()
    order: list[str] = []

    async def request(owner: str) -> None:
        await turns.take(owner)
        order.append(owner)

    async with anyio.create_task_group() as tg:
        for owner in ["a", "a", "a", "b", "c", "c"]:
            tg.start_soon(request, owner)
        await anyio.wait_all_tasks_blocked()  # all six wait, in that order
        tg.start_soon(turns.run)
        with anyio.fail_after(5):
            while len(order) < 6:
                await anyio.sleep(0.001)
        tg.cancel_scope.cancel()
    assert order == ["a", "b", "c", "a", "c", "a"]


async def test_one_turn_per_pass_of_the_loop() -> None:
    """Between two turns, every other ready task runs a step."""
    turns = Turns()
    events: list[str] = []

    async def request(owner: str) -> None:
        await turns.take(owner)
        events.append("turn")

    async def other() -> None:
        while True:
            events.append("step")
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for owner in range(5):
            tg.start_soon(request, owner)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(other)
        tg.start_soon(turns.run)
        with anyio.fail_after(5):
            while events.count("turn") < 5:
                await anyio.sleep(0.001)
        tg.cancel_scope.cancel()
    turns_at = [i for i, event in enumerate(events) if event == "turn"]
    assert all(b - a >= 2 for a, b in itertools.pairwise(turns_at)), events


async def test_a_cancelled_wait_gives_up_its_place() -> None:
    turns = Turns()
    got: list[str] = []

    async def request(owner: str) -> None:
        await turns.take(owner)
        got.append(owner)

    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as inner:
                inner.start_soon(request, "gone")
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
        tg.start_soon(request, "kept")
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(turns.run)
        with anyio.fail_after(5):
            while not got:
                await anyio.sleep(0.001)
        tg.cancel_scope.cancel()
    assert got == ["kept"]


def test_a_method_counts_as_large_until_its_replies_are_small_for_a_while() -> None:
    turns = Turns()
    assert turns.large_method("repo.list")  # not answered yet
    turns.replied("server.status", 500)
    assert not turns.large_method("server.status")
    turns.replied("task.list", 80_000)
    turns.replied("task.list", 100)
    assert turns.large_method("task.list")  # one small reply does not make it small
    for _ in range(40):
        turns.replied("task.list", 100)
    assert not turns.large_method("task.list")
    assert LARGE_BYTES <= 80_000
