"""A repository's content on disk: the layout, the content index, and the path rules.

Layout of one repository directory::

    repo_dir/
      content.json     the content index; replacing it is the commit point of every change
      content.stamp.json  a small digest of the index (checksums, options, file sizes) for
                       the no-change sync; valid only while its token matches the index's
      content/<href>   packages, delta RPMs, tree files and extra metadata, named by the
                       feed's own relative paths so a publication can keep them
      .tmp/            temporary files (same filesystem, so ``os.replace`` is atomic);
                       whatever is there is stale and is wiped when an operation starts

Invariants, relied on by sync, copy, publish and delete:

- **The index is the truth.** Readers (publish, copy from, ``repo show``) look only at
  ``content.json``. It is replaced atomically (temporary file, ``fsync``, ``os.replace``,
  ``fsync`` of the directory), so a reader or a crash sees the old index or the new one.
- **Every file the index references exists at ``content/<href>`` with the recorded size and
  checksum.** A file reaches its final path only by ``os.replace`` of a complete, verified
  temporary file, or by a hard link to such a file.
- **Files are immutable.** Nothing opens a file at its final path for writing; a changed
  file is a new inode renamed over the old name. That is what makes hard links between
  repositories and into publications safe: no write through one name can reach another.
- **Unreferenced files are harmless.** An interrupted or failed sync may leave verified
  files that the index does not mention yet. Readers ignore them; the next sync adopts
  them when their checksum matches (no download) and removes the rest after it commits.

Durability: the index is fsynced, package files are not (one fsync per file would cost more
than the download on a local mirror). A process crash loses nothing; after a power cut a
referenced file can come back short, which the next sync's size check catches and fetches
again.

Path rules (``check_href`` / ``resolve_in``): a relative path that comes from a feed or an
index must stay below the directory it is joined to. Real attacks used ``../``, absolute
paths, percent-encoded dots and sibling directories sharing a prefix (librepo
CVE-2020-14352, dnf reposync CVE-2018-10897). So the raw string is checked component by
component (and again after percent-decoding), and then the resolved path, symlinks
followed, must lie under the resolved root, compared component-wise with
``Path.is_relative_to`` rather than as a string prefix.

Content index format (``content.json``, format 1)::

    {
      "format": 1,  "token": "<32 hex, new at every save, shared with the stamp>",
      "feed": "https://…/" | null,       "revision": "…" | null,
      "repomd_checksum": "sha256:…" | null,   "treeinfo_checksum": "sha256:…" | null,
      "sync_options": {"feed": …, "only_newest": …, "allow_weak_checksums": …} | null,
      "synced_at": 1700000000.0 | null,
      "packages": [PACKAGE, …],          sorted by href
      "errata": [ERRATUM, …],            updateinfo records
      "deltas": [DELTA, …],              delta RPMs (prestodelta)
      "tree_files": [FILE, …],           files named by .treeinfo
      "metadata_files": [FILE + "type"], extra repomd records kept as they are (comps, …)
      "treeinfo": FILE | null            the .treeinfo itself
    }

The records themselves (PACKAGE, ERRATUM, DELTA, FILE and a metadata FILE with its
``type``) are typed in ``coordd.repo.records``, in the key order they have on disk.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import unquote

from coordd.api.errors import OperationFailed
from coordd.repo.records import Delta, Erratum, MetadataFile, Package, StoredFile, TreeFile

INDEX_NAME = "content.json"
STAMP_NAME = "content.stamp.json"
CONTENT_DIR = "content"
TMP_DIR = ".tmp"

FORMAT = 1

# Top-level directory of a publication that the publisher generates; no stored file may
# claim a path in it, or a feed could overwrite the metadata it is published with.
RESERVED_TOP = "repodata"

_MAX_HREF = 4096
_MAX_COMPONENT = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class Counts(TypedDict):
    """How many records of each kind an index holds (kept in its stamp)."""

    packages: int
    feed_packages: int  # packages that are not copies
    errata: int
    deltas: int
    tree_files: int
    metadata_files: int


class UnsafePath(ValueError):
    """A relative path from a feed or an index would leave its directory (or is malformed)."""


# -- path rules ---------------------------------------------------------------------------------


def _check_components(path: str, raw: str, how: str) -> None:
    for part in path.split("/"):
        if part in ("", "."):
            raise UnsafePath(f"{raw!r}: empty or '.' path component{how}")
        if part == "..":
            raise UnsafePath(f"{raw!r}: parent directory component '..'{how}")
        if len(part.encode("utf-8", "surrogateescape")) > _MAX_COMPONENT:
            raise UnsafePath(f"{raw!r}: path component longer than {_MAX_COMPONENT} bytes")


def check_href(href: str) -> str:
    """Return ``href`` if it is a safe relative path, else raise ``UnsafePath`` saying why.

    Checked on the raw string: non-empty, bounded length, no control characters, no
    backslash (a separator on other systems and in some servers), not absolute, no URL
    scheme or network location, no query or fragment, and no empty, ``.`` or ``..``
    component; then the same component rules again after percent-decoding, so ``%2e%2e``
    is caught whatever a server later does with it.
    """
    if not isinstance(href, str) or not href:
        raise UnsafePath("empty path")
    if len(href) > _MAX_HREF:
        raise UnsafePath(f"path longer than {_MAX_HREF} characters")
    if _CONTROL.search(href):
        raise UnsafePath(f"{href!r}: control character in path")
    if "\\" in href:
        raise UnsafePath(f"{href!r}: backslash in path")
    if href.startswith("/"):
        raise UnsafePath(f"{href!r}: absolute path")
    if _SCHEME.match(href):
        raise UnsafePath(f"{href!r}: URL scheme in a relative path")
    if "?" in href or "#" in href:
        raise UnsafePath(f"{href!r}: query or fragment in path")
    _check_components(href, href, "")
    decoded = href
    for _ in range(4):  # decode until stable: %252e%252e is %2e%2e is ..
        again = unquote(decoded)
        if again == decoded:
            break
        decoded = again
    else:
        raise UnsafePath(f"{href!r}: percent-encoding nested too deep")
    if decoded != href:
        if "\\" in decoded or _CONTROL.search(decoded):
            raise UnsafePath(f"{href!r}: percent-encoded backslash or control character")
        if decoded.startswith("/"):
            raise UnsafePath(f"{href!r}: percent-encoded absolute path")
        _check_components(decoded, href, " (after percent-decoding)")
    return href


def resolve_in(root: Path, href: str) -> Path:
    """``root / href`` after ``check_href``, verified to resolve (symlinks too) below ``root``.

    The comparison is ``Path.is_relative_to`` on resolved paths, i.e. component-wise:
    ``/srv/repo-evil`` is not inside ``/srv/repo`` although the string starts with it.
    """
    check_href(href)
    base = root.resolve()
    target = (base / href).resolve()
    if target == base or not target.is_relative_to(base):
        raise UnsafePath(f"{href!r}: resolves outside {base}")
    return target


# -- the index ----------------------------------------------------------------------------------


@dataclass
class ContentIndex:
    """What a repository holds; see the module docstring for the JSON format."""

    feed: str | None = None
    revision: str | None = None
    repomd_checksum: str | None = None
    treeinfo_checksum: str | None = None
    sync_options: dict[str, Any] | None = None
    synced_at: float | None = None
    packages: dict[str, Package] = field(default_factory=dict)  # by href
    errata: list[Erratum] = field(default_factory=list)
    deltas: list[Delta] = field(default_factory=list)
    tree_files: list[TreeFile] = field(default_factory=list)
    metadata_files: list[MetadataFile] = field(default_factory=list)
    treeinfo: TreeFile | None = None

    # -- reading and writing ---------------------------------------------------------------

    @classmethod
    def load(cls, repo_dir: Path) -> ContentIndex:
        """Read ``repo_dir/content.json``; an empty index if the repository has none yet."""
        path = repo_dir / INDEX_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls()
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise OperationFailed(f"content index {path} is not valid JSON: {exc}") from exc
        try:
            return cls.from_json(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise OperationFailed(f"content index {path} is corrupt: {exc}") from exc

    @classmethod
    def from_json(cls, data: Any) -> ContentIndex:
        if not isinstance(data, dict):
            raise TypeError("top level is not an object")
        if data.get("format") != FORMAT:
            raise ValueError(f"unsupported format {data.get('format')!r} (expected {FORMAT})")
        index = cls(
            feed=data.get("feed"),
            revision=data.get("revision"),
            repomd_checksum=data.get("repomd_checksum"),
            treeinfo_checksum=data.get("treeinfo_checksum"),
            sync_options=data.get("sync_options"),
            synced_at=data.get("synced_at"),
            packages={p["href"]: p for p in _records(data, "packages")},
            errata=_records(data, "errata", files=False),
            deltas=_records(data, "deltas"),
            tree_files=_records(data, "tree_files"),
            metadata_files=_records(data, "metadata_files"),
            treeinfo=data.get("treeinfo"),
        )
        if index.treeinfo is not None:
            _check_file_record(index.treeinfo)
        return index

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "feed": self.feed,
            "revision": self.revision,
            "repomd_checksum": self.repomd_checksum,
            "treeinfo_checksum": self.treeinfo_checksum,
            "sync_options": self.sync_options,
            "synced_at": self.synced_at,
            "packages": [self.packages[href] for href in sorted(self.packages)],
            "errata": self.errata,
            "deltas": self.deltas,
            "tree_files": self.tree_files,
            "metadata_files": self.metadata_files,
            "treeinfo": self.treeinfo,
        }

    def save(self, repo_dir: Path) -> None:
        """Replace ``repo_dir/content.json`` atomically and durably, then its stamp."""
        token = uuid.uuid4().hex
        write_json_atomic(
            repo_dir / INDEX_NAME, {"format": FORMAT, "token": token, **self.to_json()}
        )
        write_json_atomic(repo_dir / STAMP_NAME, self.stamp(token))

    def stamp(self, token: str) -> dict[str, Any]:
        """What a no-change sync needs to know, small enough to read in a millisecond."""
        return {
            "format": FORMAT,
            "token": token,
            "revision": self.revision,
            "repomd_checksum": self.repomd_checksum,
            "treeinfo_checksum": self.treeinfo_checksum,
            "sync_options": self.sync_options,
            "counts": self.counts(),
            "files": [[r["href"], r.get("size")] for r in self.files()],
        }

    # -- queries ---------------------------------------------------------------------------

    def counts(self) -> Counts:
        return {
            "packages": len(self.packages),
            "feed_packages": sum(1 for p in self.packages.values() if p.get("origin") != "copy"),
            "errata": len(self.errata),
            "deltas": len(self.deltas),
            "tree_files": len(self.tree_files),
            "metadata_files": len(self.metadata_files),
        }

    def files(self) -> Iterator[StoredFile]:
        """Every stored-file record: packages, deltas, tree files, metadata, .treeinfo."""
        yield from self.packages.values()
        yield from self.deltas
        yield from self.tree_files
        yield from self.metadata_files
        if self.treeinfo is not None:
            yield self.treeinfo

    def hrefs(self) -> set[str]:
        return {record["href"] for record in self.files()}

    def missing_files(self, repo_dir: Path) -> list[str]:
        """Hrefs whose file is absent or has another size than recorded (a cheap stat)."""
        root = repo_dir / CONTENT_DIR
        missing = []
        for record in self.files():
            try:
                size = os.stat(root / record["href"]).st_size
            except OSError:
                missing.append(record["href"])
                continue
            if record.get("size") is not None and size != record["size"]:
                missing.append(record["href"])
        return missing


_TOKEN = re.compile(rb'^\{"format":\d+,"token":"([0-9a-f]{32})"')


def read_stamp(repo_dir: Path) -> dict[str, Any] | None:
    """The stamp of the current index, or None if there is none or it is not the index's.

    The index and its stamp are two files, replaced one after the other; a crash between
    the two leaves a stamp of the previous index. Both carry the same random token, which
    ``save`` writes at the very start of the index, so checking it reads 100 bytes.
    """
    try:
        stamp = json.loads((repo_dir / STAMP_NAME).read_bytes())
        with open(repo_dir / INDEX_NAME, "rb") as f:
            head = f.read(100)
    except (OSError, ValueError):
        return None
    match = _TOKEN.match(head)
    if not isinstance(stamp, dict) or match is None or stamp.get("format") != FORMAT:
        return None
    if stamp.get("token") != match.group(1).decode():
        return None
    return stamp


def stamp_counts(stamp: dict[str, Any]) -> Counts:
    """The counts a stamp records (0 for any it lacks)."""
    counts = stamp.get("counts", {})
    return {
        "packages": counts.get("packages", 0),
        "feed_packages": counts.get("feed_packages", 0),
        "errata": counts.get("errata", 0),
        "deltas": counts.get("deltas", 0),
        "tree_files": counts.get("tree_files", 0),
        "metadata_files": counts.get("metadata_files", 0),
    }


def missing_from_stamp(repo_dir: Path, stamp: dict[str, Any]) -> list[str]:
    """Like ``ContentIndex.missing_files``, from a stamp's ``[href, size]`` list."""
    root = repo_dir / CONTENT_DIR
    missing = []
    for href, size in stamp.get("files", []):
        try:
            found = os.stat(root / href).st_size
        except (OSError, TypeError):
            missing.append(href)
            continue
        if size is not None and found != size:
            missing.append(href)
    return missing


