"""Metalinks and mirrorlists: the feeds Fedora, EPEL, CentOS and Rocky publish.

A distribution rarely gives one base URL. It gives a *metalink* (``metalink=`` in a dnf
``.repo`` file: MirrorManager's XML naming ``repomd.xml``'s size and hashes and the mirrors
that carry it, each with a preference) or a *mirrorlist* (``mirrorlist=``: base URLs, one a
line). A sync reads the list, then tries the mirrors in preference order; with a metalink a
mirror's ``repomd.xml`` must match the size and hashes the metalink gives (or those of one of
its alternates: MirrorManager lists the previous few versions so that a mirror a little
behind still serves), as dnf does, so a stale or hostile mirror is refused and the next one
tried.

The lists are parsed with the same rules as all metadata (no DOCTYPE, no entities, size
caps); only http and https mirrors are used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from coordd.repo.yum.errors import MetadataError
from coordd.repo.yum.safexml import parse_xml_bytes

NS_METALINK = "{http://www.metalinker.org/}"
REPOMD_PATH = "repodata/repomd.xml"
SCHEMES = ("http", "https")
# Hash types of a metalink's <hash type=...>, as hashlib names them. Every listed hash of a
# known type must match: a mirror serving the right file matches them all.
HASHES = {"md5": "md5", "sha1": "sha1", "sha256": "sha256", "sha384": "sha384", "sha512": "sha512"}
STRONG = frozenset({"sha256", "sha384", "sha512"})
MAX_MIRRORS = 1000


@dataclass(frozen=True)
class Expected:
    """One version of ``repomd.xml`` a mirror may serve: its size and hashes."""

    size: int | None
    hashes: tuple[tuple[str, str], ...]  # (hashlib name, lowercase hex digest)

    def matches(self, data: bytes) -> bool:
        if self.size is not None and len(data) != self.size:
            return False
        return all(hashlib.new(name, data).hexdigest() == digest for name, digest in self.hashes)


@dataclass(frozen=True)
class Mirrors:
    """What a metalink or mirrorlist says: base URLs in the order to try them, and (for a
    metalink) the versions of ``repomd.xml`` a mirror may serve."""

    urls: tuple[str, ...]
    expected: tuple[Expected, ...] = ()

    def check_repomd(self, data: bytes, mirror: str) -> None:
        """Refuse a ``repomd.xml`` the metalink does not vouch for (no-op for a mirrorlist)."""
        if not self.expected or any(e.matches(data) for e in self.expected):
            return
        raise MetadataError(
            f"repomd.xml from mirror {mirror} does not match the metalink's size and hashes "
            "(a stale or tampered mirror)"
        )


def _base_of(url: str) -> str | None:
    """A mirror's base URL from its ``…/repodata/repomd.xml`` URL, if it is one we use."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname or parts.query or parts.fragment:
        return None
    if not parts.path.endswith("/" + REPOMD_PATH):
        return None
    return url[: -len(REPOMD_PATH)]


def _expected(element: Any, what: str) -> Expected:
    size_el = element.find(NS_METALINK + "size")
    size: int | None = None
    if size_el is not None:
        text = (size_el.text or "").strip()
        if not text.isdigit():
            raise MetadataError(f"{what}: <size> is not a number: {text!r}")
        size = int(text)
    hashes: list[tuple[str, str]] = []
    for hash_el in element.iterfind(f"{NS_METALINK}verification/{NS_METALINK}hash"):
        name = HASHES.get((hash_el.get("type") or "").lower())
        digest = (hash_el.text or "").strip().lower()
        if name is not None and digest:
            hashes.append((name, digest))
    if not any(name in STRONG for name, _ in hashes):
        raise MetadataError(f"{what}: no sha256 or stronger hash for repomd.xml")
    return Expected(size, tuple(hashes))


def parse_metalink(data: bytes) -> Mirrors:
    """A MirrorManager metalink (version 3) → the mirrors of ``repomd.xml`` and its hashes."""
    what = "metalink"
    root = parse_xml_bytes(data, what, NS_METALINK + "metalink")
    files = root.findall(f"{NS_METALINK}files/{NS_METALINK}file")
    repomd = [f for f in files if f.get("name") == "repomd.xml"]
    if len(repomd) != 1:
        raise MetadataError(f'{what}: expected one <file name="repomd.xml">, found {len(repomd)}')
    file_el = repomd[0]
    expected = [_expected(file_el, what)]
    for alternate in file_el.iter("{*}alternate"):
        expected.append(_expected(alternate, f"{what} alternate"))
    ranked: list[tuple[int, int, str]] = []
    for index, url_el in enumerate(file_el.iterfind(f"{NS_METALINK}resources/{NS_METALINK}url")):
        base = _base_of(url_el.text or "")
        if base is None:
            continue
        preference = url_el.get("preference") or "0"
        rank = int(preference) if preference.isdigit() else 0
        ranked.append((-rank, index, base))
    ranked.sort()
    return Mirrors(_unique(base for _, _, base in ranked), tuple(expected))


def parse_mirrorlist(data: bytes) -> Mirrors:
    """A mirrorlist: base URLs one a line, ``#`` comments; non-HTTP lines are skipped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"mirrorlist: not UTF-8 text ({exc})") from exc
    if text.lstrip().startswith("<"):
        raise MetadataError("mirrorlist: this is XML; set it as the metalink option instead")
    urls = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = urlsplit(line)
        if parts.scheme in SCHEMES and parts.hostname and not parts.query and not parts.fragment:
            urls.append(line if line.endswith("/") else line + "/")
    return Mirrors(_unique(urls))


def _unique(urls: Iterable[str]) -> tuple[str, ...]:
    found = tuple(dict.fromkeys(urls))[:MAX_MIRRORS]
    if not found:
        raise MetadataError("the mirror list names no http or https mirror")
    return found
