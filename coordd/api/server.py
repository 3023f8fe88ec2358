"""The Unix socket server: connections, framing, limits, credentials, events.

Each connection is served by its own task group with a catch-all around it: nothing a client
does (hanging up mid-reply, sending garbage, never reading) can escape and take the daemon
down. Per connection:

- frames are cut by ``LineFramer`` (bounded size) and decoded by ``framing.decode``;
- requests run concurrently up to ``MAX_IN_FLIGHT``; beyond that the reader stops reading,
  which pushes back on the client through the socket buffer;
- every write has a deadline (``WRITE_TIMEOUT_S``): a client that never reads its replies is
  disconnected instead of pinning memory;
- an idle connection (no request in flight, no subscription, no lock) is closed after
  ``idle_timeout_s``, a connection sending a frame slower than that too;
- the peer's uid/gid/pid come from ``SO_PEERCRED`` once, at accept, and decide its access.

The number of connections is bounded; one over the limit gets an error reply and is closed.
"""

from __future__ import annotations

import grp
import logging
import math
import os
import pwd
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskGroup
from anyio.streams.stapled import MultiListener

from coordd.api import framing
from coordd.api.errors import INTERNAL_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR
from coordd.api.methods import Api, Caller

log = logging.getLogger("coordd.server")

MAX_IN_FLIGHT = 16
WRITE_TIMEOUT_S = 10.0
EVENT_QUEUE = 1000  # notifications queued for one slow subscriber before it is dropped
READ_CHUNK = 65536
ACCESS_CACHE_S = 60.0


@dataclass
class Limits:
    max_frame_bytes: int = 1 << 20
    max_batch: int = 100
    max_connections: int = 256
    idle_timeout_s: float = 300.0


@dataclass(frozen=True)
class Peer:
    uid: int
    gid: int
    pid: int


def peer_credentials(stream: SocketStream) -> Peer:
    raw: socket.socket = stream.extra(SocketAttribute.raw_socket)  # noqa: S610 - anyio, not Django
    creds = raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", creds)
    return Peer(uid=uid, gid=gid, pid=pid)


@dataclass
class AccessPolicy:
    """Root, the daemon's own user and the admin group may mutate; the read group may read."""

    admin_group: str | None = None
    read_group: str | None = None
    # Group lookups go through NSS (possibly LDAP): cache them, but briefly, so that
    # removing someone from a group takes effect within a minute, not at the next reload.
    _cache: dict[tuple[int, int], tuple[float, frozenset[str]]] = field(default_factory=dict)

    def access_of(self, peer: Peer) -> frozenset[str]:
        """The access levels of a peer, decided once per connection."""
        key = (peer.uid, peer.gid)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is None or now - cached[0] > ACCESS_CACHE_S:
            cached = self._cache[key] = (now, self._compute(peer))
        return cached[1]

    def _compute(self, peer: Peer) -> frozenset[str]:
        if peer.uid in (0, os.geteuid()):
            return frozenset({"read", "admin"})
        groups = _groups_of(peer)
        if self.admin_group and self.admin_group in groups:
            return frozenset({"read", "admin"})
        if self.read_group and self.read_group in groups:
            return frozenset({"read"})
        return frozenset()

    def reset(self, admin_group: str | None, read_group: str | None) -> None:
        self.admin_group, self.read_group = admin_group, read_group
        self._cache.clear()