def _check_file_record(record: Any) -> None:
    if not isinstance(record, dict):
        raise TypeError("file record is not an object")
    href = record["href"]
    try:
        check_href(href)
    except UnsafePath as exc:
        raise ValueError(f"unsafe href in index: {exc}") from exc
    size = record.get("size")
    if size is not None and (not isinstance(size, int) or size < 0):
        raise ValueError(f"bad size for {href!r}")


def _records(data: dict[str, Any], key: str, *, files: bool = True) -> list[Any]:
    """The list ``data[key]``, each entry checked as far as the index trusts its own JSON."""
    value = data.get(key, [])
    if not isinstance(value, list):
        raise TypeError(f"{key} is not a list")
    for record in value:
        if files:
            _check_file_record(record)
        elif not isinstance(record, dict):
            raise TypeError(f"{key} entry is not an object")
    return value


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path``: temporary file, fsync, ``os.replace``, dir fsync."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            # dumps then one write: json.dump streams through pure-Python chunks, 5x slower.
            f.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- housekeeping -------------------------------------------------------------------------------


def reset_tmp(repo_dir: Path) -> Path:
    """Empty (create) ``repo_dir/.tmp``: whatever an earlier run left there is stale."""
    tmp = repo_dir / TMP_DIR
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


def collect_garbage(repo_dir: Path, keep: set[str]) -> int:
    """Remove files under ``content/`` whose href is not in ``keep``, and empty directories.

    Run only after the index that defines ``keep`` has been committed. Returns the number
    of files removed.
    """
    root = repo_dir / CONTENT_DIR
    removed = 0
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel not in keep:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, name))
                removed += 1
        for name in dirnames:
            with contextlib.suppress(OSError):  # not empty: fine
                os.rmdir(os.path.join(dirpath, name))
    return removed


