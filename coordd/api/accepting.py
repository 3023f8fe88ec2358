"""Accepting connections, including when the daemon is out of descriptors.

When ``accept()`` fails for want of descriptors (EMFILE, ENFILE) or kernel memory, the
connection stays in the listener's backlog and the listener stays readable: retrying at
once would spin, and sleeping for long would leave every client behind it waiting after
descriptors came back. So:

- a connection closing wakes the accept loop at once (that is the usual way descriptors
  come back); otherwise it tries again every :data:`RETRY_S`;
- when descriptors stay short for :data:`REFUSE_AFTER_S`, the clients waiting in the
  backlog are refused, each with an error reply, rather than left hanging: the server
  keeps one spare descriptor (open on ``/dev/null``) for that, closes it, accepts and closes
  each waiting connection with it, and opens it again (the trick libev's documentation
  describes for EMFILE);
- the connections already open are served meanwhile, and an episode is logged once, when
  it begins and when it ends.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream

from coordd.api import framing
from coordd.api.errors import Unavailable

log = logging.getLogger("coordd.server")

#: accept() failures that mean "not now": out of descriptors or kernel memory.
ACCEPT_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Of those, the ones a spare descriptor gets around.
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE})
#: accept() failures that concern one connection only (it went away while queued).
ACCEPT_SKIPPED = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EINTR})
RETRY_S = 0.02
REFUSE_AFTER_S = 0.05
REFUSAL = framing.encode(
    framing.error_response(
        None, Unavailable.code, "coordd is out of open files; try again in a moment"
    )
)


class Acceptor:
    """The accept loops of one server, and the spare descriptor they share."""

    def __init__(self, open_connections: Callable[[], int]) -> None:
        self._open_connections = open_connections
        self._freed = anyio.Event()
        self._spare: int | None = None  # opened by the first accept loop, closed by close()
        self._short = False  # in an episode: accept() failed and has not succeeded since
        self._refused = 0

    def freed(self) -> None:
        """A descriptor was closed: an accept loop waiting for one tries again."""
        self._freed.set()
        self._freed = anyio.Event()

    def close(self) -> None:
        """Close the spare descriptor: the server stopped accepting."""
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None

    async def loop(self, listener: SocketListener, start: Callable[[SocketStream], None]) -> None:
        """Accept connections on ``listener`` and ``start`` serving each, until cancelled."""
        if self._spare is None:
            self._spare = _open_spare()
        async with listener:
            short_since: float | None = None  # when accept() began to fail, this time
            while True:
                try:
                    stream = await listener.accept()
                except anyio.BrokenResourceError as exc:
                    cause = exc.__cause__
                    code = cause.errno if isinstance(cause, OSError) else None
                    if code in ACCEPT_SKIPPED:
                        continue
                    if code not in ACCEPT_EXHAUSTED:
                        raise
                    now = anyio.current_time()
                    if short_since is None:
                        short_since = now
                        self._begin(code)
                    short_for = now - short_since
                    if short_for >= REFUSE_AFTER_S and self._refuse_waiting(listener, code):
                        short_since = None
                        continue
                    refuse_in = REFUSE_AFTER_S - short_for
                    await self._descriptor_freed(
                        min(RETRY_S, refuse_in) if refuse_in > 0 else RETRY_S
                    )
                    continue
                short_since = None
                if self._short:
                    self._end()
                start(stream)

    def _begin(self, code: int) -> None:
        if self._short:
            return
        self._short = True
        log.warning(
            "cannot accept connections: %s (%d open); new clients are refused until "
            "descriptors are free",
            os.strerror(code),
            self._open_connections(),
        )

    def _end(self) -> None:
        self._short = False
        log.warning(
            "accepting connections again (%d open; %d refused meanwhile)",
            self._open_connections(),
            self._refused,
        )
        self._refused = 0
        if self._spare is None:
            self._spare = _open_spare()

    async def _descriptor_freed(self, at_most: float) -> None:
        """Wait until a connection closes, for ``at_most`` seconds."""
        freed = self._freed
        with anyio.move_on_after(at_most):
            await freed.wait()

    def _refuse_waiting(self, listener: SocketListener, code: int) -> bool:
        """Refuse the connections waiting in the backlog, through the spare descriptor;
        False if there is none to use, or it did not help."""
        if code not in OUT_OF_DESCRIPTORS or self._spare is None:
            return False
        raw: socket.socket = listener.extra(SocketAttribute.raw_socket)  # noqa: S610 - anyio
        os.close(self._spare)
        refused = 0
        try:
            while True:
                try:
                    client, _ = raw.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    if exc.errno in ACCEPT_SKIPPED:
                        continue
                    break  # the spare's slot was taken meanwhile
                with client:
                    client.setblocking(False)
                    with contextlib.suppress(OSError):
                        client.send(REFUSAL)
                refused += 1
        finally:
            self._spare = _open_spare()
        self._refused += refused
        return refused > 0


def _open_spare() -> int | None:
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
