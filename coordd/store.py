"""Persistence: one SQLite file, one writer, group commit.

Every change of state goes through ``Store.write``: the statements join a queue that a single
writer task drains. The writer takes everything queued at that moment, runs it in one
``BEGIN IMMEDIATE … COMMIT`` (WAL, ``synchronous=FULL``: the commit is durable when it
returns), then wakes every request whose statements it carried. Concurrent requests thus share
one fsync, and a request is answered only after its own transaction is on disk.

Consecutive statements with the same SQL are merged into one ``executemany``, and the whole
transaction runs on the connection's thread in a single call: a batch of submissions costs
one thread crossing and one fsync, not one per row.

A failure of the database (I/O error, disk full, corruption) is fatal: the writer records it,
fails every waiting request with ``Unavailable``, and ``fatal`` is set so the daemon exits
non-zero and the supervisor restarts it on a state that is known to be on disk.

Reads (history, repository details) use a second connection, so they never wait behind a
commit.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from coordd.errors import Unavailable

log = logging.getLogger(__name__)

Statement = tuple[str, Sequence[Any]]

# Forward migrations, one per schema version; ``user_version`` counts those applied.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE tasks (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        operation TEXT NOT NULL,
        args TEXT NOT NULL,
        claims TEXT NOT NULL,
        heavy INTEGER NOT NULL,
        restartable INTEGER NOT NULL,
        held INTEGER NOT NULL DEFAULT 0,
        uid INTEGER NOT NULL,
        state TEXT NOT NULL,
        submitted REAL NOT NULL,
        started REAL,
        finished REAL,
        result TEXT,
        error TEXT,
        progress TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX tasks_incomplete ON tasks(seq) WHERE state IN ('waiting', 'running');
    CREATE INDEX tasks_finished ON tasks(finished) WHERE finished IS NOT NULL;
    CREATE TABLE repositories (
        id TEXT PRIMARY KEY,
        config TEXT NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        last_sync TEXT,
        last_publish TEXT
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
MAX_BATCH = 2000
LINGER_S = 0.002  # how long background writes wait for a client's write to share a commit


def dumps(value: Any) -> str:
    """JSON for a column: compact, and refusing what SQLite or a reader could not take back."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass
class _Job:
    statements: Sequence[Statement]
    done: anyio.Event | None
    urgent: bool = False
    error: BaseException | None = None


