"""The daemon keeps serving under hostile or careless clients (DESIGN §7: limits).

Each test makes its attack against a real coordd on a real socket, and checks that a
well-behaved client is still answered within a bound generous for a shared machine, that
memory stays bounded where it applies, and that the daemon never exits.

Other users: a forked child drops to a uid that has no account (and the group ``nogroup``,
which the daemon is configured to let read), connects, and hands its sockets back to the
test over ``SCM_RIGHTS``. The kernel records a socket's peer credentials at ``connect()``,
so the daemon sees that uid on each of them, whichever process holds them afterwards.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemon import DaemonProcess, wait_for

UNAVAILABLE = -32004
READ_GROUP = "nogroup"
# Uids with no account: the daemon sees only the uid and the group the child chose.
ATTACKER, OTHER, THIRD = 61_001, 61_002, 61_003
ANSWER_S = 1.0  # a well-behaved client's bound; generous for a shared machine


# -- helpers -----------------------------------------------------------------------------------


def frame(method: str, params: Any = None, request_id: Any = 1) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        message["params"] = params
    return json.dumps(message).encode() + b"\n"


def read_message(sock: socket.socket, timeout: float = 10.0) -> Any:
    """The next message on ``sock``; None at end of stream; fails after ``timeout``."""
    sock.settimeout(timeout)
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = sock.recv(1)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None if not data else pytest.fail(f"cut message {data[:200]!r}")
        data += chunk
    return json.loads(data)


def status_within(path: Path, bound: float = ANSWER_S, sock: socket.socket | None = None) -> float:
    """``server.status`` on a fresh connection (or ``sock``); fails unless answered within
    ``bound``; returns the seconds it took."""
    started = time.monotonic()
    own = sock is None
    if sock is None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(bound)
        sock.connect(str(path))
    try:
        sock.sendall(frame("server.status", request_id="status"))
        reply = read_message(sock, timeout=max(0.01, bound - (time.monotonic() - started)))
    except TimeoutError:
        pytest.fail(f"server.status not answered within {bound:g} s")
    finally:
        if own:
            sock.close()
    took = time.monotonic() - started
    assert reply is not None
    assert reply.get("id") == "status", reply
    assert "result" in reply, reply
    assert took <= bound, f"server.status took {took:.2f} s"
    return took


def connect_as(path: Path, uid: int, count: int, gid: int | None = None) -> list[socket.socket]:
    """``count`` connections to ``path`` made by a child running as ``uid``."""
    gid = grp.getgrnam(READ_GROUP).gr_gid if gid is None else gid
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, connect, pass the sockets, exit
        status = 1
        try:
            ours.close()
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            for start in range(0, count, 100):
                batch = []
                for _ in range(min(100, count - start)):
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.connect(str(path))
                    batch.append(sock)
                socket.send_fds(theirs, [b"s"], [sock.fileno() for sock in batch])
                for sock in batch:
                    sock.close()
            status = 0
        finally:
            os._exit(status)
    theirs.close()
    received: list[socket.socket] = []
    try:
        ours.settimeout(30)
        while len(received) < count:
            message, fds, _, _ = socket.recv_fds(ours, 1, 100)
            if not message:
                break
            received += [socket.socket(fileno=fd) for fd in fds]
    finally:
        ours.close()
        _, status = os.waitpid(pid, 0)
    assert status == 0, f"the child connecting as uid {uid} failed"
    assert len(received) == count
    return received


def sort_out(
    socks: list[socket.socket], expected_refused: int, timeout: float = 10.0
) -> tuple[list[socket.socket], list[Any]]:
    """Split fresh connections into the admitted (silent) and the refusals they got."""
    refused: list[Any] = []
    waiting = list(socks)
    deadline = time.monotonic() + timeout
    while len(refused) < expected_refused and time.monotonic() < deadline:
        readable, _, _ = select.select(waiting, [], [], 0.2)
        for sock in readable:
            refused.append(read_message(sock))
            waiting.remove(sock)
            sock.close()
    # A little longer, to see that no admitted connection gets a refusal late.
    readable, _, _ = select.select(waiting, [], [], 0.3)
    for sock in readable:
        refused.append(read_message(sock))
        waiting.remove(sock)
        sock.close()
    return waiting, refused


def rss_mib(pid: int) -> float:
    for text in Path(f"/proc/{pid}/status").read_text().splitlines():
        if text.startswith("VmRSS:"):
            return int(text.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


@pytest.fixture
def users_daemon(tmp_path: Path) -> Iterator[Any]:
    """A factory: a daemon whose read group is ``nogroup``, reachable by other uids."""
    made: list[DaemonProcess] = []
    if os.geteuid() != 0:
        pytest.skip("connecting as other uids needs root")

    def start(limits: str) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path / f"state{len(made)}")
        made.append(daemon)
        os.chmod(daemon.run_dir, 0o755)  # let other uids reach the socket
        daemon.config_file().write_text(f'[access]\nread_group = "{READ_GROUP}"\n\n{limits}')
        return daemon.start()

    try:
        yield start
    finally:
        for daemon in made:
            daemon.cleanup()


def assert_alive(daemon: DaemonProcess) -> None:
    assert daemon.proc is not None
    assert daemon.proc.poll() is None, daemon.log_text()[-3000:]


# -- one user cannot lock the others out ---------------------------------------------------------


def test_one_user_trickling_connections_cannot_lock_others_out(users_daemon: Any) -> None:
    """300 connections of one uid sending a byte every 2 s, against the default 256-place cap.

    Its share (64) is admitted and the rest refused; others (another uid, root) are served
    meanwhile; and its trickling connections are closed at the request deadline, long
    before the idle timeout.
    """
    daemon: DaemonProcess = users_daemon(
        "[limits]\nmax_connections = 256\nmax_connections_per_user = 64\n"
        'request_timeout = "3s"\nidle_timeout = "5m"\n'
    )
    attack = connect_as(daemon.socket, ATTACKER, 300)
    admitted, refused = sort_out(attack, 300 - 64)
    try:
        assert len(admitted) == 64, (len(admitted), refused[:3])
        for reply in refused:
            assert reply["error"]["code"] == UNAVAILABLE, reply
            assert reply["error"]["message"] == (
                f"too many connections for uid {ATTACKER} (limit 64 per user)"
            )
        fresh = connect_as(daemon.socket, ATTACKER, 1)[0]
        with fresh:  # its places are all taken
            assert read_message(fresh)["error"]["message"].startswith("too many connections for")
        started = time.monotonic()
        for sock in admitted:
            sock.sendall(b"{")
        latencies = []
        closed_at: list[float] = []
        while time.monotonic() - started < 8 and len(closed_at) < len(admitted):
            other = connect_as(daemon.socket, OTHER, 1)[0]
            with other:
                latencies.append(status_within(daemon.socket, sock=other))
            latencies.append(status_within(daemon.socket))  # root
            readable, _, _ = select.select(admitted, [], [], 0.5)
            for sock in readable:
                message = read_message(sock)
                assert message is not None
                assert message["error"]["code"] == UNAVAILABLE
                assert message["error"]["message"] == (
                    "frame not completed within 3 s; connection closed"
                )
                assert read_message(sock) is None
                closed_at.append(time.monotonic() - started)
                admitted.remove(sock)
                sock.close()
            for sock in admitted:
                if int(time.monotonic() - started) % 2 == 0:
                    sock.sendall(b" ")  # one byte every two seconds or so
        assert not admitted, f"{len(admitted)} trickling connections still open after 8 s"
        assert min(closed_at) >= 2.5
        assert max(closed_at) < 8
        print(f"\nserver.status while trickled: max {max(latencies) * 1000:.0f} ms")
        # The places are free again: the same uid is served.
        again = connect_as(daemon.socket, ATTACKER, 1)[0]
        with again:
            status_within(daemon.socket, sock=again)
    finally:
        close_all(admitted)
    assert_alive(daemon)


def test_admins_keep_a_reserve_and_subscribers_count_against_their_share(
    users_daemon: Any,
) -> None:
    daemon: DaemonProcess = users_daemon(
        "[limits]\nmax_connections = 12\nmax_connections_per_user = 4\n"
        'admin_reserved_connections = 4\nidle_timeout = "1s"\n'
    )
    held: list[socket.socket] = []
    try:
        for uid in (ATTACKER, OTHER):
            for sock in connect_as(daemon.socket, uid, 4):
                held.append(sock)
                sock.sendall(frame("events.subscribe"))
                assert read_message(sock)["result"]["subscribed"] == ["*"]
        time.sleep(1.5)  # past the idle timeout: subscribed connections stay, and count
        for sock in held:
            status_within(daemon.socket, sock=sock)
        fifth = connect_as(daemon.socket, ATTACKER, 1)[0]
        with fifth:
            assert read_message(fifth)["error"]["message"] == (
                f"too many connections for uid {ATTACKER} (limit 4 per user)"
            )
        # 8 of 12 places are taken: the last 4 are for administrators only.
        third = connect_as(daemon.socket, THIRD, 1)[0]
        with third:
            assert read_message(third)["error"]["message"] == (
                "too many connections (limit 12; the last 4 are kept for administrators)"
            )
        status_within(daemon.socket)  # root takes a reserved place
        # A subscriber leaving frees its place for anyone.
        held.pop().close()
        third = wait_for(
            lambda: _admitted(daemon.socket, THIRD), "a place freed by a subscriber leaving"
        )
        with third:
            status_within(daemon.socket, sock=third)
    finally:
        close_all(held)
    assert_alive(daemon)


def _admitted(path: Path, uid: int) -> socket.socket | None:
    sock = connect_as(path, uid, 1)[0]
    readable, _, _ = select.select([sock], [], [], 0.2)
    if readable:
        sock.close()
        return None
    return sock


def test_request_timeout_is_independent_of_the_idle_timeout(make_daemon: Any) -> None:
    daemon: DaemonProcess = make_daemon(name="deadline")
    daemon.config_file().write_text('[limits]\nrequest_timeout = "1s"\nidle_timeout = "1h"\n')
    daemon.start()
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow,
    ):
        idle.connect(str(daemon.socket))
        slow.connect(str(daemon.socket))
        started = time.monotonic()
        slow.sendall(b'{"jsonrpc":"2.0",')
        message = read_message(slow, timeout=10)
        took = time.monotonic() - started
        assert message["error"]["message"] == "frame not completed within 1 s; connection closed"
        assert 0.8 <= took < 5
        readable, _, _ = select.select([idle], [], [], 0)
        assert not readable, "the idle connection was closed too"
        status_within(daemon.socket, sock=idle)


# -- replies nobody reads --------------------------------------------------------------------


def test_unread_replies_do_not_grow_memory(daemon: DaemonProcess) -> None:
    """48 connections pipeline 10,000 ``repo.list`` each and read nothing."""
    assert daemon.proc is not None
    pid = daemon.proc.pid
    for i in range(200):
        daemon.call("repo.create", repo_id=f"big-{i:03d}", description="d" * 200)
    reply_size = len(json.dumps(daemon.call("repo.list")))
    assert reply_size > 60_000
    for _ in range(20):
        daemon.call("repo.list")
    idle = rss_mib(pid)
    data = b"".join(frame("repo.list", request_id=i) for i in range(10_000))
    attackers = []
    for _ in range(48):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(daemon.socket))
        sock.setblocking(False)
        attackers.append([sock, 0])
    # A well-behaved client pipelining too, but reading: every reply arrives, once.
    good = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    good.connect(str(daemon.socket))
    good.sendall(b"".join(frame("server.status", request_id=i) for i in range(500)))
    peak, latencies = idle, []
    started = time.monotonic()
    try:
        # Within the daemon's write deadline (10 s), while nothing of the attackers' is read.
        while time.monotonic() - started < 7:
            for entry in attackers:
                sock, sent = entry
                if sent < len(data):
                    with contextlib.suppress(BlockingIOError):
                        entry[1] += sock.send(data[sent : sent + 65536])
            latencies.append(status_within(daemon.socket, bound=2 * ANSWER_S))
            peak = max(peak, rss_mib(pid))
            time.sleep(0.2)
        sent_total = sum(entry[1] for entry in attackers)
        assert sent_total < 48 * len(data), "the daemon read every request: no backpressure"
        ids = []
        while len(ids) < 500:
            reply = read_message(good)
            assert reply is not None
            ids.append(reply["id"])
        assert sorted(ids) == list(range(500))
    finally:
        good.close()
        for sock, _ in attackers:
            sock.close()
    wait_for(lambda: len(daemon.call("server.status")) and _settled(pid), "attackers gone")
    after = rss_mib(pid)
    print(
        f"\nrepo.list reply {reply_size} bytes; RSS idle {idle:.0f} MiB, peak {peak:.0f} MiB, "
        f"after {after:.0f} MiB; server.status max {max(latencies) * 1000:.0f} ms, "
        f"median {sorted(latencies)[len(latencies) // 2] * 1000:.0f} ms"
    )
    assert peak - idle < 100, f"RSS grew from {idle:.0f} to {peak:.0f} MiB"
    assert after - idle < 40, f"RSS stayed at {after:.0f} MiB (idle {idle:.0f})"
    assert daemon.proc.poll() is None


def test_a_batch_reply_is_bounded_and_every_member_answered(make_daemon: Any) -> None:
    daemon: DaemonProcess = make_daemon(name="batch")
    daemon.config_file().write_text("[limits]\nmax_send_queue_bytes = 4096\nmax_batch = 100\n")
    daemon.start()
    members = [{"jsonrpc": "2.0", "method": "server.status", "id": i} for i in range(100)]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(daemon.socket))
        sock.sendall(json.dumps(members).encode() + b"\n")
        replies = read_message(sock)
    assert sorted(r["id"] for r in replies) == list(range(100))  # each answered, once
    ran = [r for r in replies if "result" in r]
    skipped = [r for r in replies if "error" in r]
    assert ran
    assert skipped
    assert len(json.dumps(ran)) < 4096 + 1000  # the bound, and the member that passed it
    for reply in skipped:
        assert reply["error"]["code"] == UNAVAILABLE
        assert reply["error"]["message"] == (
            "not run: the replies to this batch passed 4096 bytes; send this request again"
        )
    status_within(daemon.socket)


def _settled(pid: int) -> bool:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return fds < 40


# -- descriptors ----------------------------------------------------------------------------------


class LimitedDaemon(DaemonProcess):
    """A daemon started under ``prlimit --nofile=N:N``."""

    nofile = 64

    def command(self) -> list[str]:
        return ["prlimit", f"--nofile={self.nofile}:{self.nofile}", "--", *super().command()]


def test_a_small_open_file_limit_is_reported_and_kept(tmp_path: Path) -> None:
    daemon = LimitedDaemon(tmp_path / "state")
    daemon.config_file().write_text("[limits]\nmax_connections = 256\n")
    try:
        check = subprocess.run(
            [*daemon.command(), "--check-config"],
            capture_output=True,
            text=True,
            env=daemon.env,
            timeout=60,
            check=False,
        )
        assert check.returncode == 0, check.stderr
        assert "max_connections = 256 does not fit the open-file limit of 64" in check.stderr
        assert "coordd will accept at most 16 connections" in check.stderr
        daemon.start()
        assert "coordd will accept at most 16 connections" in daemon.log_text()
        flood = []
        for _ in range(200):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(daemon.socket))
            flood.append(sock)
        admitted, refused = sort_out(flood, 200 - 16)
        assert len(admitted) <= 16
        assert refused
        for reply in refused:
            assert reply["error"]["message"] == "too many connections (limit 16)"

        assert_alive(daemon)
        close_all(admitted)
        wait_for(lambda: _served(daemon.socket), "a place after the flood")
        status_within(daemon.socket)
        assert_alive(daemon)
    finally:
        daemon.cleanup()


def _served(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.sendall(frame("server.status"))
        reply = read_message(sock)
    return reply is not None and "result" in reply


def test_running_out_of_descriptors_refuses_new_clients_and_recovers(
    daemon: DaemonProcess,
) -> None:
    """The limit lowered under a running daemon: accept() fails with EMFILE.

    Open connections are served meanwhile; new clients are refused at once, through the
    daemon's spare descriptor, rather than left waiting; and once descriptors are free
    again, the next client is served without waiting out a backoff.
    """
    assert daemon.proc is not None
    pid = daemon.proc.pid
    held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    held.connect(str(daemon.socket))
    status_within(daemon.socket, sock=held)
    open_now = len(os.listdir(f"/proc/{pid}/fd"))
    subprocess.run(
        ["prlimit", f"--pid={pid}", f"--nofile={open_now + 4}:{open_now + 4}"], check=True
    )
    flood = []
    try:
        for _ in range(40):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(daemon.socket))  # queued by the kernel, accepted or not
            flood.append(sock)
        wait_for(
            lambda: "cannot accept connections: Too many open files" in daemon.log_text(),
            "the daemon to run out of descriptors",
        )
        time.sleep(1.5)  # many retries
        assert_alive(daemon)
        status_within(daemon.socket, sock=held)  # open connections are served meanwhile
        refused = [message for message in map(read_message, flood[-30:]) if message]
        assert len(refused) == 30  # the last ones queued: none of them got a place
        started = time.monotonic()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as fresh:
            fresh.connect(str(daemon.socket))
            refused.append(read_message(fresh, timeout=ANSWER_S))
        assert time.monotonic() - started < ANSWER_S
        for message in refused:
            assert message["error"]["code"] == UNAVAILABLE
            assert message["error"]["message"] == (
                "coordd is out of open files; try again in a moment"
            )
        assert daemon.log_text().count("cannot accept connections") == 1  # once an episode
    finally:
        close_all(flood)
    # Descriptors free again: the next client is served, within the usual bound.
    took = status_within(daemon.socket)
    wait_for(lambda: "accepting connections again" in daemon.log_text(), "the recovery log")
    print(f"\nserver.status after the episode: {took * 1000:.0f} ms")
    held.close()
    assert_alive(daemon)


# -- a second daemon --------------------------------------------------------------------------


def test_a_second_daemon_on_the_same_socket_names_the_first(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    assert daemon.proc is not None
    second = DaemonProcess(tmp_path / "second")
    second.socket = daemon.socket
    second.env["COORDD_SOCKET"] = str(daemon.socket)
    try:
        second.start(wait=False)
        assert second.proc is not None
        assert second.proc.wait(timeout=60) == 75
        assert (
            f"another coordd is serving {daemon.socket} (pid {daemon.proc.pid}); "
            "stop it first or use another --socket"
        ) in second.log_text()
    finally:
        second.cleanup()
    status_within(daemon.socket)  # the first still serves
