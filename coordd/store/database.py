"""Persistence: one SQLite file, one writer, group commit.

Every change of state goes through ``Store.write``: the statements go to a single writer,
a process of its own (``coordd.store.writer``) that takes everything that has arrived, runs it in
one ``BEGIN IMMEDIATE … COMMIT`` (WAL, ``synchronous=FULL``: the commit is durable when it
returns) and answers how many jobs it committed; the store then wakes each of them, in
order. Concurrent requests thus share one fsync, and a request is answered only after its
own transaction is on disk. The event loop only sends jobs and reads one answer per commit;
the writer commits as soon as the previous commit is on disk, whatever the loop is doing.

A failure of the database (I/O error, disk full, corruption) is fatal: the writer reports it
and exits, every waiting request fails with ``Unavailable``, and ``fatal`` is set so the
daemon exits non-zero and the supervisor restarts it on a state that is known to be on disk.
The writer dying is such a failure too, and so is the writer not answering a commit for
``commit_timeout_s`` (a disk that hangs, a writer stopped): rather than hang every request
forever, the store kills the writer and fails the same way (``watch_commits``).

Reads (history, repository details) use a connection of the daemon's own through aiosqlite,
so they never wait behind a commit and never block the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import socket
import sqlite3
import sys
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
from anyio.abc import Process

from coordd.api.errors import Unavailable
from coordd.store import writer
from coordd.store.writer import Statement

__all__ = ["PendingWrite", "Statement", "Store", "dumps"]

log = logging.getLogger("coordd.store")

CHANNEL_BUFFER = 4 << 20  # bytes of jobs the socket to the writer absorbs in a burst
STOP_WAIT_S = 30.0  # for the writer's last commit at shutdown
COMMIT_TIMEOUT_S = 30.0  # the default of ``[store] commit_timeout``


class WriterFailed(Exception):
    """The database writer reported a failure, or went away."""


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """JSON for a column: compact, and refusing what SQLite or a reader could not take back."""
    return _ENCODER.encode(value)  # one encoder: ``json.dumps`` with options makes one a call


@dataclass
class PendingWrite:
    """Statements queued for a group commit; await it to wait for the commit."""

    statements: Sequence[Statement]
    done: anyio.Event | None
    then: Callable[[], None] | None = None  # run on the event loop once committed
    error: BaseException | None = None

    async def wait(self) -> None:
        assert self.done is not None
        await self.done.wait()
        if self.error is not None:
            raise Unavailable(f"the database failed: {self.error}") from self.error

    def __await__(self) -> Generator[Any, None, None]:
        return self.wait().__await__()


class Store:
    """The SQLite file behind the daemon's state; ``open`` it, then ``run_writer``."""

    def __init__(self, path: Path, commit_timeout_s: float = COMMIT_TIMEOUT_S) -> None:
        self.path = path
        #: How long the writer may leave sent jobs uncommitted before the store fails.
        self.commit_timeout_s = commit_timeout_s
        self._progress_at = time.monotonic()  # the last commit, or the first job after it
        self._reader: aiosqlite.Connection | None = None
        self._process: Process | None = None
        self._channel: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unanswered: collections.deque[PendingWrite] = collections.deque()
        self._outgoing = bytearray()
        self._incoming = bytearray()
        self._flush_pending = False
        self._waiting_writable = False
        self._closing = False
        self.fatal: BaseException | None = None
        self.fatal_event = anyio.Event()
        self.commits = 0

    async def open(self) -> None:
        """Start the writer (which migrates the schema forward), then open the reader."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        try:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, CHANNEL_BUFFER)
            self._process = await anyio.open_process(
                [sys.executable, "-m", "coordd.store.writer", str(self.path)],
                stdin=theirs.fileno(),
                stdout=None,
                stderr=None,
            )
        except OSError as exc:
            ours.close()
            raise Unavailable(f"cannot start the database writer: {exc}") from exc
        finally:
            theirs.close()
        ours.setblocking(False)
        self._channel = ours
        try:
            kind, payload = await self._next_message()
            if kind != writer.READY:
                raise Unavailable(f"cannot open the database {self.path}: {payload.decode()}")
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await self._reader.execute("PRAGMA query_only=ON")
        except EOFError as exc:
            status = await self._abandon()
            raise Unavailable(
                f"cannot open the database {self.path}: the writer exited with status {status}"
            ) from exc
        except sqlite3.Error as exc:
            await self._abandon()
            raise Unavailable(f"cannot open the database {self.path}: {exc}") from exc
        except BaseException:
            await self._abandon()
            raise

    async def _abandon(self) -> int | None:
        """Opening failed: stop the writer (it committed nothing) and close; its status."""
        status = None
        with anyio.CancelScope(shield=True):
            if self._process is not None:
                if self._process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        self._process.kill()
                status = await self._process.wait()
                self._process = None
            self._closing = True
            await self.close()
        return status

    async def close(self) -> None:
        """Let the writer finish what it was sent, then close everything."""
        if self._process is not None:
            self.stop_writer()
            channel = self._channel
            if channel is not None and self._outgoing and self.fatal is None:
                # The loop may not get to flush it any more: hand over the rest now.
                with contextlib.suppress(OSError):
                    channel.setblocking(True)
                    channel.settimeout(STOP_WAIT_S)
                    channel.sendall(self._outgoing)
                    self._outgoing.clear()
            await self._wait_for_writer()
            self._process = None
        if self._channel is not None:
            if self._waiting_writable and self._loop is not None:
                self._loop.remove_writer(self._channel.fileno())
            self._channel.close()
            self._channel = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    async def _wait_for_writer(self) -> None:
        process = self._process
        assert process is not None
        with anyio.move_on_after(STOP_WAIT_S) as waited:
            await process.wait()
        if waited.cancelled_caught:
            log.error("the database writer did not stop within %.0f s; killing it", STOP_WAIT_S)
            process.kill()
            await process.wait()

    async def _exit_status(self) -> int | None:
        if self._process is None:
            return None
        with anyio.move_on_after(5):
            return await self._process.wait()
        return None

    # -- writing -----------------------------------------------------------------------

    async def write(self, *statements: Statement) -> None:
        """Run ``statements`` in the next group commit; return once it is on disk."""
        await self.write_then(*statements)

    def write_then(
        self, *statements: Statement, then: Callable[[], None] | None = None
    ) -> PendingWrite:
        """Send ``statements`` now; ``then`` runs on the event loop right after the commit.

        Await the result to wait for the commit. Sent and ``then`` are unaffected by the
        caller being cancelled while it waits: what was decided happens regardless.
        """
        if self.fatal is not None:
            raise Unavailable(f"the database failed: {self.fatal}")
        if self._closing:
            raise Unavailable("coordd is shutting down")
        job = PendingWrite(statements, anyio.Event(), then)
        self._send(job)
        return job

    def write_later(self, *statements: Statement) -> None:
        """Send ``statements`` for the next group commit without waiting for it."""
        if self.fatal is None and not self._closing:
            self._send(PendingWrite(statements, None))

    async def flush(self) -> None:
        """Wait until everything sent so far is committed."""
        await self.write()

    def stop_writer(self) -> None:
        """Ask the writer to commit what it was sent, then exit."""
        if not self._closing:
            self._closing = True
            if self.fatal is None:
                self._outgoing += writer.STOP_FRAME
                self._flush()

    def _send(self, job: PendingWrite) -> None:
        if not self._unanswered:
            self._progress_at = time.monotonic()
        self._unanswered.append(job)
        self._outgoing += writer.job_frame(job.statements)
        if not self._flush_pending and not self._waiting_writable:
            # Jobs sent in the same turn of the event loop leave in one system call.
            self._flush_pending = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        channel = self._channel
        if channel is None or not self._outgoing or self.fatal is not None:
            return
        try:
            sent = channel.send(self._outgoing)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._fail(WriterFailed(f"cannot reach the database writer: {exc}"))
            return
        del self._outgoing[:sent]
        if self._outgoing and not self._waiting_writable:
            assert self._loop is not None
            self._waiting_writable = True
            self._loop.add_writer(channel.fileno(), self._writable)

    def _writable(self) -> None:
        assert self._loop is not None
        assert self._channel is not None
        self._loop.remove_writer(self._channel.fileno())
        self._waiting_writable = False
        self._flush()

    async def run_writer(self) -> None:
        """Wake the jobs the writer committed, until it stops (or the database fails).

        What runs after a commit (starting a task, say) thus runs inside this task, as anyio
        requires, not in a bare callback.
        """
        while True:
            try:
                kind, payload = await self._next_message()
            except EOFError:
                if not self._closing:
                    status = await self._exit_status()
                    self._fail(WriterFailed(f"the database writer exited (status {status})"))
                return
            if kind == writer.COMMITTED:
                self.commits += 1
                self._progress_at = time.monotonic()
                (count,) = writer.LENGTH.unpack(payload)
                _wake([self._unanswered.popleft() for _ in range(count)])
            elif kind == writer.FAILED:
                self._fail(WriterFailed(payload.decode("utf-8", "replace")))
                return

    async def watch_commits(self) -> None:
        """Fail the store when the writer leaves jobs uncommitted for ``commit_timeout_s``."""
        while self.fatal is None:
            await anyio.sleep(max(0.05, min(1.0, self.commit_timeout_s / 10)))
            if not self._unanswered or self.fatal is not None:
                continue
            waited = time.monotonic() - self._progress_at
            if waited < self.commit_timeout_s:
                continue
            pid = self._process.pid if self._process is not None else None
            self._fail(
                WriterFailed(
                    f"the database writer (pid {pid}) has not committed for {waited:.0f} s "
                    f"(commit_timeout {self.commit_timeout_s:g} s): the disk or the writer "
                    "is stalled"
                )
            )
            if self._process is not None and self._process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()  # it may hold a transaction: SQLite rolls it back

    async def _next_message(self) -> tuple[bytes, bytes]:
        """The writer's next message: its kind, and its payload."""
        channel = self._channel
        assert channel is not None
        while True:
            message = _take_message(self._incoming)
            if message is not None:
                return message
            await anyio.wait_readable(channel)
            try:
                data = channel.recv(1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                raise EOFError
            self._incoming += data

    def _fail(self, exc: BaseException) -> None:
        """The database failed: fail every unanswered job; the daemon stops."""
        if self.fatal is not None:
            return
        log.critical("database %s failed, stopping: %s", self.path, exc)
        self.fatal = exc
        self._closing = True
        self._outgoing.clear()
        pending = list(self._unanswered)
        self._unanswered.clear()
        for job in pending:
            job.error = exc
        _wake(pending)
        self.fatal_event.set()

    # -- reading -----------------------------------------------------------------------

    async def fetch(self, sql: str, params: Sequence[Any] = (), *, named: bool = True) -> list[Any]:
        """Rows from the reading connection (never blocked by the writer).

        ``named``: ``sqlite3.Row`` objects; otherwise plain tuples, cheaper by half when
        reading a whole queue at start-up.
        """
        conn = self._reader
        assert conn is not None
        conn.row_factory = sqlite3.Row if named else None
        try:
            return list(await conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise Unavailable(f"cannot read the database: {exc}") from exc

    async def integrity_check(self) -> str:
        rows = await self.fetch("PRAGMA integrity_check")
        return str(rows[0][0])


def _take_message(buffer: bytearray) -> tuple[bytes, bytes] | None:
    """One complete message of the writer from the front of ``buffer`` (removed from it)."""
    if not buffer:
        return None
    kind = bytes(buffer[:1])
    size = writer.LENGTH.size
    if kind == writer.READY:
        del buffer[:1]
        return kind, b""
    if len(buffer) < 1 + size:
        return None
    (value,) = writer.LENGTH.unpack_from(buffer, 1)
    if kind == writer.COMMITTED:
        payload = bytes(buffer[1 : 1 + size])
        del buffer[: 1 + size]
        return kind, payload
    if len(buffer) < 1 + size + value:
        return None
    payload = bytes(buffer[1 + size : 1 + size + value])
    del buffer[: 1 + size + value]
    return kind, payload


def _wake(batch: list[PendingWrite]) -> None:
    for job in batch:
        if job.then is not None and job.error is None:
            try:
                job.then()
            except Exception:
                log.exception("an action after a commit failed")
        if job.done is not None:
            job.done.set()
