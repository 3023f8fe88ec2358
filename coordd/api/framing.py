"""The wire format: one JSON message per line, checked strictly before dispatch.

Pure functions and one small class, no I/O. The server feeds bytes in as they arrive and gets
back complete frames; each frame is decoded into a request object or a precise JSON-RPC error.

Why so strict: a frame is checked here, once, so that nothing behind it (jsonrpcserver, the
methods, SQLite) ever sees input it could choke on. Python's ``json`` alone would accept NaN
and Infinity, keep the last of duplicate keys, decode lone surrogates that SQLite then refuses,
and parse integers of any size; each of those is refused here with its own message.
jsonrpcserver answers a batch with one invalid member with a single error for the whole
batch; ``split_batch`` validates members one by one as JSON-RPC 2.0 says.

Limits (all configurable): the frame size (bytes up to the newline), the batch size, the
nesting depth (by Python's recursion limit), integer magnitude (signed 64-bit).
"""

from __future__ import annotations

import json
import re
from typing import Any

from coordd.api.errors import INVALID_REQUEST, PARSE_ERROR

INT_LIMIT = 2**63
#: Descriptors one request may pass (``"fds"``, see ``coordd.api.fdpassing``).
MAX_FDS = 64
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")


class FrameTooLong(Exception):
    """A line grew past the frame limit before its newline arrived."""


class LineFramer:
    """Splits a byte stream into newline-terminated frames of bounded size."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that are not yet part of a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete frames, without their newlines."""
        self._buffer += data
        if b"\n" not in data:
            if len(self._buffer) > self.max_frame:
                raise FrameTooLong(len(self._buffer))
            return []
        # One split in C, not a search per frame: a 64 KiB read holds a thousand small
        # requests, and cutting them one by one in Python took milliseconds of the loop.
        received = bytes(self._buffer)
        frames = received.split(b"\n")
        self._buffer = bytearray(frames.pop())
        longest = max(map(len, frames))
        if longest > self.max_frame:
            raise FrameTooLong(longest)
        if len(self._buffer) > self.max_frame:
            raise FrameTooLong(len(self._buffer))
        if b"\r" in received:
            frames = [frame.rstrip(b"\r") for frame in frames]
        return frames


class BadMessage(Exception):
    """A frame that is not a well-formed JSON-RPC message; carries the error to send."""

    def __init__(self, code: int, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id

    def response(self) -> dict[str, Any]:
        return error_response(self.request_id, self.code, self.message)


def error_response(request_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "error": error, "id": request_id}


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _checked_int(text: str) -> int:
    value = int(text)
    if not -INT_LIMIT <= value < INT_LIMIT:
        raise ValueError(f"integer {text[:20]}{'…' if len(text) > 20 else ''} is out of range")
    return value


def _checked_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _check_text(value: Any) -> None:
    """Refuse strings with lone surrogates anywhere in a decoded message."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


_DECODER = json.JSONDecoder(
    parse_constant=_no_constants,
    parse_int=_checked_int,
    parse_float=_checked_float,
    object_pairs_hook=_unique_keys,
)


def decode(frame: bytes) -> Any:
    """Strict JSON decoding of one frame; raises ``BadMessage`` (parse error) on refusal."""
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadMessage(PARSE_ERROR, f"parse error: invalid UTF-8 at byte {exc.start}") from exc
    try:
        value = _DECODER.decode(text)
    except RecursionError as exc:
        raise BadMessage(PARSE_ERROR, "parse error: nesting too deep") from exc
    except json.JSONDecodeError as exc:
        raise BadMessage(
            PARSE_ERROR, f"parse error: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except ValueError as exc:
        raise BadMessage(PARSE_ERROR, f"parse error: {exc}") from exc
    if _SURROGATE_ESCAPE.search(frame):
        try:
            _check_text(value)
        except UnicodeEncodeError as exc:
            raise BadMessage(PARSE_ERROR, "parse error: lone surrogate in a string") from exc
    return value


def check_request(message: Any) -> dict[str, Any]:
    """Validate one request object's envelope (JSON-RPC 2.0 §4); raise ``BadMessage``."""
    if not isinstance(message, dict):
        raise BadMessage(INVALID_REQUEST, "invalid request: expected an object")
    request_id = message.get("id")
    id_ok = valid_id(request_id)
    if isinstance(request_id, float):
        id_ok = request_id.is_integer()
    reply_id = request_id if id_ok else None
    if message.get("jsonrpc") != "2.0":
        raise BadMessage(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"', reply_id)
    if not id_ok:
        raise BadMessage(
            INVALID_REQUEST, "invalid request: id must be a string, an integer or null"
        )
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise BadMessage(
            INVALID_REQUEST, 'invalid request: "method" must be a non-empty string', reply_id
        )
    if "params" in message and not isinstance(message["params"], dict | list):
        raise BadMessage(
            INVALID_REQUEST, 'invalid request: "params" must be an object or an array', reply_id
        )
    fds = message.get("fds")
    if "fds" in message and (
        not isinstance(fds, int) or isinstance(fds, bool) or not 1 <= fds <= MAX_FDS
    ):
        raise BadMessage(
            INVALID_REQUEST,
            f'invalid request: "fds" must be an integer from 1 to {MAX_FDS}',
            reply_id,
        )
    extra = set(message) - {"jsonrpc", "method", "params", "id", "fds"}
    if extra:
        raise BadMessage(
            INVALID_REQUEST,
            f"invalid request: unexpected member {sorted(extra)[0]!r}",
            reply_id,
        )
    return message


def is_notification(message: dict[str, Any]) -> bool:
    return "id" not in message


def has_id(member: Any) -> bool:
    """Whether a member of a batch, checked or not, is a request that awaits a reply."""
    return isinstance(member, dict) and "id" in member


def valid_id(request_id: Any) -> bool:
    """Whether ``request_id`` may be a reply's id: a string, an integer or null."""
    return request_id is None or (
        isinstance(request_id, str | int) and not isinstance(request_id, bool)
    )


def declared_fds(message: Any) -> int:
    """How many descriptors a decoded single request says it passes (0 when it says
    nothing valid: ``check_request`` refuses it later)."""
    if not isinstance(message, dict):
        return 0
    fds = message.get("fds")
    if isinstance(fds, int) and not isinstance(fds, bool) and 1 <= fds <= MAX_FDS:
        return fds
    return 0


def split_batch(value: Any, max_batch: int) -> tuple[bool, list[Any]]:
    """``(is_batch, members)``; an empty or oversize batch raises ``BadMessage``."""
    if not isinstance(value, list):
        return False, [value]
    if not value:
        raise BadMessage(INVALID_REQUEST, "invalid request: empty batch")
    if len(value) > max_batch:
        raise BadMessage(
            INVALID_REQUEST, f"invalid request: batch of {len(value)} exceeds {max_batch}"
        )
    return True, value


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(message: Any) -> bytes:
    """One message as a frame: compact JSON and a newline."""
    return _ENCODER.encode(message).encode() + b"\n"
