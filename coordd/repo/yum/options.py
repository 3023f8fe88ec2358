"""A repository's importer options, the bounds of a sync, and the checksum policy.

``ImporterOptions`` is what a user configures (validated on construction, URLs included);
``Limits`` are the bounds that keep a hostile feed from holding a sync or the disk.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from coordd.api.errors import InvalidRequest, OperationFailed
from coordd.repo.fetch import Transport
from coordd.repo.signing import check_public_key
from coordd.repo.yum.errors import MetadataError

STRONG_CHECKSUMS: Final = frozenset({"sha256", "sha384", "sha512"})
WEAK_CHECKSUMS: Final = {"sha1": "sha1", "sha": "sha1", "md5": "md5", "sha224": "sha224"}


def _check_url(
    value: str, key: str, schemes: tuple[str, ...], *, query: bool = False, max_len: int = 2048
) -> None:
    """Refuse (``InvalidRequest`` naming ``key``) a URL that is too long, does not parse, or
    names a scheme not in ``schemes``, no valid host, or a port outside 1-65535."""

    def invalid(problem: str) -> InvalidRequest:
        return InvalidRequest(f"{key}: {problem}", {"key": key})

    if len(value) > max_len:
        raise invalid(f"URL is longer than {max_len} characters")
    if any(ord(c) < 33 or ord(c) == 127 for c in value):
        raise invalid("URL contains whitespace or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
        hostname = parts.hostname
    except ValueError as exc:  # an unclosed "[", a port that is not a number or too big
        raise invalid(f"URL cannot be parsed: {exc}") from None
    if parts.scheme not in schemes:
        raise invalid(f"URL scheme must be one of {', '.join(schemes)}, not {parts.scheme!r}")
    if parts.fragment or (parts.query and not query):
        raise invalid("URL must not have " + ("a fragment" if query else "a query or fragment"))
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise invalid("file URL must be file:///absolute/path")
        return
    if not hostname:
        raise invalid("URL has no host")
    if port is not None and not 1 <= port <= 65535:
        raise invalid(f"URL port must be from 1 to 65535, not {port}")
    if parts.netloc.rsplit("@", 1)[-1].startswith("["):
        try:
            ipaddress.IPv6Address(hostname)
        except ValueError:
            raise invalid(f"URL host [{hostname}] is not an IPv6 address") from None
        return
    try:
        ascii_host = hostname.encode("idna").decode("ascii")
    except UnicodeError:
        raise invalid(f"URL host {hostname!r} is not a valid host name") from None
    label = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"  # "_": some internal names have it
    if len(ascii_host) > 253 or not re.fullmatch(rf"{label}(?:\.{label})*\.?", ascii_host):
        raise invalid(f"URL host {hostname!r} is not a valid host name or address")


def without_userinfo(url: str) -> str:
    """``url`` without the ``user:password@`` part of its authority, if it has one."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


#: The options that name where a sync reads from: exactly one may be set.
SOURCES: Final = ("feed", "metalink", "mirrorlist")
#: Options whose values are secrets, shown only as set or not set.
SECRET_OPTIONS: Final = ("password", "client_key")
#: Options that are URLs, shown without their userinfo.
URL_OPTIONS: Final = (*SOURCES, "proxy")


