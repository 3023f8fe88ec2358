"""systemd's protocols spoken for real: notify datagrams, passed sockets, journal logging."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

import pytest

from coordd.service import log as coordd_log
from coordd.service import systemd

ROOT = Path(__file__).resolve().parent.parent
RECEIVE_TIMEOUT_S = 10  # a bound on waiting for a datagram that should already be there

CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(autouse=True)
def no_systemd_environment(monkeypatch):
    for name in (
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def short_dir():
    # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="coordd-") as name:
        yield Path(name)


@pytest.fixture
def path_listener(short_dir, monkeypatch):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = short_dir / "notify"
    sock.bind(str(path))
    sock.settimeout(RECEIVE_TIMEOUT_S)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def abstract_listener(monkeypatch):
    name = f"coordd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(RECEIVE_TIMEOUT_S)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


# --- notify --------------------------------------------------------------------------------


def test_notify_to_a_path_socket(path_listener):
    assert systemd.notify("READY=1\nSTATUS=up")
    assert path_listener.recv(4096) == b"READY=1\nSTATUS=up"


def test_notify_to_an_abstract_socket(abstract_listener):
    assert systemd.notify("READY=1")
    assert abstract_listener.recv(4096) == b"READY=1"


def test_helpers_send_the_documented_messages(path_listener):
    assert systemd.ready()
    assert systemd.status("syncing demo\n3 tasks waiting")
    assert systemd.watchdog()
    assert systemd.reloading()
    assert systemd.stopping()
    received = [path_listener.recv(4096) for _ in range(5)]
    assert received == [
        b"READY=1",
        b"STATUS=syncing demo 3 tasks waiting",
        b"WATCHDOG=1",
        b"RELOADING=1",
        b"STOPPING=1",
    ]


def test_notify_outside_systemd_does_nothing(caplog):
    with caplog.at_level(logging.DEBUG, logger="coordd.systemd"):
        assert not systemd.notify("READY=1")
    assert caplog.records == []


def test_notify_failure_is_logged(monkeypatch, short_dir, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_dir / "missing"))
    with caplog.at_level(logging.WARNING, logger="coordd.systemd"):
        assert not systemd.ready()
    [record] = caplog.records
    assert "could not notify systemd" in record.getMessage()
    assert "No such file or directory" in record.getMessage()


@pytest.mark.parametrize("value", ["vsock:2:1234", "relative/notify"])
def test_notify_refuses_addresses_it_does_not_know(monkeypatch, caplog, value):
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    with caplog.at_level(logging.WARNING, logger="coordd.systemd"):
        assert not systemd.notify("READY=1")
    assert "not a Unix socket address" in caplog.records[0].getMessage()


# --- watchdog ------------------------------------------------------------------------------


def test_no_watchdog_by_default():
    assert systemd.watchdog_interval() is None


def test_watchdog_interval_is_half_the_period(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert systemd.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval() == 15.0


def test_watchdog_for_another_process_is_not_ours(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert systemd.watchdog_interval() is None


@pytest.mark.parametrize(("usec", "pid"), [("abc", None), ("0", None), ("-5", None), ("1000", "x")])
def test_malformed_watchdog_is_logged_and_off(monkeypatch, caplog, usec, pid):
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    with caplog.at_level(logging.WARNING, logger="coordd.systemd"):
        assert systemd.watchdog_interval() is None
    assert "malformed" in caplog.records[0].getMessage()


# --- socket activation ---------------------------------------------------------------------


def test_not_socket_activated():
    assert systemd.listen_fds() == []


def test_fds_for_another_process_are_ignored_and_forgotten(monkeypatch):
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "coordd")
    assert systemd.listen_fds() == []
    assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & set(os.environ)


def test_activation_needs_both_pid_and_count(monkeypatch):
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert systemd.listen_fds() == []
    assert "LISTEN_FDS" not in os.environ


def test_malformed_activation_is_an_error(monkeypatch):
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "one")
    with pytest.raises(ValueError, match="malformed socket activation"):
        systemd.listen_fds()


# The program systemd-socket-activate starts: it reports what listen_fds() returned and what
# is left of the protocol in its environment, then proves the first descriptor is the
# listening socket by accepting the connection that woke it and answering on it.
ACTIVATED_CHILD = textwrap.dedent(
    """
    import json, os, socket, sys
    from coordd.service import systemd
    fds = systemd.listen_fds()
    report = {
        "pid": os.getpid(),
        "fds": fds,
        "inheritable": [os.get_inheritable(fd) for fd, _ in fds],
        "left_in_environ": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    }
    print(json.dumps(report), flush=True)
    for fd, _ in fds:
        listener = socket.socket(fileno=fd)
        listener.settimeout(0)  # only the connection already waiting, if any
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            continue
        conn.sendall(f"accepted on fd {fd}".encode())
        conn.close()
    """
)


def socket_activate(short_dir: Path, sockets: list[str], extra: list[str], wake: str):
    """Run ACTIVATED_CHILD under systemd-socket-activate, the way systemd would start it.

    Without --accept, systemd-socket-activate binds the sockets, waits for the first
    connection attempt on any of them, and then execs the command in its own process, so
    LISTEN_PID is the pid the child sees. The test waits for its "Listening on" lines on
    stderr (no sleeping), connects to ``wake``, and reads the child's report and answer.
    """
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate is not installed (Debian package systemd)")
    command = [tool]
    for name in sockets:
        command += ["-l", str(short_dir / name)]
    # It passes on only PATH, TERM, USER, HOME and the variables named with --setenv.
    command += [*extra, "--setenv=PYTHONPATH", sys.executable, "-c", ACTIVATED_CHILD]
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
        cwd=short_dir,
    ) as process:
        try:
            for name in sockets:
                line = process.stderr.readline()
                assert line.startswith(f"Listening on {short_dir / name} as "), line
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(RECEIVE_TIMEOUT_S)
                client.connect(str(short_dir / wake))
                answer = b""
                try:
                    while chunk := client.recv(1024):
                        answer += chunk
                except ConnectionResetError:
                    pass  # the child died without answering: its stderr, below, says why
            stdout, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, stderr
    return json.loads(stdout), answer.decode(), process.pid


def test_listen_fds_under_systemd_socket_activate(short_dir):
    report, answer, pid = socket_activate(
        short_dir, ["coordd.sock"], ["--fdname=coordd"], "coordd.sock"
    )
    assert report["pid"] == pid  # exec'd in place: LISTEN_PID matched
    assert report["fds"] == [[3, "coordd"]]
    assert report["inheritable"] == [False]  # not passed on to programs the daemon starts
    assert report["left_in_environ"] == []
    assert answer == "accepted on fd 3"


def test_listen_fds_with_several_named_sockets(short_dir):
    report, answer, _ = socket_activate(
        short_dir, ["a.sock", "b.sock"], ["--fdname=first:second"], "b.sock"
    )
    assert report["fds"] == [[3, "first"], [4, "second"]]
    assert report["inheritable"] == [False, False]
    assert answer == "accepted on fd 4"


def test_listen_fds_without_names(short_dir):
    report, answer, _ = socket_activate(short_dir, ["c.sock"], [], "c.sock")
    assert report["fds"] == [[3, "unknown"]]
    assert answer == "accepted on fd 3"


def run_child(code: str, env: dict[str, str] | None = None, **kwargs):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**CHILD_ENV, **(env or {})},
        timeout=60,
        **kwargs,
    )


def test_listen_fds_names_a_closed_descriptor():
    # In a child, so that descriptor numbers of the test process are not involved.
    result = run_child(
        """
        import os
        from coordd.service import systemd
        for fd in range(3, 10):
            try:
                os.close(fd)
            except OSError:
                pass
        os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
        try:
            systemd.listen_fds()
        except ValueError as exc:
            print(exc)
        """
    )
    assert result.stdout.startswith("LISTEN_FDS=1 but descriptor 3 is not open"), result


# --- logging -------------------------------------------------------------------------------

LOGGING_CHILD = """
    import logging, sys
    from coordd.service.log import setup_logging, set_level
    setup_logging("info")
    log = logging.getLogger("coordd.test")
    log.debug("hidden debug")
    log.info("started")
    log.warning("careful")
    logging.getLogger("aiohttp.client").info("hidden third-party info")
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("failed\\nbadly")
    set_level("debug")
    log.debug("shown debug")
    logging.getLogger("aiohttp.client").debug("shown third-party debug")
    set_level("error")
    log.warning("hidden warning")
    logging.getLogger("aiohttp.client").warning("hidden third-party warning")
    log.critical("down")
