"""coordd as a service: socket activation, sd_notify, signals, reload, journal logging,
``--check-config`` and a failing database, each against the real daemon process.

systemd itself is not running: ``systemd-socket-activate`` passes the socket the way a
socket unit does, a datagram socket bound here stands in for the notification socket, and
a file whose device and inode are in ``JOURNAL_STREAM`` stands in for the journal stream.
Syncs are held mid-way by the fixture feed server (a package whose body stalls or trickles).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coordctl.client import Client, NotReachable
from coordd.api.errors import ProtocolError, Unavailable
from tests.helpers.daemon import DaemonProcess, wait_for
from tests.helpers.disks import tmpfs
from tests.helpers.feeds import Pkg, build_feed, default_packages
from tests.helpers.feedserver import STALL, TRICKLE, FeedServer

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 30.0  # a bound on waiting for something that should happen within a second or two
EXIT_DATABASE = 70
EXIT_CONFIG = 78


def wait_exit(proc: subprocess.Popen[Any], timeout: float) -> tuple[int, float]:
    """The process's exit status and how long it took to exit."""
    started = time.monotonic()
    code = proc.wait(timeout)
    return code, time.monotonic() - started


def wait_log(daemon: DaemonProcess, text: str) -> str:
    """Wait until the daemon's log contains ``text``; return the whole log."""

    def seen() -> str:
        log = daemon.log_text()
        return log if text in log else ""

    return wait_for(seen, f"{text!r} in the log")


def write_config(daemon: DaemonProcess, text: str) -> None:
    daemon.config_file().write_text(text)


def task_ids(daemon: DaemonProcess, state: str = "all") -> list[str]:
    return [t["id"] for t in daemon.call("task.list", state=state)["tasks"]]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: Unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="cds-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def connect() -> Iterator[Callable[[DaemonProcess], Client]]:
    """Open client connections that are closed at the end of the test, whatever happens."""
    opened: list[Client] = []

    def factory(daemon: DaemonProcess) -> Client:
        opened.append(Client(daemon.socket, timeout=WAIT_S).connect())
        return opened[-1]

    yield factory
    for client in opened:
        client.close()


# -- fixture feeds ------------------------------------------------------------------------------

SLOW = Pkg("zulu", "1.0", "1", size=300)  # the package held back; small, so a trickle ends


@pytest.fixture
def feed_server(tmp_path: Path) -> Iterator[FeedServer]:
    root = tmp_path / "feeds"
    root.mkdir()
    with FeedServer(root, trickle_interval=0.01) as server:
        yield server


def add_feed(server: FeedServer, name: str, hold: str | None = None) -> str:
    """Build feed ``name`` under the server's root; ``hold`` its slow package. Its URL."""
    build_feed(server.root / name, [*default_packages(6), SLOW])
    if hold is not None:
        server.misbehave(f"{name}/{SLOW.href}", hold)
    return f"{server.url}{name}/"


def create_repo(daemon: DaemonProcess, repo_id: str, feed: str | None = None) -> None:
    params: dict[str, Any] = {"repo_id": repo_id}
    if feed is not None:
        params["importer"] = {"feed": feed}
    task = daemon.call("repo.create", **params)["task"]
    assert daemon.call("task.wait", task_id=task["id"])["state"] == "finished"


def start_held_sync(daemon: DaemonProcess, server: FeedServer, repo_id: str, feed: str) -> str:
    """Submit a sync and return once it is downloading the package held back."""
    submitted = daemon.call("repo.sync", repo_id=repo_id)
    assert submitted["verdict"] == "accepted"
    wait_for(lambda: server.count(f"{feed}/{SLOW.href}"), "the sync to reach the held package")
    return submitted["task"]["id"]


# -- socket activation ----------------------------------------------------------------------------


