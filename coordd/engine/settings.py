"""The settings the task engine reads: what it is told, never where it came from.

The service builds them from its configuration (and again on a reload); the engine reads
them where it uses them, so a reloaded value takes effect at its next use. Durations are
seconds (``*_s``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineSettings:
    #: How many heavy operations run at once.
    heavy_slots: int
    #: How long ended tasks stay in the history before they are purged.
    retention_s: float
    #: A canceled running task's time to stop on its own before it is stopped hard.
    cancel_grace_s: float
    #: How long a held task (an external lock) waits for its client to re-attach.
    reattach_grace_s: float
    #: How many times a restartable task is run in all, across restarts.
    max_attempts: int
    #: How often a running task's progress report is written to the database.
    progress_persist_interval_s: float
