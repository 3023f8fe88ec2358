"""The socket protocol against a real coordd: bad input gets a precise error, and it lives on.

Every test talks raw bytes on a plain ``socket`` (no client library between the test and the
daemon) and, after its bad input, checks that the daemon still answers on a fresh connection.
Most tests share one daemon with small limits; the connection-limit test has its own.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemon import DaemonProcess

MAX_FRAME = 4096
MAX_BATCH = 10
IDLE_S = 2.0
CONFIG = f"""
[limits]
max_frame_bytes = {MAX_FRAME}
max_batch = {MAX_BATCH}
idle_timeout = {IDLE_S:g}
"""

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
CONFLICT = -32001
NOT_FOUND = -32002
UNAVAILABLE = -32004


class Raw:
    """A bare connection: bytes out, JSON lines in."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buffer = b""

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, params: Any = None, request_id: Any = 1) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
        if params is not None:
            message["params"] = params
        self.send(json.dumps(message).encode() + b"\n")

    def message(self) -> Any:
        """The next message; fails on end of stream or timeout."""
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed; unparsed {self.buffer[:200]!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def until_eof(self, timeout: float = 10.0) -> list[Any]:
        """Every message until the daemon closes the connection (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"connection still open after {timeout} s") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            self.buffer += chunk
        lines, self.buffer = self.buffer.split(b"\n"), b""
        assert lines[-1] == b"", f"a partial line before the close: {lines[-1][:200]!r}"
        return [json.loads(line) for line in lines[:-1]]

    def half_close(self) -> list[Any]:
        """Send nothing more, and collect every reply the daemon writes before it closes."""
        self.sock.shutdown(socket.SHUT_WR)
        return self.until_eof()


def exchange(daemon: DaemonProcess, data: bytes) -> list[Any]:
    """``data`` on a fresh connection, then every reply until the daemon closes it."""
    with Raw(daemon.socket) as raw:
        raw.send(data)
        return raw.half_close()


def one_reply(daemon: DaemonProcess, data: bytes) -> Any:
    replies = exchange(daemon, data)
    assert len(replies) == 1, replies
    return replies[0]


def frame(message: Any) -> bytes:
    return json.dumps(message).encode() + b"\n"


def request(method: str, params: Any = None, request_id: Any = 1) -> dict[str, Any]:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params is not None:
        message["params"] = params
    return message


def assert_error(reply: Any, code: int, text: str, request_id: Any = None) -> dict[str, Any]:
    assert reply.get("jsonrpc") == "2.0", reply
    assert "result" not in reply, reply
    assert reply["id"] == request_id, reply
    error = reply["error"]
    assert error["code"] == code, reply
    assert text in error["message"], reply
    assert "Traceback" not in json.dumps(reply)
    return error


def assert_serves(daemon: DaemonProcess) -> None:
    """The daemon is alive and answers a fresh connection."""
    assert daemon.proc is not None
    assert daemon.proc.poll() is None, daemon.log_text()[-3000:]
    with Raw(daemon.socket) as raw:
        raw.request("server.status", request_id="alive")
        reply = raw.message()
    assert reply["id"] == "alive"
    assert reply["result"]["version"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path_factory.mktemp("protocol") / "state")
    process.config_file().write_text(CONFIG)
    try:
        yield process.start()
    finally:
        process.cleanup()


@pytest.fixture
def daemon(shared: DaemonProcess) -> Iterator[DaemonProcess]:
    """The shared daemon; after the test, it must still be serving."""
    yield shared
    assert_serves(shared)


# -- frames ------------------------------------------------------------------------------


def test_frame_exactly_at_the_limit_is_served(daemon: DaemonProcess) -> None:
    body = json.dumps(request("server.status", request_id=7))
    padded = body[:-1] + " " * (MAX_FRAME - len(body)) + "}"
    assert len(padded.encode()) == MAX_FRAME
    reply = one_reply(daemon, padded.encode() + b"\n")
    assert reply["id"] == 7
    assert "result" in reply


def test_oversize_frame_is_refused_and_the_connection_closed(daemon: DaemonProcess) -> None:
    with Raw(daemon.socket) as raw:
        raw.send(b'{"jsonrpc":"2.0","method":"server.status","id":1,"pad":"' + b"x" * MAX_FRAME)
        replies = raw.until_eof()
    assert len(replies) == 1
    assert_error(replies[0], INVALID_REQUEST, f"frame exceeds {MAX_FRAME} bytes")


def test_oversize_frame_after_good_ones_in_the_same_write(daemon: DaemonProcess) -> None:
    with Raw(daemon.socket) as raw:
        raw.send(frame(request("server.status", request_id=1)) + b"[" * (MAX_FRAME + 10) + b"\n")
        replies = raw.until_eof()
    errors = [r for r in replies if "error" in r]
    assert len(errors) == 1
    assert_error(errors[0], INVALID_REQUEST, "frame exceeds")


def test_frame_cut_by_end_of_stream(daemon: DaemonProcess) -> None:
    reply = one_reply(daemon, b'{"jsonrpc":"2.0","method":"server.status","id":1')
    assert_error(reply, PARSE_ERROR, "frame cut by end of stream")


def test_crlf_and_blank_lines(daemon: DaemonProcess) -> None:
    replies = exchange(
        daemon, b"\r\n\n" + frame(request("server.status", request_id=3))[:-1] + b"\r\n"
    )
    assert [r["id"] for r in replies] == [3]


# -- strict decoding ---------------------------------------------------------------------

PARSE_CASES = [
    pytest.param(
        b'{"jsonrpc":"2.0","method":"server.status","id":1,"x":"\xff\xfe"}',
        "invalid UTF-8",
        id="invalid-utf8",
    ),
    pytest.param(
        b'{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]',
        "Expecting ',' delimiter at line 1 column 40",
        id="invalid-json",
    ),
    pytest.param(b"[" * (MAX_FRAME - 1), "nesting too deep", id="deep-nesting"),
    pytest.param(
        b'{"jsonrpc":"2.0","method":"task.list","params":{"limit":' + b"[" * 3000 + b"}",
        "nesting too deep",
        id="deep-nesting-in-params",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","method":"server.status","id":9223372036854775808}',
        "out of range",
        id="id-2**63",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","method":"task.list","params":{"limit":-9223372036854775809},"id":1}',
        "out of range",
        id="int-below-2**63",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","method":"task.wait","params":{"task_id":"x","timeout":1e400},"id":1}',
        "out of range",
        id="1e400",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","method":"task.wait","params":{"task_id":"x","timeout":NaN},"id":1}',
        "NaN is not valid JSON",
        id="nan",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","method":"task.wait","params":{"task_id":"x","timeout":Infinity},"id":1}',
        "Infinity is not valid JSON",
        id="infinity",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","method":"task.wait","params":["x",-Infinity],"id":1}',
        "-Infinity is not valid JSON",
        id="minus-infinity",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","method":"server.status","id":1,"id":2}',
        "duplicate key 'id'",
        id="duplicate-keys",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","method":"repo.create","params":{"repo_id":"a","importer":'
        b'{"feed":"http://a/","feed":"http://b/"}},"id":1}',
        "duplicate key 'feed'",
        id="duplicate-keys-nested",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","method":"repo.create","params":{"repo_id":"a",'
        b'"description":"x\\ud800y"},"id":1}',
        "lone surrogate",
        id="lone-surrogate",
    ),
]


@pytest.mark.parametrize(("data", "text"), PARSE_CASES)
def test_parse_errors(daemon: DaemonProcess, data: bytes, text: str) -> None:
    with Raw(daemon.socket) as raw:
        raw.send(data + b"\n")
        error = assert_error(raw.message(), PARSE_ERROR, text)
        assert error["message"].startswith("parse error: ")
        # The connection stays usable after a parse error.
        raw.request("server.status", request_id="next")
        assert raw.message()["id"] == "next"


def test_valid_surrogate_pair_is_accepted(daemon: DaemonProcess) -> None:
    reply = one_reply(
        daemon,
        b'{"jsonrpc":"2.0","method":"task.get","params":{"task_id":"\\ud83d\\ude00"},"id":1}\n',
    )
    assert_error(reply, NOT_FOUND, "no task \U0001f600", 1)


def test_largest_integers_pass(daemon: DaemonProcess) -> None:
    for request_id in (2**63 - 1, -(2**63)):
        assert (
            one_reply(daemon, frame(request("server.status", request_id=request_id)))["id"]
            == request_id
        )
    reply = one_reply(daemon, frame(request("task.list", {"limit": 2**63 - 1})))
    assert_error(reply, INVALID_PARAMS, "limit must be between", 1)


# -- invalid requests (JSON-RPC 2.0 §4, §6) ----------------------------------------------

INVALID_CASES = [
    pytest.param(
        {"jsonrpc": "2.0", "method": 1, "params": "bar"},
        '"method" must be a non-empty string',
        None,
        id="spec-method-1-params-bar",
    ),
    pytest.param(1, "expected an object", None, id="number"),
    pytest.param("server.status", "expected an object", None, id="string"),
    pytest.param(None, "expected an object", None, id="null"),
    pytest.param(
        {"method": "server.status", "id": 5}, '"jsonrpc" must be "2.0"', 5, id="no-jsonrpc"
    ),
    pytest.param(
        {"jsonrpc": "1.0", "method": "server.status", "id": 5},
        '"jsonrpc" must be "2.0"',
        5,
        id="version-1.0",
    ),
    pytest.param(
        {"jsonrpc": 2.0, "method": "server.status", "id": 5},
        '"jsonrpc" must be "2.0"',
        5,
        id="version-number",
    ),
    pytest.param({"jsonrpc": "2.0", "id": 5}, '"method"', 5, id="no-method"),
    pytest.param(
        {"jsonrpc": "2.0", "method": "", "id": 5},
        '"method" must be a non-empty',
        5,
        id="empty-method",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "method": "server.status", "id": {"a": 1}},
        "id must be a string, an integer or null",
        None,
        id="id-object",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "method": "server.status", "id": [1]},
        "id must be a string, an integer or null",
        None,
        id="id-array",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "method": "server.status", "id": True},
        "id must be a string, an integer or null",
        None,
        id="id-bool",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "method": "server.status", "id": 1.5},
        "id must be a string, an integer or null",
        None,
        id="id-1.5",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "method": "server.status", "params": "bar", "id": 6},
        '"params" must be an object or an array',
        6,
        id="params-string",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "method": "server.status", "params": 3, "id": 6},
        '"params" must be an object or an array',
        6,
        id="params-number",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "method": "server.status", "params": None, "id": 6},
        '"params" must be an object or an array',
        6,
        id="params-null",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "method": "server.status", "id": 7, "extra": True},
        "unexpected member 'extra'",
        7,
        id="extra-member",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "method": "server.status", "id": 7, "result": 1},
        "unexpected member 'result'",
        7,
        id="a-response-sent-as-request",
    ),
]


@pytest.mark.parametrize(("message", "text", "reply_id"), INVALID_CASES)
def test_invalid_requests(daemon: DaemonProcess, message: Any, text: str, reply_id: Any) -> None:
    reply = one_reply(daemon, frame(message))
    assert_error(reply, INVALID_REQUEST, f"invalid request: {text}", reply_id)


def test_a_notification_that_is_invalid_is_still_answered(daemon: DaemonProcess) -> None:
    # Spec §5: an invalid request gets an error even without an id (it cannot be judged
    # a notification).
    reply = one_reply(daemon, frame({"jsonrpc": "2.0", "method": 1}))
    assert_error(reply, INVALID_REQUEST, '"method" must be a non-empty string')


# -- batches ---------------------------------------------------------------------------


def test_spec_batch_of_one_invalid_member(daemon: DaemonProcess) -> None:
    reply = one_reply(daemon, b"[1]\n")
    assert isinstance(reply, list)
    assert len(reply) == 1
    assert_error(reply[0], INVALID_REQUEST, "expected an object")


def test_spec_batch_of_three_invalid_members_gets_three_errors(daemon: DaemonProcess) -> None:
    reply = one_reply(daemon, b"[1,2,3]\n")
    assert isinstance(reply, list)
    assert len(reply) == 3
    for member in reply:
        assert_error(member, INVALID_REQUEST, "expected an object")


def test_spec_mixed_batch(daemon: DaemonProcess) -> None:
    batch = [
        request("server.status", request_id="1"),
        {"jsonrpc": "2.0", "method": "server.status"},  # a notification: no reply
        {"foo": "boo"},
        request("foo.get", {"name": "myself"}, "5"),
        request("task.get", {"task_id": "nope"}, "9"),
        request("server.status", "bar", "10"),
    ]
    reply = one_reply(daemon, frame(batch))
    assert isinstance(reply, list)
    assert len(reply) == 5
    by_id: dict[Any, list[Any]] = {}
    for member in reply:
        by_id.setdefault(member["id"], []).append(member)
    assert "result" in by_id["1"][0]
    assert_error(by_id[None][0], INVALID_REQUEST, '"jsonrpc" must be "2.0"')
    assert_error(by_id["5"][0], METHOD_NOT_FOUND, "method not found", "5")
    assert_error(by_id["9"][0], NOT_FOUND, "no task nope", "9")
    assert_error(by_id["10"][0], INVALID_REQUEST, '"params" must be', "10")


def test_empty_batch(daemon: DaemonProcess) -> None:
    reply = one_reply(daemon, b"[]\n")
    assert isinstance(reply, dict)
    assert_error(reply, INVALID_REQUEST, "empty batch")


def test_batch_at_the_limit_is_served(daemon: DaemonProcess) -> None:
    batch = [request("server.status", request_id=i) for i in range(MAX_BATCH)]
    reply = one_reply(daemon, frame(batch))
    assert sorted(member["id"] for member in reply) == list(range(MAX_BATCH))


def test_oversize_batch(daemon: DaemonProcess) -> None:
    batch = [request("server.status", request_id=i) for i in range(MAX_BATCH + 1)]
    reply = one_reply(daemon, frame(batch))
    assert_error(reply, INVALID_REQUEST, f"batch of {MAX_BATCH + 1} exceeds {MAX_BATCH}")


def test_batch_of_only_notifications_writes_nothing(daemon: DaemonProcess) -> None:
    notifications = [
        {"jsonrpc": "2.0", "method": "server.status"},
        {"jsonrpc": "2.0", "method": "no.such.method"},
        {"jsonrpc": "2.0", "method": "task.get", "params": {"task_id": "nope"}},
    ]
    replies = exchange(
        daemon, frame(notifications) + frame(request("server.status", request_id="m"))
    )
    assert [r["id"] for r in replies] == ["m"]


# -- notifications -----------------------------------------------------------------------


def test_notifications_get_no_reply(daemon: DaemonProcess) -> None:
    notifications = [
        {"jsonrpc": "2.0", "method": "server.status"},
        {"jsonrpc": "2.0", "method": "server.status", "params": {}},
        {"jsonrpc": "2.0", "method": "rpc.foo"},
        {"jsonrpc": "2.0", "method": "repo.create", "params": {"repo_id": 5}},  # fails quietly
    ]
    data = b"".join(frame(n) for n in notifications) + frame(
        request("server.status", request_id="m")
    )
    replies = exchange(daemon, data)
    assert [r["id"] for r in replies] == ["m"]


def test_a_notification_is_still_carried_out(daemon: DaemonProcess) -> None:
    repo_id = f"notified-{uuid.uuid4().hex[:8]}"
    replies = exchange(
        daemon, frame({"jsonrpc": "2.0", "method": "repo.create", "params": {"repo_id": repo_id}})
    )
    assert replies == []
    deadline = time.monotonic() + 10
    while repo_id not in [r["id"] for r in daemon.call("repo.list")["repositories"]]:
        assert time.monotonic() < deadline, "the notified repo.create never ran"
        time.sleep(0.02)


# -- methods and parameters --------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    [
        "__class__",
        "__init__",
        "rpc.foo",
        "rpc.discover",
        "task.__init__",
        "task.list.__class__",
        "server_status",
        "dispatch",
        "connection_closed",
        "_guard",
        "table",
        "s",
        "Server.Status",
        "server.status ",
    ],
)
def test_unknown_methods(daemon: DaemonProcess, method: str) -> None:
    reply = one_reply(daemon, frame(request(method, request_id=11)))
    assert_error(reply, METHOD_NOT_FOUND, "method not found", 11)


@pytest.mark.parametrize(
    ("method", "params", "text"),
    [
        ("repo.create", None, "repo.create: missing a required argument: 'repo_id'"),
        ("repo.create", {}, "repo.create: missing a required argument: 'repo_id'"),
        ("task.get", [], "task.get: missing a required argument: 'task_id'"),
        (
            "repo.create",
            {"repo_id": "x", "bogus": 1},
            "repo.create: got an unexpected keyword argument 'bogus'",
        ),
        ("server.status", {"verbose": True}, "unexpected keyword argument 'verbose'"),
        ("server.status", [1], "server.status: too many positional arguments"),
        ("server.status", {"caller": 1}, "server.status: multiple values for argument 'caller'"),
        ("task.get", {"task_id": "a", "self": 1}, "unexpected keyword argument 'self'"),
        ("repo.create", {"repo_id": 5}, "repo_id must be a string"),
        ("repo.create", {"repo_id": "../x"}, "repo_id '../x' is not valid"),
        ("repo.create", {"repo_id": "ok", "importer": "http://x/"}, "importer must be an object"),
        (
            "repo.create",
            {"repo_id": "ok", "importer": {"feed": "ftp://x/"}},
            "feed: URL scheme must be one of",
        ),
        ("repo.update", {"repo_id": "ok"}, "nothing to update"),
        ("task.wait", {"task_id": "x", "timeout": "soon"}, "timeout must be a number"),
        ("task.wait", {"task_id": "x", "timeout": -1}, "timeout must be between"),
        ("task.list", {"state": "done"}, "unknown state 'done'"),
        ("task.list", {"limit": True}, "limit must be an integer"),
        ("task.list", {"resource": {"type": "repository"}}, "resource.id must be a string"),
        ("lock.acquire", {"resources": []}, "resources must be a non-empty list"),
        (
            "lock.acquire",
            {"resources": [{"type": "t", "id": "i", "kind": "write"}]},
            "resource kind must be one of",
        ),
        ("events.subscribe", {"task_ids": "all"}, "task_ids must be a list"),
    ],
)
def test_wrong_params_say_what_is_wrong(
    daemon: DaemonProcess, method: str, params: Any, text: str
) -> None:
    reply = one_reply(daemon, frame(request(method, params, request_id="p")))
    assert_error(reply, INVALID_PARAMS, text, "p")


def test_positional_params(daemon: DaemonProcess) -> None:
    repo_id = f"positional-{uuid.uuid4().hex[:8]}"
    reply = one_reply(daemon, frame(request("repo.create", [repo_id], "pos")))
    assert reply["id"] == "pos"
    assert reply["result"]["verdict"] == "accepted"
    assert reply["result"]["task"]["args"]["repo_id"] == repo_id
    reply = one_reply(daemon, frame(request("task.get", ["nope"], "pos2")))
    assert_error(reply, NOT_FOUND, "no task nope", "pos2")


@pytest.mark.parametrize("request_id", ["abc", "", "\U0001f600", 0, -1, 2**63 - 1, -(2**63), None])
def test_odd_ids_are_echoed(daemon: DaemonProcess, request_id: Any) -> None:
    reply = one_reply(daemon, frame(request("server.status", request_id=request_id)))
    assert "id" in reply
    assert reply["id"] == request_id
    assert type(reply["id"]) is type(request_id)
    assert "result" in reply


def test_many_requests_on_one_connection_each_answered_once(daemon: DaemonProcess) -> None:
    data = b"".join(frame(request("server.status", request_id=i)) for i in range(200))
    replies = exchange(daemon, data)
    assert sorted(r["id"] for r in replies) == list(range(200))


# -- slow, idle and greedy clients -------------------------------------------------------


def test_idle_client_is_closed(daemon: DaemonProcess) -> None:
    started = time.monotonic()
    with Raw(daemon.socket) as raw:
        replies = raw.until_eof(timeout=IDLE_S + 10)
    assert time.monotonic() - started >= IDLE_S * 0.9
    assert len(replies) == 1
    assert_error(replies[0], UNAVAILABLE, "idle timeout; connection closed")


def test_client_idle_after_its_requests_is_closed(daemon: DaemonProcess) -> None:
    """The idle clock starts again when a request ends, and runs out when none follows."""
    gap = IDLE_S / 3
    started = time.monotonic()
    with Raw(daemon.socket) as raw:
        for i in range(4):  # 4 requests a third of the idle time apart: longer than it
            raw.request("server.status", request_id=i)
            assert raw.message()["id"] == i
            time.sleep(gap)  # pacing the client, not waiting for the daemon
        replies = raw.until_eof(timeout=IDLE_S + 10)
    assert time.monotonic() - started >= 3 * gap + IDLE_S * 0.9  # from the last reply
    assert len(replies) == 1
    assert_error(replies[0], UNAVAILABLE, "idle timeout; connection closed")


def test_slow_client_trickling_a_frame_within_the_idle_time_is_answered(
    daemon: DaemonProcess,
) -> None:
    data = frame(request("server.status", request_id="slow"))
    pause = IDLE_S / 4 / len(data)  # the whole frame within a quarter of the idle time
    with Raw(daemon.socket) as raw:
        for byte in data:
            raw.send(bytes([byte]))
            time.sleep(pause)
        assert raw.message()["id"] == "slow"


def test_client_stalling_mid_frame_is_closed(daemon: DaemonProcess) -> None:
    started = time.monotonic()
    with Raw(daemon.socket) as raw:
        raw.send(b'{"jsonrpc":"2.0","method":')
        replies = raw.until_eof(timeout=IDLE_S + 10)
    assert time.monotonic() - started >= IDLE_S * 0.9
    assert len(replies) == 1
    assert_error(replies[0], UNAVAILABLE, f"frame not completed within {IDLE_S:g} s")


def test_client_trickling_a_frame_for_longer_than_the_idle_time_is_closed(
    daemon: DaemonProcess,
) -> None:
    """Each byte comes well within the idle time; the frame as a whole does not."""
    data = frame(request("server.status", request_id="never"))
    started = time.monotonic()
    with Raw(daemon.socket) as raw:
        for byte in data:
            readable, _, _ = select.select([raw.sock], [], [], IDLE_S / 8)
            if readable:
                break
            raw.send(bytes([byte]))
        else:
            pytest.fail("the whole frame was sent: the daemon did not close the connection")
        replies = raw.until_eof()
    assert IDLE_S * 0.9 <= time.monotonic() - started < IDLE_S * 3
    assert len(replies) == 1
    assert_error(replies[0], UNAVAILABLE, "frame not completed")


def test_client_that_never_reads_is_disconnected_and_others_are_served(
    daemon: DaemonProcess,
) -> None:
    data = b"".join(frame(request("server.status", request_id=i)) for i in range(100))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(str(daemon.socket))
    sock.setblocking(False)
    deadline = time.monotonic() + 60
    sent = 0
    try:
        while True:
            assert time.monotonic() < deadline, f"still connected after sending {sent} bytes"
            try:
                sent += sock.send(data)
            except BlockingIOError:
                # The daemon stopped reading (its replies are not being read): meanwhile it
                # must keep serving everyone else.
                assert_serves(daemon)
                select.select([], [sock], [], 0.2)
            except (BrokenPipeError, ConnectionResetError):
                break
    finally:
        sock.close()
    assert sent > len(data)  # it did accept requests before pushing back


def test_clients_vanishing_mid_reply_leave_nothing_behind(daemon: DaemonProcess) -> None:
    """Requests in flight when the client hangs up run to their end or not at all.

    A submission must never be left half-done (stored, or counted by the coordinator as
    running, but never started).
    """
    prefix = f"gone-{uuid.uuid4().hex[:6]}"
    for i in range(20):
        with Raw(daemon.socket) as raw:
            raw.send(
                b"".join(
                    frame(request("repo.create", {"repo_id": f"{prefix}-{i}-{j}"}, j))
                    + frame(request("server.status", request_id=f"s{j}"))
                    for j in range(20)
                )
            )
    deadline = time.monotonic() + 20
    while True:
        left = [
            t
            for t in daemon.call("task.list")["tasks"]
            if t["operation"] == "repo.create" and t["args"]["repo_id"].startswith(prefix)
        ]
        if not left:
            break
        stuck = [(t["args"]["repo_id"], t["state"]) for t in left[:5]]
        assert time.monotonic() < deadline, f"tasks never ended: {stuck}"
        time.sleep(0.05)
    created = {
        r["id"] for r in daemon.call("repo.list")["repositories"] if r["id"].startswith(prefix)
    }
    history = daemon.call("task.list", state=["finished", "error", "canceled"], limit=10_000)
    ended = [
        t
        for t in history["tasks"]
        if t["operation"] == "repo.create" and t["args"]["repo_id"].startswith(prefix)
    ]
    assert {t["args"]["repo_id"] for t in ended if t["state"] == "finished"} == created
    assert all(t["state"] == "finished" for t in ended), [
        t for t in ended if t["state"] != "finished"
    ]
    status = daemon.call("server.status")
    assert status["tasks"]["running"] == len(daemon.call("task.list", state="running")["tasks"])


def test_half_closed_client_gets_its_replies(daemon: DaemonProcess) -> None:
    repo_id = f"halfclosed-{uuid.uuid4().hex[:8]}"
    replies = exchange(
        daemon,
        frame(request("server.status", request_id=1))
        + frame(request("repo.create", {"repo_id": repo_id}, 2)),
    )
    assert sorted(r["id"] for r in replies) == [1, 2]
    created = next(r for r in replies if r["id"] == 2)
    assert created["result"]["verdict"] == "accepted"


# -- errors from methods -----------------------------------------------------------------


def test_rejected_task_error_lists_the_conflicts(daemon: DaemonProcess) -> None:
    repo_id = f"rejected-{uuid.uuid4().hex[:8]}"
    created = daemon.call("repo.create", repo_id=repo_id)
    daemon.call("task.wait", task_id=created["task"]["id"], timeout=10)
    with Raw(daemon.socket) as holder:
        # Hold the repository so that the delete waits.
        holder.request(
            "lock.acquire",
            {"resources": [{"type": "repository", "id": repo_id, "kind": "update"}]},
        )
        lock = holder.message()
        while "result" not in lock or lock.get("id") != 1:  # skip lock.granted
            lock = holder.message()
        assert lock["result"]["verdict"] == "accepted"
        deleted = daemon.call("repo.delete", repo_id=repo_id)
        assert deleted["verdict"] == "postponed"
        delete_id = deleted["task"]["id"]
        reply = one_reply(
            daemon, frame(request("repo.update", {"repo_id": repo_id, "notes": "n"}, "r"))
        )
        error = assert_error(reply, CONFLICT, "could never run", "r")
        assert error["data"]["conflicts"] == [
            {
                "reason": "pending delete",
                "resource": {"type": "repository", "id": repo_id},
                "operation": "delete",
                "task_id": delete_id,
            }
        ]
        daemon.call("task.cancel", task_id=delete_id)
        # With the delete gone, the same request is no longer impossible: it waits its turn.
        update = daemon.call("repo.update", repo_id=repo_id, notes="n")
        assert update["verdict"] == "postponed"
        assert update["waiting_for"][0]["task_id"] == lock["result"]["task"]["id"]
    # The holder hung up: its lock ends and the update behind it runs.
    ended = daemon.call("task.wait", task_id=update["task"]["id"], timeout=10)
    assert ended["state"] == "finished"


def test_an_exception_inside_a_method_is_a_bare_internal_error(daemon: DaemonProcess) -> None:
    repo_id = f"broken-{uuid.uuid4().hex[:8]}"
    created = daemon.call("repo.create", repo_id=repo_id)
    assert (
        daemon.call("task.wait", task_id=created["task"]["id"], timeout=10)["state"] == "finished"
    )
    # A version whose counts are not JSON: reading it raises JSONDecodeError, which no
    # method expects.
    with contextlib.closing(sqlite3.connect(daemon.state_dir / "content.db")) as db, db:
        db.execute(
            "INSERT INTO versions (repo_id, number, created, counts, size, added, removed)"
            " VALUES (?, 1, 0, '{broken', 0, '{}', '{}')",
            (repo_id,),
        )
    params = {"repo_id": repo_id, "version": 1}
    reply = one_reply(daemon, frame(request("repo.versions.show", params, "boom")))
    error = assert_error(reply, INTERNAL_ERROR, "internal error", "boom")
    assert error["message"] == "internal error"
    assert set(error["data"]) == {"incident", "method"}
    assert error["data"]["method"] == "repo.versions.show"
    text = json.dumps(reply)
    for leak in ("Traceback", "JSONDecodeError", "Errno", str(daemon.state_dir), ".py"):
        assert leak not in text
    # The details are in the daemon's log, under the incident number.
    assert error["data"]["incident"] in daemon.log_text()


# -- the connection limit ----------------------------------------------------------------


def admitted(daemon: DaemonProcess, request_id: Any) -> Raw:
    """A connection the daemon serves, retried while closed ones are still counted."""
    deadline = time.monotonic() + 10
    while True:
        raw = Raw(daemon.socket)
        try:
            raw.request("server.status", request_id=request_id)
            reply = raw.message()
        except (AssertionError, OSError):
            reply = None
        if reply is not None and "result" in reply:
            assert reply["id"] == request_id
            return raw
        raw.close()
        if reply is not None:
            assert_error(reply, UNAVAILABLE, "too many connections")
        assert time.monotonic() < deadline, "closed connections never freed their places"
        time.sleep(0.02)


def test_connection_limit(make_daemon: Any) -> None:
    limited: DaemonProcess = make_daemon(name="limited")
    limited.config_file().write_text("[limits]\nmax_connections = 4\n")
    limited.start()
    clients = [admitted(limited, i) for i in range(4)]
    try:
        with Raw(limited.socket) as fifth:
            replies = fifth.until_eof()
        assert len(replies) == 1
        assert_error(replies[0], UNAVAILABLE, "too many connections (limit 4)")
        for i, client in enumerate(clients):  # the others are unaffected
            client.request("server.status", request_id=f"again-{i}")
            assert client.message()["id"] == f"again-{i}"
        clients.pop().close()
        clients.append(admitted(limited, "new"))  # its place is given to a new client
    finally:
        for client in clients:
            client.close()
    admitted(limited, "alive").close()
