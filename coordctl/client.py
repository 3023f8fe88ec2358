"""The client library: the only code that speaks to coordd's socket.

Blocking and small on purpose: a one-shot ``coordctl`` command imports this, ``json`` and
``socket`` and nothing else, so it starts fast. Errors come back as the same classes the daemon
raised (``coordd.api.errors``), rebuilt from their stable codes; notifications that arrive while a
call waits for its reply are kept, in order, for ``next_notification``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coordd.api import address
from coordd.api.errors import CoorddError, ProtocolError, from_json


class NotReachable(CoorddError):
    """The daemon's socket cannot be reached (not running, wrong path, no permission)."""

    code = -32099

    def __init__(self, socket_path: Path, reason: str) -> None:
        super().__init__(
            f"cannot reach coordd at {socket_path}: {reason}. Start it with `coordd` "
            "(or `systemctl start coordd.socket` for the system service), or point "
            "--socket / COORDD_SOCKET at the right socket",
            {"socket": str(socket_path)},
        )
        self.socket_path = socket_path
        self.reason = reason


class TimedOut(ProtocolError):
    """A reply was due and did not come within the client's timeout."""


class Client:
    """A connection to coordd; use as a context manager or call ``close``."""

    def __init__(self, socket_path: Path | str | None = None, timeout: float | None = 60.0):
        self.socket_path = Path(socket_path) if socket_path else address.client_socket_path()
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._next_id = 0
        self.notifications: deque[dict[str, Any]] = deque()

    def connect(self) -> Client:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except FileNotFoundError:
            sock.close()
            raise NotReachable(self.socket_path, "no such socket") from None
        except ConnectionRefusedError:
            sock.close()
            raise NotReachable(self.socket_path, "nothing is listening (stale socket)") from None
        except PermissionError:
            sock.close()
            raise NotReachable(
                self.socket_path, "permission denied (ask to be added to the coordd group)"
            ) from None
        except OSError as exc:
            sock.close()
            raise NotReachable(self.socket_path, exc.strerror or str(exc)) from None
        self._sock = sock
        return self

    def __enter__(self) -> Client:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def fileno(self) -> int:
        assert self._sock is not None
        return self._sock.fileno()

    # -- calls ---------------------------------------------------------------------------

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        fds: Sequence[int] = (),
        **kw: Any,
    ) -> Any:
        """Call ``method`` and return its result; raise the daemon's error class on error.

        ``fds``: open descriptors passed with the request (``SCM_RIGHTS``), for methods that
        read files the caller opened (``repo.upload``); see coordd-api(7).
        """
        if self._sock is None:
            self.connect()
        self._next_id += 1
        request_id = self._next_id
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
        merged = {**(params or {}), **kw}
        if merged:
            message["params"] = merged
        if fds:
            message["fds"] = len(fds)
        self.send(message, fds)
        while True:
            reply = self._receive(None, reply=True)
            if reply is None:
                raise ProtocolError(f"coordd closed the connection during {method}")
            if "method" in reply and "id" not in reply:
                self.notifications.append(reply)
                continue
            if reply.get("id") != request_id:
                if "error" in reply:
                    raise from_json(reply["error"])
                continue
            if "error" in reply:
                raise from_json(reply["error"])
            return reply.get("result")

    def send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        """Send one message; ``fds`` go with its first byte, in one ``sendmsg``."""
        assert self._sock is not None
        data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        try:
            if fds:
                sent = socket.send_fds(self._sock, [data], list(fds))
                data = data[sent:]
            if data:
                self._sock.sendall(data)
        except OSError as exc:
            # The daemon may have refused us and closed (permission, too many
            # connections): its error is then waiting to be read, and is the real answer.
            try:
                refusal = self._receive(0.5)
            except ProtocolError:
                refusal = None
            if refusal is not None and isinstance(refusal.get("error"), dict):
                raise from_json(refusal["error"]) from exc
            raise ProtocolError(f"lost the connection to coordd: {exc}") from exc

    def next_notification(self, timeout: float | None) -> dict[str, Any] | None:
        """The next notification, waiting up to ``timeout`` seconds (``None``: forever)."""
        if self.notifications:
            return self.notifications.popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if deadline is None:
                message = self._receive(wait=None)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                message = self._receive(wait=remaining)
            if message is None:
                return None
            if "method" in message and "id" not in message:
                return message

    def _receive(self, wait: float | None, *, reply: bool = False) -> dict[str, Any] | None:
        """One message, or ``None`` once ``wait`` seconds passed (``None``: wait forever).

        ``reply``: a reply is due; wait the client's own timeout and raise ``ProtocolError``
        when it passes. Raises ``ProtocolError`` if the daemon hung up.
        """
        assert self._sock is not None
        limit = self.timeout if reply else wait
        deadline = None if limit is None else time.monotonic() + limit
        while b"\n" not in self._buffer:
            # settimeout(0) would make the socket non-blocking: keep a positive floor.
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                if not reply:
                    return None
                raise TimedOut("coordd did not answer in time") from None
            except OSError as exc:
                raise ProtocolError(f"lost the connection to coordd: {exc}") from exc
            if not chunk:
                raise ProtocolError("coordd closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message = json.loads(line)
        if not isinstance(message, dict):
            raise ProtocolError("coordd sent something that is not a JSON-RPC message")
        return message


def connect(socket_path: Path | str | None = None, timeout: float | None = 60.0) -> Client:
    """A connected ``Client`` (raises ``NotReachable`` with the socket path)."""
    return Client(socket_path or os.environ.get(address.SOCKET_ENV) or None, timeout).connect()
