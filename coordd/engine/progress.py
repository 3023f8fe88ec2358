"""Live progress reports of running tasks.

An operation writes into its ``Progress`` as often as it likes (every downloaded chunk, say);
writing only changes a nested dict in memory and bumps a counter. The runtime reads snapshots
when a client asks, and publishes events and persists the report at a bounded rate, so the
cost of reporting does not grow with how often an operation reports.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

from coordd.api import names

# States of a step in a progress report (docs/design.md §6).
NOT_STARTED = names.STEP_NOT_STARTED
IN_PROGRESS = names.STEP_IN_PROGRESS
FINISHED = names.STEP_FINISHED
FAILED = names.STEP_FAILED
SKIPPED = names.STEP_SKIPPED
CANCELED = names.STEP_CANCELED


class Progress:
    """A task's progress report: a JSON-able nested dict, readable at any moment."""

    __slots__ = ("_lock", "_report", "version")

    def __init__(self, report: dict[str, Any] | None = None) -> None:
        self._report: dict[str, Any] = report if report is not None else {}
        self.version = 0
        # Operations that run in a worker thread (publish, copy) write through ``set`` and
        # ``add`` while the event loop takes snapshots: both hold this lock. ``node`` is
        # for writers on the event loop's own thread.
        self._lock = threading.Lock()

    def node(self, *path: str) -> dict[str, Any]:
        """The dict at ``path`` (created on the way); mutate it, then call ``touch``.

        Only from the event loop's thread; a worker thread uses ``set`` and ``add``.
        """
        node = self._report
        for key in path:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        return node

    def set(self, *path: str, **values: Any) -> None:
        """Set ``values`` in the dict at ``path``."""
        with self._lock:
            self.node(*path).update(values)
            self.version += 1

    def add(self, *path: str, **deltas: int) -> None:
        """Add ``deltas`` to the counters in the dict at ``path``."""
        with self._lock:
            node = self.node(*path)
            for key, delta in deltas.items():
                node[key] = node.get(key, 0) + delta
            self.version += 1

    def touch(self) -> None:
        """Mark the report changed after mutating a ``node`` directly."""
        self.version += 1

    def snapshot(self) -> dict[str, Any]:
        """A deep copy, safe to serialise while the operation goes on writing."""
        if not self._report:
            return {}
        with self._lock:
            return copy.deepcopy(self._report)
