"""The yum importer: make a repository's content match a remote yum/dnf feed.

``sync(repo_dir, options, progress)`` fetches ``repodata/repomd.xml``; the primary, filelists
and other metadata; errata (updateinfo); delta RPMs (prestodelta); extra metadata files
(comps, modules, …, kept as they are); and a distribution tree (``.treeinfo`` at the feed
root and the files it names). It chooses the packages (all, or the newest EVR of each name
and arch), downloads what the repository lacks in parallel, and commits the result by
replacing the content index (see ``coordd.repo.content`` for the layout and its invariants).

Atomicity and restarts
    Downloads stream into ``repo_dir/.tmp`` and reach ``content/<href>`` by ``os.replace``
    only when complete and verified (size, and checksum unless ``verify_checksum`` is off);
    a ``finally`` removes the temporary file on any failure or cancellation, and ``.tmp`` is
    wiped when a sync starts, which covers kill -9. Nothing the current index references
    is touched before the commit, except a file the feed now serves with other content at
    the same path: those are staged, the index is first committed without them (a smaller
    but consistent state), then they are renamed in and the final index is committed.
    Files left by an interrupted sync are adopted by the next one when their checksum
    matches; files the new index does not reference are removed after it is committed.
    So a hard cancel at any ``await`` leaves the repository as it was or consistently
    advanced, and a rerun completes it. A rerun against an unchanged feed (same repomd.xml
    and .treeinfo bytes, same options, every indexed file present with its size) downloads
    nothing and parses nothing: it reads the index's small stamp, not the index.

Hostile feeds (each ends in ``OperationFailed`` naming the problem; nothing is written
outside ``repo_dir`` and the previous content stays)
    - Paths: every href (packages, deltas, tree files, metadata) goes through
      ``content.check_href`` and ``content.resolve_in``: raw and percent-decoded component
      checks, then component-wise containment of the resolved path. ``xml:base`` may point
      only to the feed's own scheme and host (and, for file:// feeds, inside the feed
      directory), so metadata cannot send the importer to another server or read local
      files.
    - XML: lxml with entity resolution and network access off, no DTD loading, default
      (non-huge) tree limits, and any document with a DOCTYPE is refused outright.
    - Compression is detected by magic bytes (gz, xz, bz2, zst); the decompressed size is
      capped by the declared ``open-size`` and by a hard cap (bz2 reaches 1,000,000:1), and
      the ``open-checksum`` is verified when declared.
    - Checksums: metadata is always verified; sha1/md5/sha224 are refused unless
      ``allow_weak_checksums``; unknown types are refused.
    - Transport (``coordd.repo.fetch``): each body must keep a minimum average rate after a
      grace period (a body trickling one byte at a time never trips httpx's read timeout),
      bodies larger than declared are cut off at once, redirects from https to http (or to
      another scheme) are refused, and a ``Content-Encoding`` the importer did not ask for
      is refused. Redirects to other hosts are followed: mirrors and CDNs use them, and
      what arrives is still checked against the metadata.
"""

from __future__ import annotations

import bz2
import configparser
import contextlib
import gzip
import hashlib
import itertools
import lzma
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import anyio
import anyio.from_thread
import anyio.to_thread
import zstandard
from lxml import etree

from coordd.api.errors import InvalidRequest, OperationFailed
from coordd.engine.progress import (
    CANCELED,
    FAILED,
    FINISHED,
    IN_PROGRESS,
    NOT_STARTED,
    SKIPPED,
    Progress,
)
from coordd.repo.content import (
    CONTENT_DIR,
    RESERVED_TOP,
    ContentIndex,
    UnsafePath,
    check_href,
    collect_garbage,
    missing_from_stamp,
    read_stamp,
    reset_tmp,
    resolve_in,
)
from coordd.repo.fetch import DownloadError, Fetcher, Transport, fetcher_for, hash_file
from coordd.repo.records import DEPENDENCY_KINDS

# The importer still builds its records as plain dicts; they get their types from
# coordd.repo.records when it is split into its parsers.
Record = Any

# -- options ------------------------------------------------------------------------------------

STRONG_CHECKSUMS: Final = frozenset({"sha256", "sha384", "sha512"})
WEAK_CHECKSUMS: Final = {"sha1": "sha1", "sha": "sha1", "md5": "md5", "sha224": "sha224"}


def _check_url(value: str, key: str, schemes: tuple[str, ...]) -> None:
    if any(ord(c) < 33 or ord(c) == 127 for c in value):
        raise InvalidRequest(f"{key}: URL contains whitespace or control characters", {"key": key})
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise InvalidRequest(
            f"{key}: URL scheme must be one of {', '.join(schemes)}, not {parts.scheme!r}",
            {"key": key},
        )
    if parts.query or parts.fragment:
        raise InvalidRequest(f"{key}: URL must not have a query or fragment", {"key": key})
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise InvalidRequest(f"{key}: file URL must be file:///absolute/path", {"key": key})
    elif not parts.hostname:
        raise InvalidRequest(f"{key}: URL has no host", {"key": key})


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

# -- progress -----------------------------------------------------------------------------------

KINDS: Final = ("rpm", "delta_rpm", "file", "tree_file")
COUNTERS: Final = (
    "items_total",
    "items_left",
    "size_total",
    "size_left",
    "num_success",
    "num_error",
)
_MAX_ERROR_DETAILS = 100


