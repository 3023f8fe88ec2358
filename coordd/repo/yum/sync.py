"""The yum importer: make a repository's next version match a remote yum/dnf feed.

``sync(store, repo_id, options, progress)`` fetches ``repodata/repomd.xml``; the primary,
filelists and other metadata; errata (updateinfo); delta RPMs (prestodelta); extra metadata
files (comps, modules, …, kept as they are); and a distribution tree (``.treeinfo`` at the
feed root and the files it names). It streams the metadata into units (``ingest``, in worker
processes for large feeds), chooses the packages (all, or the newest EVR of each name and
arch, with every package a module stream of modules.yaml names), downloads into the pool
what it lacks, in parallel (``download``), and commits the chosen units as the repository's
next version (``ContentStore.commit_staged``), with what repomd.xml says besides its records
(revision, tags, the ``*_db`` and ``*_zck`` records a publication does not carry).

The sync is a sequence of named steps (``_Sync.run``): fetch repomd.xml and .treeinfo; stop
early if nothing changed; parse repomd.xml; fetch the metadata files; ingest them; stage the
other files; find what the pool lacks; download it; commit. Both ways out, changed or not,
report one ``SyncSummary``.

Atomicity and restarts
    Nothing a committed version references is touched: units are only added, pool files
    only entered verified (``coordd.content.pool``), and the version is one transaction.
    A hard cancel at any ``await``, or kill -9, leaves the previous version as it was; a
    rerun finds the files already entered in the pool and downloads only the rest. A rerun
    against an unchanged feed (same repomd.xml and .treeinfo bytes, same options, every
    file of the latest version present) downloads nothing, parses nothing and makes no
    version.

Hostile feeds (each ends in ``OperationFailed`` naming the problem; the previous version
stays)
    - Paths: every href (packages, deltas, tree files, metadata) goes through
      ``check_href``, and is resolved under the publication by ``resolve_in`` when
      published; ``xml:base`` may point only to the feed's own scheme and host (and, for
      file:// feeds, inside the feed directory), so metadata cannot send the importer to
      another server or read local files (``feed.Feed.url``).
    - XML (``safexml``): lxml with entity resolution and network access off, no DTD
      loading, default (non-huge) tree limits, and any document with a DOCTYPE is refused.
    - Compression (``decompress``) is detected by magic bytes (gz, xz, bz2, zst); the
      decompressed size is capped by the declared ``open-size`` and by a hard cap (bz2
      reaches 1,000,000:1), and the ``open-checksum`` is verified when declared.
    - Checksums: metadata and every file entering the pool are always verified;
      sha1/md5/sha224 are refused unless ``allow_weak_checksums``; unknown types are refused.
    - Signatures: with a ``gpgkey``, repomd.xml counts only with a good signature by it in
      ``repomd.xml.asc`` (``coordd.repo.signing``, checked by ``feed.Feed``) — before the
      unchanged-feed check, so a re-sync checks it too.
    - Transport (``coordd.repo.fetch``): each body must keep a minimum average rate after a
      grace period, bodies larger than declared are cut off at once, redirects from https
      to http (or to another scheme) are refused, and a ``Content-Encoding`` the importer
      did not ask for is refused.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import anyio
import anyio.from_thread
import anyio.to_thread

from coordd.api.errors import OperationFailed
from coordd.content import worker
from coordd.content.modules import MODULES
from coordd.content.paths import RESERVED_TOP
from coordd.content.store import DEFAULT_RETAIN, ContentStore, RepoState
from coordd.content.units import ERRATUM, RPM, file_row, insert_units, metadata_row
from coordd.content.versions import Version
from coordd.engine.progress import CANCELED, FAILED, FINISHED, IN_PROGRESS, SKIPPED, Progress
from coordd.repo.fetch import DownloadError, Fetcher, fetcher_for
from coordd.repo.yum import ingest
from coordd.repo.yum.download import Downloader, Need, Needs
from coordd.repo.yum.errors import MetadataError
from coordd.repo.yum.feed import Feed
from coordd.repo.yum.options import DEFAULT_LIMITS, ImporterOptions, Limits, without_userinfo
from coordd.repo.yum.repomd import FetchedMetadata, RepomdRecord, parse_repomd, parse_tags
from coordd.repo.yum.report import Report
from coordd.repo.yum.treeinfo import parse_treeinfo

# Repomd record types this importer regenerates (so does not keep as files), or that only
# duplicate them in another form.
_PARSED: Final = ("primary", "filelists", "other", "updateinfo", "prestodelta")
# Fetched with them to be read too, and kept as files: modules.yaml (its streams' packages
# stay with newest-only; a copy chooses its streams).
_READ: Final = (*_PARSED, MODULES)
# Records a publication does not carry: the sqlite databases (yum 3 only; dnf never reads
# them) and the zchunk copies (an optimisation dnf falls back from to the plain files).
_NOT_CARRIED: Final = ("_db", "_zck")


@dataclass(frozen=True)
class SyncSummary:
    """What a sync did, as ``sync`` returns it (``to_json``) and ``repo show`` shows it."""

    feed: str  # the base URL synced from: the feed, or the mirror chosen
    mirror: str | None  # the mirror used, for a sync from a metalink or mirrorlist
    changed: bool  # False: the feed was unchanged; only repomd.xml and .treeinfo were read
    revision: str | None
    version: int | None  # the repository's latest version after the sync
    new_version: bool  # whether the sync made that version
    packages: int  # in the repository now, copies included
    added: int  # packages the new version holds that the previous did not
    kept: int  # feed packages the previous version already held
    removed: int  # feed packages the new version dropped
    downloaded: int  # files fetched from the feed
    from_pool: int  # files the version needed that the pool already had: no download
    bytes_downloaded: int
    errata: int
    delta_rpms: int
    tree_files: int
    metadata_files: int
    signed_by: str | None  # the fingerprint of the gpgkey that signed repomd.xml, if checked

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _Sync:
    """One sync of one repository from its feed; ``run`` calls the steps in order."""

    def __init__(
        self,
        store: ContentStore,
        repo_id: str,
        options: ImporterOptions,
        limits: Limits,
        report: Report,
        fetcher: Fetcher,
        *,
        task_id: str | None,
        retain: int,
        retain_packages: int = 0,
    ) -> None:
        self.store = store
        self.repo_id = repo_id
        self.options = options
        self.limits = limits
        self.report = report
        self.task_id = task_id
        self.retain = retain
        self.retain_packages = retain_packages
        self.feed = Feed(options, limits, report, fetcher, store.pool)
        self.downloader = Downloader(store.pool, fetcher, report, options, limits)
        self.from_pool = 0
        self.fetched: set[str] = set()  # files fetched with the metadata (the .treeinfo)
        self.entered: list[tuple[str, int]] = []  # (sha256, size) of files put in the pool
        self.resolved: list[tuple[int, str, str | None, str | None]] = []  # unit, sha256, alias
        self.repomd: dict[str, Any] | None = None  # revision, tags, not carried (parse_repomd)

    # -- the steps, in order ---------------------------------------------------------------

    async def run(self) -> SyncSummary:
        """The sync: each step below is a method, called in this order."""
        report = self.report
        report.state(report.metadata, IN_PROGRESS)
        repomd, treeinfo = await self.feed.fetch_repomd()
        fingerprint = self.fingerprint(repomd, treeinfo)
        state = await anyio.to_thread.run_sync(self.store.state, self.repo_id)
        if await self.unchanged(state, fingerprint):
            return self.skip(state)
        revision, records = self.parse_repomd(repomd)
        metadata = _metadata_key(fingerprint)
        known = await anyio.to_thread.run_sync(self.store.stage_known, self.repo_id, metadata)
        if known:  # another repository synced the same metadata: its choice stands
            chosen = await self.store.db.read(self._staged_packages)
            if treeinfo is not None:
                await self.enter_treeinfo(treeinfo)
        else:
            fetched = await self.fetch_metadata(records)
            try:
                chosen = (await self.ingest(fetched))["chosen"]
                if MODULES in fetched:  # kept as a file too: no second download
                    self.keep_fetched(fetched[MODULES])
            finally:
                for fetched_file in fetched.values():
                    fetched_file.path.unlink(missing_ok=True)
            await self.stage_files(records, treeinfo)
        needs = await anyio.to_thread.run_sync(self.needs)  # checks every location
        report.state(report.metadata, FINISHED)
        for item in await self.downloader.download(needs):  # undeclared sha256 or size
            self.entered.append((item.sha256, item.size))
            if item.checksum_type != "sha256":
                self.resolved.append((item.unit_id, item.sha256, item.checksum_type, item.checksum))
        report.state(report.errata, IN_PROGRESS)
        version = await anyio.to_thread.run_sync(
            functools.partial(
                self.commit, fingerprint=fingerprint, metadata=metadata, revision=revision
            )
        )
        report.state(report.errata, FINISHED if "updateinfo" in records else SKIPPED)
        latest = version or state.latest
        added = version.added.get(RPM, 0) if version else 0
        removed = version.removed.get(RPM, 0) if version else 0
        return self.summary(
            changed=True,
            revision=revision,
            latest=latest,
            new_version=version is not None,
            added=added,
            kept=max(chosen - added, 0),
            removed=removed,
        )

    def fingerprint(self, repomd: bytes, treeinfo: bytes | None) -> dict[str, Any]:
        """What the last sync must have seen for this one to change nothing."""
        fingerprint: dict[str, Any] = {
            "repomd_checksum": "sha256:" + hashlib.sha256(repomd).hexdigest(),
            "treeinfo_checksum": (
                None if treeinfo is None else "sha256:" + hashlib.sha256(treeinfo).hexdigest()
            ),
            # For a list of mirrors, the list: any mirror with the same repomd.xml will do.
            "feed": self.feed.base if self.options.feed else self.options.source,
            "only_newest": self.options.only_newest,
            "allow_weak_checksums": self.options.allow_weak_checksums,
        }
        if self.retain_packages:  # absent when unset: earlier syncs' fingerprints still match
            fingerprint["retain_package_versions"] = self.retain_packages
        return fingerprint

    async def unchanged(self, state: RepoState, fingerprint: dict[str, Any]) -> bool:
        """Whether the last sync saw the same feed and the pool still has every file."""
        if state.synced is None or state.synced["fingerprint"] != fingerprint:
            return False
        if state.latest is None:
            return True
        missing = await anyio.to_thread.run_sync(
            self.store.missing_files, self.repo_id, state.latest.number
        )
        return missing == 0

    def skip(self, state: RepoState) -> SyncSummary:
        """End a sync of an unchanged feed: every step done, nothing fetched or changed."""
        report = self.report
        counts = state.latest.counts if state.latest else {}
        report.state(report.metadata, FINISHED)
        report.state(report.content, FINISHED)
        report.state(report.errata, FINISHED if counts.get(ERRATUM) else SKIPPED)
        return self.summary(
            changed=False,
            revision=state.synced["revision"] if state.synced else None,
            latest=state.latest,
            new_version=False,
            added=0,
            kept=counts.get(RPM, 0),
            removed=0,
        )

    def parse_repomd(self, repomd: bytes) -> tuple[str | None, dict[str, RepomdRecord]]:
        """The revision and the records of repomd.xml, which must list a primary."""
        revision, records = parse_repomd(repomd, self.options.allow_weak_checksums)
        if "primary" not in records:
            raise MetadataError("repomd.xml: no primary record")
        self.repomd = {
            "revision": revision,
            "tags": parse_tags(repomd),
            "not_carried": sorted(t for t in records if t.endswith(_NOT_CARRIED)),
        }
        return revision, records

    async def fetch_metadata(self, records: dict[str, RepomdRecord]) -> dict[str, FetchedMetadata]:
        """Fetch the metadata files this importer parses, in parallel, verified."""
        fetched: dict[str, FetchedMetadata] = {}
        failures: list[DownloadError | OSError] = []

        async def get(record: RepomdRecord, url: str, scope: anyio.CancelScope) -> None:
            dest = self.store.pool.tmp_file("metadata")
            fetched[record.type] = FetchedMetadata(record, dest, self.limits.max_metadata_size)
            try:
                await self.feed.fetcher.fetch(
                    url,
                    dest,
                    what=record.what(),
                    size=record.size,
                    checksum=record.checksum,
                    cap=self.limits.max_metadata_size,
                    on_retry=self.feed.retried,
                )
            except (DownloadError, OSError) as exc:
                failures.append(exc)
                scope.cancel()

        wanted = [records[t] for t in _READ if t in records]
        urls = {r.type: self.feed.url(r.href, r.base, r.what()) for r in wanted}
        async with anyio.create_task_group() as tg:
            for record in wanted:
                tg.start_soon(get, record, urls[record.type], tg.cancel_scope)
        if failures:
            if isinstance(failures[0], OSError):
                raise OperationFailed(f"cannot store metadata: {failures[0]}")
            raise failures[0]
        return fetched

    async def ingest(self, fetched: dict[str, FetchedMetadata]) -> dict[str, Any]:
        """Stream the metadata into staged units: packages and lists at once (``ingest``)."""
        db = self.store.db
        await db.write(lambda c: c.execute("DELETE FROM staged WHERE repo_id = ?", (self.repo_id,)))
        common = {
            "db": str(db.path),
            "repo_id": self.repo_id,
            "allow_weak": self.options.allow_weak_checksums,
            "only_newest": self.options.only_newest,
            "retain_package_versions": self.retain_packages,
            "with_files": "filelists" not in fetched,
        }

        def part(kind: str) -> dict[str, Any] | None:
            return ingest.metadata_args(fetched[kind]) if kind in fetched else None

        jobs = [
            {
                **common,
                "job": "packages",
                "primary": part("primary"),
                "updateinfo": part("updateinfo"),
                "prestodelta": part("prestodelta"),
                "modules": part(MODULES),
            },
            {**common, "job": "lists", "filelists": part("filelists"), "other": part("other")},
        ]
        size = sum(f.path.stat().st_size for f in fetched.values())
        metadata = self.report.metadata

        def progress(values: dict[str, Any]) -> None:
            metadata.update(values)
            self.report.progress.touch()

        if size < self.limits.inline_metadata:  # small: one after the other, in a thread
            results = [await anyio.to_thread.run_sync(ingest.run_job, j, progress) for j in jobs]
            return results[0]
        try:
            results = await worker.run_all("coordd.repo.yum.ingest", jobs, progress)
        except worker.WorkerError as exc:
            if exc.kind == worker.METADATA:
                raise MetadataError(exc.message) from None
            raise OperationFailed(f"cannot read the metadata: {exc.message}") from None
        return results[0]

    async def stage_files(self, records: dict[str, RepomdRecord], treeinfo: bytes | None) -> None:
        """Stage the other repomd records (comps, modules, …, kept as files as they are),
        the .treeinfo and the distribution tree files it names."""
        rows: list[Any] = []
        bases: list[str | None] = []
        for rtype, extra in sorted(records.items()):
            if rtype in _PARSED or rtype.endswith(_NOT_CARRIED):
                continue
            self.feed.url(extra.href, extra.base, f"{rtype} metadata")  # checked now
            rows.append(
                metadata_row(
                    {
                        "type": rtype,
                        "href": extra.href,
                        "size": extra.size,
                        "checksum_type": extra.checksum[0],
                        "checksum": extra.checksum[1],
                    }
                )
            )
            bases.append(extra.base)
        if treeinfo is not None:
            sha256 = await self.enter_treeinfo(treeinfo)
            record = {
                "href": ".treeinfo",
                "size": len(treeinfo),
                "checksum_type": "sha256",
                "checksum": sha256,
            }
            rows.append(file_row(record))  # type: ignore[arg-type]
            bases.append(None)
            for tree_file in parse_treeinfo(treeinfo, self.options.allow_weak_checksums):
                self.feed.url(tree_file["href"], None, ".treeinfo")
                if tree_file["href"].split("/", 1)[0] == RESERVED_TOP:
                    raise MetadataError(
                        f"{tree_file['href']!r} lies in {RESERVED_TOP}/, which a publication"
                        " generates"
                    )
                if tree_file["checksum"] is None:  # identity unknown until fetched
                    tree_file = {
                        **tree_file,
                        "checksum_type": None,
                        "checksum": f"unverified:{self.repo_id}",
                    }
                rows.append(file_row(tree_file))
                bases.append(None)

        def write(db: sqlite3.Connection) -> None:
            ids = insert_units(db, rows)
            db.executemany(
                "INSERT OR REPLACE INTO staged (repo_id, unit_id, base) VALUES (?, ?, ?)",
                [(self.repo_id, uid, base) for uid, base in zip(ids, bases, strict=True)],
            )
            clash = db.execute(
                "SELECT u.href FROM staged s JOIN units u ON u.id = s.unit_id"
                " WHERE s.repo_id = ? AND u.href IS NOT NULL GROUP BY u.href"
                " HAVING count(DISTINCT coalesce(u.sha256, u.checksum)) > 1 LIMIT 1",
                (self.repo_id,),
            ).fetchone()
            if clash is not None:
                raise MetadataError(f"two different files claim the path {clash[0]!r}")

        await self.store.db.write(write)

    async def enter_treeinfo(self, treeinfo: bytes) -> str:
        """Put the .treeinfo fetched with repomd.xml in the pool; its sha256."""
        sha256 = hashlib.sha256(treeinfo).hexdigest()
        if sha256 not in self.fetched:
            tmp = self.store.pool.tmp_file()
            await anyio.to_thread.run_sync(tmp.write_bytes, treeinfo)
            self.store.pool.enter(tmp, sha256)
            self.entered.append((sha256, len(treeinfo)))
            self.fetched.add(sha256)
        return sha256

    def keep_fetched(self, fetched: FetchedMetadata) -> None:
        """Enter a metadata file fetched to be read, and kept as a file, in the pool."""
        checksum_type, checksum = fetched.record.checksum
        if checksum_type == "sha256" and checksum not in self.fetched:
            size = fetched.path.stat().st_size
            self.store.pool.enter(fetched.path, checksum)
            self.entered.append((checksum, size))
            self.fetched.add(checksum)

    def needs(self) -> Needs:
        """The staged files the pool lacks (a stat each); counts the ones it has."""
        pool = self.store.pool
        needs = Needs(self._load_needs)

        def read(db: sqlite3.Connection) -> None:
            rows = db.execute(
                "SELECT u.id, u.kind, u.href, s.base, u.size, u.checksum_type, u.checksum,"
                " coalesce(u.sha256, a.sha256), rc.unit_id IS NOT NULL FROM staged s"
                " JOIN units u ON u.id = s.unit_id LEFT JOIN aliases a ON u.sha256 IS NULL"
                " AND a.checksum_type = u.checksum_type AND a.checksum = u.checksum"
                " LEFT JOIN repo_content rc ON rc.repo_id = s.repo_id AND rc.unit_id = u.id"
                " AND rc.removed IS NULL WHERE s.repo_id = ? AND u.href IS NOT NULL"
                " ORDER BY u.id",
                (self.repo_id,),
            )
            for unit_id, kind, href, base, size, ctype, csum, sha256, held in rows:
                self.feed.url(href, base, f"{kind} {href}")  # checked before any download
                if sha256 is None or not pool.present(sha256, size):
                    needs.add(unit_id, kind, size)
                    continue
                if size is None:  # the rest are recorded from their units at the commit
                    self.entered.append((sha256, 0))
                if ctype != "sha256":  # found by an alias: the unit learns its sha256
                    self.resolved.append((unit_id, sha256, ctype, csum))
                if not held and sha256 not in self.fetched:
                    self.from_pool += 1

        self.store.db.read_sync(read)
        return needs

    def _load_needs(self, ids: Sequence[int]) -> list[Need]:
        """The ``Need`` of each unit of ``ids`` (a page of ``needs``), in their order."""

        def read(db: sqlite3.Connection) -> list[Any]:
            marks = ",".join("?" * len(ids))
            return db.execute(
                "SELECT u.id, u.kind, u.href, s.base, u.size, u.checksum_type, u.checksum"
                " FROM staged s JOIN units u ON u.id = s.unit_id"
                f" WHERE s.repo_id = ? AND u.id IN ({marks}) ORDER BY u.id",
                (self.repo_id, *ids),
            ).fetchall()

        needs: list[Need] = []
        for unit_id, kind, href, base, size, ctype, csum in self.store.db.read_sync(read):
            unverified = ctype is None
            needs.append(
                Need(
                    unit_id=unit_id,
                    kind=kind,
                    href=href,
                    url=self.feed.url(href, base, f"{kind} {href}"),
                    size=size,
                    checksum_type=ctype,
                    checksum=None if unverified else csum,
                    sha256=None if unverified else (csum if ctype == "sha256" else None),
                )
            )
        return needs

    def _staged_packages(self, db: sqlite3.Connection) -> int:
        return int(
            db.execute(
                "SELECT count(*) FROM staged s JOIN units u ON u.id = s.unit_id"
                " WHERE s.repo_id = ? AND u.kind = ?",
                (self.repo_id, RPM),
            ).fetchone()[0]
        )

    def commit(
        self, *, fingerprint: dict[str, Any], metadata: str, revision: str | None
    ) -> Version | None:
        """Commit the staged units as a version, with what was resolved and entered."""
        return self.store.commit_staged(
            self.repo_id,
            task_id=self.task_id,
            fingerprint=fingerprint,
            metadata=metadata,
            revision=revision,
            feed=self.feed.base,
            entered=self.entered,
            resolved=self.resolved,
            retain=self.retain,
            repomd=self.repomd,
        )

    def summary(
        self,
        *,
        changed: bool,
        revision: str | None,
        latest: Version | None,
        new_version: bool,
        added: int,
        kept: int,
        removed: int,
    ) -> SyncSummary:
        """The one summary of a sync, whichever way it ended."""
        downloader = self.downloader
        counts = latest.counts if latest else {}
        return SyncSummary(
            feed=self.feed.base,
            mirror=self.feed.mirror,
            changed=changed,
            revision=revision,
            version=latest.number if latest else None,
            new_version=new_version,
            packages=counts.get(RPM, 0),
            added=added,
            kept=kept,
            removed=removed,
            downloaded=downloader.downloaded,
            from_pool=self.from_pool,
            bytes_downloaded=downloader.bytes_downloaded,
            errata=counts.get(ERRATUM, 0),
            delta_rpms=counts.get("delta", 0),
            tree_files=counts.get("file", 0),
            metadata_files=counts.get("metadata", 0),
            signed_by=self.feed.signed_by,
        )


def _metadata_key(fingerprint: dict[str, Any]) -> str:
    """What identifies the units a sync chooses: the metadata and the options that choose,
    not where they were fetched from (``feed_units``)."""
    chosen_by = {k: v for k, v in fingerprint.items() if k != "feed"}
    return hashlib.sha256(json.dumps(chosen_by, sort_keys=True).encode()).hexdigest()


async def sync(
    store: ContentStore,
    repo_id: str,
    options: ImporterOptions,
    progress: Progress,
    *,
    limits: Limits = DEFAULT_LIMITS,
    task_id: str | None = None,
    retain: int = DEFAULT_RETAIN,
    retain_packages: int = 0,
) -> dict[str, Any]:
    """Make the next version of ``repo_id`` hold what ``options.feed`` (or a mirror of
    ``options.metalink`` or ``options.mirrorlist``) offers; return a JSON summary.
    ``retain_packages``: keep only that many of the newest versions of each package name
    and arch (0: all; ``coordd.repo.yum.retention``).

    Raises ``OperationFailed`` (with a message naming the file and the problem) for an
    unusable feed or failed downloads; the repository then keeps its previous version.
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
    fetcher: Fetcher | None = None
    detail = {"feed": without_userinfo(source)}
    try:
        fetcher = fetcher_for(source, options.transport(limits))
        run = _Sync(
            store,
            repo_id,
            options,
            limits,
            report,
            fetcher,
            task_id=task_id,
            retain=retain,
            retain_packages=retain_packages,
        )
        return (await run.run()).to_json()
    except anyio.get_cancelled_exc_class():
        report.interrupted(CANCELED)
        raise
    except (MetadataError, DownloadError) as exc:
        report.interrupted(FAILED)
        raise options.scrubbed(OperationFailed(str(exc), detail)) from exc
    except OperationFailed as exc:
        report.interrupted(FAILED)
        raise options.scrubbed(exc) from exc
    except (OSError, sqlite3.Error) as exc:  # the daemon's own storage: disk full, …
        report.interrupted(FAILED)
        failure = OperationFailed(f"cannot store the content: {exc}", detail)
        raise options.scrubbed(failure) from exc
    finally:
        if fetcher is not None:
            await fetcher.aclose()


__all__ = ["SyncSummary", "sync"]
