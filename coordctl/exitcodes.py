"""coordctl's exit statuses: distinct, stable, documented in coordctl(1).

``coordctl run`` exits with its command's status once the command ran; before that, with one
of these (``POSTPONED`` when ``--no-wait`` found the resources busy).
"""

from __future__ import annotations

from coordd.api.errors import (
    Conflict,
    CoorddError,
    InvalidRequest,
    InvalidState,
    NotFound,
    PermissionDenied,
    Unavailable,
)

OK = 0  # done, accepted or postponed
TASK_FAILED = 1  # with --wait: the task ended in error
USAGE = 2  # bad command line or parameters the daemon refused
REJECTED = 3  # the coordinator rejected the request: it could never run
NOT_FOUND = 4  # no such task or repository
PERMISSION = 5  # the caller may not do this
UNREACHABLE = 6  # the daemon's socket cannot be reached
CANCELED = 7  # with --wait: the task was canceled
UNAVAILABLE = 8  # the daemon is shutting down or over a limit; try again
INVALID_STATE = 9  # e.g. cancel of a task that already ended
PROTOCOL = 10  # the daemon answered something unexpected
POSTPONED = 75  # coordctl run --no-wait: the resources are busy (EX_TEMPFAIL)
INTERRUPTED = 130  # Ctrl-C

DESCRIPTIONS: dict[int, str] = {
    OK: "success; also a request that was accepted or postponed",
    TASK_FAILED: "with --wait, the task ended in error",
    USAGE: "usage error: bad command line or parameters refused by the daemon",
    REJECTED: "the request was rejected: a queued task makes it impossible",
    NOT_FOUND: "no such task or repository",
    PERMISSION: "permission denied",
    UNREACHABLE: "the daemon is not reachable on its socket",
    CANCELED: "with --wait, the task was canceled",
    UNAVAILABLE: "the daemon is shutting down or over a limit; try again later",
    INVALID_STATE: "the task is not in a state that allows the request",
    PROTOCOL: "the daemon's answer could not be understood",
    POSTPONED: "coordctl run --no-wait: the resources are busy",
    INTERRUPTED: "interrupted by Ctrl-C",
}


def for_error(exc: CoorddError) -> int:
    """The exit status for an error the daemon (or the connection) raised."""
    from coordctl.client import NotReachable

    table: list[tuple[type[CoorddError], int]] = [
        (NotReachable, UNREACHABLE),
        (Conflict, REJECTED),
        (NotFound, NOT_FOUND),
        (PermissionDenied, PERMISSION),
        (InvalidRequest, USAGE),
        (Unavailable, UNAVAILABLE),
        (InvalidState, INVALID_STATE),
    ]
    for cls, status in table:
        if isinstance(exc, cls):
            return status
    return PROTOCOL
