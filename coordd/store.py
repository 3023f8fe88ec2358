"""Persistence: one SQLite file, one writer, group commit.

Every change of state goes through ``Store.write``: the statements join a queue that a single
writer thread drains. The writer takes everything queued at that moment, runs it in one
``BEGIN IMMEDIATE … COMMIT`` (WAL, ``synchronous=FULL``: the commit is durable when it
returns), then wakes every request whose statements it carried. Concurrent requests thus share
one fsync, and a request is answered only after its own transaction is on disk.

Why a thread of its own, not a coroutine: a coroutine writer commits only when the event loop
gets round to resuming it, so under load each commit waits for a whole loop iteration and
batches shrink. The thread commits as soon as the previous commit is on disk, whatever the
loop is doing; the loop only queues jobs and receives one wake-up per batch. Consecutive
statements with the same SQL are merged into one ``executemany``.

A failure of the database (I/O error, disk full, corruption) is fatal: the writer records it,
fails every waiting request with ``Unavailable``, and ``fatal`` is set so the daemon exits
non-zero and the supervisor restarts it on a state that is known to be on disk.

Reads (history, repository details) use a second connection through aiosqlite, so they never
wait behind a commit and never block the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite
import anyio

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


def dumps(value: Any) -> str:
    """JSON for a column: compact, and refusing what SQLite or a reader could not take back."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


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


_STOP = None  # queued to end the writer thread


class Store:
    """The SQLite file behind the daemon's state; ``open`` it, then ``run_writer``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: queue.SimpleQueue[PendingWrite | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = anyio.Event()
        self._committed: collections.deque[list[PendingWrite]] = collections.deque()
        self._delivered = anyio.Event()
        self._closing = False
        self.fatal: BaseException | None = None
        self.fatal_event = anyio.Event()
        self.commits = 0

    async def open(self) -> None:
        """Open both connections, migrate the schema forward."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = await anyio.to_thread.run_sync(self._open_writer)
            self._reader = await aiosqlite.connect(self.path, isolation_level=None)
            await self._reader.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            await self.close()
            raise Unavailable(f"cannot open the database {self.path}: {exc}") from exc

    def _open_writer(self) -> sqlite3.Connection:
        # Used by the writer thread only, once this returns; opened elsewhere, hence the flag.
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA foreign_keys=ON")
            _migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    async def close(self) -> None:
        """Close the connections (after ``run_writer`` has returned)."""
        if self._thread is not None:
            await anyio.to_thread.run_sync(self._thread.join)
            self._thread = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- writing -----------------------------------------------------------------------

    async def write(self, *statements: Statement) -> None:
        """Run ``statements`` in the next group commit; return once it is on disk."""
        await self.write_then(*statements)

    def write_then(
        self, *statements: Statement, then: Callable[[], None] | None = None
    ) -> PendingWrite:
        """Queue ``statements`` now; ``then`` runs on the event loop right after the commit.

        Await the result to wait for the commit. Queued and ``then`` are unaffected by the
        caller being cancelled while it waits: what was decided happens regardless.
        """
        if self.fatal is not None:
            raise Unavailable(f"the database failed: {self.fatal}")
        if self._closing:
            raise Unavailable("coordd is shutting down")
        job = PendingWrite(statements, anyio.Event(), then)
        self._queue.put(job)
        return job

    def write_later(self, *statements: Statement) -> None:
        """Queue ``statements`` for the next group commit without waiting for it."""
        if self.fatal is None and not self._closing:
            self._queue.put(PendingWrite(statements, None))

    async def run_writer(self) -> None:
        """Run the writer thread until ``stop_writer`` (or a database failure)."""
        assert self._db is not None
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._writer_thread, name="coordd-writer")
        self._thread.start()
        try:
            # Committed batches come back here, so that what runs after a commit (starting
            # a task, say) runs inside a task, as anyio requires, not in a bare callback.
            while self._committed or not self._stopped.is_set():
                if not self._committed:
                    await self._delivered.wait()
                    self._delivered = anyio.Event()
                    continue
                _wake(self._committed.popleft())
        finally:
            self.stop_writer()

    def _deliver(self, batch: list[PendingWrite]) -> None:
        """On the event loop, from the writer thread: a batch is on disk."""
        self._committed.append(batch)
        self._delivered.set()

    def _stop_delivering(self) -> None:
        self._stopped.set()
        self._delivered.set()

    def stop_writer(self) -> None:
        """Commit what is queued, then end the writer thread."""
        if not self._closing:
            self._closing = True
            self._queue.put(_STOP)

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        await self.write()

    def _writer_thread(self) -> None:
        """The single writer: take what is queued, commit it, wake its requests."""
        assert self._db is not None
        assert self._loop is not None
        loop = self._loop
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is _STOP:
                    stop = True
                    break
                batch.append(job)
            try:
                _transaction(self._db, _grouped(batch))
            except sqlite3.Error as exc:
                loop.call_soon_threadsafe(self._fail, batch, exc)
                return
            self.commits += 1
            loop.call_soon_threadsafe(self._deliver, batch)
        loop.call_soon_threadsafe(self._stop_delivering)

    def _fail(self, batch: list[PendingWrite], exc: sqlite3.Error) -> None:
        """On the event loop: fail this batch and everything queued after it."""
        log.critical("database %s failed, stopping: %s", self.path, exc)
        self.fatal = exc
        self._closing = True
        pending = list(batch)
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                pending.append(job)
        for job in pending:
            job.error = exc
        self._deliver(pending)
        self.fatal_event.set()
        self._stop_delivering()

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


def _grouped(batch: list[PendingWrite]) -> list[tuple[str, list[Sequence[Any]]]]:
    """Consecutive statements with the same SQL, merged for ``executemany``."""
    groups: list[tuple[str, list[Sequence[Any]]]] = []
    for job in batch:
        for statement, params in job.statements:
            if groups and groups[-1][0] == statement:
                groups[-1][1].append(params)
            else:
                groups.append((statement, [params]))
    return groups


def _wake(batch: list[PendingWrite]) -> None:
    for job in batch:
        if job.then is not None and job.error is None:
            try:
                job.then()
            except Exception:
                log.exception("an action after a commit failed")
        if job.done is not None:
            job.done.set()


def _migrate(db: sqlite3.Connection) -> None:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"schema version {version} is newer than this coordd ({SCHEMA_VERSION}); upgrade coordd"
        )
    for number in range(version, SCHEMA_VERSION):
        db.execute("BEGIN IMMEDIATE")
        for sql in _split(MIGRATIONS[number]):
            db.execute(sql)
        db.execute(f"PRAGMA user_version = {number + 1}")
        db.execute("COMMIT")
        log.info("database schema migrated to version %d", number + 1)


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
