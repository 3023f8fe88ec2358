"""The socket API's schedule methods: create, list, show, update and delete schedules.

A schedule submits a task by itself at the times it names (``coordd.repo.schedules``).
Anyone with read access may list and show them; changing them needs admin access, as the
tasks they submit would. ``Api`` (``coordd.api.methods``) puts these in its table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from coordd.api import params
from coordd.api.errors import InvalidRequest
from coordd.repo.repositories import Repositories, validate_id
from coordd.repo.schedules import KINDS, Schedule, Scheduler

__all__ = ["ScheduleMethods"]

MAX_HISTORY = 1000


class ScheduleMethods:
    """The methods; ``scheduler`` and ``repos`` give the daemon's."""

    def __init__(
        self, scheduler: Callable[[], Scheduler], repos: Callable[[], Repositories]
    ) -> None:
        self._scheduler = scheduler
        self._repos = repos

    def table(self) -> dict[str, tuple[Callable[..., Awaitable[Any]], str]]:
        return {
            "schedule.create": (self.create, "admin"),
            "schedule.list": (self.listing, "read"),
            "schedule.show": (self.show, "read"),
            "schedule.update": (self.update, "admin"),
            "schedule.delete": (self.delete, "admin"),
        }

    async def create(
        self,
        caller: Any,
        kind: Any,
        schedule: Any,
        repo_id: Any = None,
        failure_threshold: Any = None,
        enabled: Any = True,
    ) -> dict[str, Any]:
        made = await self._scheduler().create(
            kind,
            None if repo_id is None else validate_id(repo_id),
            schedule,
            failure_threshold=failure_threshold,
            enabled=enabled,
            uid=caller.uid,
        )
        return made.to_json()

    async def listing(self, caller: Any, kind: Any = None, repo_id: Any = None) -> dict[str, Any]:
        wanted = _kind(kind)
        repo = None if repo_id is None else validate_id(repo_id)
        if repo is not None:
            self._repos().get(repo)  # an unknown repository is an error, not an empty list
        found = self._scheduler().listed(wanted, repo)
        return {"schedules": [s.to_json() for s in found]}

    async def show(
        self,
        caller: Any,
        schedule_id: Any,
        kind: Any = None,
        repo_id: Any = None,
        limit: Any = 20,
    ) -> dict[str, Any]:
        found = self._find(schedule_id, kind, repo_id)
        count = params.integer(limit, "limit", 1, MAX_HISTORY)
        return {**found.to_json(), "history": await self._scheduler().history(found, count)}

    async def update(
        self,
        caller: Any,
        schedule_id: Any,
        kind: Any = None,
        repo_id: Any = None,
        schedule: Any = None,
        failure_threshold: Any = params.ABSENT,
        enabled: Any = None,
    ) -> dict[str, Any]:
        # failure_threshold null: no threshold any more (never disabled by failures).
        found = self._find(schedule_id, kind, repo_id)
        changed = await self._scheduler().update(
            found,
            text=schedule,
            failure_threshold=None if failure_threshold is params.ABSENT else failure_threshold,
            clear_threshold=failure_threshold is None,
            enabled=enabled,
        )
        return changed.to_json()

    async def delete(
        self, caller: Any, schedule_id: Any, kind: Any = None, repo_id: Any = None
    ) -> dict[str, Any]:
        found = self._find(schedule_id, kind, repo_id)
        await self._scheduler().delete(found)
        return {"deleted": found.id}

    def _find(self, schedule_id: Any, kind: Any, repo_id: Any) -> Schedule:
        repo = None if repo_id is None else validate_id(repo_id)
        return self._scheduler().get(schedule_id, kind=_kind(kind), repo_id=repo)


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if value not in KINDS:
        raise InvalidRequest(
            f"kind must be one of {', '.join(KINDS)}, not {value!r}", {"param": "kind"}
        )
    return str(value)
