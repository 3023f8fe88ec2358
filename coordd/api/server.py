"""The Unix socket server: connections, framing, limits, events.

Each connection is served by its own task group with a catch-all around it: nothing a client
does (hanging up mid-reply, sending garbage, never reading) can escape and take the daemon
down. Per connection:

- frames are cut by ``LineFramer`` (bounded size) and decoded by ``framing.decode``;
- requests run concurrently up to ``MAX_IN_FLIGHT``; beyond that the reader stops reading,
  which pushes back on the client through the socket buffer;
- replies and notifications are encoded at once and queued for the connection's writer.
  While a connection has unsent bytes past ``max_send_queue_bytes``, or has any while all
  connections together are past ``max_send_queue_total_bytes``, its next frame is not read:
  a client that does not read its replies stops being served instead of growing the
  daemon's memory, and one whose queue is empty is always served;
- every write has a deadline (``WRITE_TIMEOUT_S``): a client that never reads its replies is
  disconnected, which frees what was queued for it;
- a request line must be complete within ``request_timeout_s`` of its first byte (or
  ``idle_timeout_s``, if shorter): a client trickling a byte now and then does not hold its
  place;
- an idle connection (no request in flight, no subscription, no lock) is closed after
  ``idle_timeout_s``;
- descriptors passed with a request (``SCM_RIGHTS``) are queued as they arrive and taken
  by the request that declares them, in order; the rest, and every one taken, are closed
  (``coordd.api.fdpassing``);
- the peer's uid/gid/pid come from ``SO_PEERCRED`` once, at accept, and decide its access
  (``coordd.api.access``).

Admission, at accept: at most ``max_connections`` in all, and fewer for one uid and for
those who are not administrators (``coordd.api.limits``). A connection refused gets an
error reply and is closed.

The loop is shared fairly: a large request (a large frame, or a method whose replies are
large) waits for its turn (``coordd.api.turns``), so that clients asking for many large
replies cannot make everyone else wait behind them. How the server accepts connections
when it runs out of descriptors is in ``coordd.api.accepting``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import SocketListener, SocketStream, TaskGroup, UNIXSocketStream

from coordd.api import fdpassing, framing
from coordd.api.accepting import Acceptor
from coordd.api.access import AccessPolicy, Peer, peer_credentials
from coordd.api.errors import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
)
from coordd.api.limits import Limits
from coordd.api.methods import Api, Caller
from coordd.api.turns import LARGE_BYTES, Turns

log = logging.getLogger("coordd.server")

MAX_IN_FLIGHT = 16
WRITE_TIMEOUT_S = 10.0
EVENT_QUEUE = 1000  # notifications queued for one slow subscriber before it is dropped
READ_CHUNK = 65536
UNAVAILABLE = -32004
#: Once this much was queued at once, memory is handed back to the system when it drains.
TRIM_AFTER_BYTES = 8 << 20


#: A frame's requests (whether it is a batch, its members), or the encoded error reply.
Parsed = tuple[bool, list[Any]] | bytes
_NO_FDS = fdpassing.Passed(())


class Connection:
    """One client: reads frames, dispatches requests, writes replies and notifications."""

    def __init__(self, server: Server, stream: SocketStream, peer: Peer) -> None:
        self.server = server
        self.stream = stream
        self.peer = peer
        self.caller = Caller(
            uid=peer.uid,
            gid=peer.gid,
            pid=peer.pid,
            access=server.policy.access_of(peer),
            notify=self.notify,
        )
        self._in_flight = anyio.Semaphore(MAX_IN_FLIGHT)
        self._busy = 0
        # What waits to be written, oldest first, and its size in bytes; the writer task
        # takes from the left. A message stays counted until the kernel has taken all of it.
        self._outgoing: deque[tuple[bytes, bool]] = deque()  # (data, is a notification)
        self.queued = 0
        self._events_queued = 0
        self._wake_writer = anyio.Event()
        self._room = anyio.Event()  # set when queued bytes shrink
        self._closing = False
        self._tg: TaskGroup | None = None
        self._read_scope: anyio.CancelScope | None = None  # the reader's wait, while it waits
        # Descriptors the client passed (``coordd.api.fdpassing``): received and not yet
        # taken, and taken by requests not yet ended; all closed when the connection ends.
        self._received = fdpassing.Received()
        self._passed: set[fdpassing.Passed] = set()
        self._takes_fds = isinstance(stream, UNIXSocketStream)

    # -- lifecycle -----------------------------------------------------------------------

    async def serve(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._write_loop)
                await self._read_loop(tg)
                # A client may half-close after its last request (``… | socat``): answer
                # what is in flight, for as long as the connection could stay idle.
                with anyio.move_on_after(self.server.limits.idle_timeout_s):
                    for _ in range(MAX_IN_FLIGHT):
                        await self._in_flight.acquire()
                    while self.queued and not self._closing:
                        await self._wait_for_room()
                tg.cancel_scope.cancel()
        finally:
            self._closing = True
            self._drop_queue()
            self._received.close()
            for passed in self._passed:
                passed.close()
            self._passed.clear()
            with anyio.CancelScope(shield=True):
                await self.server.api.connection_closed(self.caller)
                await self.stream.aclose()

    def close(self) -> None:
        self._closing = True
        self.wake_reader()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    @property
    def idle(self) -> bool:
        return not (self._busy or self.caller.subscriptions or self.caller.held)

    async def _read_loop(self, tg: TaskGroup) -> None:
        limits = self.server.limits
        framer = framing.LineFramer(limits.max_frame_bytes)
        frame_started = 0.0  # when the partial frame in the framer began to arrive
        while True:
            paused = anyio.current_time()
            if not await self._wait_until_served():
                return
            # Time spent not reading, for want of room for replies, is not the client's.
            frame_started += anyio.current_time() - paused
            timeout: float | None = None
            frame_timeout = limits.frame_timeout_s
            if framer.pending:
                # The whole frame must arrive within its deadline, not each byte of it: a
                # client trickling a byte now and then must not hold its place for ever.
                timeout = max(0.0, frame_started + frame_timeout - anyio.current_time())
            elif self.idle:
                timeout = limits.idle_timeout_s
            with anyio.move_on_after(timeout) as scope:
                self._read_scope = scope
                try:
                    data = await self._receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                    data = b""
            self._read_scope = None
            if scope.cancelled_caught:
                log.debug("closing idle connection of uid %d", self.peer.uid)
                reason = (
                    f"frame not completed within {frame_timeout:g} s"
                    if framer.pending
                    else "idle timeout"
                )
                self._send_message(
                    framing.error_response(None, UNAVAILABLE, f"{reason}; connection closed")
                )
                return
            if not data:
                if framer.pending:
                    self._send_message(
                        framing.error_response(
                            None, PARSE_ERROR, "parse error: frame cut by end of stream"
                        )
                    )
                return
            continued = framer.pending
            try:
                frames = framer.feed(data)
            except framing.FrameTooLong:
                self._send_message(
                    framing.error_response(
                        None,
                        INVALID_REQUEST,
                        f"invalid request: frame exceeds {framer.max_frame} bytes; "
                        "connection closed",
                    )
                )
                return
            for frame in frames:
                if not frame.strip():
                    continue
                # Backpressure: while this client leaves its replies unread, its next
                # request waits unread too.
                if not await self._wait_until_served():
                    return
                # No pass of the loop per frame while there is room: a client's pipelined
                # requests are not held to one a pass when the loop is busy.
                try:
                    self._in_flight.acquire_nowait()
                except anyio.WouldBlock:
                    await self._in_flight.acquire()
                parsed = await self._parse(frame)
                if parsed is None:
                    self._in_flight.release()
                    return
                passed = _NO_FDS
                if len(self._received) and not isinstance(parsed, bytes) and not parsed[0]:
                    passed = self._received.take(framing.declared_fds(parsed[1][0]))
                    self._passed.add(passed)
                self._busy += 1
                tg.start_soon(self._handle_frame, parsed, passed)
            if len(self._received) and not framer.pending:
                # Descriptors are for the requests whose lines this read completed.
                stray = self._received.drop_stray()
                log.info(
                    "closed %d descriptors that no request of uid %d took", stray, self.peer.uid
                )
            if frames or not continued:
                frame_started = anyio.current_time()  # after any wait for a request slot

    async def _receive(self) -> bytes:
        """The next bytes from the client; descriptors passed with them are queued."""
        if not self._takes_fds:
            return await self.stream.receive(READ_CHUNK)
        stream: Any = self.stream
        try:
            data, fds = await stream.receive_fds(READ_CHUNK, fdpassing.MAX_QUEUED)
        except RuntimeError as exc:  # ancillary data other than descriptors
            raise anyio.BrokenResourceError from exc
        if fds:
            self._received.arrived(fds)
        return bytes(data)

    # -- requests ------------------------------------------------------------------------

    async def _parse(self, frame: bytes) -> Parsed | None:
        """A frame decoded, after its turn if it is large (``coordd.api.turns``); None if
        the connection is closing.

        The reader waits for the turn, not a task of the request's: the client's later
        requests wait behind its large one, and no task is held for each of them.
        """
        large = len(frame) >= LARGE_BYTES
        if large and not await self._take_turn():
            return None
        try:
            value = framing.decode(frame)
            is_batch, members = framing.split_batch(value, self.server.limits.max_batch)
        except framing.BadMessage as exc:
            return framing.encode(exc.response())
        # A batch's members take their turns one by one, as they run.
        call_turn = not (large or is_batch) and self._large_call(members[0])
        if call_turn and not await self._take_turn():
            return None
        return is_batch, members

    def _large_call(self, member: Any) -> bool:
        method = member.get("method") if isinstance(member, dict) else None
        return (
            isinstance(method, str)
            and method in self.server.api.table
            and self.server.turns.large_method(method)
        )

    async def _take_turn(self) -> bool:
        """Wait for a turn, and then until this client has room for another reply (the
        requests in flight while it waited do not add to its queue past its bounds);
        False if the connection is closing, and the request is not to run."""
        while not self._closing:
            await self.server.turns.take(self)
            if self.may_read():
                return not self._closing
            await self._wait_until_served()
        return False

    async def _handle_frame(self, parsed: Parsed, passed: fdpassing.Passed) -> None:
        try:
            reply = await self._respond(parsed, passed)
            if reply is not None:
                self._enqueue(reply)
        finally:
            passed.close()
            self._passed.discard(passed)
            self._busy -= 1
            self._in_flight.release()
            self._start_idle_clock()

    def _start_idle_clock(self) -> None:
        """A request ended: if that left the connection idle, the reader's wait gets its
        deadline now (it began waiting, without one, while the request was in flight)."""
        scope = self._read_scope
        if scope is not None and self.idle and scope.deadline == math.inf:
            scope.deadline = anyio.current_time() + self.server.limits.idle_timeout_s

    async def _respond(self, parsed: Parsed, passed: fdpassing.Passed) -> bytes | None:
        """The encoded reply to one frame, or None (notifications only).

        A batch's replies go out as one line, so they are bounded here: once they pass
        ``max_send_queue_bytes``, the remaining requests of the batch are not run and each
        gets an error saying so (notifications, which add nothing, still run).
        """
        if isinstance(parsed, bytes):
            return parsed  # the frame's error
        is_batch, members = parsed
        if not is_batch:
            return await self._respond_one(members[0], passed)
        limits = self.server.limits
        parts: list[bytes] = []
        size = 0
        for member in members:
            if size > limits.max_send_queue_bytes and framing.has_id(member):
                reply: bytes | None = framing.encode(
                    framing.error_response(
                        member["id"] if framing.valid_id(member["id"]) else None,
                        UNAVAILABLE,
                        f"not run: the replies to this batch passed "
                        f"{limits.max_send_queue_bytes} bytes; send this request again",
                    )
                )
            elif self._large_call(member) and not await self._take_turn():
                return None
            else:
                reply = await self._respond_one(member)
            if reply is not None:
                parts.append(reply[:-1])
                size += len(reply)
        return b"[" + b",".join(parts) + b"]\n" if parts else None

    async def _respond_one(
        self, member: Any, passed: fdpassing.Passed | None = None
    ) -> bytes | None:
        """The encoded reply to one request object (which had its turn, if it needed one);
        ``passed``: the descriptors it took (None: it is a member of a batch)."""
        try:
            request = framing.check_request(member)
        except framing.BadMessage as exc:
            return framing.encode(exc.response())
        method = request["method"]
        if "fds" in request:
            api = self.server.api
            refusal = fdpassing.refusal(request, passed, api.table, api.takes_fds)
            if refusal is not None:
                if framing.is_notification(request):
                    return None
                return framing.encode(
                    framing.error_response(request.get("id"), INVALID_PARAMS, refusal)
                )
            request = {key: value for key, value in request.items() if key != "fds"}
            with fdpassing.passing(passed or _NO_FDS):
                return await self._dispatch(request, method)
        return await self._dispatch(request, method)

    async def _dispatch(self, request: dict[str, Any], method: str) -> bytes | None:
        if method not in self.server.api.table:
            if framing.is_notification(request):
                return None
            return framing.encode(
                framing.error_response(request.get("id"), METHOD_NOT_FOUND, "method not found")
            )
        try:
            reply = await self.server.api.dispatch(request, self.caller)
        except Exception:
            log.exception("dispatch failed for %s", method)
            if framing.is_notification(request):
                return None
            reply = framing.error_response(request.get("id"), INTERNAL_ERROR, "internal error")
        if reply is None:
            return None
        data = framing.encode(reply)
        self.server.turns.replied(method, len(data))
        return data

    # -- writing -------------------------------------------------------------------------

    def _send_message(self, message: Any) -> None:
        self._enqueue(framing.encode(message))

    def _enqueue(self, data: bytes, event: bool = False) -> None:
        """Queue bytes for the writer; the message itself is no longer held by anyone."""
        if self._closing:
            return
        self._outgoing.append((data, event))
        self._events_queued += event
        self.queued += len(data)
        self.server.queued_more(len(data))
        self._wake_writer.set()

    async def _write_loop(self) -> None:
        while True:
            if not self._outgoing:
                self._wake_writer = anyio.Event()
                await self._wake_writer.wait()
                continue
            data, event = self._outgoing[0]
            try:
                with anyio.fail_after(WRITE_TIMEOUT_S):
                    await self.stream.send(data)
            except TimeoutError:
                log.info("client uid %d does not read its replies; disconnecting", self.peer.uid)
                self.close()
                return
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
                self.close()
                return
            self._outgoing.popleft()
            self.queued -= len(data)
            self._events_queued -= event
            self.server.queued_less(len(data))
            self.wake_reader()

    def _drop_queue(self) -> None:
        size = self.queued
        self._outgoing.clear()
        self.queued = 0
        self._events_queued = 0
        if size:
            self.server.queued_less(size)

    def wake_reader(self) -> None:
        """The queues shrank: a reader waiting for room looks again."""
        self._room.set()
        self._room = anyio.Event()

    def may_read(self) -> bool:
        """Whether the next request may be read: see the module's docstring."""
        if self.queued == 0:
            return True
        limits = self.server.limits
        return (
            self.queued < limits.max_send_queue_bytes
            and self.server.queued < limits.max_send_queue_total_bytes
        )

    async def _wait_for_room(self) -> None:
        room = self._room
        self.server.waiting.add(self)
        try:
            await room.wait()
        finally:
            self.server.waiting.discard(self)

    async def _wait_until_served(self) -> bool:
        """Wait until the next request may be read; False if the connection is closing."""
        while not self.may_read() and not self._closing:
            await self._wait_for_room()
        return not self._closing

    def notify(self, method: str, params: dict[str, Any]) -> None:
        """Queue a notification to this client; drop the client if it cannot keep up."""
        if self._closing:
            return
        limits = self.server.limits
        if self._events_queued >= EVENT_QUEUE or self.queued >= 16 * limits.max_send_queue_bytes:
            log.info("client uid %d is too slow for its events; disconnecting", self.peer.uid)
            self.close()
            return
        self._enqueue(
            framing.encode({"jsonrpc": "2.0", "method": method, "params": params}), event=True
        )


