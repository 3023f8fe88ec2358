"""Open-file descriptors: raise the limit at start-up, and keep connections within it.

Every client connection is a descriptor, and so is much else the daemon needs to keep
working: the database and its WAL, the writer's pipes, the listening sockets, the log, and
each sync's downloads (a socket and a temporary file each, up to the feed's
``parallel_downloads``). If connections could take every descriptor, the next download or
database file would fail. So the connections get what the limit leaves after a reserve:
:data:`RESERVE_BASE` plus :data:`RESERVE_PER_HEAVY_SLOT` for each heavy slot (sync,
publish). When the limit is too small even for that, connections get a quarter of it and
the daemon says so; ``coordd --check-config`` says it too.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

#: Descriptors kept for the daemon itself: standard streams, log, lock file, database,
#: writer, listeners, the event loop's own, and the spare the server keeps to refuse
#: clients when the rest run out (``coordd.api.accepting``).
RESERVE_BASE = 64
#: Descriptors kept per heavy slot: a sync's downloads (socket and temporary file) and
#: metadata files.
RESERVE_PER_HEAVY_SLOT = 32


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE as far as the hard limit permits; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):  # e.g. above fs.nr_open: keep what we have
            pass
    return soft


def reachable_open_file_limit() -> int:
    """The soft limit :func:`raise_open_file_limit` would reach in this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return max(soft, 1 << 20)
    return max(soft, hard)


@dataclass(frozen=True)
class Budget:
    """How many connections fit in ``limit`` descriptors."""

    limit: int
    reserve: int
    connections: int  # the most connections that fit

    def fits(self, max_connections: int) -> bool:
        return max_connections <= self.connections

    def problem(self, max_connections: int) -> str | None:
        """A sentence saying why ``max_connections`` cannot be honoured, or None."""
        if self.fits(max_connections):
            return None
        return (
            f"max_connections = {max_connections} does not fit the open-file limit of "
            f"{self.limit} descriptors, of which {self.reserve} are kept for the database, "
            f"the writer and downloads; coordd will accept at most {self.connections} "
            f"connections (raise the limit, e.g. LimitNOFILE= in the service, or lower "
            f"max_connections or heavy_slots)"
        )


def connection_budget(limit: int, heavy_slots: int) -> Budget:
    reserve = RESERVE_BASE + RESERVE_PER_HEAVY_SLOT * heavy_slots
    return Budget(limit, reserve, max(limit - reserve, limit // 4, 1))