def test_socket_activation_serves_the_passed_socket(tmp_path, short_dir):
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate is not installed (Debian package systemd)")
    passed = short_dir / "activated.sock"
    own = short_dir / "own.sock"  # where coordd would bind if it ignored the passed socket
    state = tmp_path / "state"
    config = tmp_path / "coordd.toml"
    config.write_text("")
    log_path = tmp_path / "activate.log"
    # Like a socket unit: systemd-socket-activate binds the socket, waits for the first
    # connection and then execs coordd with LISTEN_FDS; it passes on only the variables
    # named with -E.
    command = [
        tool,
        "-l",
        str(passed),
        "--fdname=coordd",
        "-E",
        f"PYTHONPATH={ROOT}",
        "-E",
        "PYTHONUNBUFFERED=1",
        "-E",
        f"COORDD_STATE_DIR={state}",
        "-E",
        f"COORDD_SOCKET={own}",
        sys.executable,
        "-m",
        "coordd",
        "--config",
        str(config),
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=short_dir)
    try:
        wait_for(lambda: "Listening on" in log_path.read_text(), "systemd-socket-activate")
        assert not state.exists()  # nothing runs before a client comes
        # The connection is queued on the passed socket and starts coordd, which answers it.
        with Client(passed, timeout=WAIT_S) as client:
            status = client.call("server.status")
            assert status["caller"]["uid"] == os.getuid()
            created = client.call("repo.create", repo_id="activated")["task"]["id"]
            assert client.call("task.wait", task_id=created)["state"] == "finished"
        with Client(passed, timeout=WAIT_S) as client:
            assert client.call("repo.list")["repositories"][0]["id"] == "activated"
        text = log_path.read_text()
        assert "listening on socket passed by systemd (fd 3, coordd)" in text
        assert (state / "coordd.db").exists()
        assert not own.exists()
        assert not own.is_symlink()
        proc.send_signal(signal.SIGTERM)
        code, _ = wait_exit(proc, WAIT_S)
        assert code == 0, log_path.read_text()
        # The socket belongs to whoever passed it (the socket unit): coordd leaves it.
        assert passed.exists()
        assert not own.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- sd_notify ------------------------------------------------------------------------------------


class NotifyingDaemon(DaemonProcess):
    """A daemon with systemd's service environment: NOTIFY_SOCKET, WATCHDOG_*."""

    def __init__(self, state_dir: Path, env: dict[str, str], own_watchdog_pid: bool) -> None:
        super().__init__(state_dir)
        self.env.update(env)
        self.own_watchdog_pid = own_watchdog_pid

    def command(self) -> list[str]:
        command = super().command()
        if not self.own_watchdog_pid:
            return command
        # systemd sets WATCHDOG_PID to the service's main pid: the shell execs coordd in
        # its own process, so $$ is coordd's pid.
        return ["sh", "-c", 'export WATCHDOG_PID=$$; exec "$@"', "sh", *command]


