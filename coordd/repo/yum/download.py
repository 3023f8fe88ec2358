"""The download step of a sync: bring into the pool the files a new version needs.

Each file streams into the pool's ``.tmp`` and reaches its pool path (``Pool.enter``) only
when complete and verified: its size, the checksum the feed declared, and its sha256 (the
pool's key; the same digest when the feed declares sha256, computed from the file when it
declares another type). A file the pool already holds is never fetched. Downloads run in
parallel, bounded by ``parallel_downloads``; after ``max_errors`` failures the rest are
abandoned.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.to_thread

from coordd.api.errors import OperationFailed
from coordd.content.pool import Pool, hash_file
from coordd.content.units import DELTA, FILE, METADATA, RPM
from coordd.engine.progress import FAILED, FINISHED, IN_PROGRESS
from coordd.repo.fetch import DownloadError, Fetcher
from coordd.repo.yum.options import ImporterOptions, Limits, scrub
from coordd.repo.yum.report import Report

__all__ = ["REPORT_KIND", "Downloader", "Need"]

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


@dataclass(frozen=True, slots=True)
class Entered:
    """A file the download put in the pool."""

    unit_id: int
    sha256: str
    size: int
    checksum_type: str | None
    checksum: str | None


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
        self.entered: list[Entered] = []
        self.errors: list[dict[str, Any]] = []
        self.secrets = options.secrets()

    def _retried(self, _error: str) -> None:
        self.report.retried(self.report.content)

    async def download(self, needs: list[Need]) -> list[Entered]:
        """Fetch every file of ``needs`` into the pool; return what was entered."""
        report = self.report
        if not needs:
            report.state(report.content, FINISHED)
            return []
        for need in needs:
            report.plan(REPORT_KIND[need.kind], need.size or 0)
        report.state(report.content, IN_PROGRESS)
        # A fixed set of workers taking the next file, not a task per file: 50,000 waiting
        # tasks would hold hundreds of megabytes for nothing.
        pending = iter(needs)

        async def work(scope: anyio.CancelScope) -> None:
            for need in pending:
                await self._obtain(need, scope)

        async with anyio.create_task_group() as tg:
            for _ in range(min(self.options.parallel_downloads, len(needs))):
                tg.start_soon(work, tg.cancel_scope)
        if self.errors:
            report.state(report.content, FAILED)
            first = self.errors[0]["error"]
            raise OperationFailed(
                f"{len(self.errors)} of {len(needs)} downloads failed; first: {first}",
                {"errors": self.errors[:20]},
            )
        report.state(report.content, FINISHED)
        return self.entered

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

        tmp = self.pool.tmp_file()
        placed = False
        try:
            received = await self.fetcher.fetch(
                need.url,
                tmp,
                what=need.href,
                size=size,
                checksum=checksum,
                cap=self.limits.max_unsized_download,
                on_bytes=on_bytes,
                on_retry=self._retried,
                own_connection=True,
            )
            if need.sha256 is not None:
                sha256 = need.sha256
            else:  # declared with another type, or not at all
                _size, sha256 = await anyio.to_thread.run_sync(hash_file, tmp, "sha256")
            self.pool.enter(tmp, sha256)
            placed = True
            self.entered.append(
                Entered(need.unit_id, sha256, received, need.checksum_type, need.checksum)
            )
            self.downloaded += 1
            self.bytes_downloaded += received
            self.report.finished(kind, max((size or 0) - streamed, 0), None)
        except (DownloadError, OSError) as exc:
            message = str(exc) if isinstance(exc, DownloadError) else f"{need.href}: {exc}"
            error = {"href": need.href, "kind": kind, "url": need.url, "error": message}
            error = scrub(error, self.secrets)
            self.errors.append(error)
            self.report.finished(kind, max((size or 0) - streamed, 0), error)
            if len(self.errors) >= self.limits.max_errors:
                scope.cancel()
        finally:
            if not placed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