"""


def run_logging_child(tmp_path: Path, journal: str | None) -> list[str]:
    """Run LOGGING_CHILD with stderr to a file; ``journal`` "match" sets JOURNAL_STREAM to
    that file's device and inode, as systemd does; "other" to another file's."""
    err_path = tmp_path / "stderr"
    env = {k: v for k, v in CHILD_ENV.items() if k != "JOURNAL_STREAM"}
    with err_path.open("w") as err:
        st = os.fstat(err.fileno())
        other = os.stat(tmp_path)
        if journal == "match":
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        elif journal == "other":
            env["JOURNAL_STREAM"] = f"{other.st_dev}:{other.st_ino}"
        subprocess.run(
            [sys.executable, "-c", textwrap.dedent(LOGGING_CHILD)],
            stderr=err,
            env=env,
            check=True,
            timeout=60,
        )
    return err_path.read_text().splitlines()


def test_journal_lines_carry_priorities_and_no_timestamps(tmp_path):
    lines = run_logging_child(tmp_path, "match")
    assert lines[:3] == [
        "<6>coordd.test: started",
        "<4>coordd.test: careful",
        "<3>coordd.test: failed",
    ]
    # Every line of a multi-line record keeps the record's priority, traceback included.
    traceback = lines[3 : lines.index("<7>coordd.test: shown debug")]
    assert traceback[0] == "<3>badly"
    assert traceback[1] == "<3>Traceback (most recent call last):"
    assert traceback[-1] == "<3>ZeroDivisionError: division by zero"
    assert all(line.startswith("<3>") for line in traceback)
    assert lines[-2:] == ["<7>aiohttp.client: shown third-party debug", "<2>coordd.test: down"]
    assert not any("hidden" in line for line in lines)


@pytest.mark.parametrize("journal", [None, "other"])
def test_readable_lines_elsewhere(tmp_path, journal):
    lines = run_logging_child(tmp_path, journal)
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.fullmatch(rf"{stamp} INFO coordd\.test: started", lines[0]), lines[0]
    assert re.fullmatch(rf"{stamp} WARNING coordd\.test: careful", lines[1]), lines[1]
    assert re.fullmatch(rf"{stamp} CRITICAL coordd\.test: down", lines[-1]), lines[-1]
    assert not any(line.startswith("<") for line in lines)
    assert not any("hidden" in line for line in lines)


def test_timestamps_are_utc(tmp_path):
    lines = run_child(
        """
        import logging, sys, time
        from coordd.service.log import setup_logging
        setup_logging("info")
        logging.getLogger("coordd.test").info("now")
        print(time.strftime("%Y-%m-%dT%H", time.gmtime()))
        """,
        env={"TZ": "Pacific/Kiritimati"},  # UTC+14: local time is never the UTC hour
    )
    assert lines.stderr.startswith(lines.stdout.strip() + ":"), (lines.stdout, lines.stderr)


def test_setup_twice_replaces_its_own_handler_only():
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    saved_levels = root.level, logging.getLogger("coordd").level
    try:
        coordd_log.setup_logging("info")
        coordd_log.setup_logging("warning")
        ours = [h for h in root.handlers if isinstance(h, coordd_log._DaemonHandler)]
        assert len(ours) == 1
        assert foreign in root.handlers
        assert logging.getLogger("coordd").level == logging.WARNING
    finally:
        for handler in [h for h in root.handlers if isinstance(h, coordd_log._DaemonHandler)]:
            root.removeHandler(handler)
        root.removeHandler(foreign)
        root.setLevel(saved_levels[0])
        logging.getLogger("coordd").setLevel(saved_levels[1])


def test_unknown_level_names_the_choices():
    with pytest.raises(ValueError, match="unknown log level 'verbose'; choose one of debug, info"):
        coordd_log.parse_level("verbose")
    assert coordd_log.parse_level("WARNING") == logging.WARNING


@pytest.mark.parametrize(
    ("level", "priority"),
    [(logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3), (50, 2)],
)
def test_syslog_priorities(level, priority):
    assert coordd_log.syslog_priority(level) == priority


def test_journal_stream_must_match_the_stream(tmp_path, monkeypatch):
    with (tmp_path / "a").open("w") as a, (tmp_path / "b").open("w") as b:
        st = os.fstat(a.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert coordd_log.stderr_is_journal(a)
        assert not coordd_log.stderr_is_journal(b)
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not coordd_log.stderr_is_journal(a)
