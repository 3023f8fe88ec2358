"""A full state disk at start-up: the daemon exits 70 with one line every time, and the
temporary files of interrupted operations are cleared first, so that once they are what
filled the disk it starts again on its own.

On a small tmpfs: a repository, a held lock with a publish queued behind it, and leftovers
of an interrupted sync and publish, killed with -9; then the disk is filled.
"""

from __future__ import annotations

import errno
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordd.api.errors import CoorddError, ProtocolError
from tests.helpers.daemon import DaemonProcess, create, held
from tests.helpers.disks import tmpfs

EXIT_DATABASE = 70  # coordd.service.main.EXIT_DATABASE, as documented in coordd(8)
RESTARTS = 10


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, so that the disk can be filled for real."""
    with tmpfs(tmp_path / "disk", "8m") as mount_point:
        yield mount_point


def fill(path: Path) -> None:
    """Append zeros to ``path`` until the file system is full."""
    with open(path, "ab", buffering=0) as f:
        for size in (1 << 16, 512, 1):
            try:
                while True:
                    f.write(bytes(size))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


def leave_leftovers(state: Path) -> list[Path]:
    """What an interrupted sync and publish of ``demo`` leave behind."""
    token = uuid.uuid4().hex
    sync_tmp = state / "repositories" / "demo" / ".tmp"
    sync_tmp.mkdir(parents=True, exist_ok=True)
    (sync_tmp / "0.part").write_bytes(bytes(256 << 10))
    index_tmp = state / "repositories" / "demo" / f".content.json.{token}.tmp"
    index_tmp.write_text("{")
    build = state / "published" / f".demo.tmp-{token}"
    (build / "repodata").mkdir(parents=True)
    (build / "repodata" / "primary.xml").write_bytes(bytes(64 << 10))
    link = state / "published" / f".demo.link-{token}"
    link.symlink_to(build)
    return [sync_tmp, index_tmp, build, link]


def exit_once(daemon: DaemonProcess) -> tuple[int, str]:
    """Start ``daemon`` on the full disk; its status and what this run logged.

    It exits by itself when its start-up must write; if it came up with nothing to write,
    the first request that must be stored makes it.
    """
    before = len(daemon.log_text())
    daemon.start(wait=False)
    assert daemon.proc is not None
    try:
        status = daemon.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with pytest.raises((CoorddError, ProtocolError)):
            daemon.call("repo.update", repo_id="demo", description="x" * 4000)
        status = daemon.proc.wait(timeout=20)
    return status, daemon.log_text()[before:]


def test_a_full_disk_at_start_up_exits_70_until_clearing_leftovers_makes_room(
    disk: Path, tmp_path: Path
) -> None:
    state = disk / "state"
    daemon = DaemonProcess(state)
    daemon.log_path = tmp_path / "daemon.log"  # off the full disk, so every line is kept
    try:
        daemon.start()
        create(daemon, "demo")
        with held(daemon, "demo") as lock_id:
            queued = daemon.call("repo.publish", repo_id="demo")
            assert queued["verdict"] == "postponed"
            daemon.kill9()
        # The daemon's own leftovers fill the disk: it clears them first, and starts.
        leftovers = leave_leftovers(state)
        fill(state / "repositories" / "demo" / ".tmp" / "1.part")
        daemon.start()
        assert "removed 4 temporary files or directories" in daemon.log_text()
        assert not any(path.exists() or path.is_symlink() for path in leftovers)
        waiting = [task["id"] for task in daemon.call("task.list")["tasks"]]
        assert waiting == [lock_id, queued["task"]["id"]]
        daemon.kill9()

        # Full of what is not the daemon's: every restart exits 70, with one line saying why.
        filler = disk / "filler"
        fill(filler)
        for _ in range(RESTARTS):
            status, logged = exit_once(daemon)
            assert status == EXIT_DATABASE, logged
            assert logged.count("CRITICAL coordd: ") == 1, logged
            assert "full" in logged or "I/O error" in logged, logged
            for noise in ("Traceback", "ExceptionGroup", "InvalidStateError"):
                assert noise not in logged, logged
            fill(filler)  # whatever a run freed is taken again

        # Room again: nothing acknowledged was lost.
        filler.unlink()
        daemon.start()
        waiting = [task["id"] for task in daemon.call("task.list")["tasks"]]
        assert waiting == [lock_id, queued["task"]["id"]]
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()


def test_database_failures_from_the_task_group_are_recognised_whatever_their_nesting() -> None:
    from coordd.api.errors import Unavailable
    from coordd.service.main import _unavailable_leaves

    full = Unavailable("the database failed: database or disk is full")
    nested = BaseExceptionGroup("tasks", [full, ExceptionGroup("inner", [Unavailable("gone")])])
    leaves = _unavailable_leaves(nested)
    assert leaves is not None
    assert [leaf.message for leaf in leaves] == [full.message, "gone"]
    assert _unavailable_leaves(ExceptionGroup("tasks", [full, ValueError("bug")])) is None