class _Report:
    """The ``importer`` progress report; holds references to its dicts to stay cheap."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        content: dict[str, Any] = {"state": NOT_STARTED, **dict.fromkeys(COUNTERS, 0)}
        content["error_details"] = []
        content["details"] = {kind: dict.fromkeys(COUNTERS, 0) for kind in KINDS}
        progress.set(
            "importer",
            metadata={"state": NOT_STARTED},
            content=content,
            errata={"state": NOT_STARTED},
        )
        self.metadata = progress.node("importer", "metadata")
        self.content = progress.node("importer", "content")
        self.errata = progress.node("importer", "errata")
        self.kinds: dict[str, dict[str, Any]] = self.content["details"]

    def state(self, step: dict[str, Any], state: str) -> None:
        step["state"] = state
        self.progress.touch()

    def plan(self, kind: str, size: int) -> None:
        for node in (self.content, self.kinds[kind]):
            node["items_total"] += 1
            node["items_left"] += 1
            node["size_total"] += size
            node["size_left"] += size
        self.progress.touch()

    def finished(self, kind: str, size_left: int, error: dict[str, Any] | None) -> None:
        for node in (self.content, self.kinds[kind]):
            node["items_left"] -= 1
            node["size_left"] -= size_left
            node["num_error" if error else "num_success"] += 1
        if error and len(self.content["error_details"]) < _MAX_ERROR_DETAILS:
            self.content["error_details"].append(error)
        self.progress.touch()

    def interrupted(self, state: str) -> None:
        for step in (self.metadata, self.content, self.errata):
            if step["state"] == IN_PROGRESS:
                step["state"] = state
        self.progress.touch()


# -- versions -----------------------------------------------------------------------------------


def _isalpha(c: str) -> bool:
    return c.isascii() and c.isalpha()


def _isdigit(c: str) -> bool:
    return "0" <= c <= "9"


def rpmvercmp(a: str, b: str) -> int:
    """Compare two version (or release) strings exactly as rpm's ``rpmvercmp`` does.

    Segments of ASCII letters or digits are compared in turn (digits numerically and
    newer than letters); other characters only separate; ``~`` sorts before anything,
    even the end of the string; ``^`` sorts after the end but before anything else.
    Returns -1, 0 or 1.
    """
    if a == b:
        return 0
    i = j = 0
    la, lb = len(a), len(b)
    while i < la or j < lb:
        while i < la and not (_isalpha(a[i]) or _isdigit(a[i])) and a[i] not in "~^":
            i += 1
        while j < lb and not (_isalpha(b[j]) or _isdigit(b[j])) and b[j] not in "~^":
            j += 1
        ca = a[i] if i < la else ""
        cb = b[j] if j < lb else ""
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i += 1
            j += 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i += 1
            j += 1
            continue
        if not (ca and cb):
            break
        si, sj = i, j
        if _isdigit(ca):
            while i < la and _isdigit(a[i]):
                i += 1
            while j < lb and _isdigit(b[j]):
                j += 1
            isnum = True
        else:
            while i < la and _isalpha(a[i]):
                i += 1
            while j < lb and _isalpha(b[j]):
                j += 1
            isnum = False
        seg_a, seg_b = a[si:i], b[sj:j]
        if not seg_b:
            return 1 if isnum else -1
        if isnum:
            seg_a, seg_b = seg_a.lstrip("0"), seg_b.lstrip("0")
            if len(seg_a) != len(seg_b):
                return 1 if len(seg_a) > len(seg_b) else -1
        if seg_a != seg_b:
            return 1 if seg_a > seg_b else -1
    if i >= la and j >= lb:
        return 0
    return -1 if i >= la else 1


def _epoch(value: Any) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def compare_evr(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    """Compare the (epoch, version, release) of two package records, rpm-style."""
    ea, eb = _epoch(a.get("epoch")), _epoch(b.get("epoch"))
    if ea != eb:
        return 1 if ea > eb else -1
    return rpmvercmp(a.get("version") or "", b.get("version") or "") or rpmvercmp(
        a.get("release") or "", b.get("release") or ""
    )


def newest_only(packages: list[Record]) -> list[Record]:
    """Keep the newest EVR of each (name, arch); on a tie, the first one listed."""
    best: dict[tuple[str, str], Record] = {}
    for package in packages:
        key = (package["name"], package["arch"])
        current = best.get(key)
        if current is None or compare_evr(package, current) > 0:
            best[key] = package
    return list(best.values())


# -- metadata parsing (plain functions, run in worker threads) -----------------------------------

NS_COMMON: Final = "{http://linux.duke.edu/metadata/common}"
NS_RPM: Final = "{http://linux.duke.edu/metadata/rpm}"
NS_REPO: Final = "{http://linux.duke.edu/metadata/repo}"
NS_FILELISTS: Final = "{http://linux.duke.edu/metadata/filelists}"
NS_OTHER: Final = "{http://linux.duke.edu/metadata/other}"
XML_BASE: Final = "{http://www.w3.org/XML/1998/namespace}base"

_READ_CHUNK = 1 << 20
_DEP_TAGS: Final = {NS_RPM + kind: kind for kind in DEPENDENCY_KINDS}
# Repomd record types this importer regenerates (so does not keep as files), or that only
# duplicate them in another form.
_PARSED: Final = ("primary", "filelists", "other", "updateinfo", "prestodelta")


class MetadataError(Exception):
    """The feed's metadata is unusable; the message names the file and the problem."""


def _xml_parser_options() -> dict[str, Any]:
    return {
        "resolve_entities": False,
        "no_network": True,
        "load_dtd": False,
        "dtd_validation": False,
        "huge_tree": False,
        "remove_comments": True,
        "remove_pis": True,
    }


def _refuse_doctype(element: Any, what: str, root_tag: str) -> None:
    tree = element.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise MetadataError(f"{what}: document has a DOCTYPE (entity declarations refused)")
    root = tree.getroot()
    if root.tag != root_tag:
        raise MetadataError(f"{what}: root element is {root.tag!r}, expected {root_tag!r}")


def parse_xml_bytes(data: bytes, what: str, root_tag: str) -> Any:
    """Parse a small XML document (repomd.xml) with the same refusals as the streams."""
    parser = etree.XMLParser(**_xml_parser_options())
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise MetadataError(f"{what}: malformed XML: {exc}") from exc
    _refuse_doctype(root, what, root_tag)
    return root


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return "gz"
    if magic.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if magic.startswith(b"BZh"):
        return "bz2"
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        return "zst"
    if magic.startswith(b"\x00ZCK1"):
        return "zck"
    return "none"


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


@contextlib.contextmanager
def _decompressed(path: Path, what: str) -> Iterator[_Reader]:
    """Open ``path`` decompressed according to its magic bytes (not its name).

    Every reader here returns at most ``size`` bytes per ``read``, whatever the ratio, so
    the caller can stop a decompression bomb after the first chunk past its limit.
    """
    kind = _sniff(path)
    if kind == "zck":
        raise MetadataError(f"{what}: zchunk compression is not supported")
    with open(path, "rb") as raw:
        stream: _Reader
        if kind == "gz":
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
        elif kind == "xz":
            stream = lzma.LZMAFile(raw, mode="rb")  # noqa: SIM115 - closed in the finally below
        elif kind == "bz2":
            stream = bz2.BZ2File(raw, mode="rb")
        elif kind == "zst":
            stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        else:
            stream = raw
        try:
            yield stream
        finally:
            stream.close()


