"""Where a sync fetches from: the feed (or the mirror chosen), and the URL rules for it.

``Feed`` resolves every href of the metadata against the base URL, refusing unsafe paths and
``xml:base`` values that leave the feed's scheme and host (or, for a file:// feed, its
directory); it fetches the small files (repomd.xml, .treeinfo, a metalink or mirrorlist);
and for a metalink or mirrorlist it chooses the first mirror whose repomd.xml downloads
and matches. When the repository has a ``gpgkey``, a repomd.xml counts only with a good
signature by that key in ``repodata/repomd.xml.asc`` beside it (``coordd.repo.signing``):
a feed without one, or with a bad one, fails the sync before anything is parsed or
stored; a mirror without one is skipped for the next.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import anyio.to_thread

from coordd.content.paths import UnsafePath, check_href
from coordd.content.pool import Pool
from coordd.repo.fetch import DownloadError, Fetcher
from coordd.repo.signing import MAX_SIGNATURE, SIGNATURE_FILE, SignatureError, verify
from coordd.repo.yum.errors import MetadataError
from coordd.repo.yum.mirrors import Mirrors, parse_metalink, parse_mirrorlist
from coordd.repo.yum.options import ImporterOptions, Limits
from coordd.repo.yum.report import Report

__all__ = ["Feed"]


class Feed:
    """The base URL of one sync, and fetching from it."""

    def __init__(
        self,
        options: ImporterOptions,
        limits: Limits,
        report: Report,
        fetcher: Fetcher,
        pool: Pool,
    ) -> None:
        self.options = options
        self.limits = limits
        self.report = report
        self.fetcher = fetcher
        self.pool = pool
        self.mirror: str | None = None
        self.signed_by: str | None = None  # the key that signed repomd.xml, if checked
        self.use(options.feed or "")

    def use(self, base: str) -> None:
        """Take ``base`` (the feed, or a mirror) as the URL every href is relative to."""
        self.base = base if base.endswith("/") else base + "/"
        parts = urlsplit(self.base)
        self.scheme, self.netloc = parts.scheme, parts.netloc
        self.root = Path(url2pathname(parts.path)).resolve() if parts.scheme == "file" else None

    def url(self, href: str, base: str | None, what: str) -> str:
        """The URL of ``href`` (under ``xml:base`` if given), refusing foreign locations."""
        try:
            check_href(href)
        except UnsafePath as exc:
            raise MetadataError(f"{what}: unsafe location href: {exc}") from exc
        if base is None:
            root = self.base
        else:
            root = urljoin(self.base, base)
            if not root.endswith("/"):
                root += "/"
            parts = urlsplit(root)
            if (parts.scheme, parts.netloc) != (self.scheme, self.netloc):
                raise MetadataError(
                    f"{what}: xml:base {base!r} points outside the feed "
                    f"({parts.scheme}://{parts.netloc} is not {self.scheme}://{self.netloc})"
                )
        url = root + href
        if self.root is not None:
            path = Path(url2pathname(urlsplit(url).path)).resolve()
            if not path.is_relative_to(self.root):
                raise MetadataError(f"{what}: {href!r} resolves outside the feed directory")
        return url

    def retried(self, _error: str) -> None:
        self.report.retried(self.report.metadata)

    async def fetch_small(
        self,
        url: str,
        what: str,
        *,
        optional: bool = False,
        cap: int | None = None,
        retries: int | None = None,
    ) -> bytes | None:
        """The body at ``url`` (capped); None for a missing ``optional`` one."""
        dest = self.pool.tmp_file()
        try:
            await self.fetcher.fetch(
                url,
                dest,
                what=what,
                size=None,
                checksum=None,
                cap=cap or self.limits.max_small_file,
                on_retry=self.retried,
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

    async def fetch_repomd(self) -> tuple[bytes, bytes | None]:
        """repomd.xml, and the feed's .treeinfo if it has one.

        From a metalink or mirrorlist: the first mirror in the list's order whose repomd.xml
        downloads and (for a metalink) matches the size and hashes the metalink gives; each
        mirror refused is recorded in the report, and the rest of the sync uses the one
        chosen.
        """
        if self.options.feed is not None:
            repomd = await self.fetch_small(self.base + "repodata/repomd.xml", "repomd.xml")
            assert repomd is not None
            await self.check_signature(repomd, self.base)
        else:
            repomd = await self.choose_mirror(await self.fetch_mirrors())
        assert repomd is not None
        treeinfo = await self.fetch_small(self.base + ".treeinfo", ".treeinfo", optional=True)
        return repomd, treeinfo

    async def check_signature(
        self, repomd: bytes, base: str, *, retries: int | None = None
    ) -> None:
        """Refuse (``MetadataError``) ``repomd`` unless ``base``'s repomd.xml.asc is a good
        signature of it by the repository's ``gpgkey``; nothing to check without one."""
        key = self.options.gpgkey
        if key is None:
            return
        signature = await self.fetch_small(
            base + "repodata/" + SIGNATURE_FILE,
            SIGNATURE_FILE,
            optional=True,
            cap=MAX_SIGNATURE,
            retries=retries,
        )
        if signature is None:
            raise MetadataError(
                f"{SIGNATURE_FILE}: the feed has no signature of repomd.xml, and the"
                " repository's gpgkey requires one"
            )
        try:
            self.signed_by = await anyio.to_thread.run_sync(verify, key, repomd, signature)
        except SignatureError as exc:
            raise MetadataError(str(exc)) from None

    async def fetch_mirrors(self) -> Mirrors:
        """The metalink or mirrorlist, fetched (capped) and parsed."""
        metalink = self.options.metalink
        url = metalink or self.options.mirrorlist
        assert url is not None
        what = "metalink" if metalink else "mirrorlist"
        data = await self.fetch_small(url, what, cap=self.limits.max_mirror_list)
        assert data is not None
        return parse_metalink(data) if metalink else parse_mirrorlist(data)

    async def choose_mirror(self, mirrors: Mirrors) -> bytes:
        """The repomd.xml of the first usable mirror, which the sync then uses."""
        refused: list[str] = []
        for mirror in mirrors.urls:
            try:
                # No retries: the next mirror is the better second attempt (as dnf does).
                repomd = await self.fetch_small(
                    mirror + "repodata/repomd.xml", "repomd.xml", retries=0
                )
                assert repomd is not None
                mirrors.check_repomd(repomd, mirror)
                await self.check_signature(repomd, mirror, retries=0)
            except (DownloadError, MetadataError) as exc:
                self.report.mirror_skipped(mirror, str(exc))
                refused.append(str(exc))
                continue
            self.mirror = mirror
            self.use(mirror)
            self.report.mirror_used(mirror)
            return repomd
        raise MetadataError(
            f"none of the {len(mirrors.urls)} mirrors served a usable repomd.xml; "
            f"the first: {refused[0]}"
        )