@dataclass(frozen=True)
class ImporterOptions:
    """How a repository syncs from its feed. Validated on construction.

    The source is ``feed`` (a base URL), or ``metalink`` or ``mirrorlist`` (the URL of a
    list of mirrors, query string allowed, as distributions publish them). Credentials
    given as a source URL's userinfo are moved into ``username`` and ``password``, so that
    no URL stored or used afterwards carries them.
    """

    feed: str | None = None
    metalink: str | None = None
    mirrorlist: str | None = None
    only_newest: bool = False
    # Kept for compatibility: a file enters the pool, which every repository shares, only
    # when its size and checksum match the metadata, whatever this says.
    verify_checksum: bool = True
    parallel_downloads: int = 8
    tls_verify: bool = True
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    username: str | None = None
    password: str | None = None
    proxy: str | None = None
    allow_weak_checksums: bool = False
    # An ASCII-armored OpenPGP public key (the text, not a path: the daemon opens no file a
    # client names). When set, a sync requires repodata/repomd.xml.asc to be a good
    # signature of repomd.xml by it.
    gpgkey: str | None = None

    def __post_init__(self) -> None:
        for key in ("only_newest", "verify_checksum", "tls_verify", "allow_weak_checksums"):
            if not isinstance(getattr(self, key), bool):
                raise InvalidRequest(f"{key} must be true or false", {"key": key})
        for key in (*SOURCES, "ca_file", "client_cert", "client_key", "username", "password"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise InvalidRequest(f"{key} must be a string or null", {"key": key})
        if self.proxy is not None and not isinstance(self.proxy, str):
            raise InvalidRequest("proxy must be a string or null", {"key": "proxy"})
        if self.gpgkey is not None:
            if not isinstance(self.gpgkey, str):
                raise InvalidRequest("gpgkey must be a string or null", {"key": "gpgkey"})
            try:
                check_public_key(self.gpgkey)
            except ValueError as exc:
                raise InvalidRequest(f"gpgkey {exc}", {"key": "gpgkey"}) from None
        n = self.parallel_downloads
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
            raise InvalidRequest(
                "parallel_downloads must be an integer from 1 to 64",
                {"key": "parallel_downloads"},
            )
        given = [key for key in SOURCES if getattr(self, key) is not None]
        if len(given) > 1:
            raise InvalidRequest(
                f"give one of feed, metalink and mirrorlist, not {' and '.join(given)}",
                {"key": given[-1]},
            )
        if self.feed is not None:
            _check_url(self.feed, "feed", ("http", "https", "file"))
        for key in ("metalink", "mirrorlist"):
            value = getattr(self, key)
            if value is not None:
                _check_url(value, key, ("http", "https"), query=True)
        for key in given:
            self._move_userinfo(key)
        if self.proxy is not None:
            _check_url(self.proxy, "proxy", ("http", "https"))
        for key in ("ca_file", "client_cert", "client_key"):
            if getattr(self, key) == "":
                raise InvalidRequest(f"{key} must not be empty", {"key": key})
        if self.client_key is not None and self.client_cert is None:
            raise InvalidRequest("client_key needs client_cert", {"key": "client_key"})
        if self.username is not None and ":" in self.username:
            raise InvalidRequest("username must not contain a colon", {"key": "username"})
        if self.password is not None and self.username is None:
            raise InvalidRequest("password needs username", {"key": "password"})

    def _move_userinfo(self, key: str) -> None:
        """Credentials in a source URL's userinfo become ``username`` and ``password``."""
        url = getattr(self, key)
        parts = urlsplit(url)
        if parts.username is None:
            return
        if parts.scheme == "file":
            raise InvalidRequest(f"{key}: a file URL takes no credentials", {"key": key})
        object.__setattr__(self, "username", unquote(parts.username))
        if parts.password is not None:
            object.__setattr__(self, "password", unquote(parts.password))
        object.__setattr__(self, key, without_userinfo(url))

    @property
    def source(self) -> str | None:
        """The URL the sync starts from (the feed, or the list of mirrors)."""
        return self.feed or self.metalink or self.mirrorlist

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ImporterOptions:
        """Build from a JSON object; unknown keys and wrong types are ``InvalidRequest``."""
        if not isinstance(d, Mapping):
            raise InvalidRequest("importer options must be a JSON object")
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise InvalidRequest(
                    f"unknown importer option {key!r} (known: {', '.join(sorted(known))})",
                    {"key": key},
                )
        return cls(**d)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def secrets(self) -> tuple[str, ...]:
        """The secret strings of these options, to scrub from anything shown or logged."""
        found = [self.password, self.client_key]
        if self.proxy is not None:
            parts = urlsplit(self.proxy)
            found += [parts.netloc.rpartition("@")[0], parts.password]
            if parts.password is not None:
                found.append(unquote(parts.password))
        return tuple(sorted({s for s in found if s}, key=len, reverse=True))

    def scrubbed(self, exc: OperationFailed) -> OperationFailed:
        """``exc`` with these options' secrets scrubbed from its message and data."""
        secrets = self.secrets()
        return OperationFailed(scrub(exc.message, secrets), scrub(exc.data, secrets))

    def transport(self, limits: Limits) -> Transport:
        """How the fetcher connects and bounds transfers, for a sync with these options."""
        return Transport(
            connections=self.parallel_downloads,
            tls_verify=self.tls_verify,
            ca_file=self.ca_file,
            proxy=self.proxy,
            client_cert=self.client_cert,
            client_key=self.client_key,
            username=self.username,
            password=self.password,
            auth_url=self.source,
            connect_timeout=limits.connect_timeout,
            stall_timeout=limits.stall_timeout,
            min_rate=limits.min_rate,
            grace=limits.grace,
            max_redirects=limits.max_redirects,
            retries=limits.retries,
            retry_delay=limits.retry_delay,
        )


def redact(options: Mapping[str, Any]) -> dict[str, Any]:
    """Importer options as they may be shown: secrets as ``"set"`` (or null), URLs without
    userinfo. Takes stored or requested options, valid or not, whole or partial."""
    shown = dict(options)
    for key in SECRET_OPTIONS:
        if key in shown:
            shown[key] = None if shown[key] is None else "set"
    for key in URL_OPTIONS:
        if isinstance(shown.get(key), str):
            shown[key] = without_userinfo(shown[key])
    return shown


def scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` (a string, or JSON of lists and dicts) with every secret replaced by ``***``."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, "***")
        return value
    if isinstance(value, list):
        return [scrub(v, secrets) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Limits:
    """Bounds that keep a hostile or broken feed from holding a sync or the disk forever."""

    max_metadata_size: int = 4 << 30  # decompressed bytes of one metadata file
    max_small_file: int = 16 << 20  # repomd.xml, .treeinfo
    max_unsized_download: int = 16 << 30  # a tree file the .treeinfo gives no size for
    min_rate: float = 1024.0  # bytes/s, averaged from the start of a body…
    grace: float = 30.0  # …checked once this many seconds have passed
    stall_timeout: float = 60.0  # no byte at all for this long
    connect_timeout: float = 30.0
    max_redirects: int = 5
    retries: int = 3  # per download, after a connection error or a 5xx
    retry_delay: float = 0.5  # seconds before the first retry, doubled for each next one
    max_mirror_list: int = 1 << 20  # a metalink or mirrorlist
    max_errors: int = 20  # failed downloads before the rest are abandoned
    # Metadata smaller than this (compressed bytes, all files) is parsed in a thread of the
    # daemon, larger in worker processes (a second of parsing would hold the interpreter).
    inline_metadata: int = 1 << 20


DEFAULT_LIMITS: Final = Limits()


def checked_type(checksum_type: str | None, what: str, allow_weak: bool) -> str:
    """The hashlib name for a checksum type from metadata, refusing weak or unknown ones."""
    name = (checksum_type or "").lower()
    if name in STRONG_CHECKSUMS:
        return name
    if name in WEAK_CHECKSUMS:
        if allow_weak:
            return WEAK_CHECKSUMS[name]
        raise MetadataError(
            f"{what}: checksum type {name} is weaker than sha256 "
            "(set allow_weak_checksums to accept it)"
        )
    raise MetadataError(f"{what}: unknown checksum type {checksum_type!r}")


__all__ = [
    "DEFAULT_LIMITS",
    "SECRET_OPTIONS",
    "SOURCES",
    "STRONG_CHECKSUMS",
    "URL_OPTIONS",
    "WEAK_CHECKSUMS",
    "ImporterOptions",
    "Limits",
    "checked_type",
    "redact",
    "scrub",
    "without_userinfo",
]