def link_or_copy(src: Path, dst: Path) -> bool:
    """Hard-link ``src`` to ``dst`` (which must not exist); copy across filesystems.

    Returns True for a link, False for a copy.
    """
    try:
        os.link(src, dst)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
    shutil.copyfile(src, dst)
    return False


# -- summary and removal ------------------------------------------------------------------------


def content_summary(repo_dir: Path) -> dict[str, Any]:
    """Counts, total size and a brief list of errata, for ``repo show``."""
    index = ContentIndex.load(repo_dir)
    errata = [
        {
            "id": e.get("id"),
            "type": e.get("type"),
            "severity": e.get("severity"),
            "title": e.get("title"),
            "issued": e.get("issued_date"),
        }
        for e in index.errata
    ]
    return {
        "packages": len(index.packages),
        "size": sum(int(p.get("size") or 0) for p in index.packages.values()),
        "delta_rpms": len(index.deltas),
        "tree_files": len(index.tree_files),
        "metadata_files": len(index.metadata_files),
        "errata_count": len(errata),
        "errata": errata,
        "revision": index.revision,
        "feed": index.feed,
        "synced_at": index.synced_at,
        "last_sync": (
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(index.synced_at))
            if index.synced_at
            else None
        ),
    }


def remove_content(repo_dir: Path) -> list[str]:
    """Delete a repository's content directory; safe to run again after a crash.

    The directory is first renamed to a fixed tombstone name beside it (atomic), then
    removed; so an interrupted delete never leaves a half-removed directory under the live
    name, and a rerun finds and finishes the tombstone. Returns what was removed.
    """
    removed: list[str] = []
    tombstone = repo_dir.with_name(f".{repo_dir.name}.deleting")
    if repo_dir.exists() or repo_dir.is_symlink():
        if tombstone.exists():
            shutil.rmtree(tombstone)
        os.replace(repo_dir, tombstone)
        removed.append(str(repo_dir))
    if tombstone.exists():
        shutil.rmtree(tombstone)
    return removed


__all__ = [
    "CONTENT_DIR",
    "INDEX_NAME",
    "RESERVED_TOP",
    "ContentIndex",
    "Counts",
    "UnsafePath",
    "check_href",
    "collect_garbage",
    "content_summary",
    "link_or_copy",
    "missing_from_stamp",
    "read_stamp",
    "remove_content",
    "reset_tmp",
    "resolve_in",
    "stamp_counts",
    "write_json_atomic",
]
