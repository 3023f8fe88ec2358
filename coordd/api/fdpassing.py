"""Open files passed with a request: descriptors sent over the socket (SCM_RIGHTS).

A client that wants the daemon to read a file it can read (``repo.upload``) does not send a
path, which the daemon would open with its own rights, nor the bytes, through JSON: it opens
the file and sends the descriptor, which gives the daemon exactly the access the client had.

The protocol (``coordd-api(7)``):

- the request object has a member ``"fds": N`` (an integer, 1 to ``MAX_PER_REQUEST``) beside
  ``jsonrpc``, ``method``, ``params`` and ``id``; it may not be a member of a batch;
- the client sends the request's line with one ``sendmsg`` whose ancillary data
  (``SCM_RIGHTS``) holds the N descriptors, in the order the method's parameters name them;
- the daemon takes the descriptors in the order they arrive: a request declaring N takes
  the next N. Descriptors that arrived with the bytes of a line are for the requests whose
  lines end in that read (or, if it ended inside a line, for the request that line
  completes); those that no such request took are closed at once;
- only methods that take descriptors accept a request that has them; any other request with
  ``fds`` is refused with -32602, as is one whose descriptors did not all arrive.

The daemon closes every descriptor it received, on every path: when the method returns or
raises, when the request is refused before dispatch, and when the connection closes. While
a method runs, ``passed()`` gives it the request's descriptors (a context variable: several
requests of one connection run at once, each in a task of its own).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections import deque
from collections.abc import Container, Iterator
from typing import Any, Final

from coordd.api.framing import MAX_FDS

__all__ = [
    "MAX_PER_REQUEST",
    "MAX_QUEUED",
    "Passed",
    "Received",
    "passed",
    "passing",
    "refusal",
]

log = logging.getLogger("coordd.server")

#: Descriptors one request may pass.
MAX_PER_REQUEST: Final = MAX_FDS
#: Descriptors one connection may have received and not yet handed to a request; a read
#: asks the kernel for at most this many (any more in one message, it closes itself).
MAX_QUEUED: Final = MAX_PER_REQUEST

_PASSED: contextvars.ContextVar[tuple[int, ...]] = contextvars.ContextVar(
    "coordd_passed_fds", default=()
)


def passed() -> tuple[int, ...]:
    """The descriptors the request being served passed (the daemon closes them after it)."""
    return _PASSED.get()


class Passed:
    """The descriptors one request took, closed exactly once (a descriptor closed twice
    could close another file that was given the same number meanwhile)."""

    def __init__(self, fds: tuple[int, ...]) -> None:
        self.fds = fds

    def __len__(self) -> int:
        return len(self.fds)

    def close(self) -> None:
        fds, self.fds = self.fds, ()
        close_all(fds)


@contextlib.contextmanager
def passing(request: Passed) -> Iterator[None]:
    """Give the request's descriptors to the method run inside; close them when it ends."""
    token = _PASSED.set(request.fds)
    try:
        yield
    finally:
        _PASSED.reset(token)
        request.close()


def close_all(fds: tuple[int, ...] | list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class Received:
    """The descriptors a connection received that no request has taken yet, oldest first."""

    def __init__(self) -> None:
        self._queue: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def arrived(self, fds: list[int]) -> None:
        """Descriptors that came with a read; those past ``MAX_QUEUED`` are closed."""
        for fd in fds:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)
        room = max(MAX_QUEUED - len(self._queue), 0)
        self._queue.extend(fds[:room])
        if fds[room:]:
            log.info("closing %d descriptors past the limit of a connection", len(fds) - room)
            close_all(fds[room:])

    def take(self, count: int) -> Passed:
        """The next ``count`` descriptors (fewer if fewer arrived)."""
        return Passed(tuple(self._queue.popleft() for _ in range(min(count, len(self._queue)))))

    def drop_stray(self) -> int:
        """Close what no request took; return how many."""
        count = len(self._queue)
        self.close()
        return count

    def close(self) -> None:
        close_all(list(self._queue))
        self._queue.clear()


def refusal(
    request: dict[str, Any],
    passed: Passed | None,
    methods: Container[str],
    takes_fds: Container[str],
) -> str | None:
    """Why the descriptors of a checked ``request`` that declares them are refused (and the
    request is not run), or None; ``passed``: those it took (None: it is a member of a
    batch); ``methods``: the methods there are, ``takes_fds``: those that take descriptors."""
    method = request["method"]
    if method not in methods:
        return None  # method not found, and its descriptors closed
    if passed is None:
        return "invalid params: descriptors cannot be passed in a batch"
    if method not in takes_fds:
        return f"invalid params: {method} takes no descriptors (fds)"
    if len(passed) < request["fds"]:
        return (
            f"invalid params: the request declares {request['fds']} descriptors (fds); "
            f"{len(passed)} arrived with it"
        )
    return None
