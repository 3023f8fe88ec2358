"""Clocks a test moves: a file a real daemon reads its time from, and one for in-process tests.

``ClockFile`` is what ``COORDD_TEST_CLOCK_FILE`` names (``coordd.engine.clock.FileClock``):
the daemon reads the time of day from it, so a test moves time by writing it and never
sleeps on the wall clock. ``FakeClock`` is the same for the in-process harness.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import anyio

from tests.helpers.daemon import DaemonProcess

ENV = "COORDD_TEST_CLOCK_FILE"


def at(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 UTC time such as ``2026-12-01T02:00``."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class ClockFile:
    """The time a daemon started with ``use(daemon)`` reads."""

    def __init__(self, path: Path, start: float) -> None:
        self.path = path
        self.set(start)

    def set(self, when: float) -> None:
        # Written whole and renamed: the daemon never reads half a number.
        partial = self.path.with_suffix(".partial")
        partial.write_text(f"{when:.3f}\n")
        os.replace(partial, self.path)
        self.now = when

    def advance(self, seconds: float) -> None:
        self.set(self.now + seconds)

    def use(self, daemon: DaemonProcess) -> DaemonProcess:
        daemon.env[ENV] = str(self.path)
        return daemon


class FakeClock:
    """A ``coordd.engine.clock.Clock`` that moves only when the test says."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._moved = anyio.Event()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._moved.set()
        self._moved = anyio.Event()

    async def sleep_until(self, deadline: float, wake: anyio.Event) -> None:
        while self._now < deadline and not wake.is_set():
            moved = self._moved
            async with anyio.create_task_group() as tg:

                async def on_wake() -> None:
                    await wake.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(on_wake)
                await moved.wait()
                tg.cancel_scope.cancel()
