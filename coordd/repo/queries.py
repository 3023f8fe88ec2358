"""Queries of repository content: versions, their units, differences, orphans.

Each answers from the content database in a worker thread, in pages: the cost of a page
does not grow with the repository (``coordd.content.versions``).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import anyio.to_thread

from coordd.api.errors import NotFound
from coordd.content import versions
from coordd.content.store import PoolStats
from coordd.repo.repositories import Repositories

__all__ = ["ContentQueries"]


class ContentQueries:
    def __init__(self, repos: Repositories) -> None:
        self.repos = repos
        self.stats: PoolStats | None = None
        repos.on_change = self.refresh

    def _number(self, repo_id: str, number: int | None) -> int:
        """``number``, or the repository's latest version; NotFound if it has none."""
        self.repos.get(repo_id)
        if number is not None:
            return number
        state = self.repos.states.get(repo_id)
        if state is None or state.latest is None:
            raise NotFound(f"repository {repo_id} has no version yet", {"repo_id": repo_id})
        return state.latest.number

    async def _version(self, repo_id: str, number: int) -> versions.Version:
        version = await self.repos.content.db.read(lambda c: versions.get(c, repo_id, number))
        if version is None:
            raise NotFound(
                f"repository {repo_id} has no version {number}",
                {"repo_id": repo_id, "version": number},
            )
        return version

    async def versions(self, repo_id: str, limit: int, before: int | None) -> dict[str, Any]:
        self.repos.get(repo_id)
        found = await self.repos.content.db.read(
            lambda db: versions.listing(db, repo_id, limit=limit + 1, before=before)
        )
        state = self.repos.states.get(repo_id)
        published = state.published if state else None
        page = [{**v.to_json(), "published": v.number == published} for v in found[:limit]]
        more = len(found) > limit
        return {"repo_id": repo_id, "versions": page, "next": page[-1]["number"] if more else None}

    async def version(self, repo_id: str, number: int | None) -> dict[str, Any]:
        number = self._number(repo_id, number)
        version = await self._version(repo_id, number)
        state = self.repos.states.get(repo_id)
        published = state.published if state else None
        return {"repo_id": repo_id, **version.to_json(), "published": number == published}

    async def diff(
        self, repo_id: str, number: int | None, against: int | None, limit: int
    ) -> dict[str, Any]:
        number = self._number(repo_id, number)
        await self._version(repo_id, number)
        if against is None:
            against = number - 1
        if against > 0:
            await self._version(repo_id, against)
        return {
            "repo_id": repo_id,
            **await self.repos.content.db.read(
                lambda db: versions.diff(db, repo_id, against, number, limit=limit)
            ),
        }

    async def content(
        self,
        repo_id: str,
        number: int | None,
        *,
        kind: str | None,
        name: str | None,
        arch: str | None,
        after: int,
        limit: int,
    ) -> dict[str, Any]:
        number = self._number(repo_id, number)
        await self._version(repo_id, number)

        def read(db: sqlite3.Connection) -> tuple[list[dict[str, Any]], int | None]:
            return versions.content_page(
                db, repo_id, number, kind=kind, name=name, arch=arch, after=after, limit=limit
            )

        units, cursor = await self.repos.content.db.read(read)
        return {"repo_id": repo_id, "version": number, "units": units, "next": cursor}

    async def orphans(self, limit: int) -> dict[str, Any]:
        stats = await self.refresh()
        found = await anyio.to_thread.run_sync(self.repos.content.orphans, limit)
        return {**stats.to_json(), **found}

    async def refresh(self) -> PoolStats:
        """Count the pool and its orphans again (after a change to content)."""
        self.stats = await anyio.to_thread.run_sync(self.repos.content.stats)
        return self.stats
