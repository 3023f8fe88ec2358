"""The errors coordd answers with, shared by the daemon and its clients.

Every error a request can meet is a subclass of ``CoorddError`` with a stable JSON-RPC code;
the client raises the same class back from the code, so a script catches ``Conflict`` on both
sides of the socket. Names say what the caller can do about it::

    CoorddError                  -32000  base; never raised as such over the wire
    ├── InvalidRequest           -32602  the parameters are wrong: fix the request
    ├── Conflict                 -32001  rejected: a queued task makes it impossible
    ├── NotFound                 -32002  no such task or repository
    ├── PermissionDenied         -32003  the caller's uid/groups may not do this
    ├── Unavailable              -32004  shutting down or over a limit: try again later
    ├── InvalidState             -32005  the task is not in a state that allows this
    └── OperationFailed          -32006  the operation itself failed (task error)

Protocol-level errors (parse error -32700, invalid request -32600, method not found -32601,
internal error -32603) are produced by the framing and dispatch layer and are not classes
here; the client maps them to ``ProtocolError``.
"""

from __future__ import annotations

from typing import Any, ClassVar

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


class CoorddError(Exception):
    """Base of every error coordd reports; ``data`` is JSON and goes over the wire."""

    code: ClassVar[int] = -32000

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class InvalidRequest(CoorddError):
    """The request's parameters are missing, of the wrong type or out of range."""

    code = INVALID_PARAMS


class Conflict(CoorddError):
    """The task was rejected: it could never run safely. ``data`` lists the conflicts."""

    code = -32001


class NotFound(CoorddError):
    """The task, repository or resource named does not exist."""

    code = -32002


class PermissionDenied(CoorddError):
    """The caller's credentials do not allow this method."""

    code = -32003


class Unavailable(CoorddError):
    """The daemon cannot take this now (shutting down, a limit reached)."""

    code = -32004


class InvalidState(CoorddError):
    """The task is in a state that does not allow the request (e.g. cancel a finished task)."""

    code = -32005


class OperationFailed(CoorddError):
    """The operation ran and failed; the task ends in ``error`` with this message."""

    code = -32006


class ProtocolError(CoorddError):
    """The peer broke JSON-RPC (bad frame, unknown method); raised by clients only."""

    code = INTERNAL_ERROR


BY_CODE: dict[int, type[CoorddError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        Conflict,
        NotFound,
        PermissionDenied,
        Unavailable,
        InvalidState,
        OperationFailed,
    )
}


def from_json(error: dict[str, Any]) -> CoorddError:
    """Rebuild the error class a JSON-RPC error object stands for."""
    code = error.get("code")
    message = str(error.get("message", "unknown error"))
    cls = BY_CODE.get(code, ProtocolError) if isinstance(code, int) else ProtocolError
    exc = cls(message, error.get("data"))
    if cls is ProtocolError and isinstance(code, int):
        exc.code = code  # type: ignore[misc]
    return exc
