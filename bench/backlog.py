"""A state directory with a large backlog: held locks and many tasks waiting behind them.

Writing 100,000 tasks through the socket would take most of a benchmark's time, so the rows
go straight into a database whose schema a real daemon created (start, stop). What the
daemon finds at start-up is then exactly what it would have stored itself: ``resources``
held by external-lock tasks (running, held by clients that may re-attach), and behind each
one ``per_resource`` waiting lock tasks, in arrival order.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import with_children
from tests.helpers.daemon import DaemonProcess

# Clients that hold or wait for these locks never come back during a benchmark; keep the
# daemon from withdrawing their tasks while it is measured.
CONFIG = '[tasks]\nreattach_grace = "1d"\n'


def _claims(resource: int) -> str:
    return json.dumps([{"type": "bench", "id": f"r{resource}", "kind": "update"}])


def _args(resource: int) -> str:
    return json.dumps(
        {
            "resources": [{"type": "bench", "id": f"r{resource}", "kind": "update"}],
            "command": ["true"],
            "pid": 1,
            "host": None,
        }
    )


def build(state_dir: Path, resources: int, per_resource: int) -> DaemonProcess:
    """Create the state directory and return a (stopped) daemon configured for it."""
    daemon = DaemonProcess(state_dir, ["--log-level", "warning"])
    daemon.config_file().write_text(CONFIG)
    daemon.start()
    daemon.stop()
    now = time.time()

    def row(seq: int, resource: int, state: str) -> tuple[object, ...]:
        running = state == "running"
        return (
            seq,
            uuid.uuid4().hex,
            "lock",
            _args(resource),
            _claims(resource),
            0,  # heavy
            0,  # restartable
            1,  # held
            0,  # uid
            state,
            now,
            now if running else None,
            1 if running else 0,
        )

    # Each resource's holder first, then the waiting tasks, round after round.
    rows = [row(r + 1, r, "running") for r in range(resources)]
    claimed = [("bench", f"r{r}", r + 1) for r in range(resources)]
    for _ in range(per_resource):
        for r in range(resources):
            rows.append(row(len(rows) + 1, r, "waiting"))
            claimed.append(("bench", f"r{r}", len(rows)))
    db = sqlite3.connect(state_dir / "coordd.db")
    with db:
        db.executemany(
            "INSERT INTO tasks (seq, id, operation, args, claims, heavy, restartable, held, uid,"
            " state, submitted, started, attempts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        db.executemany("INSERT INTO task_resources (type, id, seq) VALUES (?, ?, ?)", claimed)
    db.close()
    return daemon


def peak_rss_mb(pid: int) -> float:
    """Peak resident size (VmHWM) of the daemon and of its children (the database writer)."""
    return sum(_peak_rss_mb(p) for p in with_children(pid))


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc")
