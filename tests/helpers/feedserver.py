"""A real HTTP(S) server on 127.0.0.1 that serves a feed directory and misbehaves on demand.

``FeedServer(root)`` binds an ephemeral port on 127.0.0.1, serves ``root`` with HTTP/1.1
keep-alive (bodies go out with ``sendfile``), and is ready when the context manager's
``__enter__`` returns: the socket listens before the serving thread starts and a first
request is made to prove it answers. Per path it can be told to answer 404 or 500, reset the
connection half-way through the body, trickle the body one byte at a time forever, redirect
to another URL, or serve other bytes than the file on disk. It counts requests per path so a
test can assert that a re-sync fetched no package.

The misbehaviours are the ones a yum importer meets in the field; they are implemented
honestly on a socket (a reset is a TCP RST via ``SO_LINGER`` 0, a trickle really trickles),
not simulated in the client.
"""

from __future__ import annotations

import base64
import collections
import http.client
import http.server
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Behaviours a path can be given.
NOT_FOUND = "404"
SERVER_ERROR = "500"
RESET = "reset"
TRICKLE = "trickle"
STALL = "stall"


@dataclass(frozen=True)
class Redirect:
    """Answer with a 302 to ``location``."""

    location: str
    status: int = 302


@dataclass(frozen=True)
class Body:
    """Serve ``data`` instead of the file on disk (with a matching Content-Length)."""

    data: bytes


@dataclass
class Failing:
    """Answer the next ``times`` requests with ``behaviour`` (500 by default), then serve."""

    times: int
    behaviour: str = SERVER_ERROR


Behaviour = str | Redirect | Body | Failing


@dataclass(frozen=True)
class TLSFiles:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ClientCA:
    """A test CA, and a client certificate it signed (``client``) for the server's
    readiness probe and for the client under test."""

    ca: Path
    client: TLSFiles


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_client_ca(directory: Path) -> ClientCA:
    """Generate a test CA and a client certificate signed by it with the ``openssl`` CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    cert, key, csr = directory / "client.pem", directory / "client-key.pem", directory / "c.csr"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=coordd test CA",
             "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    _openssl("req", "-new", *ec, "-subj", "/CN=coordd test client",
             "-keyout", str(key), "-out", str(csr))  # fmt: skip
    ext = directory / "client.ext"
    ext.write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return ClientCA(ca=ca, client=TLSFiles(cert=cert, key=key))


def make_self_signed(directory: Path) -> TLSFiles:
    """Generate a self-signed certificate for IP 127.0.0.1 with the ``openssl`` CLI."""
    cert = directory / "cert.pem"
    key = directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return TLSFiles(cert=cert, key=key)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    feed: FeedServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (a cancelled sync, a reset we caused) are part of the job.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes: without TCP_NODELAY, Nagle's algorithm
        # and the client's delayed ACK add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, *, head: bool) -> None:
        feed = self.server.feed
        raw_path = urllib.parse.urlsplit(self.path).path
        rel = urllib.parse.unquote(raw_path).lstrip("/")
        feed._count(rel)
        if feed.auth is not None and rel != "__ready__":
            expected = "Basic " + base64.b64encode(":".join(feed.auth).encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="feed"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        behaviour = feed.behaviours.get(rel)
        if isinstance(behaviour, Failing):
            with feed._lock:
                failing = behaviour.times > 0
                behaviour.times -= failing
            behaviour = behaviour.behaviour if failing else None
        if behaviour == NOT_FOUND:
            self._status(404)
            return
        if behaviour == SERVER_ERROR:
            self._status(500)
            return
        if isinstance(behaviour, Redirect):
            self.send_response(behaviour.status)
            self.send_header("Location", behaviour.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if isinstance(behaviour, Body):
            self._headers(len(behaviour.data))
            if not head:
                self.wfile.write(behaviour.data)
            return
        target = (feed.root / rel).resolve()
        if not target.is_relative_to(feed.root) or not target.is_file():
            self._status(404)
            return
        size = target.stat().st_size
        if behaviour == RESET:
            self._headers(size)
            with target.open("rb") as f:
                self.wfile.write(f.read(size // 2))
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if behaviour in (TRICKLE, STALL):
            self._headers(size)
            self.wfile.flush()
            with target.open("rb") as f:
                while not feed.stopping.is_set():
                    byte = f.read(1) if behaviour == TRICKLE else b""
                    try:
                        if byte:
                            self.wfile.write(byte)
                            self.wfile.flush()
                    except OSError:
                        break
                    feed.stopping.wait(feed.trickle_interval)
            self.close_connection = True
            return
        self._headers(size)
        if head:
            return
        with target.open("rb") as f:
            self.wfile.flush()
            if isinstance(self.connection, ssl.SSLSocket):
                while chunk := f.read(1 << 20):
                    self.wfile.write(chunk)
            else:
                self.connection.sendfile(f)

    def _headers(self, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _status(self, code: int) -> None:
        body = f"{code}\n".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FeedServer:
    """Serve ``root`` on 127.0.0.1:<ephemeral> over HTTP, or HTTPS when ``tls`` is given.

    With ``auth`` (user, password), every request must carry those basic credentials (401
    otherwise); with ``client_ca`` (and ``tls``), every TLS client must present a
    certificate that CA signed.
    """

    def __init__(
        self,
        root: Path,
        *,
        tls: TLSFiles | None = None,
        trickle_interval: float = 0.05,
        auth: tuple[str, str] | None = None,
        client_ca: ClientCA | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.tls = tls
        self.auth = auth
        self.client_ca = client_ca
        self.trickle_interval = trickle_interval
        self.behaviours: dict[str, Behaviour] = {}
        self.requests: collections.Counter[str] = collections.Counter()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- configuration ------------------------------------------------------------------------

    def misbehave(self, path: str, behaviour: Behaviour) -> None:
        """Make requests for ``path`` (relative to the root, no leading slash) misbehave."""
        self.behaviours[path] = behaviour

    def behave(self) -> None:
        """Forget every misbehaviour."""
        self.behaviours.clear()

    def _count(self, rel: str) -> None:
        with self._lock:
            self.requests[rel] += 1

    def count(self, suffix: str = "") -> int:
        """Requests so far for paths ending with ``suffix`` (all requests by default)."""
        with self._lock:
            return sum(n for path, n in self.requests.items() if path.endswith(suffix))

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    @property
    def url(self) -> str:
        """The base URL of the served root, with a trailing slash."""
        assert self._server is not None, "server not started"
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}/"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FeedServer:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.feed = self
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls.cert, self.tls.key)
            if self.client_ca is not None:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(self.client_ca.ca)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        assert self._server is not None
        port = self._server.server_address[1]
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.tls is not None:
                    context = ssl.create_default_context(cafile=str(self.tls.cert))
                    if self.client_ca is not None:
                        client = self.client_ca.client
                        context.load_cert_chain(client.cert, client.key)
                    conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                        "127.0.0.1", port, timeout=5, context=context
                    )
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("HEAD", "/__ready__")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.reset_counts()

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FeedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """Serve a directory until stdin closes; print the base URL first (used by bench/)."""
    import sys

    with FeedServer(Path(sys.argv[1])) as server:
        print(server.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
