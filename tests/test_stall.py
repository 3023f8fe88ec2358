"""A database writer that stops answering (a hung disk, SIGSTOP): what clients and the
daemon do.

A client that gives up waiting sends its submission again with the same ``request_id`` and
gets the task its first request made, never a second one (``coordctl`` does this once). And
the daemon does not wait forever: past ``[store] commit_timeout`` it stops with status 70
and a line naming the stall, so the supervisor restarts it on what is on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordd.api.errors import InvalidRequest
from tests.helpers.daemon import DaemonProcess, coordctl, create, wait_for

COORDCTL = [sys.executable, "-m", "coordctl"]
CREATE = ["repo", "create", "--repo-id", "demo"]
EXIT_DATABASE = 70  # coordd.service.main.EXIT_DATABASE, as documented in coordd(8)


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """``pid`` stopped (SIGSTOP) until the block ends, and continued whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path / "state")
    try:
        yield process
    finally:
        process.cleanup()


def all_tasks(daemon: DaemonProcess) -> list[dict]:
    return daemon.call("task.list", state="all")["tasks"]


def test_a_submission_retried_while_the_writer_is_stopped_makes_one_task(
    daemon: DaemonProcess,
) -> None:
    daemon.start()
    before = {task["id"] for task in all_tasks(daemon)}
    with stopped(daemon.writer_pid()):
        client = subprocess.Popen(
            [*COORDCTL, "--socket", str(daemon.socket), "--json", *CREATE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**daemon.env, "COORDCTL_TIMEOUT": "2"},
        )
        assert client.stderr is not None
        # The first attempt times out; coordctl says so and asks again, with the same id.
        line = client.stderr.readline()
        assert "did not answer in time; asking once more" in line, line
    # The writer goes on: the create is committed, and the retry is answered with it.
    out, err = client.communicate(timeout=30)
    assert client.returncode == 0, err
    answer = json.loads(out)
    assert answer["repeated"] is True
    assert answer["task"]["operation"] == "repo.create"
    assert answer["task"]["request_id"]
    made = [task for task in all_tasks(daemon) if task["id"] not in before]
    assert [task["id"] for task in made] == [answer["task"]["id"]]  # exactly one task
    assert [repo["id"] for repo in daemon.call("repo.list")["repositories"]] == ["demo"]


def test_the_same_request_id_returns_the_stored_task_or_is_refused_for_another(
    daemon: DaemonProcess,
) -> None:
    daemon.start()
    create(daemon, "demo")
    first = daemon.call("repo.publish", repo_id="demo", request_id="pub-1")
    assert "repeated" not in first
    again = daemon.call("repo.publish", repo_id="demo", request_id="pub-1")
    assert again["repeated"] is True
    assert again["task"]["id"] == first["task"]["id"]
    daemon.restart()  # kept with the task's history, not only in memory
    after = daemon.call("repo.publish", repo_id="demo", request_id="pub-1")
    assert after["task"]["id"] == first["task"]["id"]
    assert after["repeated"] is True
    result = coordctl(daemon, "--json", "repo", "sync", "--repo-id", "demo")
    assert result.returncode == 0, result.stderr  # coordctl sends ids of its own
    with pytest.raises(InvalidRequest, match="request_id 'pub-1' was already used"):
        daemon.call("repo.sync", repo_id="demo", request_id="pub-1")
    for bad in ("", "x" * 129, "a b", "é", 7):
        with pytest.raises(InvalidRequest, match="request_id"):
            daemon.call("repo.sync", repo_id="demo", request_id=bad)
    publishes = [t for t in all_tasks(daemon) if t["operation"] == "repo.publish"]
    assert len(publishes) == 1


def test_a_writer_stalled_past_the_commit_timeout_stops_the_daemon_with_70(
    daemon: DaemonProcess,
) -> None:
    daemon.config_file().write_text('[store]\ncommit_timeout = "2s"\n')
    daemon.start()
    writer = daemon.writer_pid()
    with stopped(writer):
        started = time.monotonic()
        result = coordctl(daemon, "repo", "create", "--repo-id", "demo", timeout=30)
        assert daemon.proc is not None
        status = daemon.proc.wait(timeout=30)
        took = time.monotonic() - started
    assert status == EXIT_DATABASE
    assert took < 15, took
    assert result.returncode != 0
    log = daemon.log_text()
    assert "(commit_timeout 2 s): the disk or the writer is stalled" in log, log[-2000:]
    assert "Traceback" not in log
    wait_for(lambda: not Path(f"/proc/{writer}").exists(), "the stalled writer to be gone")
    # Restarted, it serves what was on disk: the create was never committed.
    daemon.start()
    assert daemon.call("repo.list")["repositories"] == []