class Store:
    """The SQLite file behind the daemon's state; ``open`` it inside a task group."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        send, receive = anyio.create_memory_object_stream[_Job](math.inf)
        self._send: MemoryObjectSendStream[_Job] = send
        self._receive: MemoryObjectReceiveStream[_Job] = receive
        self.fatal: BaseException | None = None
        self.fatal_event = anyio.Event()
        self.commits = 0

    async def open(self) -> None:
        """Open both connections, migrate the schema forward, check the file is sound."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await aiosqlite.connect(self.path, isolation_level=None)
            await self._writer.execute("PRAGMA journal_mode=WAL")
            await self._writer.execute("PRAGMA synchronous=FULL")
            await self._writer.execute("PRAGMA foreign_keys=ON")
            await self._migrate(self._writer)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await self._reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            await self.close()
            raise Unavailable(f"cannot open the database {self.path}: {exc}") from exc

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        async with conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this coordd ({SCHEMA_VERSION}); "
                "upgrade coordd"
            )
        for number in range(version, SCHEMA_VERSION):
            await conn.execute("BEGIN IMMEDIATE")
            for sql in _split(MIGRATIONS[number]):
                await conn.execute(sql)
            await conn.execute(f"PRAGMA user_version = {number + 1}")
            await conn.execute("COMMIT")
            log.info("database schema migrated to version %d", number + 1)

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    # -- writing -----------------------------------------------------------------------

    async def write(self, *statements: Statement, urgent: bool = True) -> None:
        """Run ``statements`` in the next group commit; return once it is on disk.

        ``urgent``: a client waits for this commit. Writes that only the daemon waits for
        (a task's start or end) pass ``urgent=False`` and may linger ``LINGER_S`` for an
        urgent one to share their commit.
        """
        if self.fatal is not None:
            raise Unavailable(f"the database failed: {self.fatal}")
        job = _Job(statements, anyio.Event(), urgent)
        self._send.send_nowait(job)
        assert job.done is not None
        await job.done.wait()
        if job.error is not None:
            raise Unavailable(f"the database failed: {job.error}") from job.error

    def write_later(self, *statements: Statement) -> None:
        """Queue ``statements`` for the next group commit without waiting for it."""
        if self.fatal is None:
            self._send.send_nowait(_Job(statements, None))

    async def run_writer(self) -> None:
        """The single writer: drain the queue, commit each batch, wake its requests."""
        assert self._writer is not None
        conn = self._writer
        async with self._receive:
            async for first in self._receive:
                batch = [first]
                self._drain(batch)
                if not any(job.urgent for job in batch):
                    await self._linger(batch)
                try:
                    await self._commit(conn, batch)
                except sqlite3.Error as exc:
                    self._fail(batch, exc)
                    return
                for job in batch:
                    if job.done is not None:
                        job.done.set()

    def _drain(self, batch: list[_Job]) -> None:
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._receive.receive_nowait())
            except anyio.WouldBlock:
                return

    async def _linger(self, batch: list[_Job]) -> None:
        """Wait up to ``LINGER_S`` for an urgent write to join a batch of background ones.

        Without it, the ends of the tasks a commit just answered take the next commit on
        their own, and the clients' next submissions wait a whole fsync for the one after:
        the pipeline locks into alternate commits of each kind. Clients never wait here.
        """
        with anyio.move_on_after(LINGER_S):
            while len(batch) < MAX_BATCH:
                try:
                    job = await self._receive.receive()
                except anyio.EndOfStream:
                    return
                batch.append(job)
                self._drain(batch)
                if any(j.urgent for j in batch):
                    return

    async def _commit(self, conn: aiosqlite.Connection, batch: list[_Job]) -> None:
        groups: list[tuple[str, list[Sequence[Any]]]] = []
        for job in batch:
            for statement, params in job.statements:
                if groups and groups[-1][0] == statement:
                    groups[-1][1].append(params)
                else:
                    groups.append((statement, [params]))
        # The whole transaction runs on the connection's own thread in one call: one thread
        # crossing per group commit instead of one per statement. aiosqlite has no public
        # way to run a function there; ``_execute`` is its own dispatch (the version is
        # pinned in pyproject.toml and the store's tests exercise this path).
        await conn._execute(_transaction, conn._conn, groups)  # type: ignore[no-untyped-call]
        self.commits += 1

    def _fail(self, batch: list[_Job], exc: sqlite3.Error) -> None:
        log.critical("database %s failed, stopping: %s", self.path, exc)
        self.fatal = exc
        for job in batch:
            job.error = exc
            if job.done is not None:
                job.done.set()
        while True:
            try:
                job = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                break
            job.error = exc
            if job.done is not None:
                job.done.set()
        self.fatal_event.set()

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        await self.write()

    def stop_writer(self) -> None:
        self._send.close()

    # -- reading -----------------------------------------------------------------------

    async def fetch(self, sql: str, params: Sequence[Any] = (), *, named: bool = True) -> list[Any]:
        """Rows from the reading connection (never blocked by the writer).

        ``named``: ``sqlite3.Row`` objects; otherwise plain tuples, cheaper by half when
        reading a whole queue at start-up.
        """
        conn = self._reader or self._writer
        assert conn is not None
        conn.row_factory = sqlite3.Row if named else None
        try:
            return list(await conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise Unavailable(f"cannot read the database: {exc}") from exc

    async def integrity_check(self) -> str:
        rows = await self.fetch("PRAGMA integrity_check")
        return str(rows[0][0])


def _transaction(db: sqlite3.Connection, groups: list[tuple[str, list[Sequence[Any]]]]) -> None:
    """Run ``groups`` of (SQL, rows) in one immediate transaction (on the writer thread)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in groups:
            db.executemany(sql, rows)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _split(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]
