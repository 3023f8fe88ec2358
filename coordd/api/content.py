"""The socket API's content methods: versions, units, rollback, orphans.

Queries answer from the content database in pages (``coordd.repo.queries``); rollback and
orphan removal are tasks like every other change. ``Api`` (``coordd.api.methods``) puts
these in its table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from coordd.api import params
from coordd.api.errors import InvalidRequest
from coordd.content.units import KINDS
from coordd.content.versions import MAX_PAGE
from coordd.repo.queries import ContentQueries
from coordd.repo.repositories import validate_id

__all__ = ["MAX_VERSION", "ContentMethods", "Submit", "version_param"]

MAX_VERSION: Final = 2**53
Submit = Callable[[str, dict[str, Any], Any, Any], Awaitable[dict[str, Any]]]


def version_param(value: Any, name: str = "version") -> int | None:
    return None if value is None else params.integer(value, name, 1, MAX_VERSION)


def _limit(value: Any) -> int:
    return params.integer(value, "limit", 1, MAX_PAGE)


class ContentMethods:
    """The methods; ``queries`` gives the daemon's ``ContentQueries``, ``submit`` is
    ``Api._submit``."""

    def __init__(self, queries: Callable[[], ContentQueries], submit: Submit) -> None:
        self._queries = queries
        self.submit = submit

    @property
    def queries(self) -> ContentQueries:
        return self._queries()

    def table(self) -> dict[str, tuple[Callable[..., Awaitable[Any]], str]]:
        return {
            "repo.versions.list": (self.versions_list, "read"),
            "repo.versions.show": (self.versions_show, "read"),
            "repo.versions.diff": (self.versions_diff, "read"),
            "repo.content": (self.content, "read"),
            "repo.rollback": (self.rollback, "admin"),
            "content.orphans.list": (self.orphans_list, "read"),
            "content.orphans.remove": (self.orphans_remove, "admin"),
        }

    async def versions_list(
        self, caller: Any, repo_id: Any, limit: Any = 100, before: Any = None
    ) -> dict[str, Any]:
        return await self.queries.versions(
            validate_id(repo_id), _limit(limit), version_param(before, "before")
        )

    async def versions_show(self, caller: Any, repo_id: Any, version: Any = None) -> dict[str, Any]:
        return await self.queries.version(validate_id(repo_id), version_param(version))

    async def versions_diff(
        self, caller: Any, repo_id: Any, version: Any = None, against: Any = None, limit: Any = 100
    ) -> dict[str, Any]:
        against_number = None
        if against is not None:
            against_number = params.integer(against, "against", 0, MAX_VERSION)
        return await self.queries.diff(
            validate_id(repo_id), version_param(version), against_number, _limit(limit)
        )

    async def content(
        self,
        caller: Any,
        repo_id: Any,
        version: Any = None,
        type: Any = None,
        name: Any = None,
        arch: Any = None,
        after: Any = 0,
        limit: Any = 100,
    ) -> dict[str, Any]:
        kind = params.text(type, "type", optional=True, max_len=20)
        if kind is not None and kind not in KINDS:
            raise InvalidRequest(
                f"type must be one of {', '.join(KINDS)}, not {kind!r}", {"param": "type"}
            )
        return await self.queries.content(
            validate_id(repo_id),
            version_param(version),
            kind=kind,
            name=params.text(name, "name", optional=True, max_len=200),
            arch=params.text(arch, "arch", optional=True, max_len=50),
            after=params.integer(after, "after", 0, 2**62),
            limit=_limit(limit),
        )

    async def rollback(
        self, caller: Any, repo_id: Any, version: Any, request_id: Any = None
    ) -> dict[str, Any]:
        number = version_param(version)
        if number is None:
            raise InvalidRequest("version is required: the version to roll back to")
        args = {"repo_id": validate_id(repo_id), "version": number}
        return await self.submit("repo.rollback", args, caller, request_id)

    async def orphans_list(self, caller: Any, limit: Any = 100) -> dict[str, Any]:
        return await self.queries.orphans(_limit(limit))

    async def orphans_remove(self, caller: Any, request_id: Any = None) -> dict[str, Any]:
        return await self.submit("content.orphans.remove", {}, caller, request_id)
