"""Fetch a URL into a new file, verifying size and checksum while the bytes stream.

``Fetcher`` is the base: it opens the destination, caps the body, hashes it and reports
progress as chunks arrive, then checks the size and digest. A subclass per URL scheme
only moves bytes; ``FETCHERS`` maps each scheme to its class and ``fetcher_for`` picks one
(as pulpcore's ``download/factory.py`` does). The HTTP library is used only inside
``HttpFetcher``.

Transport defences (HTTP): each body must keep a minimum average rate after a grace
period (a body trickling one byte at a time never trips a read timeout), bodies larger
than declared are cut off at once, redirects from https to http (or to another scheme) are
refused, and a ``Content-Encoding`` nobody asked for is refused. Redirects to other hosts
are followed: mirrors and CDNs use them, and what arrives is still checked.
"""

from __future__ import annotations

import functools
import hashlib
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import anyio
import anyio.from_thread
import anyio.to_thread
import httpx

from coordd.api.errors import OperationFailed

_READ_CHUNK = 1 << 20


class DownloadError(Exception):
    """One transfer failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Transport:
    """How to reach the server, and the bounds of one transfer."""

    connections: int = 8  # for transfers that do not ask for a connection of their own
    tls_verify: bool = True
    ca_file: str | None = None
    proxy: str | None = None
    connect_timeout: float = 30.0
    stall_timeout: float = 60.0  # no byte at all for this long
    min_rate: float = 1024.0  # bytes/s, averaged from the start of a body…
    grace: float = 30.0  # …checked once this many seconds have passed
    max_redirects: int = 5


def hash_file(path: Path, algo: str) -> tuple[int, str]:
    """The size and ``algo`` hex digest of the file at ``path``."""
    h = hashlib.new(algo)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


class Sink:
    """Where a body goes: the file, the digest and the progress callback, up to a limit."""

    __slots__ = ("_hash", "_on_bytes", "_write", "limit", "received")

    def __init__(
        self, out: IO[bytes], hasher: Any, limit: int, on_bytes: Callable[[int], None] | None
    ) -> None:
        self._write = out.write
        self._hash = hasher.update if hasher is not None else None
        self._on_bytes = on_bytes
        self.limit = limit
        self.received = 0

    def write(self, chunk: bytes) -> bool:
        """Take one chunk; False, with nothing written, if it takes the body past the limit."""
        self.received += len(chunk)
        if self.received > self.limit:
            return False
        self._write(chunk)
        if self._hash is not None:
            self._hash(chunk)
        if self._on_bytes is not None:
            self._on_bytes(len(chunk))
        return True


class Fetcher:
    """Fetch URLs of one scheme into files; the base checks size and digest."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def fetch(
        self,
        url: str,
        dest: Path,
        *,
        what: str,
        size: int | None,
        checksum: tuple[str, str] | None,
        cap: int,
        on_bytes: Callable[[int], None] | None = None,
        own_connection: bool = False,
    ) -> int:
        """Write the body at ``url`` into the new file ``dest``; verify size and checksum.

        ``size`` (when known) is also the cap, else ``cap``; ``checksum`` is
        ``(hashlib name, hex digest)``. ``own_connection`` asks for a connection no other
        transfer uses meanwhile (parallel content downloads). Returns the bytes received;
        raises ``DownloadError``.
        """
        hasher = hashlib.new(checksum[0]) if checksum else None
        limit = size if size is not None else cap
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as out:
            sink = Sink(out, hasher, limit, on_bytes)
            received = await self._transfer(url, sink, size, what, own_connection)
        if size is not None and received != size:
            raise DownloadError(f"{what}: got {received} bytes, metadata says {size}")
        if hasher is not None and checksum is not None:
            digest = hasher.hexdigest()
            if digest != checksum[1]:
                raise DownloadError(
                    f"{what}: checksum mismatch: expected {checksum[0]} {checksum[1]}, got {digest}"
                )
        return received

    async def _transfer(
        self, url: str, sink: Sink, size: int | None, what: str, own_connection: bool
    ) -> int:
        """Move the body at ``url`` into ``sink``; return the bytes received."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections; safe to call more than once."""


def _check_redirect(source: str, target: str) -> None:
    old, new = urlsplit(source).scheme, urlsplit(target).scheme
    if new not in ("http", "https"):
        raise DownloadError(f"refusing redirect from {source} to non-HTTP URL {target}")
    if old == "https" and new == "http":
        raise DownloadError(f"refusing redirect from https to http: {source} -> {target}")