class Server:
    """Accepts connections on the listeners and serves each one."""

    def __init__(self, api: Api, limits: Limits, policy: AccessPolicy) -> None:
        self.api = api
        self.limits = limits
        self.policy = policy
        self.connections: set[Connection] = set()
        self.per_uid: Counter[int] = Counter()
        self.served = 0
        self.queued = 0  # bytes queued for all connections
        self.waiting: set[Connection] = set()  # readers waiting for their queue to shrink
        self._queued_peak = 0
        self.turns = Turns()
        self.acceptor = Acceptor(lambda: len(self.connections))

    # -- accepting -----------------------------------------------------------------------

    async def serve(
        self, listeners: list[SocketListener], ready: Callable[[], None] | None = None
    ) -> None:
        if ready is not None:
            ready()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.turns.run)

                def start(stream: SocketStream) -> None:
                    tg.start_soon(self._handle, stream)

                for listener in listeners:
                    tg.start_soon(self.acceptor.loop, listener, start)
        finally:
            self.acceptor.close()

    async def _refuse(self, stream: SocketStream, code: int, message: str) -> None:
        with anyio.move_on_after(1.0):
            await stream.send(framing.encode(framing.error_response(None, code, message)))
        await stream.aclose()

    async def _handle(self, stream: SocketStream) -> None:
        try:
            try:
                peer = peer_credentials(stream)
            except OSError as exc:
                log.warning("cannot read peer credentials: %s", exc)
                await stream.aclose()
                return
            access = self.policy.access_of(peer)
            reason = self.limits.refusal(
                len(self.connections), self.per_uid[peer.uid], peer.uid, "admin" in access
            )
            if reason is not None:
                await self._refuse(stream, UNAVAILABLE, reason)
                return
            if not access:
                await self._refuse(
                    stream,
                    -32003,
                    f"permission denied: uid {peer.uid} is neither in the admin "
                    "group nor in the read group of coordd",
                )
                return
            connection = Connection(self, stream, peer)
            self.connections.add(connection)
            self.per_uid[peer.uid] += 1
            self.served += 1
            try:
                await connection.serve()
            finally:
                self.connections.discard(connection)
                self.per_uid[peer.uid] -= 1
                if not self.per_uid[peer.uid]:
                    del self.per_uid[peer.uid]
        except Exception:
            log.exception("connection handler failed; the connection is closed")
        finally:
            self.acceptor.freed()

    def close_all(self) -> None:
        for connection in list(self.connections):
            connection.close()

    # -- the send budget -----------------------------------------------------------------

    def queued_more(self, size: int) -> None:
        self.queued += size
        self._queued_peak = max(self._queued_peak, self.queued)

    def queued_less(self, size: int) -> None:
        before = self.queued
        self.queued -= size
        limit = self.limits.max_send_queue_total_bytes
        if before >= limit > self.queued:
            for connection in list(self.waiting):
                connection.wake_reader()
        if self.queued == 0 and self._queued_peak >= TRIM_AFTER_BYTES:
            self._queued_peak = 0
            _return_memory()


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


_MALLOC_TRIM = _load_trim()


def _return_memory() -> None:
    """Give freed heap pages back to the system once a burst of queued replies is gone.

    The replies were large bytes objects from malloc; glibc keeps what they used in the
    process's heap after they are freed unless asked to release it.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
