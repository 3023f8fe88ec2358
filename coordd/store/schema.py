"""The database schema: forward migrations, one per version, counted in ``user_version``.

The writer (``coordd.store.writer``) migrates the file forward when it opens it, before it
answers ready; a file from a newer coordd is refused. A migration is never edited once
released: a change is a new one at the end. Only the standard library here: the writer
imports it.
"""

from __future__ import annotations

import sqlite3

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
    # Which tasks touched a resource: one resource's history without a scan of all tasks.
    """
    CREATE TABLE task_resources (
        type TEXT NOT NULL,
        id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (type, id, seq)
    ) WITHOUT ROWID;
    INSERT OR IGNORE INTO task_resources (type, id, seq)
        SELECT json_extract(claim.value, '$.type'), json_extract(claim.value, '$.id'), tasks.seq
        FROM tasks, json_each(tasks.claims) AS claim;
    """,
    # The client's id of a submission: a repeated one returns the task it made. Unique per
    # caller; the id goes when the task's row is purged with its history.
    """
    ALTER TABLE tasks ADD COLUMN request_id TEXT;
    CREATE UNIQUE INDEX tasks_request ON tasks(uid, request_id) WHERE request_id IS NOT NULL;
    """,
    # Tasks one of coordd's own made (a schedule, a publish after a sync): the task that
    # caused it and why. Schedules, and what each of their fires became.
    """
    ALTER TABLE tasks ADD COLUMN parent TEXT;
    ALTER TABLE tasks ADD COLUMN reason TEXT;
    CREATE TABLE schedules (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        repo_id TEXT,
        schedule TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        failure_threshold INTEGER,
        failures INTEGER NOT NULL DEFAULT 0,
        disabled_reason TEXT,
        runs INTEGER NOT NULL DEFAULT 0,
        next_run REAL,
        last_task TEXT,
        uid INTEGER NOT NULL,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE INDEX schedules_repo ON schedules(repo_id) WHERE repo_id IS NOT NULL;
    CREATE TABLE schedule_fires (
        seq INTEGER PRIMARY KEY,
        schedule_id TEXT NOT NULL,
        at REAL NOT NULL,
        outcome TEXT NOT NULL,
        task_id TEXT,
        detail TEXT,
        task_state TEXT
    );
    CREATE INDEX schedule_fires_by ON schedule_fires(schedule_id, seq);
    CREATE INDEX schedule_fires_open ON schedule_fires(task_id)
        WHERE task_id IS NOT NULL AND task_state IS NULL;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite3.Connection) -> None:
    """Apply the migrations ``db`` lacks, each in a transaction of its own."""
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


def _split(script: str) -> list[str]:
    return [part.strip() for part in script.split(";") if part.strip()]
