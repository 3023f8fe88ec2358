"""The clocks the daemon tells time by: the wall clock, and one read from a file for tests.

Everything that needs the time of day (task times, retention, schedules) is given a
``Clock``; nothing in the engine calls ``time.time`` for itself. ``Clock.now`` is seconds
since the epoch; ``Clock.sleep_until`` waits until a moment, or until ``wake`` is set
(a schedule was added or changed), whichever comes first.

``FileClock`` is for tests only: the daemon uses it when ``COORDD_TEST_CLOCK_FILE`` names a
file, and reads the time from that file (seconds since the epoch, as text), so a test moves
the daemon's time by writing the file, and never sleeps on the wall clock. It is chosen by
the environment of whoever starts the daemon, never by a client over the socket.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Protocol

import anyio

log = logging.getLogger("coordd.clock")

WALL_RECHECK_S = 60.0  # the wall clock can jump (NTP, suspend): look again this often
FILE_POLL_S = 0.02


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, deadline: float, wake: anyio.Event) -> None: ...


class WallClock:
    """``time.time``."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float, wake: anyio.Event) -> None:
        delay = min(max(deadline - time.time(), 0.0), WALL_RECHECK_S)
        with anyio.move_on_after(delay):
            await wake.wait()


class FileClock:
    """The time written in a file (for tests); the last good reading if it cannot be read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._last = time.time()
        self.now()

    def now(self) -> float:
        try:
            self._last = float(self.path.read_text().strip())
        except (OSError, ValueError) as exc:
            log.debug("test clock %s unreadable (%s); still %.3f", self.path, exc, self._last)
        return self._last

    async def sleep_until(self, deadline: float, wake: anyio.Event) -> None:
        while self.now() < deadline and not wake.is_set():
            with anyio.move_on_after(FILE_POLL_S):  # the file is read again each turn
                await wake.wait()