def _checked_type(checksum_type: str | None, what: str, allow_weak: bool) -> str:
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


def iter_xml(
    path: Path,
    *,
    what: str,
    tag: str,
    root_tag: str,
    open_size: int | None,
    open_checksum: tuple[str, str] | None,
    cap: int,
    check_cancelled: Callable[[], None] = lambda: None,
) -> Iterator[Any]:
    """Stream the elements named ``tag`` out of a (compressed) XML file, safely.

    Each element is yielded complete, then cleared and detached, so memory stays flat.
    The decompressed size may not exceed the declared ``open_size`` nor ``cap``; the
    declared ``open_checksum`` is verified at the end.
    """
    limit = min(open_size, cap) if open_size is not None else cap
    hasher = hashlib.new(open_checksum[0]) if open_checksum else None
    parser = etree.XMLPullParser(events=("end",), tag=tag, **_xml_parser_options())
    total = 0
    checked = False
    try:
        with _decompressed(path, what) as stream:
            while True:
                check_cancelled()
                chunk = stream.read(_READ_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    if open_size is not None and limit == open_size:
                        raise MetadataError(
                            f"{what}: decompresses past its declared open-size of {open_size} bytes"
                        )
                    raise MetadataError(f"{what}: decompresses past the cap of {cap} bytes")
                if hasher is not None:
                    hasher.update(chunk)
                parser.feed(chunk)
                for _event, element in parser.read_events():
                    if not checked:
                        _refuse_doctype(element, what, root_tag)
                        checked = True
                    yield element
                    element.clear()
                    parent = element.getparent()
                    if parent is not None:
                        while element.getprevious() is not None:
                            del parent[0]
            root = parser.close()
    except (OSError, EOFError, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise MetadataError(f"{what}: corrupt compressed data: {exc}") from exc
    except etree.XMLSyntaxError as exc:
        raise MetadataError(f"{what}: malformed XML: {exc}") from exc
    if not checked:
        _refuse_doctype(root, what, root_tag)
    if open_size is not None and total != open_size:
        raise MetadataError(
            f"{what}: decompressed size {total} differs from its declared open-size {open_size}"
        )
    if hasher is not None and open_checksum is not None:
        digest = hasher.hexdigest()
        if digest != open_checksum[1].lower():
            raise MetadataError(
                f"{what}: open-checksum mismatch: expected {open_checksum[0]} "
                f"{open_checksum[1]}, got {digest}"
            )


def _int(value: str | None, what: str, field: str, default: int | None = 0) -> int:
    if value is None or value == "":
        if default is None:
            raise MetadataError(f"{what}: missing number in {field}")
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise MetadataError(f"{what}: {field} is not a number: {value!r}") from exc


def _deps(element: Any) -> list[list[Any]]:
    return [
        [
            e.get("name"),
            e.get("flags"),
            e.get("epoch"),
            e.get("ver"),
            e.get("rel"),
            e.get("pre") in ("1", "true", "True"),
        ]
        for e in element
    ]


@dataclass
class _Location:
    href: str
    base: str | None


# Tags of primary.xml, computed once: this loop runs for every package of every sync.
_P_NAME = NS_COMMON + "name"
_P_ARCH = NS_COMMON + "arch"
_P_VERSION = NS_COMMON + "version"
_P_CHECKSUM = NS_COMMON + "checksum"
_P_LOCATION = NS_COMMON + "location"
_P_SIZE = NS_COMMON + "size"
_P_TIME = NS_COMMON + "time"
_P_FORMAT = NS_COMMON + "format"
_P_FILE = NS_COMMON + "file"
_P_HEADER_RANGE = NS_RPM + "header-range"
_P_TEXT = {NS_COMMON + key: key for key in ("summary", "description", "url", "packager")}
_P_FORMAT_TEXT = {
    NS_RPM + key: key for key in ("license", "vendor", "group", "buildhost", "sourcerpm")
}
_PRIMARY_DEFAULTS: Final[Record] = {
    "name": None,
    "epoch": "0",
    "version": None,
    "release": None,
    "arch": None,
    "checksum_type": None,
    "checksum": None,
    "href": None,
    "size": None,
    "summary": "",
    "description": "",
    "url": "",
    "packager": "",
    "license": "",
    "vendor": "",
    "group": "",
    "buildhost": "",
    "sourcerpm": "",
    "header_start": 0,
    "header_end": 0,
    "time_file": 0,
    "time_build": 0,
    "size_installed": 0,
    "size_archive": 0,
    "origin": "feed",
}
_REQUIRED: Final = ("name", "arch", "version", "release", "checksum", "href", "size")


def parse_primary_package(element: Any, what: str) -> tuple[Record, _Location] | None:
    """One ``<package>`` of primary.xml as an index record (None for non-rpm types)."""
    if element.get("type", "rpm") != "rpm":
        return None
    rec = dict(_PRIMARY_DEFAULTS)
    for kind in DEPENDENCY_KINDS:
        rec[kind] = []
    files: list[list[str]] = []
    rec["files"] = files
    rec["changelogs"] = []
    base: str | None = None
    for child in element:
        tag = child.tag
        if tag == _P_FORMAT:
            for sub in child:
                stag = sub.tag
                dep_kind = _DEP_TAGS.get(stag)
                if dep_kind is not None:
                    rec[dep_kind] = _deps(sub)
                elif stag == _P_FILE:
                    files.append([sub.get("type") or "", sub.text or ""])
                elif stag == _P_HEADER_RANGE:
                    rec["header_start"] = _int(sub.get("start"), what, "header-range")
                    rec["header_end"] = _int(sub.get("end"), what, "header-range")
                else:
                    key = _P_FORMAT_TEXT.get(stag)
                    if key is not None:
                        rec[key] = sub.text or ""
        elif tag == _P_NAME:
            rec["name"] = child.text
        elif tag == _P_ARCH:
            rec["arch"] = child.text
        elif tag == _P_VERSION:
            rec["epoch"] = child.get("epoch") or "0"
            rec["version"] = child.get("ver")
            rec["release"] = child.get("rel")
        elif tag == _P_CHECKSUM:
            rec["checksum_type"] = child.get("type")
            rec["checksum"] = (child.text or "").strip().lower()
        elif tag == _P_LOCATION:
            rec["href"] = child.get("href")
            base = child.get(XML_BASE)
        elif tag == _P_SIZE:
            rec["size"] = _int(child.get("package"), what, "size", None)
            rec["size_installed"] = _int(child.get("installed"), what, "size")
            rec["size_archive"] = _int(child.get("archive"), what, "size")
        elif tag == _P_TIME:
            rec["time_file"] = _int(child.get("file"), what, "time")
            rec["time_build"] = _int(child.get("build"), what, "time")
        else:
            key = _P_TEXT.get(tag)
            if key is not None:
                rec[key] = child.text or ""
    for key in _REQUIRED:
        if rec[key] is None or rec[key] == "":
            label = rec["name"] or "a package"
            raise MetadataError(f"{what}: {label} has no {key}")
    return rec, _Location(rec["href"], base)


def parse_files_or_changelogs(
    path: Path, *, what: str, kind: str, **xml: Any
) -> dict[str, list[list[Any]]]:
    """filelists.xml → {pkgid: [[type, path], …]}; other.xml → {pkgid: [[author, date, text]]}."""
    out: dict[str, list[list[Any]]] = {}
    if kind == "filelists":
        ns, child_tag = NS_FILELISTS, NS_FILELISTS + "file"
    else:
        ns, child_tag = NS_OTHER, NS_OTHER + "changelog"
    for element in iter_xml(path, what=what, tag=ns + "package", **xml):
        pkgid = (element.get("pkgid") or "").lower()
        entries: list[list[Any]] = []
        for child in element:
            if child.tag != child_tag:
                continue
            if kind == "filelists":
                entries.append([child.get("type") or "", child.text or ""])
            else:
                date = _int(child.get("date"), what, "changelog date")
                entries.append([child.get("author") or "", date, child.text or ""])
        out.setdefault(pkgid, []).extend(entries)
    return out


def _text(element: Any, tag: str) -> str | None:
    child = element.find(tag)
    return None if child is None else (child.text or "")


def _bool_text(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def parse_update(element: Any) -> Record:
    """One ``<update>`` of updateinfo.xml as an erratum record."""
    issued = element.find("issued")
    updated = element.find("updated")
    references = element.find("references")
    pkglist = element.find("pkglist")
    collections: list[Record] = []
    if pkglist is not None:
        for coll in pkglist.findall("collection"):
            module = coll.find("module")
            collections.append(
                {
                    "short": coll.get("short"),
                    "name": _text(coll, "name"),
                    "module": None if module is None else dict(module.attrib),
                    "packages": [
                        {
                            "name": pkg.get("name"),
                            "epoch": pkg.get("epoch"),
                            "version": pkg.get("version"),
                            "release": pkg.get("release"),
                            "arch": pkg.get("arch"),
                            "src": pkg.get("src"),
                            "filename": _text(pkg, "filename"),
                            "sum_type": (
                                None if pkg.find("sum") is None else pkg.find("sum").get("type")
                            ),
                            "sum": _text(pkg, "sum"),
                            "reboot_suggested": _bool_text(_text(pkg, "reboot_suggested")),
                            "restart_suggested": _bool_text(_text(pkg, "restart_suggested")),
                            "relogin_suggested": _bool_text(_text(pkg, "relogin_suggested")),
                        }
                        for pkg in coll.findall("package")
                    ],
                }
            )
    return {
        "id": _text(element, "id"),
        "from": element.get("from"),
        "status": element.get("status"),
        "type": element.get("type"),
        "version": element.get("version"),
        "title": _text(element, "title"),
        "issued_date": None if issued is None else issued.get("date"),
        "updated_date": None if updated is None else updated.get("date"),
        "rights": _text(element, "rights"),
        "release": _text(element, "release"),
        "pushcount": _text(element, "pushcount"),
        "severity": _text(element, "severity"),
        "summary": _text(element, "summary"),
        "description": _text(element, "description"),
        "solution": _text(element, "solution"),
        "reboot_suggested": _bool_text(_text(element, "reboot_suggested")),
        "references": (
            [] if references is None else [dict(r.attrib) for r in references.findall("reference")]
        ),
        "collections": collections,
    }


def parse_newpackage(element: Any, what: str) -> list[Record]:
    """One ``<newpackage>`` of prestodelta.xml as delta records."""
    deltas = []
    for delta in element.findall("delta"):
        checksum = delta.find("checksum")
        record = {
            "name": element.get("name"),
            "epoch": element.get("epoch") or "0",
            "version": element.get("version"),
            "release": element.get("release"),
            "arch": element.get("arch"),
            "oldepoch": delta.get("oldepoch") or "0",
            "oldversion": delta.get("oldversion"),
            "oldrelease": delta.get("oldrelease"),
            "href": _text(delta, "filename"),
            "sequence": _text(delta, "sequence"),
            "size": _int(_text(delta, "size"), what, "delta size", None),
            "checksum_type": None if checksum is None else checksum.get("type"),
            "checksum": None if checksum is None else (checksum.text or "").strip().lower(),
        }
        if not record["href"] or not record["checksum"] or not record["name"]:
            raise MetadataError(f"{what}: delta for {record['name']} lacks filename or checksum")
        deltas.append(record)
    return deltas


def parse_treeinfo(data: bytes, allow_weak: bool) -> list[Record]:
    """The files a .treeinfo names (images-*, stage2, checksums) as tree-file records."""
    what = ".treeinfo"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"{what}: not UTF-8 text") from exc
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # paths are case-sensitive
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise MetadataError(f"{what}: malformed: {exc}") from exc
    checksums: dict[str, tuple[str, str]] = {}
    if parser.has_section("checksums"):
        for path, value in parser.items("checksums"):
            algo, sep, digest = value.partition(":")
            if not sep or not digest:
                raise MetadataError(f"{what}: bad checksum for {path}: {value!r}")
            algo = _checked_type(algo, f"{what} checksum of {path}", allow_weak)
            checksums[path] = (algo, digest.strip().lower())
    paths = set(checksums)
    for section in parser.sections():
        if section.startswith("images-") or section == "stage2":
            paths.update(value for _key, value in parser.items(section) if value)
    records = []
    for path in sorted(paths):
        algo_digest = checksums.get(path)
        records.append(
            {
                "href": path,
                "size": None,
                "checksum_type": algo_digest[0] if algo_digest else None,
                "checksum": algo_digest[1] if algo_digest else None,
            }
        )
    return records


@dataclass
class _RepomdRecord:
    type: str
    href: str
    base: str | None
    size: int | None
    open_size: int | None
    checksum: tuple[str, str]
    open_checksum: tuple[str, str] | None


def parse_repomd(data: bytes, allow_weak: bool) -> tuple[str | None, dict[str, _RepomdRecord]]:
    """repomd.xml → (revision, records by type)."""
    what = "repomd.xml"
    root = parse_xml_bytes(data, what, NS_REPO + "repomd")
    revision = _text(root, NS_REPO + "revision")
    records: dict[str, _RepomdRecord] = {}
    for data_el in root.findall(NS_REPO + "data"):
        rtype = data_el.get("type")
        if not rtype:
            raise MetadataError(f"{what}: <data> without a type")
        label = f"{what} record {rtype}"
        if rtype in records:
            raise MetadataError(f"{what}: record {rtype} listed twice")
        location = data_el.find(NS_REPO + "location")
        checksum = data_el.find(NS_REPO + "checksum")
        if location is None or not location.get("href") or checksum is None:
            raise MetadataError(f"{label}: lacks location or checksum")
        open_checksum = data_el.find(NS_REPO + "open-checksum")
        size_text = _text(data_el, NS_REPO + "size")
        open_text = _text(data_el, NS_REPO + "open-size")
        records[rtype] = _RepomdRecord(
            type=rtype,
            href=location.get("href"),
            base=location.get(XML_BASE),
            size=None if size_text is None else _int(size_text, label, "size", None),
            open_size=None if open_text is None else _int(open_text, label, "open-size", None),
            checksum=(
                _checked_type(checksum.get("type"), label, allow_weak),
                (checksum.text or "").strip().lower(),
            ),
            open_checksum=(
                None
                if open_checksum is None
                else (
                    _checked_type(open_checksum.get("type"), label, allow_weak),
                    (open_checksum.text or "").strip().lower(),
                )
            ),
        )
    return revision, records


# -- the sync -----------------------------------------------------------------------------------


@dataclass
class _Item:
    kind: str
    record: Record
    url: str
    final: Path
    stage: bool = False  # the current index references this path with other content
    adopt: bool = False  # an unreferenced file of the right size is already there


@dataclass
class _Plan:
    packages: list[Record] = field(default_factory=list)
    deltas: list[Record] = field(default_factory=list)
    tree_files: list[Record] = field(default_factory=list)
    metadata_files: list[Record] = field(default_factory=list)
    treeinfo: Record | None = None
    errata: list[Record] = field(default_factory=list)


class _Sync:
    def __init__(
        self,
        repo_dir: Path,
        options: ImporterOptions,
        limits: Limits,
        report: _Report,
        fetcher: Fetcher,
        tmp: Path,
    ) -> None:
        assert options.feed is not None
        self.repo_dir = repo_dir
        self.content_root = repo_dir / CONTENT_DIR
        self.options = options
        self.limits = limits
        self.report = report
        self.fetcher = fetcher
        self.tmp = tmp
        self.feed = options.feed if options.feed.endswith("/") else options.feed + "/"
        parts = urlsplit(self.feed)
        self.feed_scheme, self.feed_netloc = parts.scheme, parts.netloc
        self.feed_root = (
            Path(url2pathname(parts.path)).resolve() if parts.scheme == "file" else None
        )
        self.staged: list[tuple[Path, Path, str]] = []  # (temporary, final path, href)
        self.bytes_downloaded = 0
        self.downloaded = 0
        self.adopted = 0
        self.errors: list[dict[str, Any]] = []
        self._dirs: set[Path] = set()
        self._parents: dict[str, Path] = {}
        self._serial = itertools.count()
        self.content_real = self.content_root.resolve()
        self.urls: dict[str, str] = {}
        self.treeinfo_bytes = b""

    # -- helpers ---------------------------------------------------------------------------

    def _url(self, href: str, base: str | None, what: str) -> str:
        """The URL of ``href`` (under ``xml:base`` if given), refusing foreign locations."""
        try:
            check_href(href)
        except UnsafePath as exc:
            raise MetadataError(f"{what}: unsafe location href: {exc}") from exc
        if base is None:
            root = self.feed
        else:
            root = urljoin(self.feed, base)
            if not root.endswith("/"):
                root += "/"
            parts = urlsplit(root)
            if (parts.scheme, parts.netloc) != (self.feed_scheme, self.feed_netloc):
                raise MetadataError(
                    f"{what}: xml:base {base!r} points outside the feed "
                    f"({parts.scheme}://{parts.netloc} is not {self.feed_scheme}://"
                    f"{self.feed_netloc})"
                )
        url = root + href
        if self.feed_root is not None:
            path = Path(url2pathname(urlsplit(url).path)).resolve()
            if not path.is_relative_to(self.feed_root):
                raise MetadataError(f"{what}: {href!r} resolves outside the feed directory")
        return url

    def _tmp_file(self) -> Path:
        return self.tmp / f"{next(self._serial)}.part"  # .tmp is this sync's alone

    def _final(self, href: str) -> Path:
        """``content/<href>`` with its directory resolved (and contained) once per directory.

        The last component is not resolved: a rename replaces whatever is there, and an
        adopted file must be a regular file (``_adopt`` uses ``lstat``).
        """
        parent, _, name = href.rpartition("/")
        base = self._parents.get(parent)
        if base is None:
            base = resolve_in(self.content_root, parent) if parent else self.content_real
            self._parents[parent] = base
        return base / name

    async def _fetch_small(self, url: str, what: str, *, optional: bool = False) -> bytes | None:
        dest = self._tmp_file()
        try:
            await self.fetcher.fetch(
                url, dest, what=what, size=None, checksum=None, cap=self.limits.max_small_file
            )
            return dest.read_bytes()
        except DownloadError as exc:
            if optional and exc.status in (403, 404, 410):
                return None
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest)

    def _mkdirs(self, directory: Path) -> None:
        if directory not in self._dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._dirs.add(directory)

    # -- steps -----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        report = self.report
        report.state(report.metadata, IN_PROGRESS)
        repomd_url = self.feed + "repodata/repomd.xml"
        repomd = await self._fetch_small(repomd_url, "repomd.xml")
        assert repomd is not None
        treeinfo = await self._fetch_small(self.feed + ".treeinfo", ".treeinfo", optional=True)
        repomd_sum = "sha256:" + hashlib.sha256(repomd).hexdigest()
        treeinfo_sum = (
            None if treeinfo is None else "sha256:" + hashlib.sha256(treeinfo).hexdigest()
        )
        sync_options = {
            "feed": self.feed,
            "only_newest": self.options.only_newest,
            "allow_weak_checksums": self.options.allow_weak_checksums,
        }

        def unchanged() -> dict[str, Any] | None:
            # The stamp, not the whole index: a no-change sync should not parse megabytes.
            stamp = read_stamp(self.repo_dir)
            if (
                stamp is not None
                and stamp.get("repomd_checksum") == repomd_sum
                and stamp.get("treeinfo_checksum") == treeinfo_sum
                and stamp.get("sync_options") == sync_options
                and not missing_from_stamp(self.repo_dir, stamp)
            ):
                return stamp
            return None

        stamp = await anyio.to_thread.run_sync(unchanged)
        if stamp is not None:
            return self._unchanged(stamp)
        old = await anyio.to_thread.run_sync(ContentIndex.load, self.repo_dir)

        revision, records = parse_repomd(repomd, self.options.allow_weak_checksums)
        if "primary" not in records:
            raise MetadataError("repomd.xml: no primary record")
        plan = await self._metadata(records, treeinfo)

        new = ContentIndex(
            feed=self.feed,
            revision=revision,
            repomd_checksum=repomd_sum,
            treeinfo_checksum=treeinfo_sum,
            sync_options=sync_options,
            synced_at=time.time(),
            errata=plan.errata,
            deltas=plan.deltas,
            tree_files=plan.tree_files,
            metadata_files=plan.metadata_files,
            treeinfo=plan.treeinfo,
        )
        feed_hrefs = {p["href"] for p in plan.packages}
        new.packages = {p["href"]: p for p in plan.packages}
        for href, package in old.packages.items():
            if package.get("origin") == "copy" and href not in new.packages:
                new.packages[href] = package
        self._check_collisions(new)
        report.state(report.metadata, FINISHED)

        kept = await self._content(old, new)

        report.state(report.errata, IN_PROGRESS)
        if self.staged:
            # The feed changed files in place: commit first without the old versions.
            interim = ContentIndex.from_json(old.to_json())
            staged = {href for _tmp, _final, href in self.staged}
            interim.packages = {h: p for h, p in interim.packages.items() if h not in staged}
            interim.deltas = [r for r in interim.deltas if r["href"] not in staged]
            interim.tree_files = [r for r in interim.tree_files if r["href"] not in staged]
            interim.metadata_files = [r for r in interim.metadata_files if r["href"] not in staged]
            if interim.treeinfo and interim.treeinfo["href"] in staged:
                interim.treeinfo = None
            await anyio.to_thread.run_sync(interim.save, self.repo_dir)
            for tmp, final, _href in self.staged:
                self._mkdirs(final.parent)
                os.replace(tmp, final)
            self.staged.clear()
        await anyio.to_thread.run_sync(new.save, self.repo_dir)
        report.state(report.errata, FINISHED if "updateinfo" in records else SKIPPED)
        await anyio.to_thread.run_sync(collect_garbage, self.repo_dir, new.hrefs())

        removed = [
            h for h, p in old.packages.items() if p.get("origin") != "copy" and h not in feed_hrefs
        ]
        return {
            "feed": self.feed,
            "changed": True,
            "revision": revision,
            "packages": len(new.packages),
            "added": len([h for h in feed_hrefs if h not in kept]),
            "kept": len([h for h in feed_hrefs if h in kept]),
            "removed": len(removed),
            "downloaded": self.downloaded,
            "adopted": self.adopted,
            "bytes_downloaded": self.bytes_downloaded,
            "errata": len(new.errata),
            "delta_rpms": len(new.deltas),
            "tree_files": len(new.tree_files),
            "metadata_files": len(new.metadata_files),
        }

    def _unchanged(self, stamp: dict[str, Any]) -> dict[str, Any]:
        report = self.report
        counts = stamp.get("counts", {})
        report.state(report.metadata, FINISHED)
        report.state(report.content, FINISHED)
        report.state(report.errata, FINISHED if counts.get("errata") else SKIPPED)
        return {
            "feed": self.feed,
            "changed": False,
            "revision": stamp.get("revision"),
            "packages": counts.get("packages", 0),
            "added": 0,
            "kept": counts.get("feed_packages", 0),
            "removed": 0,
            "downloaded": 0,
            "adopted": 0,
            "bytes_downloaded": 0,
            "errata": counts.get("errata", 0),
            "delta_rpms": counts.get("deltas", 0),
            "tree_files": counts.get("tree_files", 0),
            "metadata_files": counts.get("metadata_files", 0),
        }

    async def _metadata(self, records: dict[str, _RepomdRecord], treeinfo: bytes | None) -> _Plan:
        """Fetch and parse every metadata file; choose what the repository will hold."""
        plan = _Plan()
        allow_weak = self.options.allow_weak_checksums
        paths: dict[str, Path] = {}

        failures: list[DownloadError | OSError] = []

        async def get(record: _RepomdRecord, url: str, scope: anyio.CancelScope) -> None:
            dest = self._tmp_file()
            paths[record.type] = dest
            try:
                await self.fetcher.fetch(
                    url,
                    dest,
                    what=f"{record.type} metadata ({record.href})",
                    size=record.size,
                    checksum=record.checksum,
                    cap=self.limits.max_metadata_size,
                )
            except (DownloadError, OSError) as exc:
                failures.append(exc)
                scope.cancel()

        wanted = [records[t] for t in _PARSED if t in records]
        urls_md = {
            r.type: self._url(r.href, r.base, f"{r.type} metadata ({r.href})") for r in wanted
        }
        async with anyio.create_task_group() as tg:
            for record in wanted:
                tg.start_soon(get, record, urls_md[record.type], tg.cancel_scope)
        if failures:
            if isinstance(failures[0], OSError):
                raise OperationFailed(f"cannot store metadata: {failures[0]}")
            raise failures[0]

        def xml_args(record: _RepomdRecord) -> dict[str, Any]:
            return {
                "open_size": record.open_size,
                "open_checksum": record.open_checksum,
                "cap": self.limits.max_metadata_size,
                "check_cancelled": anyio.from_thread.check_cancelled,
            }

        def parse_packages() -> tuple[list[Record], list[_Location]]:
            record = records["primary"]
            what = f"primary metadata ({record.href})"
            packages: list[Record] = []
            locations: list[_Location] = []
            for element in iter_xml(
                paths["primary"],
                what=what,
                tag=NS_COMMON + "package",
                root_tag=NS_COMMON + "metadata",
                **xml_args(record),
            ):
                parsed = parse_primary_package(element, what)
                if parsed is not None:
                    package, location = parsed
                    package["checksum_type"] = _checked_type(
                        package["checksum_type"],
                        f"{what}: package {package['name']}",
                        allow_weak,
                    )
                    packages.append(package)
                    locations.append(location)
            for kind, ns in (("filelists", NS_FILELISTS), ("other", NS_OTHER)):
                if kind not in records:
                    continue
                extra = parse_files_or_changelogs(
                    paths[kind],
                    what=f"{kind} metadata ({records[kind].href})",
                    kind=kind,
                    root_tag=ns + ("filelists" if kind == "filelists" else "otherdata"),
                    **xml_args(records[kind]),
                )
                key = "files" if kind == "filelists" else "changelogs"
                for package in packages:
                    entries = extra.get(package["checksum"])
                    if entries is not None:
                        package[key] = entries
            return packages, locations

        def parse_errata() -> list[Record]:
            if "updateinfo" not in records:
                return []
            record = records["updateinfo"]
            return [
                parse_update(element)
                for element in iter_xml(
                    paths["updateinfo"],
                    what=f"updateinfo metadata ({record.href})",
                    tag="update",
                    root_tag="updates",
                    **xml_args(record),
                )
            ]

        def parse_deltas() -> list[Record]:
            if "prestodelta" not in records:
                return []
            record = records["prestodelta"]
            what = f"prestodelta metadata ({record.href})"
            deltas: list[Record] = []
            for element in iter_xml(
                paths["prestodelta"],
                what=what,
                tag="newpackage",
                root_tag="prestodelta",
                **xml_args(record),
            ):
                for delta in parse_newpackage(element, what):
                    delta["checksum_type"] = _checked_type(
                        delta["checksum_type"], f"{what}: {delta['href']}", allow_weak
                    )
                    deltas.append(delta)
            return deltas

        packages, locations = await anyio.to_thread.run_sync(parse_packages)
        plan.errata = await anyio.to_thread.run_sync(parse_errata)
        deltas = await anyio.to_thread.run_sync(parse_deltas)

        urls: dict[str, str] = {}
        by_href: dict[str, Record] = {}
        for package, location in zip(packages, locations, strict=True):
            what = f"primary metadata: package {package['name']}"
            urls[package["href"]] = self._url(location.href, location.base, what)
            other = by_href.get(package["href"])
            if other is not None and other["checksum"] != package["checksum"]:
                raise MetadataError(
                    f"primary metadata: two different packages at {package['href']!r}"
                )
            by_href[package["href"]] = package
        selected = list(by_href.values())
        if self.options.only_newest:
            selected = newest_only(selected)
        plan.packages = selected

        nevras = {
            (p["name"], _epoch(p["epoch"]), p["version"], p["release"], p["arch"]) for p in selected
        }
        for delta in deltas:
            key = (
                delta["name"],
                _epoch(delta["epoch"]),
                delta["version"],
                delta["release"],
                delta["arch"],
            )
            if key in nevras:
                urls[delta["href"]] = self._url(delta["href"], None, "prestodelta metadata")
                plan.deltas.append(delta)

        for rtype, extra in sorted(records.items()):
            if rtype in _PARSED or rtype.endswith(("_db", "_zck")):
                continue
            urls[extra.href] = self._url(extra.href, extra.base, f"{rtype} metadata")
            plan.metadata_files.append(
                {
                    "type": rtype,
                    "href": extra.href,
                    "size": extra.size,
                    "checksum_type": extra.checksum[0],
                    "checksum": extra.checksum[1],
                }
            )

        if treeinfo is not None:
            plan.treeinfo = {
                "href": ".treeinfo",
                "size": len(treeinfo),
                "checksum_type": "sha256",
                "checksum": hashlib.sha256(treeinfo).hexdigest(),
            }
            self.treeinfo_bytes = treeinfo
            for tree_file in parse_treeinfo(treeinfo, allow_weak):
                urls[tree_file["href"]] = self._url(tree_file["href"], None, ".treeinfo")
                plan.tree_files.append(tree_file)
        self.urls = urls
        return plan

    def _check_collisions(self, index: ContentIndex) -> None:
        claimed: dict[str, Record] = {}
        for record in index.files():
            href = record["href"]
            if href.split("/", 1)[0] == RESERVED_TOP and "type" not in record:
                raise MetadataError(
                    f"{href!r} lies in {RESERVED_TOP}/, which a publication generates"
                )
            other = claimed.get(href)
            if other is not None and other.get("checksum") != record.get("checksum"):
                raise MetadataError(f"two different files claim the path {href!r}")
            claimed[href] = record

    async def _content(self, old: ContentIndex, new: ContentIndex) -> set[str]:
        """Download what the new index needs and the repository lacks; return kept hrefs."""
        report = self.report
        missing = set(await anyio.to_thread.run_sync(old.missing_files, self.repo_dir))
        old_records = {r["href"]: r for r in old.files()}
        kept: set[str] = set()
        items: list[_Item] = []
        kinds: list[tuple[str, list[Record]]] = [
            ("rpm", [p for p in new.packages.values() if p.get("origin") != "copy"]),
            ("delta_rpm", new.deltas),
            ("file", new.metadata_files),
            ("tree_file", new.tree_files),
        ]
        seen: set[str] = set()
        if new.treeinfo is not None:
            self._place_treeinfo(new.treeinfo, old_records.get(".treeinfo"), missing, kept)
            seen.add(new.treeinfo["href"])
        for kind, records in kinds:
            for record in records:
                href = record["href"]
                if href in seen:
                    continue
                seen.add(href)
                previous = old_records.get(href)
                same = previous is not None and (
                    previous.get("checksum_type"),
                    previous.get("checksum"),
                ) == (record.get("checksum_type"), record.get("checksum"))
                if same and href not in missing:
                    if record.get("size") is None and previous is not None:
                        record["size"] = previous.get("size")
                    kept.add(href)
                    continue
                try:
                    final = self._final(check_href(href))
                except UnsafePath as exc:
                    raise MetadataError(f"unsafe path: {exc}") from exc
                item = _Item(kind=kind, record=record, url=self.urls[href], final=final)
                if previous is not None and not same:
                    item.stage = True
                elif previous is None:
                    with contextlib.suppress(OSError):
                        found = os.lstat(final)
                        item.adopt = stat.S_ISREG(found.st_mode) and record.get("size") in (
                            None,
                            found.st_size,
                        )
                items.append(item)

        if not items:
            report.state(report.content, FINISHED)
            return kept
        for item in items:
            report.plan(item.kind, item.record.get("size") or 0)
        report.state(report.content, IN_PROGRESS)
        limiter = anyio.CapacityLimiter(self.options.parallel_downloads)
        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(self._obtain, item, limiter, tg.cancel_scope)
        if self.errors:
            report.state(report.content, FAILED)
            first = self.errors[0]["error"]
            raise OperationFailed(
                f"{len(self.errors)} of {len(items)} downloads failed; first: {first}",
                {"errors": self.errors[:20]},
            )
        report.state(report.content, FINISHED)
        return kept

    def _place_treeinfo(
        self, record: Record, previous: Record | None, missing: set[str], kept: set[str]
    ) -> None:
        """Store the .treeinfo fetched with the metadata (staged if it replaces one)."""
        href = record["href"]
        same = previous is not None and previous.get("checksum") == record["checksum"]
        if same and href not in missing:
            kept.add(href)
            return
        final = self._final(href)
        tmp = self._tmp_file()
        tmp.write_bytes(self.treeinfo_bytes)
        if previous is not None:
            self.staged.append((tmp, final, href))
        else:
            os.replace(tmp, final)

    async def _obtain(
        self, item: _Item, limiter: anyio.CapacityLimiter, scope: anyio.CancelScope
    ) -> None:
        record = item.record
        href = record["href"]
        size = record.get("size")
        verify = self.options.verify_checksum or item.kind in ("file", "tree_file")
        checksum = (
            (record["checksum_type"], record["checksum"])
            if verify and record.get("checksum")
            else None
        )
        streamed = 0
        content = self.report.content
        kind_node = self.report.kinds[item.kind]
        touch = self.report.progress.touch

        # Unsized items (tree files) grow the totals as they stream instead.
        counter = "size_left" if size is not None else "size_total"
        sign = -1 if size is not None else 1

        def on_bytes(n: int) -> None:
            nonlocal streamed
            streamed += n
            content[counter] += sign * n
            kind_node[counter] += sign * n
            touch()

        async with limiter:
            if item.adopt and await self._adopt(item, checksum):
                return
            tmp = self._tmp_file()
            placed = False
            try:
                received = await self.fetcher.fetch(
                    item.url,
                    tmp,
                    what=href,
                    size=size,
                    checksum=checksum,
                    cap=self.limits.max_unsized_download,
                    on_bytes=on_bytes,
                    own_connection=True,
                )
                if size is None:
                    record["size"] = received
                if item.stage:
                    self.staged.append((tmp, item.final, href))
                else:
                    self._mkdirs(item.final.parent)
                    os.replace(tmp, item.final)
                placed = True
                self.downloaded += 1
                self.bytes_downloaded += received
                self.report.finished(item.kind, max((size or 0) - streamed, 0), None)
            except (DownloadError, OSError) as exc:
                message = str(exc) if isinstance(exc, DownloadError) else f"{href}: {exc}"
                error = {"href": href, "kind": item.kind, "url": item.url, "error": message}
                self.errors.append(error)
                self.report.finished(item.kind, max((size or 0) - streamed, 0), error)
                if len(self.errors) >= self.limits.max_errors:
                    scope.cancel()
            finally:
                if not placed:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)

    async def _adopt(self, item: _Item, checksum: tuple[str, str] | None) -> bool:
        """Take a file an interrupted sync left at the final path, if it is the right one."""
        try:
            info = os.lstat(item.final)
            if not stat.S_ISREG(info.st_mode):
                return False
            size = info.st_size
            if checksum is not None:
                found = await anyio.to_thread.run_sync(hash_file, item.final, checksum[0])
                if found != (size, checksum[1]):
                    return False
        except OSError:
            return False
        item.record["size"] = size
        self.adopted += 1
        self.report.finished(item.kind, size, None)
        return True


