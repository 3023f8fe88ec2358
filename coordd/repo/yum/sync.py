"""The yum importer: make a repository's content match a remote yum/dnf feed.

``sync(repo_dir, options, progress)`` fetches ``repodata/repomd.xml``; the primary, filelists
and other metadata; errata (updateinfo); delta RPMs (prestodelta); extra metadata files
(comps, modules, …, kept as they are); and a distribution tree (``.treeinfo`` at the feed
root and the files it names). It chooses the packages (all, or the newest EVR of each name
and arch), downloads what the repository lacks in parallel, and commits the result by
replacing the content index (see ``coordd.repo.content`` for the layout and its invariants).

The sync is a sequence of named steps (``_Sync.run``): fetch repomd.xml and .treeinfo;
stop early if nothing changed; parse repomd.xml; fetch the metadata files; parse them
(``primary``, ``updateinfo``, ``prestodelta``, ``treeinfo``); choose the packages and
what else to keep; build the new index; download (``download``); commit. Both ways out,
changed or not, report one ``SyncSummary``.

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
    - XML (``safexml``): lxml with entity resolution and network access off, no DTD loading, default
      (non-huge) tree limits, and any document with a DOCTYPE is refused outright.
    - Compression (``decompress``) is detected by magic bytes (gz, xz, bz2, zst); the
      decompressed size is capped by the declared ``open-size`` and by a hard cap (bz2
      reaches 1,000,000:1), and the ``open-checksum`` is verified when declared.
    - Checksums: metadata is always verified; sha1/md5/sha224 are refused unless
      ``allow_weak_checksums``; unknown types are refused.
    - Transport (``coordd.repo.fetch``): each body must keep a minimum average rate after a
      grace period (a body trickling one byte at a time never trips a read timeout),
      bodies larger than declared are cut off at once, redirects from https to http (or to
      another scheme) are refused, and a ``Content-Encoding`` the importer did not ask for
      is refused. Redirects to other hosts are followed: mirrors and CDNs use them, and
      what arrives is still checked against the metadata.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import anyio
import anyio.from_thread
import anyio.to_thread

from coordd.api.errors import OperationFailed
from coordd.engine.progress import CANCELED, FAILED, FINISHED, IN_PROGRESS, SKIPPED, Progress
from coordd.repo.content import (
    CONTENT_DIR,
    RESERVED_TOP,
    ContentIndex,
    Counts,
    UnsafePath,
    check_href,
    collect_garbage,
    missing_from_stamp,
    read_stamp,
    reset_tmp,
    stamp_counts,
)
from coordd.repo.fetch import DownloadError, Fetcher, fetcher_for
from coordd.repo.records import Delta, Erratum, MetadataFile, Package, StoredFile, TreeFile
from coordd.repo.yum.download import Downloader, Workspace
from coordd.repo.yum.errors import MetadataError
from coordd.repo.yum.mirrors import Mirrors, parse_metalink, parse_mirrorlist
from coordd.repo.yum.options import (
    DEFAULT_LIMITS,
    ImporterOptions,
    Limits,
    without_userinfo,
)
from coordd.repo.yum.prestodelta import read_deltas
from coordd.repo.yum.primary import Location, read_packages
from coordd.repo.yum.repomd import FetchedMetadata, RepomdRecord, parse_repomd
from coordd.repo.yum.report import Report
from coordd.repo.yum.treeinfo import parse_treeinfo
from coordd.repo.yum.updateinfo import read_errata
from coordd.repo.yum.versions import epoch_number, newest_only

# Repomd record types this importer regenerates (so does not keep as files), or that only
# duplicate them in another form.
_PARSED: Final = ("primary", "filelists", "other", "updateinfo", "prestodelta")


@dataclass(frozen=True)
class SyncSummary:
    """What a sync did, as ``sync`` returns it (``to_json``) and ``repo show`` shows it."""

    feed: str  # the base URL synced from: the feed, or the mirror chosen
    mirror: str | None  # the mirror used, for a sync from a metalink or mirrorlist
    changed: bool  # False: the feed was unchanged; only repomd.xml and .treeinfo were read
    revision: str | None
    packages: int  # in the repository now, copies included
    added: int  # feed packages the repository did not hold before
    kept: int  # feed packages it already held
    removed: int  # feed packages it dropped
    downloaded: int
    adopted: int  # files an interrupted sync had left, taken without a download
    bytes_downloaded: int
    errata: int
    delta_rpms: int
    tree_files: int
    metadata_files: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Fingerprint:
    """What decides whether a feed changed since the last sync."""

    repomd_checksum: str
    treeinfo_checksum: str | None
    sync_options: dict[str, Any]


@dataclass
class _Plan:
    """What the repository will hold, chosen from the parsed metadata."""

    packages: list[Package] = field(default_factory=list)
    deltas: list[Delta] = field(default_factory=list)
    tree_files: list[TreeFile] = field(default_factory=list)
    metadata_files: list[MetadataFile] = field(default_factory=list)
    treeinfo: TreeFile | None = None
    errata: list[Erratum] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)  # href → URL, for every file above


class _Sync:
    """One sync of one repository from its feed; ``run`` calls the steps in order."""

    def __init__(
        self,
        repo_dir: Path,
        options: ImporterOptions,
        limits: Limits,
        report: Report,
        fetcher: Fetcher,
        tmp: Path,
    ) -> None:
        self.repo_dir = repo_dir
        self.options = options
        self.limits = limits
        self.report = report
        self.fetcher = fetcher
        self.workspace = Workspace(repo_dir, tmp)
        self.downloader = Downloader(self.workspace, fetcher, report, options, limits)
        self.mirror: str | None = None
        self._use(options.feed or "")

    def _use(self, base: str) -> None:
        """Take ``base`` (the feed, or a mirror) as the URL every href is relative to."""
        self.feed = base if base.endswith("/") else base + "/"
        parts = urlsplit(self.feed)
        self.feed_scheme, self.feed_netloc = parts.scheme, parts.netloc
        self.feed_root = (
            Path(url2pathname(parts.path)).resolve() if parts.scheme == "file" else None
        )

    # -- the steps, in order ---------------------------------------------------------------

    async def run(self) -> SyncSummary:
        """The sync: each step below is a method, called in this order."""
        report = self.report
        report.state(report.metadata, IN_PROGRESS)
        repomd, treeinfo = await self.fetch_repomd()
        fingerprint = self.fingerprint(repomd, treeinfo)
        stamp = await anyio.to_thread.run_sync(self.unchanged, fingerprint)
        if stamp is not None:
            return self.skip(stamp)
        old = await anyio.to_thread.run_sync(ContentIndex.load, self.repo_dir)
        revision, records = self.parse_repomd(repomd)
        fetched = await self.fetch_metadata(records)
        packages, locations, errata, deltas = await self.parse_metadata(fetched)
        plan = self.choose_packages(packages, locations, deltas)
        plan.errata = errata
        self.keep_metadata_files(plan, records)
        if treeinfo is not None:
            self.add_tree(plan, treeinfo)
        new = self.new_index(old, plan, revision, fingerprint)
        report.state(report.metadata, FINISHED)
        kept = await self.downloader.download(old, new, plan.urls, treeinfo or b"")
        await self.commit(old, new, errata="updateinfo" in records)
        feed_hrefs = {p["href"] for p in plan.packages}
        removed = [
            h for h, p in old.packages.items() if p.get("origin") != "copy" and h not in feed_hrefs
        ]
        return self.summary(
            changed=True,
            revision=revision,
            counts=new.counts(),
            added=len([h for h in feed_hrefs if h not in kept]),
            kept=len([h for h in feed_hrefs if h in kept]),
            removed=len(removed),
        )

    async def fetch_repomd(self) -> tuple[bytes, bytes | None]:
        """repomd.xml, and the feed's .treeinfo if it has one.

        From a metalink or mirrorlist: the first mirror in the list's order whose repomd.xml
        downloads and (for a metalink) matches the size and hashes the metalink gives; each
        mirror refused is recorded in the report, and the rest of the sync uses the one
        chosen.
        """
        if self.options.feed is not None:
            repomd = await self._fetch_small(self.feed + "repodata/repomd.xml", "repomd.xml")
        else:
            repomd = await self.choose_mirror(await self.fetch_mirrors())
        assert repomd is not None
        treeinfo = await self._fetch_small(self.feed + ".treeinfo", ".treeinfo", optional=True)
        return repomd, treeinfo

    async def fetch_mirrors(self) -> Mirrors:
        """The metalink or mirrorlist, fetched (capped) and parsed."""
        metalink = self.options.metalink
        url = metalink or self.options.mirrorlist
        assert url is not None
        what = "metalink" if metalink else "mirrorlist"
        data = await self._fetch_small(url, what, cap=self.limits.max_mirror_list)
        assert data is not None
        return parse_metalink(data) if metalink else parse_mirrorlist(data)

    async def choose_mirror(self, mirrors: Mirrors) -> bytes:
        """The repomd.xml of the first usable mirror, which the sync then uses."""
        refused: list[str] = []
        for mirror in mirrors.urls:
            try:
                # No retries: the next mirror is the better second attempt (as dnf does).
                repomd = await self._fetch_small(
                    mirror + "repodata/repomd.xml", "repomd.xml", retries=0
                )
                assert repomd is not None
                mirrors.check_repomd(repomd, mirror)
            except (DownloadError, MetadataError) as exc:
                self.report.mirror_skipped(mirror, str(exc))
                refused.append(str(exc))
                continue
            self.mirror = mirror
            self._use(mirror)
            self.report.mirror_used(mirror)
            return repomd
        raise MetadataError(
            f"none of the {len(mirrors.urls)} mirrors served a usable repomd.xml; "
            f"the first: {refused[0]}"
        )

    def fingerprint(self, repomd: bytes, treeinfo: bytes | None) -> _Fingerprint:
        """What the stamp of the last sync must match for this one to change nothing."""
        return _Fingerprint(
            repomd_checksum="sha256:" + hashlib.sha256(repomd).hexdigest(),
            treeinfo_checksum=(
                None if treeinfo is None else "sha256:" + hashlib.sha256(treeinfo).hexdigest()
            ),
            sync_options={
                # For a list of mirrors, the list: any mirror with the same repomd.xml will do.
                "feed": self.feed if self.options.feed else self.options.source,
                "only_newest": self.options.only_newest,
                "allow_weak_checksums": self.options.allow_weak_checksums,
            },
        )

    def unchanged(self, fingerprint: _Fingerprint) -> dict[str, Any] | None:
        """The stamp of the current index if the feed has not changed since, else None.

        The stamp, not the whole index: a no-change sync should not parse megabytes.
        """
        stamp = read_stamp(self.repo_dir)
        if (
            stamp is not None
            and stamp.get("repomd_checksum") == fingerprint.repomd_checksum
            and stamp.get("treeinfo_checksum") == fingerprint.treeinfo_checksum
            and stamp.get("sync_options") == fingerprint.sync_options
            and not missing_from_stamp(self.repo_dir, stamp)
        ):
            return stamp
        return None

    def skip(self, stamp: dict[str, Any]) -> SyncSummary:
        """End a sync of an unchanged feed: every step done, nothing fetched or changed."""
        report = self.report
        counts = stamp_counts(stamp)
        report.state(report.metadata, FINISHED)
        report.state(report.content, FINISHED)
        report.state(report.errata, FINISHED if counts["errata"] else SKIPPED)
        return self.summary(
            changed=False,
            revision=stamp.get("revision"),
            counts=counts,
            added=0,
            kept=counts["feed_packages"],
            removed=0,
        )

    def parse_repomd(self, repomd: bytes) -> tuple[str | None, dict[str, RepomdRecord]]:
        """The revision and the records of repomd.xml, which must list a primary."""
        revision, records = parse_repomd(repomd, self.options.allow_weak_checksums)
        if "primary" not in records:
            raise MetadataError("repomd.xml: no primary record")
        return revision, records

    async def fetch_metadata(self, records: dict[str, RepomdRecord]) -> dict[str, FetchedMetadata]:
        """Fetch the metadata files this importer parses, in parallel, verified."""
        fetched: dict[str, FetchedMetadata] = {}
        failures: list[DownloadError | OSError] = []

        async def get(record: RepomdRecord, url: str, scope: anyio.CancelScope) -> None:
            dest = self.workspace.tmp_file()
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
                    on_retry=self._retried,
                )
            except (DownloadError, OSError) as exc:
                failures.append(exc)
                scope.cancel()

        wanted = [records[t] for t in _PARSED if t in records]
        urls = {r.type: self._url(r.href, r.base, r.what()) for r in wanted}
        async with anyio.create_task_group() as tg:
            for record in wanted:
                tg.start_soon(get, record, urls[record.type], tg.cancel_scope)
        if failures:
            if isinstance(failures[0], OSError):
                raise OperationFailed(f"cannot store metadata: {failures[0]}")
            raise failures[0]
        return fetched

    async def parse_metadata(
        self, fetched: dict[str, FetchedMetadata]
    ) -> tuple[list[Package], list[Location], list[Erratum], list[Delta]]:
        """Parse packages, errata and deltas, each in a worker thread."""
        allow_weak = self.options.allow_weak_checksums
        packages, locations = await anyio.to_thread.run_sync(
            functools.partial(
                read_packages,
                fetched["primary"],
                fetched.get("filelists"),
                fetched.get("other"),
                allow_weak=allow_weak,
            )
        )
        errata: list[Erratum] = []
        if "updateinfo" in fetched:
            errata = await anyio.to_thread.run_sync(read_errata, fetched["updateinfo"])
        deltas: list[Delta] = []
        if "prestodelta" in fetched:
            deltas = await anyio.to_thread.run_sync(
                functools.partial(read_deltas, fetched["prestodelta"], allow_weak=allow_weak)
            )
        return packages, locations, errata, deltas

    def choose_packages(
        self, packages: list[Package], locations: list[Location], deltas: list[Delta]
    ) -> _Plan:
        """One package per href (all, or the newest of each name and arch), and their deltas."""
        plan = _Plan()
        urls = plan.urls
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
        return plan

    def keep_metadata_files(self, plan: _Plan, records: dict[str, RepomdRecord]) -> None:
        """The other repomd records (comps, modules, …), kept as files as they are."""
        for rtype, extra in sorted(records.items()):
            if rtype in _PARSED or rtype.endswith(("_db", "_zck")):
                continue
            plan.urls[extra.href] = self._url(extra.href, extra.base, f"{rtype} metadata")
            plan.metadata_files.append(
                {
                    "type": rtype,
                    "href": extra.href,
                    "size": extra.size,
                    "checksum_type": extra.checksum[0],
                    "checksum": extra.checksum[1],
                }
            )

    def add_tree(self, plan: _Plan, treeinfo: bytes) -> None:
        """The .treeinfo itself and the distribution tree files it names."""
        plan.treeinfo = {
            "href": ".treeinfo",
            "size": len(treeinfo),
            "checksum_type": "sha256",
            "checksum": hashlib.sha256(treeinfo).hexdigest(),
        }
        for tree_file in parse_treeinfo(treeinfo, self.options.allow_weak_checksums):
            plan.urls[tree_file["href"]] = self._url(tree_file["href"], None, ".treeinfo")
            plan.tree_files.append(tree_file)

    def new_index(
        self,
        old: ContentIndex,
        plan: _Plan,
        revision: str | None,
        fingerprint: _Fingerprint,
    ) -> ContentIndex:
        """The index to commit: the plan, plus the copies the old index holds."""
        new = ContentIndex(
            feed=self.feed,
            revision=revision,
            repomd_checksum=fingerprint.repomd_checksum,
            treeinfo_checksum=fingerprint.treeinfo_checksum,
            sync_options=fingerprint.sync_options,
            synced_at=time.time(),
            errata=plan.errata,
            deltas=plan.deltas,
            tree_files=plan.tree_files,
            metadata_files=plan.metadata_files,
            treeinfo=plan.treeinfo,
        )
        new.packages = {p["href"]: p for p in plan.packages}
        for href, package in old.packages.items():
            if package.get("origin") == "copy" and href not in new.packages:
                new.packages[href] = package
        _check_collisions(new)
        return new

    async def commit(self, old: ContentIndex, new: ContentIndex, *, errata: bool) -> None:
        """Save the new index (after an interim one if files change in place); clean up."""
        report = self.report
        report.state(report.errata, IN_PROGRESS)
        staged_files = self.workspace.staged
        if staged_files:
            # The feed changed files in place: commit first without the old versions.
            interim = ContentIndex.from_json(old.to_json())
            staged = {href for _tmp, _final, href in staged_files}
            interim.packages = {h: p for h, p in interim.packages.items() if h not in staged}
            interim.deltas = [r for r in interim.deltas if r["href"] not in staged]
            interim.tree_files = [r for r in interim.tree_files if r["href"] not in staged]
            interim.metadata_files = [r for r in interim.metadata_files if r["href"] not in staged]
            if interim.treeinfo and interim.treeinfo["href"] in staged:
                interim.treeinfo = None
            await anyio.to_thread.run_sync(interim.save, self.repo_dir)
            self.workspace.place_staged()
        await anyio.to_thread.run_sync(new.save, self.repo_dir)
        report.state(report.errata, FINISHED if errata else SKIPPED)
        await anyio.to_thread.run_sync(collect_garbage, self.repo_dir, new.hrefs())

    def summary(
        self,
        *,
        changed: bool,
        revision: str | None,
        counts: Counts,
        added: int,
        kept: int,
        removed: int,
    ) -> SyncSummary:
        """The one summary of a sync, whichever way it ended."""
        downloader = self.downloader
        return SyncSummary(
            feed=self.feed,
            mirror=self.mirror,
            changed=changed,
            revision=revision,
            packages=counts["packages"],
            added=added,
            kept=kept,
            removed=removed,
            downloaded=downloader.downloaded,
            adopted=downloader.adopted,
            bytes_downloaded=downloader.bytes_downloaded,
            errata=counts["errata"],
            delta_rpms=counts["deltas"],
            tree_files=counts["tree_files"],
            metadata_files=counts["metadata_files"],
        )

    # -- helpers ---------------------------------------------------------------------------

    def _retried(self, _error: str) -> None:
        self.report.retried(self.report.metadata)

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

    async def _fetch_small(
        self,
        url: str,
        what: str,
        *,
        optional: bool = False,
        cap: int | None = None,
        retries: int | None = None,
    ) -> bytes | None:
        dest = self.workspace.tmp_file()
        try:
            await self.fetcher.fetch(
                url,
                dest,
                what=what,
                size=None,
                checksum=None,
                cap=cap or self.limits.max_small_file,
                on_retry=self._retried,
                retries=retries,
            )
            return dest.read_bytes()
        except DownloadError as exc:
            if optional and exc.status in (403, 404, 410):
                return None
            raise
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dest)


def _check_collisions(index: ContentIndex) -> None:
    """Refuse an index where two files claim one path, or one claims a generated path."""
    claimed: dict[str, StoredFile] = {}
    for record in index.files():
        href = record["href"]
        if href.split("/", 1)[0] == RESERVED_TOP and "type" not in record:
            raise MetadataError(f"{href!r} lies in {RESERVED_TOP}/, which a publication generates")
        other = claimed.get(href)
        if other is not None and other.get("checksum") != record.get("checksum"):
            raise MetadataError(f"two different files claim the path {href!r}")
        claimed[href] = record


def _prepare(repo_dir: Path) -> Path:
    (repo_dir / CONTENT_DIR).mkdir(parents=True, exist_ok=True)
    return reset_tmp(repo_dir)


async def sync(
    repo_dir: Path,
    options: ImporterOptions,
    progress: Progress,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> dict[str, Any]:
    """Make ``repo_dir`` hold what ``options.feed`` (or a mirror of ``options.metalink`` or
    ``options.mirrorlist``) offers; return a JSON summary.

    Raises ``OperationFailed`` (with a message naming the file and the problem) for an
    unusable feed or failed downloads; the repository then keeps its previous content.
    Cancellation (an anyio cancel scope) may strike at any await; see the module docstring
    for why that is safe.
    """
    report = Report(progress)
    source = options.source
    if not source:
        report.state(report.metadata, FAILED)
        raise OperationFailed(
            "repository has no feed to sync from; set one in its importer options",
            {"key": "feed"},
        )
    tmp = await anyio.to_thread.run_sync(_prepare, repo_dir)
    fetcher: Fetcher | None = None
    detail = {"feed": without_userinfo(source)}
    try:
        fetcher = fetcher_for(source, options.transport(limits))
        summary = await _Sync(repo_dir, options, limits, report, fetcher, tmp).run()
        return summary.to_json()
    except anyio.get_cancelled_exc_class():
        report.interrupted(CANCELED)
        raise
    except (MetadataError, DownloadError) as exc:
        report.interrupted(FAILED)
        raise options.scrubbed(OperationFailed(str(exc), detail)) from exc
    except OperationFailed as exc:
        report.interrupted(FAILED)
        raise options.scrubbed(exc) from exc
    except OSError as exc:  # the repository's own storage: disk full, permissions…
        report.interrupted(FAILED)
        failure = OperationFailed(f"cannot write to {repo_dir}: {exc}", detail)
        raise options.scrubbed(failure) from exc
    finally:
        if fetcher is not None:
            await fetcher.aclose()
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["SyncSummary", "sync"]