class NotifyListener:
    """The notification socket systemd would listen on; collects every datagram."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        self.messages.append(data.decode())
        return self.messages[-1]

    def wait(self, predicate: Callable[[str], bool], what: str) -> str:
        """Receive until a message satisfies ``predicate``; return it."""
        deadline = time.monotonic() + WAIT_S
        while True:
            message = self.receive(max(0.0, deadline - time.monotonic()))
            if message is not None and predicate(message):
                return message
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} notification; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("watchdog_pid", ["own", "unset"])
def test_notifications(tmp_path, short_dir, watchdog_pid, connect):
    listener = NotifyListener(short_dir / "notify")
    env = {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "400000"}
    daemon = NotifyingDaemon(tmp_path / "state", env, own_watchdog_pid=watchdog_pid == "own")
    try:
        daemon.start(wait=False)
        listener.wait(lambda m: m == "READY=1", "READY=1")
        # READY=1 means serving: the first connection attempt must succeed, no retrying.
        with Client(daemon.socket, timeout=WAIT_S) as client:
            assert client.call("server.status")["stopping"] is False
        listener.wait(lambda m: m.startswith("STATUS=0 running, 0 waiting;"), "idle STATUS")

        # A running and a waiting task: the status line follows.
        holder = connect(daemon)
        waiter = connect(daemon)
        resources = [{"type": "notify-test", "id": "r", "kind": "update"}]
        assert holder.call("lock.acquire", resources=resources)["verdict"] == "accepted"
        assert waiter.call("lock.acquire", resources=resources)["verdict"] == "postponed"
        status = listener.wait(lambda m: m.startswith("STATUS=1 running, 1 waiting;"), "STATUS")
        assert re.fullmatch(r"STATUS=1 running, 1 waiting; heavy slots 0/\d+", status)

        # The watchdog is fed at half of WATCHDOG_USEC, again and again.
        for _ in range(3):
            listener.wait(lambda m: m == "WATCHDOG=1", "WATCHDOG=1")

        daemon.signal(signal.SIGTERM)
        listener.wait(lambda m: m == "STOPPING=1", "STOPPING=1")
        holder.close()
        waiter.close()
        assert daemon.proc is not None
        code, _ = wait_exit(daemon.proc, WAIT_S)
        assert code == 0, daemon.log_text()
        assert listener.messages.count("READY=1") == 1
        assert "could not notify" not in daemon.log_text()
        # Every datagram is one KEY=value line.
        assert all("\n" not in m and "=" in m for m in listener.messages), listener.messages
    finally:
        daemon.cleanup()
        listener.close()


# -- stopping -------------------------------------------------------------------------------------


def test_sigterm_during_a_sync_loses_nothing(tmp_path, feed_server, connect):
    daemon = DaemonProcess(tmp_path / "state")
    write_config(daemon, '[tasks]\ncancel_grace = "1s"\n')
    feed = add_feed(feed_server, "demo", hold=STALL)
    try:
        daemon.start()
        create_repo(daemon, "demo", feed)
        sync_id = start_held_sync(daemon, feed_server, "demo", "demo")
        update = daemon.call("repo.update", repo_id="demo", description="after the sync")
        publish = daemon.call("repo.publish", repo_id="demo")
        assert update["verdict"] == publish["verdict"] == "postponed"
        update_id, publish_id = update["task"]["id"], publish["task"]["id"]
        # An external lock, held by a client across the restart.
        holder = connect(daemon)
        lock = holder.call(
            "lock.acquire", resources=[{"type": "other", "id": "x", "kind": "update"}]
        )
        lock_id = lock["task"]["id"]
        assert lock["verdict"] == "accepted"
        acknowledged = task_ids(daemon)

        assert daemon.proc is not None
        daemon.signal(signal.SIGTERM)
        code, took = wait_exit(daemon.proc, WAIT_S)
        assert code == 0, daemon.log_text()
        assert took < 1.0 + 4.0, f"exit took {took:.1f} s with a 1 s grace"
        # The lock's client is not told to kill its command: it re-attaches after the restart.
        told = []
        with contextlib.suppress(ProtocolError):  # the daemon closed the connection
            while (note := holder.next_notification(WAIT_S)) is not None:
                told.append(note["method"])
        assert told == ["lock.granted"]
        holder.close()

        # The held package now arrives, slowly enough to see the queue while it does.
        feed_server.misbehave(f"demo/{SLOW.href}", TRICKLE)
        daemon.start()
        incomplete = daemon.call("task.list")["tasks"]
        # Running first, then waiting in the order they will run.
        assert [t["id"] for t in incomplete] == [sync_id, lock_id, update_id, publish_id]
        by_id = {t["id"]: t for t in incomplete}
        assert by_id[sync_id]["state"] == "running"
        assert by_id[sync_id]["attempts"] == 2
        assert by_id[lock_id]["state"] == "running"  # held, waiting for its client
        assert by_id[update_id]["state"] == by_id[publish_id]["state"] == "waiting"
        assert by_id[update_id]["waiting_for"][0]["task_id"] == sync_id
        assert by_id[publish_id]["waiting_for"][0]["task_id"] == update_id

        with Client(daemon.socket, timeout=WAIT_S) as watcher:
            watcher.call("events.subscribe")
            # The re-run sync may already have ended and let the update start before the
            # subscription: then its start is history, read here rather than seen as an event.
            update_before = daemon.call("task.get", task_id=update_id)["state"]
            # Re-attach to the lock, as coordctl run does after a restart, and let it go.
            with Client(daemon.socket, timeout=WAIT_S) as client:
                assert client.call("lock.attach", task_id=lock_id)["state"] == "running"
                released = client.call("lock.release", task_id=lock_id, exit_status=0)
                assert released["state"] == "finished"
            ended = daemon.call("task.wait", task_id=publish_id, timeout=WAIT_S)
            assert ended["state"] == "finished", ended
            starts = []
            while True:  # the events up to the publish's end, which was the last
                note = watcher.next_notification(WAIT_S)
                assert note is not None, "no task.changed event for the publish's end"
                task = note["params"].get("task")
                if note["method"] != "task.changed":
                    continue
                if task["state"] == "running":
                    starts.append(task["id"])
                if task["id"] == publish_id and task["state"] == "finished":
                    break
        if update_before != "waiting":
            starts = [t for t in starts if t != update_id]
        expected = [update_id, publish_id] if update_before == "waiting" else [publish_id]
        assert starts == expected  # in order, each after the one ahead

        tasks = {t["id"]: t for t in daemon.call("task.list", state="all")["tasks"]}
        assert set(tasks) == set(acknowledged)
        assert {t["state"] for t in tasks.values()} == {"finished"}, tasks
        assert tasks[sync_id]["attempts"] == 2
        assert tasks[update_id]["attempts"] == tasks[publish_id]["attempts"] == 1
        # Every line about the sync, across the restart, says what it is and what it holds.
        prefix = f"task {sync_id} repo.sync on repository/demo:update, content/pool:read: "
        about_sync = [line for line in daemon.log_text().splitlines() if sync_id in line]
        assert [line.partition(prefix)[2] or line for line in about_sync] == [
            "accepted",
            "stopped by shutdown; it resumes at the next start",
            "waiting, to run again after a restart",
            "running (attempt 2)",
            "finished",
        ]
        shown = daemon.call("repo.show", repo_id="demo")
        assert shown["description"] == "after the sync"
        assert shown["content"]  # the sync's packages are there
        assert shown["last_sync"]["task_id"] == sync_id
        assert shown["published_path"] is not None
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()


def test_a_task_that_cannot_rerun_ends_interrupted(tmp_path):
    daemon = DaemonProcess(tmp_path / "state")
    try:
        daemon.start()
        create_repo(daemon, "demo")
        update_id = daemon.call("repo.update", repo_id="demo", notes="n")["task"]["id"]
        behind = daemon.call("repo.update", repo_id="demo", notes="behind")["task"]["id"]
        daemon.call("task.wait", task_id=behind)
        assert daemon.stop() == 0
        # No repo.update lasts long enough to be caught by a crash, so put on disk what a
        # crash in the middle of the first one leaves: its row running, the one behind it
        # waiting.
        with sqlite3.connect(daemon.state_dir / "coordd.db") as db:
            db.execute(
                "UPDATE tasks SET state = 'running', finished = NULL, result = NULL WHERE id = ?",
                (update_id,),
            )
            db.execute(
                "UPDATE tasks SET state = 'waiting', started = NULL, finished = NULL,"
                " result = NULL, attempts = 0 WHERE id = ?",
                (behind,),
            )
        db.close()
        daemon.start()
        interrupted = daemon.call("task.get", task_id=update_id)
        assert interrupted["state"] == "error"
        assert interrupted["error"]["message"] == "interrupted"
        assert interrupted["attempts"] == 1  # not run again
        # The task behind it was not held up by it.
        after = daemon.call("task.wait", task_id=behind)
        assert after["state"] == "finished"
        assert daemon.call("server.status")["tasks"]["canceled"] == 0
        assert f"task {update_id} (repo.update) was interrupted by a restart" in daemon.log_text()
    finally:
        daemon.cleanup()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_stop_signal_exits_at_once(tmp_path, feed_server, signum):
    daemon = DaemonProcess(tmp_path / "state")
    write_config(daemon, '[tasks]\ncancel_grace = "60s"\n')
    feed = add_feed(feed_server, "demo", hold=STALL)
    try:
        daemon.start()
        create_repo(daemon, "demo", feed)
        sync_id = start_held_sync(daemon, feed_server, "demo", "demo")
        daemon.signal(signum)
        wait_log(daemon, "shutting down: running tasks get 60 s to finish")
        assert daemon.proc is not None
        assert daemon.proc.poll() is None  # the first signal waits for the sync
        daemon.signal(signum)
        code, took = wait_exit(daemon.proc, WAIT_S)
        assert code == (0 if signum == signal.SIGTERM else 130), daemon.log_text()
        assert took < 5.0
        assert "second stop signal: exiting at once" in daemon.log_text()
        # Nothing is lost to the forced exit: the sync runs again.
        daemon.start()
        task = daemon.call("task.get", task_id=sync_id)
        assert task["state"] == "running"
        assert task["attempts"] == 2
    finally:
        daemon.cleanup()


# -- SIGHUP ---------------------------------------------------------------------------------------


def test_sighup_reloads_the_configuration(tmp_path, feed_server, connect):
    daemon = DaemonProcess(tmp_path / "state")
    write_config(daemon, 'log_level = "info"\n[tasks]\nheavy_slots = 1\n')
    slow, quick = add_feed(feed_server, "slow", hold=STALL), add_feed(feed_server, "quick")
    try:
        daemon.start()
        create_repo(daemon, "slow", slow)
        create_repo(daemon, "quick", quick)
        slow_id = start_held_sync(daemon, feed_server, "slow", "slow")
        queued = daemon.call("repo.sync", repo_id="quick")
        assert queued["verdict"] == "postponed"
        assert queued["waiting_for"] == [{"reason": "server busy"}]
        quick_id = queued["task"]["id"]
        holder = connect(daemon)
        waiter = connect(daemon)
        resources = [{"type": "hup-test", "id": "r", "kind": "update"}]
        held_id = holder.call("lock.acquire", resources=resources)["task"]["id"]
        waiting_id = waiter.call("lock.acquire", resources=resources)["task"]["id"]
        before = daemon.call("task.get", task_id=slow_id)
        assert " DEBUG " not in daemon.log_text()

        write_config(daemon, 'log_level = "debug"\n[tasks]\nheavy_slots = 2\n')
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: daemon.call("server.status")["slots"]["total"] == 2, "the new slot count")
        # The slot that opened starts the sync that waited for one; it runs with the new
        # log level, so the fetcher's debug lines (one per request) appear.
        assert daemon.call("task.wait", task_id=quick_id)["state"] == "finished"
        text = wait_log(daemon, "configuration reloaded")
        assert "configuration: heavy_slots is now 2 (was 1)" in text
        assert "configuration: log_level is now 'debug' (was 'info')" in text
        assert re.search(r" DEBUG coordd\.fetch: GET ", text.split("configuration reloaded")[1])
        # The running and waiting tasks are untouched.
        after = daemon.call("task.get", task_id=slow_id)
        assert after["state"] == "running"
        assert (after["attempts"], after["started"]) == (before["attempts"], before["started"])
        assert daemon.call("task.get", task_id=held_id)["state"] == "running"
        waiting = daemon.call("task.get", task_id=waiting_id)
        assert waiting["state"] == "waiting"
        assert waiting["waiting_for"][0]["task_id"] == held_id

        # A broken file is refused as a whole: the running configuration stays.
        write_config(daemon, 'log_level = "info"\n[tasks]\nheavy_slots = 1\nheavy_slot = 3\n')
        daemon.signal(signal.SIGHUP)
        text = wait_log(daemon, "reload refused, keeping the current configuration")
        assert "unknown key 'heavy_slot' in [tasks]; did you mean 'heavy_slots'?" in text
        status = daemon.call("server.status")
        assert status["slots"]["total"] == 2
        assert status["tasks"]["running"] == 2  # the held sync and the held lock
        assert daemon.call("task.get", task_id=slow_id)["state"] == "running"
        holder.close()
        waiter.close()
    finally:
        daemon.cleanup()


# -- logging for the journal ------------------------------------------------------------------


TASK_LINE = re.compile(
    r"<6>coordd\.runtime: task (?P<id>[0-9a-f]{32}) (?P<op>\S+) on (?P<res>.+?): (?P<outcome>.+)"
)


def test_journal_stream_gets_priorities_and_task_changes(tmp_path, connect):
    daemon = DaemonProcess(tmp_path / "state")
    daemon.log_path.touch()
    info = daemon.log_path.stat()
    daemon.env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
    try:
        daemon.start()
        created = daemon.call("repo.create", repo_id="demo")["task"]["id"]
        daemon.call("task.wait", task_id=created)
        failed = daemon.call("repo.sync", repo_id="demo")["task"]["id"]  # no feed
        assert daemon.call("task.wait", task_id=failed)["state"] == "error"
        holder = connect(daemon)
        resources = [{"type": "log-test", "id": "r", "kind": "update"}]
        held = holder.call("lock.acquire", resources=resources)["task"]["id"]
        # The waiter keeps its connection: a lock task ends when its connection closes.
        waiter = connect(daemon)
        canceled = waiter.call("lock.acquire", resources=resources)["task"]["id"]
        waiter.call("task.cancel", task_id=canceled)
        waiter.close()
        holder.call("lock.release", task_id=held, exit_status=0)
        holder.close()
        assert daemon.stop() == 0
        lines = daemon.log_text().splitlines()
    finally:
        daemon.cleanup()

    unprefixed = [line for line in lines if not re.match(r"<[0-7]>", line)]
    assert unprefixed == []
    assert not any(re.search(r"\d{4}-\d\d-\d\dT", line) for line in lines)  # journald stamps
    changes: dict[str, list[tuple[str, str, str]]] = {}
    for line in lines:
        if match := TASK_LINE.fullmatch(line):
            changes.setdefault(match["id"], []).append(
                (match["op"], match["res"], match["outcome"])
            )
    assert changes[created] == [
        ("repo.create", "repository/demo:create", "accepted"),
        ("repo.create", "repository/demo:create", "finished"),
    ]
    op, res, outcome = changes[failed][-1]
    assert (op, res) == ("repo.sync", "repository/demo:update, content/pool:read")
    assert outcome.startswith("error: repository demo has no feed")
    assert [o for _, _, o in changes[held]] == ["accepted", "finished"]
    assert changes[canceled] == [
        ("lock", "log-test/r:update", "postponed"),
        ("lock", "log-test/r:update", "canceled"),
    ]
    assert any(line.startswith("<6>coordd: coordd ") and " ready on " in line for line in lines)


# -- --check-config -----------------------------------------------------------------------------


def check_config(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "check.toml"
    config.write_text(text)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "coordd",
            "--check-config",
            "--config",
            str(config),
            "--socket",
            str(tmp_path / "check.sock"),
            "--state-dir",
            str(tmp_path / "check-state"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


def test_check_config_prints_the_effective_configuration(tmp_path):
    done = check_config(tmp_path, '[tasks]\nheavy_slots = 3\ncancel_grace = "90s"\n')
    assert done.returncode == 0, done.stderr
    effective = tomllib.loads(done.stdout)
    assert effective["tasks"]["heavy_slots"] == 3
    assert effective["tasks"]["cancel_grace"] == "1m30s"
    assert effective["socket"] == str(tmp_path / "check.sock")  # the command line wins
    assert effective["state_dir"] == str(tmp_path / "check-state")
    assert "limits" in effective
    assert "access" in effective
    assert not (tmp_path / "check-state").exists()  # checked, nothing started
    # What it prints is a configuration file that reads back the same.
    again = check_config(tmp_path, done.stdout)
    assert again.returncode == 0, again.stderr
    assert again.stdout == done.stdout


def test_check_config_names_a_bad_key(tmp_path):
    done = check_config(tmp_path, "[tasks]\nheavy_slot = 3\n")
    assert done.returncode == EXIT_CONFIG
    assert done.stdout == ""
    assert "unknown key 'heavy_slot' in [tasks]; did you mean 'heavy_slots'?" in done.stderr
    assert str(tmp_path / "check.toml") in done.stderr


# -- a failing database ---------------------------------------------------------------------------


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs to hold the daemon's state, so the disk can be filled for real."""
    with tmpfs(tmp_path / "state", "4m") as mount_point:
        yield mount_point


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system is full."""
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 16, 512):  # then the last few bytes, below a chunk
            with pytest.raises(OSError, match="No space left") as full:  # noqa: PT012
                while True:  # ends by raising
                    f.write(bytes(size))
            assert full.value.errno == errno.ENOSPC


def test_database_failure_stops_the_daemon_and_loses_nothing(tmp_path, small_filesystem, connect):
    daemon = DaemonProcess(small_filesystem)
    try:
        daemon.start()
        acknowledged = []
        create_repo(daemon, "keep")
        acknowledged += task_ids(daemon)
        updated = daemon.call("repo.update", repo_id="keep", description="stored")
        daemon.call("task.wait", task_id=updated["task"]["id"])
        acknowledged.append(updated["task"]["id"])
        holder = connect(daemon)
        resources = [{"type": "db-test", "id": "r", "kind": "update"}]
        for verdict in ("accepted", "postponed", "postponed"):
            reply = holder.call("lock.acquire", resources=resources, command=["true"])
            assert reply["verdict"] == verdict
            acknowledged.append(reply["task"]["id"])

        filler = small_filesystem / "filler"
        fill(filler)
        # A request whose row cannot be written: nearly a megabyte of arguments.
        big = ["x" * 4000] * 200
        with pytest.raises((Unavailable, ProtocolError)) as refused:
            daemon.call("lock.acquire", resources=resources, command=big)
        if isinstance(refused.value, Unavailable):
            assert "the database failed" in refused.value.message
        assert daemon.proc is not None
        code, _ = wait_exit(daemon.proc, WAIT_S)
        holder.close()
        text = daemon.log_text()
        assert code == EXIT_DATABASE, text
        assert re.search(r"CRITICAL coordd.store: database .*coordd.db failed, stopping: ", text)
        assert "database or disk is full" in text
        assert "exiting: the database failed" in text
        with pytest.raises(NotReachable):
            daemon.call("server.status")

        filler.unlink()
        daemon.start()
        stored = daemon.call("task.list", state="all")["tasks"]
        assert sorted(t["id"] for t in stored) == sorted(acknowledged)
        waiting = [t["id"] for t in daemon.call("task.list")["tasks"]]
        assert waiting == acknowledged[2:]  # the held lock, then the two behind it, in order
        assert daemon.call("repo.show", repo_id="keep")["description"] == "stored"
        assert daemon.stop() == 0
    finally:
        daemon.cleanup()