def _prepare(repo_dir: Path) -> Path:
    (repo_dir / CONTENT_DIR).mkdir(parents=True, exist_ok=True)
    return reset_tmp(repo_dir)


def _transport(options: ImporterOptions, limits: Limits) -> Transport:
    return Transport(
        connections=options.parallel_downloads,
        tls_verify=options.tls_verify,
        ca_file=options.ca_file,
        proxy=options.proxy,
        connect_timeout=limits.connect_timeout,
        stall_timeout=limits.stall_timeout,
        min_rate=limits.min_rate,
        grace=limits.grace,
        max_redirects=limits.max_redirects,
    )


async def sync(
    repo_dir: Path,
    options: ImporterOptions,
    progress: Progress,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Make ``repo_dir`` hold what ``options.feed`` offers; return a JSON summary.

    Raises ``OperationFailed`` (with a message naming the file and the problem) for an
    unusable feed or failed downloads; the repository then keeps its previous content.
    Cancellation (an anyio cancel scope) may strike at any await; see the module docstring
    for why that is safe.
    """
    report = _Report(progress)
    if not options.feed:
        report.state(report.metadata, FAILED)
        raise OperationFailed(
            "repository has no feed to sync from; set one in its importer options",
            {"key": "feed"},
        )
    tmp = await anyio.to_thread.run_sync(_prepare, repo_dir)
    fetcher: Fetcher | None = None
    try:
        fetcher = fetcher_for(options.feed, _transport(options, limits))
        return await _Sync(repo_dir, options, limits, report, fetcher, tmp).run()
    except anyio.get_cancelled_exc_class():
        report.interrupted(CANCELED)
        raise
    except MetadataError as exc:
        report.interrupted(FAILED)
        raise OperationFailed(str(exc), {"feed": options.feed}) from exc
    except DownloadError as exc:
        report.interrupted(FAILED)
        raise OperationFailed(str(exc), {"feed": options.feed}) from exc
    except OperationFailed:
        report.interrupted(FAILED)
        raise
    except OSError as exc:  # the repository's own storage: disk full, permissions…
        report.interrupted(FAILED)
        raise OperationFailed(f"cannot write to {repo_dir}: {exc}", {"feed": options.feed}) from exc
    finally:
        if fetcher is not None:
            await fetcher.aclose()
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = [
    "DEFAULT_LIMITS",
    "ImporterOptions",
    "Limits",
    "MetadataError",
    "compare_evr",
    "newest_only",
    "rpmvercmp",
    "sync",
]
