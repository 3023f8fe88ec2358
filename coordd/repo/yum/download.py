"""The download step of a sync: bring in what the new index needs and the repository lacks.

Files stream into ``.tmp`` (``Workspace.tmp_file``) and reach ``content/<href>`` by
``os.replace`` only when complete and verified; a file that replaces one the current index
references is staged instead and renamed in by the commit step (see ``coordd.repo.yum.sync``
for why that keeps every state consistent). A file an interrupted sync left at its final
path is adopted when its size and checksum match. Downloads run in parallel, bounded by
``parallel_downloads``; after ``max_errors`` failures the rest are abandoned.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from coordd.api.errors import OperationFailed
from coordd.engine.progress import FAILED, FINISHED, IN_PROGRESS
from coordd.repo.content import CONTENT_DIR, ContentIndex, UnsafePath, check_href, resolve_in
from coordd.repo.fetch import DownloadError, Fetcher, hash_file
from coordd.repo.records import StoredFile, TreeFile
from coordd.repo.yum.errors import MetadataError
from coordd.repo.yum.options import ImporterOptions, Limits, scrub
from coordd.repo.yum.report import Report


class Workspace:
    """Where one sync puts files: temporaries in ``.tmp``, final paths under ``content/``."""

    def __init__(self, repo_dir: Path, tmp: Path) -> None:
        self.repo_dir = repo_dir
        self.content_root = repo_dir / CONTENT_DIR
        self.content_real = self.content_root.resolve()
        self.tmp = tmp
        self.staged: list[tuple[Path, Path, str]] = []  # (temporary, final path, href)
        self._dirs: set[Path] = set()
        self._parents: dict[str, Path] = {}
        self._serial = itertools.count()

    def tmp_file(self) -> Path:
        return self.tmp / f"{next(self._serial)}.part"  # .tmp is this sync's alone

    def final(self, href: str) -> Path:
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

    def mkdirs(self, directory: Path) -> None:
        if directory not in self._dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._dirs.add(directory)

    def place_staged(self) -> None:
        """Rename the staged files in (after an index without their old versions is saved)."""
        for tmp, final, _href in self.staged:
            self.mkdirs(final.parent)
            os.replace(tmp, final)
        self.staged.clear()


@dataclass
class _Item:
    kind: str
    record: StoredFile
    url: str
    final: Path
    stage: bool = False  # the current index references this path with other content
    adopt: bool = False  # an unreferenced file of the right size is already there


class Downloader:
    """Downloads for one sync, with the counts its summary reports."""

    def __init__(
        self,
        workspace: Workspace,
        fetcher: Fetcher,
        report: Report,
        options: ImporterOptions,
        limits: Limits,
    ) -> None:
        self.workspace = workspace
        self.fetcher = fetcher
        self.report = report
        self.options = options
        self.limits = limits
        self.bytes_downloaded = 0
        self.downloaded = 0
        self.adopted = 0
        self.errors: list[dict[str, Any]] = []
        self.secrets = options.secrets()

    def _retried(self, _error: str) -> None:
        self.report.retried(self.report.content)

    async def download(
        self, old: ContentIndex, new: ContentIndex, urls: dict[str, str], treeinfo: bytes
    ) -> set[str]:
        """Download what ``new`` needs and the repository lacks; return the kept hrefs.

        ``urls`` maps every href of ``new`` that came from the feed to its URL; ``treeinfo``
        is the .treeinfo fetched with the metadata, stored as it is.
        """
        report = self.report
        missing = set(await anyio.to_thread.run_sync(old.missing_files, self.workspace.repo_dir))
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
            self._place_treeinfo(
                new.treeinfo, old_records.get(".treeinfo"), treeinfo, missing, kept
            )
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
                    final = self.workspace.final(check_href(href))
                except UnsafePath as exc:
                    raise MetadataError(f"unsafe path: {exc}") from exc
                item = _Item(kind=kind, record=record, url=urls[href], final=final)
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
        self,
        record: TreeFile,
        previous: StoredFile | None,
        data: bytes,
        missing: set[str],
        kept: set[str],
    ) -> None:
        """Store the .treeinfo fetched with the metadata (staged if it replaces one)."""
        href = record["href"]
        same = previous is not None and previous.get("checksum") == record["checksum"]
        if same and href not in missing:
            kept.add(href)
            return
        final = self.workspace.final(href)
        tmp = self.workspace.tmp_file()
        tmp.write_bytes(data)
        if previous is not None:
            self.workspace.staged.append((tmp, final, href))
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
            tmp = self.workspace.tmp_file()
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
                    on_retry=self._retried,
                    own_connection=True,
                )
                if size is None:
                    record["size"] = received
                if item.stage:
                    self.workspace.staged.append((tmp, item.final, href))
                else:
                    self.workspace.mkdirs(item.final.parent)
                    os.replace(tmp, item.final)
                placed = True
                self.downloaded += 1
                self.bytes_downloaded += received
                self.report.finished(item.kind, max((size or 0) - streamed, 0), None)
            except (DownloadError, OSError) as exc:
                message = str(exc) if isinstance(exc, DownloadError) else f"{href}: {exc}"
                error = {"href": href, "kind": item.kind, "url": item.url, "error": message}
                error = scrub(error, self.secrets)
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


__all__ = ["Downloader", "Workspace"]
