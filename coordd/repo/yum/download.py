"""The download step of a sync: bring into the pool the files a new version needs.

Each file streams into the pool's ``.tmp`` and reaches its pool path (``Pool.enter``) only
when complete and verified: its size, the checksum the feed declared, and its sha256 (the
pool's key; the same digest when the feed declares sha256, computed beside it while the
bytes stream when it declares another type). A file the pool already holds is never
fetched. Downloads run in parallel, bounded by ``parallel_downloads``; after ``max_errors``
failures the rest are abandoned.

The files to fetch come as ``Needs``: the unit ids alone, their ``Need`` records read in
pages as the download reaches them. Records for all 50,000 files of a large feed would hold
some 40 MB, which the daemon's allocator keeps long after the sync.

Creating a file and renaming one cost the event loop a millisecond or more each on ext4
under load, and a trip to a worker thread per file costs about as much as the rest of a
small file's handling; so ``_Files`` opens temporary files ahead and enters verified ones
into the pool in batches, one worker-thread call for many files. Every file verified is in
the pool when ``download`` returns, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import os
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import anyio
import anyio.to_thread

from coordd.api.errors import OperationFailed
from coordd.content.pool import Pool
from coordd.content.units import DELTA, FILE, METADATA, RPM
from coordd.engine.progress import FAILED, FINISHED, IN_PROGRESS
from coordd.repo.fetch import DownloadError, Fetcher
from coordd.repo.yum.options import ImporterOptions, Limits, scrub
from coordd.repo.yum.report import Report

__all__ = ["REPORT_KIND", "Downloader", "Need", "Needs"]

#: The progress report's name for each kind of unit that has a file.
REPORT_KIND: Final = {RPM: "rpm", DELTA: "delta_rpm", METADATA: "file", FILE: "tree_file"}


@dataclass(slots=True)
class Need:
    """A file a new version needs and the pool lacks."""

    unit_id: int
    kind: str
    href: str
    url: str
    size: int | None
    checksum_type: str | None
    checksum: str | None
    sha256: str | None  # known before the download when the feed declares sha256


@dataclass(slots=True)
class Needs:
    """The files to download: their unit ids, and how to read their records (``load``, in
    a worker thread, for a page of ids), with the count and bytes of each kind."""

    load: Callable[[Sequence[int]], list[Need]]
    ids: array[int] = field(default_factory=lambda: array("q"))
    planned: dict[str, list[int]] = field(default_factory=dict)  # kind → [files, bytes]

    def add(self, unit_id: int, kind: str, size: int | None) -> None:
        self.ids.append(unit_id)
        counts = self.planned.setdefault(kind, [0, 0])
        counts[0] += 1
        counts[1] += size or 0


#: Need records read at a time.
_PAGE: Final = 512


class _Pending:
    """The next ``Need`` of ``needs``, for the download workers, a page read at a time."""

    def __init__(self, needs: Needs) -> None:
        self.needs = needs
        self._read = 0  # ids whose records were read
        self._page: list[Need] = []
        self._lock = anyio.Lock()

    async def next(self) -> Need | None:
        async with self._lock:
            if not self._page and self._read < len(self.needs.ids):
                ids = self.needs.ids[self._read : self._read + _PAGE]
                self._read += len(ids)
                self._page = await anyio.to_thread.run_sync(self.needs.load, ids)
                self._page.reverse()  # popped from the end: in the order of the ids
            return self._page.pop() if self._page else None


@dataclass(frozen=True, slots=True)
class Entered:
    """A file the download put in the pool, whose sha256 or size its unit did not declare."""

    unit_id: int
    sha256: str
    size: int
    checksum_type: str | None
    checksum: str | None


#: Temporary files opened per worker-thread call; verified files are entered once this many,
#: or ``_BATCH_BYTES`` of them, wait (what a killed sync can lose: the pool keeps the rest).
_BATCH: Final = 32
_BATCH_BYTES: Final = 4 << 20


class _Files:
    """Temporary files opened ahead, and verified files entered into the pool, in batches."""

    def __init__(self, pool: Pool, files: int) -> None:
        self.pool = pool
        self._wanted = files  # files still to be taken: no more are opened
        self._stock: list[tuple[Path, IO[bytes]]] = []
        self._verified: list[tuple[Path, Need, Entered]] = []
        self._verified_bytes = 0
        self._lock = anyio.Lock()
        self.learned: list[Entered] = []
        self.failed: list[tuple[Need, OSError]] = []

    async def take(self) -> tuple[Path, IO[bytes]]:
        """An empty temporary file, open for writing."""
        async with self._lock:
            if not self._stock:
                await self._run(min(_BATCH, self._wanted))
            self._wanted -= 1
            return self._stock.pop()

    async def verified(self, tmp: Path, need: Need, entered: Entered) -> None:
        """Enter ``tmp`` (closed), the file of ``need``, with the next batch."""
        self._verified.append((tmp, need, entered))
        self._verified_bytes += entered.size
        if len(self._verified) >= _BATCH or self._verified_bytes >= _BATCH_BYTES:
            async with self._lock:
                await self._run(0)

    async def flush(self) -> None:
        """Enter every verified file; close and remove the unused temporary files."""
        with anyio.CancelScope(shield=True):
            async with self._lock:
                await self._run(0)
                stock, self._stock = self._stock, []
                await anyio.to_thread.run_sync(_discard, stock)

    async def _run(self, opening: int) -> None:
        verified, self._verified = self._verified, []
        self._verified_bytes = 0
        opened, learned, failed, error = await anyio.to_thread.run_sync(
            self._batch, verified, opening
        )
        self._stock.extend(opened)
        self.learned.extend(learned)
        self.failed.extend(failed)
        if error is not None and not self._stock:
            raise error

    def _batch(
        self, verified: list[tuple[Path, Need, Entered]], opening: int
    ) -> tuple[
        list[tuple[Path, IO[bytes]]], list[Entered], list[tuple[Need, OSError]], OSError | None
    ]:
        learned: list[Entered] = []
        failed: list[tuple[Need, OSError]] = []
        for tmp, need, record in verified:
            try:
                self.pool.enter(tmp, record.sha256)
                if need.sha256 is None or need.size is None:
                    learned.append(record)
            except OSError as exc:
                failed.append((need, exc))
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        opened: list[tuple[Path, IO[bytes]]] = []
        try:
            for _ in range(opening):
                opened.append(self.pool.create_tmp())
        except OSError as exc:  # a full disk, out of descriptors: the caller decides
            return opened, learned, failed, exc
        return opened, learned, failed, None


def _discard(files: list[tuple[Path, IO[bytes]]]) -> None:
    for tmp, out in files:
        out.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)


class Downloader:
    """Downloads for one sync, with the counts its summary reports."""

    def __init__(
        self,
        pool: Pool,
        fetcher: Fetcher,
        report: Report,
        options: ImporterOptions,
        limits: Limits,
    ) -> None:
        self.pool = pool
        self.fetcher = fetcher
        self.report = report
        self.options = options
        self.limits = limits
        self.bytes_downloaded = 0
        self.downloaded = 0
        self.errors: list[dict[str, Any]] = []
        self.secrets = options.secrets()
        self._files = _Files(pool, 0)

    def _retried(self, _error: str) -> None:
        self.report.retried(self.report.content)

    async def download(self, needs: Needs) -> list[Entered]:
        """Fetch every file of ``needs`` into the pool. Return those whose unit declared no
        sha256 or no size, with what they turned out to have: the pool holds every other
        as its unit declared it."""
        report = self.report
        count = len(needs.ids)
        if not count:
            report.state(report.content, FINISHED)
            return []
        for kind, (files, size) in needs.planned.items():
            report.plan(REPORT_KIND[kind], files, size)
        report.state(report.content, IN_PROGRESS)
        self._files = _Files(self.pool, count)
        # A fixed set of workers taking the next file, not a task per file: 50,000 waiting
        # tasks would hold hundreds of megabytes for nothing.
        pending = _Pending(needs)

        async def work(scope: anyio.CancelScope) -> None:
            while (need := await pending.next()) is not None:
                await self._obtain(need, scope)

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(min(self.options.parallel_downloads, count)):
                    tg.start_soon(work, tg.cancel_scope)
        finally:
            await self._files.flush()
        for need, exc in self._files.failed:
            self._failed(need, f"{need.href}: cannot enter it into the pool: {exc}")
        if self.errors:
            report.state(report.content, FAILED)
            first = self.errors[0]["error"]
            raise OperationFailed(
                f"{len(self.errors)} of {count} downloads failed; first: {first}",
                {"errors": self.errors[:20]},
            )
        report.state(report.content, FINISHED)
        return self._files.learned

    async def _obtain(self, need: Need, scope: anyio.CancelScope) -> None:
        size = need.size
        checksum = (
            (need.checksum_type, need.checksum) if need.checksum_type and need.checksum else None
        )
        streamed = 0
        kind = REPORT_KIND[need.kind]
        content = self.report.content
        kind_node = self.report.kinds[kind]
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

        tmp, out = await self._files.take()
        verified = False
        try:
            with out:
                received, sha256 = await self.fetcher.fetch_into(
                    need.url,
                    out,
                    what=need.href,
                    size=size,
                    checksum=checksum,
                    cap=self.limits.max_unsized_download,
                    on_bytes=on_bytes,
                    on_retry=self._retried,
                    own_connection=True,
                    sha256=need.sha256 is None,  # declared with another type, or not at all
                )
            digest = need.sha256 if need.sha256 is not None else sha256
            assert digest is not None  # computed while streaming when asked for
            entered = Entered(need.unit_id, digest, received, need.checksum_type, need.checksum)
            verified = True
            await self._files.verified(tmp, need, entered)
            self.downloaded += 1
            self.bytes_downloaded += received
            self.report.finished(kind, max((size or 0) - streamed, 0), None)
        except (DownloadError, OSError) as exc:
            message = str(exc) if isinstance(exc, DownloadError) else f"{need.href}: {exc}"
            error = self._failed(need, message)
            self.report.finished(kind, max((size or 0) - streamed, 0), error)
            if len(self.errors) >= self.limits.max_errors:
                scope.cancel()
        finally:
            if not verified:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)

    def _failed(self, need: Need, message: str) -> dict[str, Any]:
        error = {"href": need.href, "kind": REPORT_KIND[need.kind], "url": need.url}
        scrubbed: dict[str, Any] = scrub({**error, "error": message}, self.secrets)
        self.errors.append(scrubbed)
        return scrubbed
