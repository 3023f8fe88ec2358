"""The database writer: a process of its own that commits what the daemon sends it.

Why a process and not a thread: SQLite releases the GIL around every call, and a thread of
the daemon must then win it back from the busy event loop before its next statement; under
load each commit spent milliseconds waiting for that, not working. A process has a GIL of
its own: a commit costs its SQLite work and its fsync, nothing more.

The protocol, over the socket that is the writer's standard input:

- daemon to writer: one frame per job, a 4-byte big-endian length and a pickled list of
  ``(sql, params)``. A frame of length 0 asks the writer to answer what came before and exit.
- writer to daemon: ``R`` once the schema is migrated and it is ready; ``C`` and a 4-byte
  count after each commit (that many jobs, the oldest not yet answered, are on disk); ``E``,
  a 4-byte length and a message when the database failed, after which it exits non-zero.

Whatever arrives while a commit runs is committed together by the next one (group commit).
If the daemon goes away, the writer exits without committing what it had not yet begun to
commit: none of that was acknowledged. One writer per database: it holds an exclusive lock
on ``<database>-writer.lock`` for its life, so that a daemon restarted after a crash waits
for the previous writer's last commit.

Only the standard library here (and ``coordd.store.schema``, which is the same): the process
starts in a few tens of milliseconds.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import re
import signal
import socket
import sqlite3
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coordd.store import schema

Statement = tuple[str, Sequence[Any]]

MAX_BATCH = 2000  # jobs in one transaction
MAX_PARAMS = 32766  # SQLite's default bound on parameters in one statement
LOCK_WAIT_S = 30.0
LENGTH = struct.Struct(">I")

READY = b"R"
COMMITTED = b"C"
FAILED = b"E"


class LockTimeout(Exception):
    pass


def open_database(path: Path) -> sqlite3.Connection:
    """The writing connection: WAL, ``synchronous=FULL``, schema migrated forward."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        schema.migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def grouped(jobs: Sequence[Sequence[Statement]]) -> list[tuple[str, list[Sequence[Any]]]]:
    """The jobs' statements as (SQL, rows) groups, in an order with the same effect.

    Every statement coordd writes changes one table and reads no other (``INSERT INTO t``,
    ``UPDATE t``, ``DELETE FROM t``), so statements on different tables commute: a statement
    joins the latest group of its table when that group has the same SQL, and statements on
    one table keep their order. Any other statement is a barrier nothing moves across. A
    batch of submissions thus becomes one group per table.
    """
    groups: list[tuple[str, list[Sequence[Any]]]] = []
    latest: dict[str, int] = {}  # table -> index of its latest group
    for statements in jobs:
        for sql, params in statements:
            match = _TARGET.match(sql)
            if match is None or "SELECT" in sql.upper():
                latest.clear()
                groups.append((sql, [params]))
                continue
            index = latest.get(match[1])
            if index is not None and groups[index][0] == sql:
                groups[index][1].append(params)
            else:
                latest[match[1]] = len(groups)
                groups.append((sql, [params]))
    return groups


_TARGET = re.compile(r"(?:INSERT INTO|UPDATE|DELETE FROM) (\w+)\b")
_VALUES = re.compile(r"(INSERT INTO \w+ \([^)]*\) VALUES )(\([?, ]*\))(.*)", re.DOTALL)


def transaction(db: sqlite3.Connection, groups: list[tuple[str, list[Sequence[Any]]]]) -> None:
    """Run ``groups`` of (SQL, rows) in one immediate transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in groups:
            _execute(db, sql, rows)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _execute(db: sqlite3.Connection, sql: str, rows: list[Sequence[Any]]) -> None:
    """Run ``sql`` for each of ``rows``; the rows of an INSERT as one multi-row statement."""
    values = _VALUES.fullmatch(sql) if len(rows) > 1 else None
    if values is None:
        db.executemany(sql, rows)
        return
    head, row, tail = values.groups()
    step = max(1, MAX_PARAMS // max(1, len(rows[0])))
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        db.execute(
            head + ",".join([row] * len(chunk)) + tail,
            [value for params in chunk for value in params],
        )


def take_jobs(buffer: bytearray, limit: int) -> tuple[list[list[Statement]], bool]:
    """Complete job frames from the front of ``buffer`` (removed from it), and whether the
    stop frame was among them."""
    jobs: list[list[Statement]] = []
    offset = 0
    stop = False
    while len(jobs) < limit and len(buffer) - offset >= LENGTH.size:
        (length,) = LENGTH.unpack_from(buffer, offset)
        if length == 0:
            offset += LENGTH.size
            stop = True
            break
        end = offset + LENGTH.size + length
        if len(buffer) < end:
            break
        jobs.append(pickle.loads(buffer[offset + LENGTH.size : end]))  # noqa: S301 - our parent
        offset = end
    del buffer[:offset]
    return jobs, stop


def job_frame(statements: Sequence[Statement]) -> bytes:
    body = pickle.dumps(list(statements), protocol=pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(body)) + body


STOP_FRAME = LENGTH.pack(0)


def failure_message(text: str) -> bytes:
    body = text.encode("utf-8", "replace")
    return FAILED + LENGTH.pack(len(body)) + body


def _lock(path: Path) -> int:
    """Hold the writer lock of ``path``, waiting for a previous writer to exit."""
    fd = os.open(f"{path}-writer.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise LockTimeout(
                    f"another writer still holds {path} after {LOCK_WAIT_S:.0f} s"
                ) from None
            time.sleep(0.01)


def serve(path: Path, channel: socket.socket) -> int:
    """Commit jobs from ``channel`` until told to stop or the daemon goes away."""
    try:
        _lock(path)  # held until this process exits
        db = open_database(path)
    except (sqlite3.Error, OSError, LockTimeout) as exc:
        channel.sendall(failure_message(str(exc)))
        return 1
    channel.sendall(READY)
    buffer = bytearray()
    stop = False
    while not stop:
        jobs, stop = take_jobs(buffer, MAX_BATCH)
        if not jobs and not stop:
            data = channel.recv(1 << 20)
            if not data:
                return 0  # the daemon went away: nothing unanswered was acknowledged
            buffer += data
            continue
        groups = grouped(jobs)
        try:
            if groups:
                transaction(db, groups)
        except sqlite3.Error as exc:
            channel.sendall(failure_message(str(exc)))
            return 1
        channel.sendall(COMMITTED + LENGTH.pack(len(jobs)))
    db.close()
    return 0


def main() -> int:
    # The daemon decides when the writer stops: a signal to the whole group (Ctrl-C in a
    # terminal, systemd's stop) must not end it before the daemon's last commit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    channel = socket.socket(fileno=0)
    try:
        return serve(Path(sys.argv[1]), channel)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the daemon went away while we answered


if __name__ == "__main__":
    sys.exit(main())
