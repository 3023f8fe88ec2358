"""A real coordd in a subprocess, on a real socket, for integration and end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from coordctl.client import Client, NotReachable
from coordd.api.errors import ProtocolError

READY_TIMEOUT = 20.0
WAIT_S = 20.0  # a bound on waiting for something that should happen within a second or two

T = TypeVar("T")


def wait_for(condition: Callable[[], T], what: str, timeout: float = WAIT_S) -> T:
    """Poll ``condition`` until it returns something true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


class DaemonProcess:
    """Starts, stops, kills and restarts one coordd over the same state and socket."""

    def __init__(self, state_dir: Path, extra_args: list[str] | None = None) -> None:
        # AF_UNIX paths are limited to 108 bytes: keep the socket in a short directory.
        self.run_dir = Path(tempfile.mkdtemp(prefix="coordd-"))
        self.socket = self.run_dir / "coordd.sock"
        self.state_dir = state_dir
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = state_dir.parent / f"{state_dir.name}-daemon.log"
        self.env = {
            **os.environ,
            "COORDD_SOCKET": str(self.socket),
            "COORDD_STATE_DIR": str(state_dir),
            "PYTHONUNBUFFERED": "1",
        }
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.pop("LISTEN_FDS", None)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "coordd",
            "--socket",
            str(self.socket),
            "--state-dir",
            str(self.state_dir),
            "--config",
            str(self.config_file()),
            *self.extra_args,
        ]

    def config_file(self) -> Path:
        path = self.state_dir.parent / f"{self.state_dir.name}-coordd.toml"
        if not path.exists():
            path.write_text("")
        return path

    def start(self, wait: bool = True) -> DaemonProcess:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes it
        self.proc = subprocess.Popen(
            self.command(), env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Poll the socket until ``server.status`` answers (or the process dies)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"coordd exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}"
                )
            try:
                with Client(self.socket, timeout=5) as client:
                    client.call("server.status")
                return
            except (NotReachable, ProtocolError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"coordd not ready:\n{self.log_text()[-4000:]}") from None
                time.sleep(0.02)

    def client(self, timeout: float | None = 30.0) -> Client:
        return Client(self.socket, timeout=timeout).connect()

    def call(self, method: str, **params: Any) -> Any:
        with self.client() as client:
            return client.call(method, params)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def writer_pid(self) -> int:
        """The pid of the daemon's database writer process (``coordd.store.writer``)."""
        assert self.proc is not None
        for child in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
            for pid in child.read_text().split():
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                except FileNotFoundError:
                    continue
                if b"coordd.store.writer" in cmdline:
                    return int(pid)
        raise AssertionError("the daemon has no database writer process")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def restart(self) -> DaemonProcess:
        self.stop()
        return self.start()

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.run_dir, ignore_errors=True)


@contextlib.contextmanager
def running_daemon(state_dir: Path, extra_args: list[str] | None = None) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(state_dir, extra_args)
    try:
        yield daemon.start()
    finally:
        daemon.cleanup()


def coordctl(
    daemon: DaemonProcess, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real ``coordctl`` against ``daemon``; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "coordctl", "--socket", str(daemon.socket), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**daemon.env, "COLUMNS": "100"},
        check=False,
    )


# -- driving it -------------------------------------------------------------------------------


@contextlib.contextmanager
def held(
    daemon: DaemonProcess, repo_id: str = "demo", kind: str = "update", rtype: str = "repository"
) -> Iterator[str]:
    """Hold ``repository repo_id`` (or another ``rtype``: ``content pool``) with an external
    lock until the block ends."""
    client = daemon.client(timeout=30)
    answer = client.call(
        "lock.acquire",
        {
            "resources": [{"type": rtype, "id": repo_id, "kind": kind}],
            "command": ["long-update"],
        },
    )
    task_id = answer["task"]["id"]
    deadline = time.monotonic() + 20
    while True:
        note = client.next_notification(max(0.1, deadline - time.monotonic()))
        if note and note["method"] == "lock.granted" and note["params"]["task_id"] == task_id:
            break
        assert time.monotonic() < deadline, "lock not granted"
    try:
        yield task_id
    finally:
        with contextlib.suppress(Exception):
            client.call("lock.release", {"task_id": task_id, "exit_status": 0})
        client.close()


def create(daemon: DaemonProcess, repo_id: str = "demo", *extra: str) -> None:
    result = coordctl(daemon, "repo", "create", "--repo-id", repo_id, *extra, "--wait")
    assert result.returncode == 0, result.stderr
    assert "Repository create finished." in result.stdout
