"""The store and its writer process: grouping, multi-row statements, the wire between them,
and what happens when the writer goes away."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
from pathlib import Path

import anyio
import pytest

from coordd.api.errors import Unavailable
from coordd.store import schema, writer
from coordd.store.database import Store

TASK = "INSERT INTO t (k, v) VALUES (?, ?)"
OTHER = "INSERT INTO u (k, v) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v"
BUMP = "UPDATE t SET v = v || '+' WHERE k = ?"


def test_statements_on_one_table_keep_their_order_and_tables_commute() -> None:
    jobs = [
        [(TASK, (1, "a")), (OTHER, (1, "x"))],
        [(TASK, (2, "b")), (OTHER, (2, "y"))],
        [(BUMP, (1,))],
        [(TASK, (3, "c"))],
    ]
    assert writer.grouped(jobs) == [
        (TASK, [(1, "a"), (2, "b")]),
        (OTHER, [(1, "x"), (2, "y")]),
        (BUMP, [(1,)]),
        (TASK, [(3, "c")]),  # not moved ahead of the update on its table
    ]


def test_a_statement_of_another_form_is_a_barrier() -> None:
    barrier = "INSERT INTO t (k, v) SELECT k, v FROM u"
    jobs = [[(TASK, (1, "a"))], [(barrier, ())], [(TASK, (2, "b"))]]
    assert writer.grouped(jobs) == [
        (TASK, [(1, "a")]),
        (barrier, [()]),
        (TASK, [(2, "b")]),
    ]


def _database(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    db.execute("CREATE TABLE u (k INTEGER PRIMARY KEY, v TEXT)")
    return db


def test_grouped_transaction_equals_running_each_statement_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "MAX_PARAMS", 7)  # multi-row INSERTs split into chunks
    jobs = [[(TASK, (k, f"v{k}")), (OTHER, (k % 3, f"w{k}"))] for k in range(25)]
    jobs += [[(BUMP, (k,))] for k in range(0, 25, 4)]
    jobs += [[(TASK, (100 + k, None)), (OTHER, (k, 1.5))] for k in range(5)]
    grouped_db = _database(tmp_path / "grouped.db")
    writer.transaction(grouped_db, writer.grouped(jobs))
    plain_db = _database(tmp_path / "plain.db")
    for statements in jobs:
        for sql, params in statements:
            plain_db.execute(sql, params)
    for table in ("t", "u"):
        query = f"SELECT k, v, typeof(v) FROM {table} ORDER BY k"
        assert grouped_db.execute(query).fetchall() == plain_db.execute(query).fetchall()


def test_a_failing_statement_rolls_the_whole_batch_back(tmp_path: Path) -> None:
    db = _database(tmp_path / "t.db")
    with pytest.raises(sqlite3.IntegrityError):
        writer.transaction(db, writer.grouped([[(TASK, (1, "a"))], [(TASK, (1, "again"))]]))
    assert db.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_jobs_are_taken_only_when_their_frame_is_complete() -> None:
    frames = writer.job_frame([(TASK, (1, "a"))]) + writer.job_frame([(TASK, (2, "b"))])
    buffer = bytearray(frames[:-3])
    assert writer.take_jobs(buffer, 10) == ([[(TASK, (1, "a"))]], False)
    buffer += frames[-3:] + writer.STOP_FRAME + writer.job_frame([])
    assert writer.take_jobs(buffer, 10) == ([[(TASK, (2, "b"))]], True)
    assert buffer == bytearray(writer.job_frame([]))  # nothing after the stop is taken


@pytest.mark.anyio
async def test_writes_are_durable_in_order_and_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "coordd.db"
    store = Store(path)
    await store.open()
    async with anyio.create_task_group() as tg:
        tg.start_soon(store.run_writer)
        pending = [
            store.write_then(
                (
                    "INSERT INTO repositories (id, config, created, updated) VALUES (?, ?, ?, ?)",
                    (f"r{i}", "{}", float(i), float(i)),
                )
            )
            for i in range(500)
        ]
        for job in pending:
            await job
        await store.write(("DELETE FROM repositories WHERE id = ?", ("r7",)))
        assert store.commits < 500  # committed in groups, not one by one
        store.stop_writer()
    await store.close()

    again = Store(path)
    await again.open()
    try:
        rows = await again.fetch("SELECT id FROM repositories ORDER BY created")
        assert [r["id"] for r in rows] == [f"r{i}" for i in range(500) if i != 7]
        assert await again.integrity_check() == "ok"
    finally:
        again.stop_writer()
        await again.close()


@pytest.mark.anyio
async def test_a_writer_that_dies_stops_the_store_with_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "coordd.db")
    await store.open()
    assert store._process is not None
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.run_writer)
            await store.write(("DELETE FROM repositories WHERE id = ?", ("none",)))
            os.kill(store._process.pid, signal.SIGKILL)
            with anyio.fail_after(10):
                await store.fatal_event.wait()
        assert "the database writer exited (status -9)" in str(store.fatal)
        store.write_later(("DELETE FROM repositories WHERE id = ?", ("none",)))  # dropped
        with pytest.raises(Unavailable, match="the database failed"):
            await store.write(("DELETE FROM repositories WHERE id = ?", ("none",)))
    finally:
        await store.close()


@pytest.mark.anyio
async def test_a_second_writer_waits_for_the_first(tmp_path: Path) -> None:
    path = tmp_path / "coordd.db"
    first = Store(path)
    await first.open()
    second = Store(path)
    try:
        with anyio.move_on_after(0.5) as waited:
            await second.open()
        assert waited.cancelled_caught  # still waiting for the lock of the first writer
    finally:
        await first.close()
        await second.close()
    assert second._process is None  # the waiting writer was stopped, not left behind


def test_a_first_version_database_is_migrated_and_its_history_indexed(tmp_path: Path) -> None:
    path = tmp_path / "coordd.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(schema.MIGRATIONS[0])
        db.execute("PRAGMA user_version = 1")
        db.executemany(
            "INSERT INTO tasks (seq, id, operation, args, claims, heavy, restartable, uid,"
            " state, submitted) VALUES (?, ?, 'repo.copy', '{}', ?, 0, 1, 0, 'finished', 0)",
            [
                (1, "a", '[{"type":"repository","id":"x","kind":"create"}]'),
                (
                    2,
                    "b",
                    '[{"type":"repository","id":"x","kind":"read"},'
                    '{"type":"repository","id":"y","kind":"update"}]',
                ),
            ],
        )
        db.commit()
    with contextlib.closing(writer.open_database(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
        assert db.execute("SELECT type, id, seq FROM task_resources").fetchall() == [
            ("repository", "x", 1),
            ("repository", "x", 2),
            ("repository", "y", 2),
        ]


@pytest.mark.anyio
async def test_a_database_of_a_newer_coordd_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "coordd.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(Unavailable, match="schema version 99 is newer than this coordd"):
        await Store(path).open()


def test_a_second_version_database_gains_request_ids_unique_per_caller(tmp_path: Path) -> None:
    path = tmp_path / "coordd.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        for migration in schema.MIGRATIONS[:2]:
            db.executescript(migration)
        db.execute("PRAGMA user_version = 2")
        db.execute(
            "INSERT INTO tasks (seq, id, operation, args, claims, heavy, restartable, uid,"
            " state, submitted) VALUES (1, 'a', 'repo.sync', '{}', '[]', 1, 1, 0, 'finished', 0)"
        )
        db.commit()
    insert = (
        "INSERT INTO tasks (seq, id, operation, args, claims, heavy, restartable, uid,"
        " state, submitted, request_id) VALUES (?, ?, 'repo.sync', '{}', '[]', 1, 1, ?,"
        " 'waiting', 0, ?)"
    )
    with contextlib.closing(writer.open_database(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (schema.SCHEMA_VERSION,)
        assert db.execute("SELECT id, request_id FROM tasks").fetchall() == [("a", None)]
        db.execute(insert, (2, "b", 1000, "r1"))
        db.execute(insert, (3, "c", 1001, "r1"))  # another caller may use the same id
        db.execute(insert, (4, "d", 1000, None))  # and tasks without one do not collide
        db.execute(insert, (5, "e", 1000, None))
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(insert, (6, "f", 1000, "r1"))