@functools.lru_cache(maxsize=8)
def _cached_ssl_context(ca_file: str | None, _stamp: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying TLS context, built once per CA file version (loading CAs costs ~20 ms)."""
    stamp = os.stat(ca_file).st_mtime_ns if ca_file else 0
    return _cached_ssl_context(ca_file, stamp)


class HttpFetcher(Fetcher):
    """http:// and https:// with httpx; redirects followed here, one hop at a time.

    Transfers with ``own_connection`` borrow one of several clients of one connection
    each, rather than sharing a pool of that many connections: httpcore re-examines every
    pooled connection (a poll and a getpeername each) whenever it hands one out, which cost
    a fifth of the CPU of a sync of small packages.
    """

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport)
        self.verify: ssl.SSLContext | bool = False
        self._idle: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []
        if transport.tls_verify:
            try:
                self.verify = _ssl_context(transport.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise OperationFailed(
                    f"cannot load ca_file {transport.ca_file}: {exc}", {"key": "ca_file"}
                ) from exc
        self.client = self._new_client(transport.connections)

    def _new_client(self, connections: int) -> httpx.AsyncClient:
        transport = self.transport
        client = httpx.AsyncClient(
            verify=self.verify,
            proxy=transport.proxy,
            trust_env=False,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            timeout=httpx.Timeout(
                connect=transport.connect_timeout,
                read=transport.stall_timeout,
                write=transport.stall_timeout,
                pool=None,
            ),
            headers={"Accept-Encoding": "identity", "User-Agent": "coordd"},
        )
        self._all.append(client)
        return client

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            for client in self._all:
                await client.aclose()

    async def _transfer(
        self, url: str, sink: Sink, size: int | None, what: str, own_connection: bool
    ) -> int:
        if not own_connection:
            return await self._download(self.client, url, sink, size, what)
        client = self._idle.pop() if self._idle else self._new_client(1)
        try:
            return await self._download(client, url, sink, size, what)
        finally:
            self._idle.append(client)

    async def _open(self, client: httpx.AsyncClient, url: str, what: str) -> httpx.Response:
        for _ in range(self.transport.max_redirects + 1):
            try:
                response = await client.send(client.build_request("GET", url), stream=True)
            except httpx.TimeoutException as exc:
                raise DownloadError(f"{what}: timed out fetching {url} ({exc!r})") from exc
            except httpx.HTTPError as exc:
                raise DownloadError(f"{what}: cannot fetch {url}: {exc!r}") from exc
            if response.is_redirect:
                location = response.headers.get("location")
                await response.aclose()
                if not location:
                    raise DownloadError(f"{what}: redirect without Location from {url}")
                target = urljoin(url, location)
                _check_redirect(url, target)
                url = target
                continue
            if response.status_code != 200:
                status = response.status_code
                await response.aclose()
                raise DownloadError(
                    f"{what}: HTTP {status} {response.reason_phrase} from {url}", status
                )
            return response
        raise DownloadError(
            f"{what}: more than {self.transport.max_redirects} redirects from {url}"
        )

    async def _download(
        self, client: httpx.AsyncClient, url: str, sink: Sink, size: int | None, what: str
    ) -> int:
        response = await self._open(client, url, what)
        limit = sink.limit
        try:
            encoding = response.headers.get("content-encoding", "identity").lower()
            if encoding not in ("identity", ""):
                raise DownloadError(f"{what}: server applied Content-Encoding {encoding} at {url}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit():
                if size is not None and int(declared) != size:
                    raise DownloadError(
                        f"{what}: server announces {declared} bytes, metadata says {size}"
                    )
                if int(declared) > limit:
                    raise DownloadError(f"{what}: server announces {declared} bytes, over {limit}")
            min_rate, grace = self.transport.min_rate, self.transport.grace
            start = time.monotonic()
            write = sink.write
            async for chunk in response.aiter_raw():
                if not write(chunk):
                    raise DownloadError(f"{what}: body exceeds {limit} bytes at {url}")
                elapsed = time.monotonic() - start
                if elapsed > grace and sink.received < min_rate * (elapsed - grace):
                    raise DownloadError(
                        f"{what}: too slow: {sink.received} bytes in {elapsed:.1f} s from {url} "
                        f"(minimum {min_rate:.0f} B/s after {grace:g} s)"
                    )
            return sink.received
        except httpx.TimeoutException as exc:
            raise DownloadError(
                f"{what}: stalled: no data for {self.transport.stall_timeout:g} s from {url}"
            ) from exc
        except httpx.HTTPError as exc:
            raise DownloadError(f"{what}: transfer from {url} failed: {exc!r}") from exc
        finally:
            with anyio.CancelScope(shield=True):
                await response.aclose()


class FileFetcher(Fetcher):
    """file:// URLs: a local copy in a worker thread, with the same checks."""

    async def _transfer(
        self, url: str, sink: Sink, size: int | None, what: str, own_connection: bool
    ) -> int:
        return await anyio.to_thread.run_sync(self._copy, url, sink, what)

    def _copy(self, url: str, sink: Sink, what: str) -> int:
        path = Path(url2pathname(urlsplit(url).path))
        try:
            with open(path, "rb") as f:
                while True:
                    anyio.from_thread.check_cancelled()
                    chunk = f.read(_READ_CHUNK)
                    if not chunk:
                        break
                    if not sink.write(chunk):
                        raise DownloadError(f"{what}: {path} exceeds {sink.limit} bytes")
        except FileNotFoundError as exc:
            raise DownloadError(f"{what}: {path} not found", 404) from exc
        except IsADirectoryError as exc:
            raise DownloadError(f"{what}: {path} is a directory", 404) from exc
        except OSError as exc:
            raise DownloadError(f"{what}: cannot read {path}: {exc}") from exc
        return sink.received


#: URL scheme → the class that fetches it.
FETCHERS: Final[dict[str, type[Fetcher]]] = {
    "http": HttpFetcher,
    "https": HttpFetcher,
    "file": FileFetcher,
}


def fetcher_for(url: str, transport: Transport) -> Fetcher:
    """A fetcher for ``url``'s scheme (and every URL of that scheme)."""
    scheme = urlsplit(url).scheme
    cls = FETCHERS.get(scheme)
    if cls is None:
        raise DownloadError(f"no fetcher for {scheme!r} URLs: {url}")
    return cls(transport)


__all__ = [
    "FETCHERS",
    "DownloadError",
    "Fetcher",
    "FileFetcher",
    "HttpFetcher",
    "Sink",
    "Transport",
    "fetcher_for",
    "hash_file",
]
