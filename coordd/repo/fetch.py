"""Fetch a URL into a new file, verifying size and checksum while the bytes stream.

``Fetcher`` is the base: it opens the destination, caps the body, hashes it and reports
progress as chunks arrive, then checks the size and digest; it retries a transfer that
failed in a way another attempt may cure (a connection error, a 5xx), a bounded number of
times with a growing, jittered delay. A subclass per URL scheme only moves bytes;
``FETCHERS`` maps each scheme to its class and ``fetcher_for`` picks one (as pulpcore's
``download/factory.py`` does). The HTTP library (aiohttp) is used only inside
``HttpFetcher``.

Transport defences (HTTP): each body must keep a minimum average rate after a grace
period (a body trickling one byte at a time never trips a read timeout), a body with no
byte for ``stall_timeout`` fails, bodies larger than declared are cut off at once, redirects
are followed here (never by the library), a bounded number of times, and those from https
to http (or to another scheme) are refused; a ``Content-Encoding`` nobody asked for is
refused. Redirects to other hosts are followed: mirrors and CDNs use them, and what arrives
is still checked; basic credentials are not sent along to them.

Secrets (the password, the proxy's userinfo, the client key's path) never appear in the
messages raised here.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import os
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final
from urllib.parse import unquote, urljoin, urlsplit
from urllib.request import url2pathname

import aiohttp
import anyio
import anyio.from_thread
import anyio.to_thread

from coordd.api.errors import OperationFailed

_READ_CHUNK = 1 << 20
#: How ``fetch`` creates its file: new, never over an existing one.
_CREATE: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

log = logging.getLogger("coordd.fetch")


class DownloadError(Exception):
    """One transfer failed; ``status`` is the HTTP status when there was one.

    ``retryable`` marks the failures another attempt may cure: the connection failed or
    broke, or the server answered 5xx. A 4xx, a body too slow, too large or not matching its
    checksum is not retried.
    """

    def __init__(self, message: str, status: int | None = None, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class Transport:
    """How to reach the server, and the bounds of one transfer."""

    connections: int = 8  # for transfers that do not ask for a connection of their own
    tls_verify: bool = True
    ca_file: str | None = None
    proxy: str | None = None  # may carry the proxy's credentials as userinfo
    client_cert: str | None = None
    client_key: str | None = None
    username: str | None = None
    password: str | None = None
    auth_url: str | None = None  # basic credentials go only to this URL's scheme and host
    connect_timeout: float = 30.0
    stall_timeout: float = 60.0  # no byte at all for this long
    min_rate: float = 1024.0  # bytes/s, averaged from the start of a body…
    grace: float = 30.0  # …checked once this many seconds have passed
    max_redirects: int = 5
    retries: int = 3  # after a connection error or a 5xx; never after a 4xx or a bad body
    retry_delay: float = 0.5  # seconds before the first retry, doubled for each next one


class Sink:
    """Where a body goes: the file, the digests and the progress callback, up to a limit."""

    __slots__ = ("_hash", "_on_bytes", "_sha256", "_write", "limit", "received")

    def __init__(
        self,
        out: IO[bytes],
        hasher: Any,
        limit: int,
        on_bytes: Callable[[int], None] | None,
        sha256: Any = None,
    ) -> None:
        self._write = out.write
        self._hash = hasher.update if hasher is not None else None
        self._sha256 = sha256.update if sha256 is not None else None
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
        if self._sha256 is not None:
            self._sha256(chunk)
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
        on_retry: Callable[[str], None] | None = None,
        own_connection: bool = False,
        retries: int | None = None,
    ) -> int:
        """Write the body at ``url`` into the new file ``dest`` (see ``fetch_into``); return
        the bytes received."""
        # In a worker thread: creating a file can take a millisecond or more (measured on
        # ext4 under load), which would hold the event loop.
        fd = await anyio.to_thread.run_sync(os.open, dest, _CREATE, 0o644)
        with os.fdopen(fd, "wb") as out:
            received, _sha256 = await self.fetch_into(
                url,
                out,
                what=what,
                size=size,
                checksum=checksum,
                cap=cap,
                on_bytes=on_bytes,
                on_retry=on_retry,
                own_connection=own_connection,
                retries=retries,
            )
        return received

    async def fetch_into(
        self,
        url: str,
        out: IO[bytes],
        *,
        what: str,
        size: int | None,
        checksum: tuple[str, str] | None,
        cap: int,
        on_bytes: Callable[[int], None] | None = None,
        on_retry: Callable[[str], None] | None = None,
        own_connection: bool = False,
        retries: int | None = None,
        sha256: bool = False,
    ) -> tuple[int, str | None]:
        """Write the body at ``url`` into the empty file ``out``; verify size and checksum.

        ``size`` (when known) is also the cap, else ``cap``; ``checksum`` is
        ``(hashlib name, hex digest)``. ``own_connection`` asks for a connection no other
        transfer uses meanwhile (parallel content downloads). A failure another attempt may
        cure (``DownloadError.retryable``) is retried up to ``retries`` (by default
        ``transport.retries``) times after a growing, jittered delay, into ``out`` emptied;
        ``on_retry`` hears of each retry, and ``on_bytes`` is given back (negative) what the
        failed attempt reported. Returns the bytes received and, with ``sha256``, the body's
        sha256 (computed while it streams, beside the checksum the caller declared); raises
        ``DownloadError``.
        """
        limit = size if size is not None else cap
        attempt = 0
        retries = self.transport.retries if retries is None else retries
        both = sha256 and (checksum is None or checksum[0] != "sha256")
        while True:
            hasher = hashlib.new(checksum[0]) if checksum else None
            extra = hashlib.sha256() if both else None
            sink = Sink(out, hasher, limit, on_bytes, extra)
            try:
                received = await self._transfer(url, sink, size, what, own_connection)
                break
            except DownloadError as exc:
                if not exc.retryable or attempt >= retries:
                    raise
                error = exc
            # Start again from nothing: take back the bytes reported, wait, empty the file.
            if on_bytes is not None and sink.received:
                on_bytes(-min(sink.received, limit))
            delay = self.transport.retry_delay * 2**attempt
            attempt += 1
            if on_retry is not None:
                on_retry(str(error))
            await anyio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not secrets
            out.seek(0)
            out.truncate()
        if size is not None and received != size:
            raise DownloadError(f"{what}: got {received} bytes, metadata says {size}")
        digest = hasher.hexdigest() if hasher is not None else None
        if checksum is not None and digest != checksum[1]:
            raise DownloadError(
                f"{what}: checksum mismatch: expected {checksum[0]} {checksum[1]}, got {digest}"
            )
        if not sha256:
            return received, None
        return received, extra.hexdigest() if extra is not None else digest

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


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.rpartition("@")[2].lower()


@functools.lru_cache(maxsize=8)
def _cached_ssl_context(
    verify: bool,
    ca_file: str | None,
    client_cert: str | None,
    client_key: str | None,
    _stamps: tuple[int, ...],
) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise OperationFailed(f"cannot load ca_file {ca_file}: {exc}", {"key": "ca_file"}) from exc
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        try:
            context.load_cert_chain(client_cert, client_key)
        except (OSError, ssl.SSLError) as exc:
            # Not the exception's text: it names the key's path, which may be a secret.
            reason = exc.reason if isinstance(exc, ssl.SSLError) else exc.strerror
            raise OperationFailed(
                f"cannot load client_cert {client_cert} with its client_key: {reason}",
                {"key": "client_cert"},
            ) from None
    return context


def _stamp(path: str | None) -> int:
    try:
        return os.stat(path).st_mtime_ns if path else 0
    except OSError:
        return -1  # loading it fails, with a message that says why


def _ssl_context(transport: Transport) -> ssl.SSLContext:
    """The TLS context of ``transport``, built once per version of its files (loading CAs
    costs ~20 ms). Raises ``OperationFailed`` naming the option that is wrong."""
    ca_file = transport.ca_file if transport.tls_verify else None
    stamps = tuple(_stamp(f) for f in (ca_file, transport.client_cert, transport.client_key))
    return _cached_ssl_context(
        transport.tls_verify, ca_file, transport.client_cert, transport.client_key, stamps
    )


_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


class HttpFetcher(Fetcher):
    """http:// and https:// with aiohttp; redirects followed here, one hop at a time.

    One ``ClientSession`` per sync, its connector holding up to ``connections`` keep-alive
    connections (as pulpcore does: ``ThreadedResolver``, no ``force_close``, which exhausted
    ports on large syncs). Bodies are read as they arrive, in pieces of up to 1 MiB, and never
    decompressed: a ``Content-Encoding`` is refused. Basic credentials go only to the scheme
    and host of ``transport.auth_url`` (the feed, or the list of mirrors): never along a
    redirect to another host, nor to the mirrors of another host a metalink names.
    """

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport)
        context: ssl.SSLContext | bool = False
        if transport.tls_verify or transport.client_cert is not None:
            context = _ssl_context(transport)
        self.auth: dict[str, str] | None = None
        self.auth_origin = _origin(transport.auth_url) if transport.auth_url else None
        if transport.username is not None and self.auth_origin is not None:
            self.auth = {"Authorization": _basic(transport.username, transport.password)}
        self.proxy: str | None = None
        self.proxy_headers: dict[str, str] | None = None
        if transport.proxy is not None:
            parts = urlsplit(transport.proxy)
            if parts.username is not None:
                credentials = _basic(unquote(parts.username), unquote(parts.password or ""))
                self.proxy_headers = {"Proxy-Authorization": credentials}
            self.proxy = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        connector = aiohttp.TCPConnector(
            limit=transport.connections,
            limit_per_host=0,
            ssl=context,
            resolver=aiohttp.ThreadedResolver(),
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=None,
                sock_connect=transport.connect_timeout,
                sock_read=transport.stall_timeout,
            ),
            auto_decompress=False,
            trust_env=False,
            headers={"Accept-Encoding": "identity", "User-Agent": "coordd"},
            read_bufsize=_READ_CHUNK,
        )

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.session.close()

    async def _transfer(
        self, url: str, sink: Sink, size: int | None, what: str, own_connection: bool
    ) -> int:
        response = await self._open(url, what)
        try:
            return await self._read(response, url, sink, size, what)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise DownloadError(
                f"{what}: stalled: no data for {self.transport.stall_timeout:g} s from {url}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise DownloadError(
                f"{what}: transfer from {url} failed: {_reason(exc)}", retryable=True
            ) from exc
        finally:
            response.release()

    async def _open(self, url: str, what: str) -> aiohttp.ClientResponse:
        for _ in range(self.transport.max_redirects + 1):
            try:
                response = await self.session.get(
                    url,
                    allow_redirects=False,
                    headers=self.auth if _origin(url) == self.auth_origin else None,
                    proxy=self.proxy,
                    proxy_headers=self.proxy_headers,
                )
            except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                raise DownloadError(
                    f"{what}: timed out fetching {url} ({_reason(exc)})", retryable=True
                ) from exc
            except aiohttp.ClientError as exc:
                raise DownloadError(
                    f"{what}: cannot fetch {url}: {_reason(exc)}", retryable=True
                ) from exc
            status = response.status
            if log.isEnabledFor(logging.DEBUG):
                log.debug("GET %s: %d %s", url, status, response.reason)
            if status in _REDIRECTS:
                location = response.headers.get("Location")
                response.release()
                if not location:
                    raise DownloadError(f"{what}: redirect without Location from {url}")
                target = urljoin(url, location)
                _check_redirect(url, target)
                url = target
                continue
            if status != 200:
                reason = response.reason or ""
                response.release()
                raise DownloadError(
                    f"{what}: HTTP {status} {reason} from {url}", status, retryable=status >= 500
                )
            return response
        raise DownloadError(
            f"{what}: more than {self.transport.max_redirects} redirects from {url}"
        )

    async def _read(
        self, response: aiohttp.ClientResponse, url: str, sink: Sink, size: int | None, what: str
    ) -> int:
        limit = sink.limit
        headers = response.headers
        encoding = headers.get("Content-Encoding", "identity").lower()
        if encoding not in ("identity", ""):
            raise DownloadError(f"{what}: server applied Content-Encoding {encoding} at {url}")
        declared = headers.get("Content-Length")
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
        async for chunk in response.content.iter_chunked(_READ_CHUNK):
            if not write(chunk):
                raise DownloadError(f"{what}: body exceeds {limit} bytes at {url}")
            elapsed = time.monotonic() - start
            if elapsed > grace and sink.received < min_rate * (elapsed - grace):
                raise DownloadError(
                    f"{what}: too slow: {sink.received} bytes in {elapsed:.1f} s from {url} "
                    f"(minimum {min_rate:.0f} B/s after {grace:g} s)"
                )
        return sink.received


def _basic(username: str, password: str | None) -> str:
    """An ``Authorization`` value for basic credentials (RFC 7617, UTF-8)."""
    return "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")


def _reason(exc: BaseException) -> str:
    """An exception as a short reason: its class and message, never its arguments' reprs
    (a connection key names the proxy's credentials)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
]
