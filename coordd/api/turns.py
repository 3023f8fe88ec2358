"""Turns: the event loop shared fairly between the requests that cost it most.

A request's cost on the loop is mostly the size of what it parses and what it answers:
decoding the frame, building the result, encoding the reply (here an 80 KB ``repo.list``
takes about 3 ms, a ``server.status`` 0.05 ms). The loop runs its ready tasks in arrival
order, each step to its end. So when many connections ask for large replies at once (48
clients pipelining ``repo.list`` without reading theirs, say), every other client waits
behind all of those steps at each of its own (its read, its dispatch, its write), and a
request that needs 1 ms of work is answered after most of a second.

So a large request waits for a turn first: a frame of :data:`LARGE_BYTES` or more, or a
call to a method whose recent replies were that large (or that has not answered yet).
One task hands out the turns, one per pass of the event loop, round-robin over the
connections that wait: between two large requests the loop serves everything else that is
ready, and a connection with many requests waiting gets no more turns than one with a
single request. The connection's reader is what waits (the members of a batch wait in
the batch's task, one by one), so a client's later requests wait behind its large one.
A turn is a moment to start, not a lock: the request holds nothing while it awaits (a
commit, say), so large requests that wait on the database still overlap.

Small requests never wait for a turn: the loop's own order is fair to them, since each of
their steps is short.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict, deque
from collections.abc import Hashable

import anyio
import anyio.lowlevel

#: A frame or reply this large costs the loop about 0.15 ms: it takes a turn.
LARGE_BYTES = 4096
#: How a method's estimate forgets a large reply: by this factor at each smaller one, so
#: that a method whose replies are sometimes large cannot pass for small between them.
FORGET = 0.875


class Turns:
    """The turns of one server; :meth:`run` hands them out."""

    def __init__(self) -> None:
        # Connections that wait, in the order they get their next turn; each one's
        # waiting requests, oldest first.
        self._waiting: OrderedDict[Hashable, deque[anyio.Event]] = OrderedDict()
        self._wanted = anyio.Event()
        self._reply_bytes: dict[str, float] = {}

    def large_method(self, method: str) -> bool:
        """Whether a call of ``method`` is expected to have a large reply."""
        return self._reply_bytes.get(method, LARGE_BYTES) >= LARGE_BYTES

    def replied(self, method: str, size: int) -> None:
        """Record the size of a reply of ``method``."""
        before = self._reply_bytes.get(method, 0.0)
        self._reply_bytes[method] = max(float(size), before * FORGET)

    async def take(self, owner: Hashable) -> None:
        """Wait for a turn of ``owner`` (a connection)."""
        event = anyio.Event()
        queue = self._waiting.setdefault(owner, deque())
        queue.append(event)
        self._wanted.set()
        try:
            await event.wait()
        finally:
            if not event.is_set():  # cancelled while waiting: give up its place
                with contextlib.suppress(ValueError):
                    queue.remove(event)
                if not queue and self._waiting.get(owner) is queue:
                    del self._waiting[owner]

    async def run(self) -> None:
        """Hand out turns, one per pass of the event loop, until cancelled."""
        while True:
            if not self._waiting:
                self._wanted = anyio.Event()
                await self._wanted.wait()
                continue
            owner, queue = self._waiting.popitem(last=False)
            if not queue:
                continue
            queue.popleft().set()
            if queue:
                self._waiting[owner] = queue  # back of the line
            # Yield: the request just let in runs, and everything else ready, before the
            # next one.
            await anyio.lowlevel.checkpoint()
