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

import contextlib
import functools
import hashlib
import itertools
import os
import shutil
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import anyio
import anyio.from_thread
import anyio.to_thread

from coordd.api.errors import OperationFailed
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
from coordd.repo.records import Delta, Erratum, MetadataFile, Package, StoredFile, TreeFile
from coordd.repo.yum.errors import MetadataError
from coordd.repo.yum.options import DEFAULT_LIMITS, ImporterOptions, Limits
from coordd.repo.yum.prestodelta import read_deltas
from coordd.repo.yum.primary import read_packages
from coordd.repo.yum.repomd import FetchedMetadata, RepomdRecord, parse_repomd
from coordd.repo.yum.treeinfo import parse_treeinfo
from coordd.repo.yum.updateinfo import read_errata
from coordd.repo.yum.versions import epoch_number, newest_only

# Repomd record types this importer regenerates (so does not keep as files), or that only
# duplicate them in another form.
_PARSED: Final = ("primary", "filelists", "other", "updateinfo", "prestodelta")

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


# -- the sync -----------------------------------------------------------------------------------


@dataclass
class _Item:
    kind: str
    record: StoredFile
    url: str
    final: Path
    stage: bool = False  # the current index references this path with other content
    adopt: bool = False  # an unreferenced file of the right size is already there


@dataclass
class _Plan:
    packages: list[Package] = field(default_factory=list)
    deltas: list[Delta] = field(default_factory=list)
    tree_files: list[TreeFile] = field(default_factory=list)
    metadata_files: list[MetadataFile] = field(default_factory=list)
    treeinfo: TreeFile | None = None
    errata: list[Erratum] = field(default_factory=list)


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

    async def _metadata(self, records: dict[str, RepomdRecord], treeinfo: bytes | None) -> _Plan:
        """Fetch and parse every metadata file; choose what the repository will hold."""
        plan = _Plan()
        allow_weak = self.options.allow_weak_checksums
        fetched: dict[str, FetchedMetadata] = {}

        failures: list[DownloadError | OSError] = []

        async def get(record: RepomdRecord, url: str, scope: anyio.CancelScope) -> None:
            dest = self._tmp_file()
            fetched[record.type] = FetchedMetadata(
                record, dest, self.limits.max_metadata_size, anyio.from_thread.check_cancelled
            )
            try:
                await self.fetcher.fetch(
                    url,
                    dest,
                    what=record.what(),
                    size=record.size,
                    checksum=record.checksum,
                    cap=self.limits.max_metadata_size,
                )
            except (DownloadError, OSError) as exc:
                failures.append(exc)
                scope.cancel()

        wanted = [records[t] for t in _PARSED if t in records]
        urls_md = {r.type: self._url(r.href, r.base, r.what()) for r in wanted}
        async with anyio.create_task_group() as tg:
            for record in wanted:
                tg.start_soon(get, record, urls_md[record.type], tg.cancel_scope)
        if failures:
            if isinstance(failures[0], OSError):
                raise OperationFailed(f"cannot store metadata: {failures[0]}")
            raise failures[0]

        packages, locations = await anyio.to_thread.run_sync(
            functools.partial(
                read_packages,
                fetched["primary"],
                fetched.get("filelists"),
                fetched.get("other"),
                allow_weak=allow_weak,
            )
        )
        if "updateinfo" in fetched:
            plan.errata = await anyio.to_thread.run_sync(read_errata, fetched["updateinfo"])
        deltas: list[Delta] = []
        if "prestodelta" in fetched:
            deltas = await anyio.to_thread.run_sync(
                functools.partial(read_deltas, fetched["prestodelta"], allow_weak=allow_weak)
            )

        urls: dict[str, str] = {}
        by_href: dict[str, Package] = {}
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
            (p["name"], epoch_number(p["epoch"]), p["version"], p["release"], p["arch"])
            for p in selected
        }
        for delta in deltas:
            key = (
                delta["name"],
                epoch_number(delta["epoch"]),
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
        claimed: dict[str, StoredFile] = {}
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
        kinds: list[tuple[str, Sequence[StoredFile]]] = [
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
                    known = None if previous is None else previous.get("size")
                    if record.get("size") is None and known is not None:
                        record["size"] = known
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
        self, record: TreeFile, previous: StoredFile | None, missing: set[str], kept: set[str]
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
        checksum_type, digest = record.get("checksum_type"), record.get("checksum")
        checksum = (checksum_type, digest) if verify and digest and checksum_type else None
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


__all__ = ["sync"]
