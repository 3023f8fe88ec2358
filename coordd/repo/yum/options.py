"""A repository's importer options, the bounds of a sync, and the checksum policy.

``ImporterOptions`` is what a user configures (validated on construction, URLs included);
``Limits`` are the bounds that keep a hostile feed from holding a sync or the disk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Final
from urllib.parse import urlsplit

from coordd.api.errors import InvalidRequest
from coordd.repo.yum.errors import MetadataError

STRONG_CHECKSUMS: Final = frozenset({"sha256", "sha384", "sha512"})
WEAK_CHECKSUMS: Final = {"sha1": "sha1", "sha": "sha1", "md5": "md5", "sha224": "sha224"}


def _check_url(value: str, key: str, schemes: tuple[str, ...], max_len: int = 2048) -> None:
    """Refuse (``InvalidRequest`` naming ``key``) a URL that is too long, does not parse, or
    names a scheme not in ``schemes``, no valid host, or a port outside 1-65535."""
    import ipaddress
    import re

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
    if parts.query or parts.fragment:
        raise invalid("URL must not have a query or fragment")
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


@dataclass(frozen=True)
class ImporterOptions:
    """How a repository syncs from its feed. Validated on construction."""

    feed: str | None = None
    only_newest: bool = False
    verify_checksum: bool = True
    parallel_downloads: int = 8
    tls_verify: bool = True
    ca_file: str | None = None
    proxy: str | None = None
    allow_weak_checksums: bool = False

    def __post_init__(self) -> None:
        for key in ("only_newest", "verify_checksum", "tls_verify", "allow_weak_checksums"):
            if not isinstance(getattr(self, key), bool):
                raise InvalidRequest(f"{key} must be true or false", {"key": key})
        for key in ("feed", "ca_file", "proxy"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise InvalidRequest(f"{key} must be a string or null", {"key": key})
        n = self.parallel_downloads
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
            raise InvalidRequest(
                "parallel_downloads must be an integer from 1 to 64",
                {"key": "parallel_downloads"},
            )
        if self.feed is not None:
            _check_url(self.feed, "feed", ("http", "https", "file"))
        if self.proxy is not None:
            _check_url(self.proxy, "proxy", ("http", "https"))
        if self.ca_file is not None and not self.ca_file:
            raise InvalidRequest("ca_file must not be empty", {"key": "ca_file"})

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
    max_errors: int = 20  # failed downloads before the rest are abandoned


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
    "STRONG_CHECKSUMS",
    "WEAK_CHECKSUMS",
    "ImporterOptions",
    "Limits",
    "checked_type",
]