def _groups_of(peer: Peer) -> set[str]:
    gids = {peer.gid}
    try:
        name = pwd.getpwuid(peer.uid).pw_name
        gids.update(os.getgrouplist(name, peer.gid))
    except KeyError:
        pass
    names: set[str] = set()
    for gid in gids:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


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
        self._send_lock = anyio.Lock()
        self._in_flight = anyio.Semaphore(MAX_IN_FLIGHT)
        self._busy = 0
        self._events_send, self._events_receive = anyio.create_memory_object_stream[bytes](
            EVENT_QUEUE
        )
        self._tg: TaskGroup | None = None
        self._read_scope: anyio.CancelScope | None = None  # the reader's wait, while it waits

    # -- lifecycle -----------------------------------------------------------------------

    async def serve(self) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._pump_events)
                await self._read_loop(tg)
                # A client may half-close after its last request (``… | socat``): answer
                # what is in flight, for as long as the connection could stay idle.
                with anyio.move_on_after(self.server.limits.idle_timeout_s):
                    for _ in range(MAX_IN_FLIGHT):
                        await self._in_flight.acquire()
                tg.cancel_scope.cancel()
        finally:
            self._events_send.close()
            with anyio.CancelScope(shield=True):
                await self.server.api.connection_closed(self.caller)
                await self.stream.aclose()

    def close(self) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    @property
    def idle(self) -> bool:
        return not (self._busy or self.caller.subscriptions or self.caller.held)

    async def _read_loop(self, tg: TaskGroup) -> None:
        framer = framing.LineFramer(self.server.limits.max_frame_bytes)
        frame_started = 0.0  # when the partial frame in the framer began to arrive
        while True:
            idle_timeout = self.server.limits.idle_timeout_s
            timeout: float | None = None
            if framer.pending:
                # The whole frame must arrive within the idle time, not each byte of it:
                # a client trickling a byte now and then must not hold its slot for ever.
                timeout = max(0.0, frame_started + idle_timeout - anyio.current_time())
            elif self.idle:
                timeout = idle_timeout
            with anyio.move_on_after(timeout) as scope:
                self._read_scope = scope
                try:
                    data = await self.stream.receive(READ_CHUNK)
                except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
                    data = b""
            self._read_scope = None
            if scope.cancelled_caught:
                log.debug("closing idle connection of uid %d", self.peer.uid)
                reason = (
                    f"frame not completed within {idle_timeout:g} s"
                    if framer.pending
                    else "idle timeout"
                )
                await self._send_message(
                    framing.error_response(None, -32004, f"{reason}; connection closed")
                )
                return
            if not data:
                if framer.pending:
                    await self._send_message(
                        framing.error_response(
                            None, PARSE_ERROR, "parse error: frame cut by end of stream"
                        )
                    )
                return
            continued = framer.pending
            try:
                frames = framer.feed(data)
            except framing.FrameTooLong:
                await self._send_message(
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
                await self._in_flight.acquire()
                self._busy += 1
                tg.start_soon(self._handle_frame, frame)
            if frames or not continued:
                frame_started = anyio.current_time()  # after any wait for a request slot

    # -- requests ------------------------------------------------------------------------

    async def _handle_frame(self, frame: bytes) -> None:
        try:
            reply = await self._respond(frame)
            if reply is not None:
                await self._send_message(reply)
        finally:
            self._busy -= 1
            self._in_flight.release()
            self._start_idle_clock()

    def _start_idle_clock(self) -> None:
        """A request ended: if that left the connection idle, the reader's wait gets its
        deadline now (it began waiting, without one, while the request was in flight)."""
        scope = self._read_scope
        if scope is not None and self.idle and scope.deadline == math.inf:
            scope.deadline = anyio.current_time() + self.server.limits.idle_timeout_s

    async def _respond(self, frame: bytes) -> Any:
        limits = self.server.limits
        try:
            value = framing.decode(frame)
            is_batch, members = framing.split_batch(value, limits.max_batch)
        except framing.BadMessage as exc:
            return exc.response()
        replies: list[Any] = []
        for member in members:
            reply = await self._respond_one(member)
            if reply is not None:
                replies.append(reply)
        if is_batch:
            return replies or None
        return replies[0] if replies else None

    async def _respond_one(self, member: Any) -> dict[str, Any] | None:
        try:
            request = framing.check_request(member)
        except framing.BadMessage as exc:
            return exc.response()
        if request["method"] not in self.server.api.table:
            if framing.is_notification(request):
                return None
            return framing.error_response(request.get("id"), METHOD_NOT_FOUND, "method not found")
        try:
            return await self.server.api.dispatch(request, self.caller)
        except Exception:
            log.exception("dispatch failed for %s", request["method"])
            if framing.is_notification(request):
                return None
            return framing.error_response(request.get("id"), INTERNAL_ERROR, "internal error")

    # -- writing -------------------------------------------------------------------------

    async def _send_message(self, message: Any) -> None:
        await self._send_bytes(framing.encode(message))

    async def _send_bytes(self, data: bytes) -> None:
        try:
            async with self._send_lock:
                with anyio.fail_after(WRITE_TIMEOUT_S):
                    await self.stream.send(data)
        except TimeoutError:
            log.info("client uid %d does not read its replies; disconnecting", self.peer.uid)
            self.close()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
            self.close()

    def notify(self, method: str, params: dict[str, Any]) -> None:
        """Queue a notification to this client; drop the client if it cannot keep up."""
        try:
            self._events_send.send_nowait(
                framing.encode({"jsonrpc": "2.0", "method": method, "params": params})
            )
        except anyio.WouldBlock:
            log.info("client uid %d is too slow for its events; disconnecting", self.peer.uid)
            self.close()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    async def _pump_events(self) -> None:
        async with self._events_receive:
            async for data in self._events_receive:
                await self._send_bytes(data)


class Server:
    """Accepts connections on the listeners and serves each one."""

    def __init__(self, api: Api, limits: Limits, policy: AccessPolicy) -> None:
        self.api = api
        self.limits = limits
        self.policy = policy
        self.connections: set[Connection] = set()
        self.served = 0

    async def serve(self, listeners: list[Any], ready: Callable[[], None] | None = None) -> None:
        listener = MultiListener(listeners) if len(listeners) > 1 else listeners[0]
        if ready is not None:
            ready()
        async with listener:
            await listener.serve(self._handle)

    async def _handle(self, stream: SocketStream) -> None:
        try:
            try:
                peer = peer_credentials(stream)
            except OSError as exc:
                log.warning("cannot read peer credentials: %s", exc)
                await stream.aclose()
                return
            if len(self.connections) >= self.limits.max_connections:
                with anyio.move_on_after(1.0):
                    await stream.send(
                        framing.encode(
                            framing.error_response(
                                None,
                                -32004,
                                f"too many connections (limit {self.limits.max_connections})",
                            )
                        )
                    )
                await stream.aclose()
                return
            if not self.policy.access_of(peer):
                with anyio.move_on_after(1.0):
                    await stream.send(
                        framing.encode(
                            framing.error_response(
                                None,
                                -32003,
                                f"permission denied: uid {peer.uid} is neither in the admin "
                                "group nor in the read group of coordd",
                            )
                        )
                    )
                await stream.aclose()
                return
            connection = Connection(self, stream, peer)
            self.connections.add(connection)
            self.served += 1
            try:
                await connection.serve()
            finally:
                self.connections.discard(connection)
        except Exception:
            log.exception("connection handler failed; the connection is closed")

    def close_all(self) -> None:
        for connection in list(self.connections):
            connection.close()
