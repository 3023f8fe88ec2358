"""Repositories: their configuration, and the operations that change them (docs/design.md §6).

The configuration lives in the ``repositories`` table; content lives under
``<state>/repositories/<id>/`` and the published tree under ``<state>/published/<id>/``
(see ``coordd.repo.content``, ``coordd.repo.yum.sync``, ``coordd.repo.publish`` and
``coordd.repo.copy``).
Every change is a task on ``repository <id>``; the coordinator has already ruled out every
conflict by the time an operation here runs, so the operations need no locks of their own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio

from coordd.api import params
from coordd.api.errors import InvalidRequest, NotFound, OperationFailed
from coordd.engine.coordinator import Claim, Resource
from coordd.engine.operations import Operation, TaskContext
from coordd.engine.tasks import iso
from coordd.repo.content import content_summary, remove_content
from coordd.repo.copy import copy_packages
from coordd.repo.publish import publish, unpublish
from coordd.repo.yum.options import SOURCES, ImporterOptions, redact, without_userinfo
from coordd.repo.yum.sync import sync
from coordd.store.database import Store, dumps

REPOSITORY = "repository"
MAX_ID = 100
ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:+@")
DESCRIPTIVE = ("display_name", "description", "notes")


def validate_id(value: Any, name: str = "repo_id") -> str:
    """Repository ids become directory names: short, printable, no separators, no dot-dirs."""
    repo_id = params.required_text(value, name, max_len=MAX_ID)
    if not repo_id or not set(repo_id) <= ID_CHARS or repo_id.startswith("."):
        raise InvalidRequest(
            f"{name} {repo_id!r} is not valid: use 1 to {MAX_ID} letters, digits and "
            "- _ . : + @, not starting with a dot",
            {"param": name},
        )
    return repo_id


def resource(repo_id: str) -> Resource:
    return Resource(REPOSITORY, repo_id)


def remove_repository(repo_dir: Path, publish_dir: Path | None) -> dict[str, Any]:
    """Delete a repository's publication, then its content; safe to run again after a crash.

    Each step is idempotent (see ``unpublish`` and ``remove_content``), so a rerun finishes
    an interrupted delete.
    """
    removed: list[str] = []
    if publish_dir is not None:
        removed.extend(unpublish(publish_dir))
    removed.extend(remove_content(repo_dir))
    return {"removed": removed}


@dataclass
class Repository:
    id: str
    config: dict[str, Any]
    created: float
    updated: float
    last_sync: dict[str, Any] | None = None
    last_publish: dict[str, Any] | None = None


def validate_config(args: Mapping[str, Any], *, partial: bool) -> dict[str, Any]:
    """The descriptive fields and importer options of a create or update request."""
    config: dict[str, Any] = {}
    for key in DESCRIPTIVE:
        if key in args:
            config[key] = params.text(args[key], key, optional=True)
    if "importer" in args:
        importer = params.obj(args["importer"], "importer")
        for key, value in importer.items():  # URLs have a tighter bound of their own
            if isinstance(value, str) and len(value) > params.MAX_TEXT:
                raise InvalidRequest(
                    f"importer.{key} is longer than {params.MAX_TEXT} characters", {"key": key}
                )
        if not partial:
            importer = ImporterOptions.from_json(importer).to_json()
        else:
            # Checked against the stored options when the update runs; check types now.
            ImporterOptions.from_json({"feed": None, **importer})
        config["importer"] = importer
    return config


def shown_task(task: dict[str, Any]) -> dict[str, Any]:
    """A task as an answer or event shows it: the importer options in its arguments (a
    create or update carries them) without their secrets. The stored task keeps them."""
    args = task.get("args")
    if not isinstance(args, dict):
        return task
    config = args.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("importer"), dict):
        return task
    shown_config = {**config, "importer": redact(config["importer"])}
    return {**task, "args": {**args, "config": shown_config}}


def _without_userinfo(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    """A summary whose ``feed`` has no credentials (those synced before they were moved
    out of feed URLs may have them)."""
    if summary is None or not isinstance(summary.get("feed"), str):
        return summary
    return {**summary, "feed": without_userinfo(summary["feed"])}


class Repositories:
    """The repository table in memory, mirrored to the store."""

    def __init__(self, store: Store, state_dir: Path) -> None:
        self.store = store
        self.state_dir = state_dir
        self.repos: dict[str, Repository] = {}

    async def load(self) -> None:
        for row in await self.store.fetch("SELECT * FROM repositories ORDER BY id"):
            self.repos[row["id"]] = Repository(
                id=row["id"],
                config=json.loads(row["config"]),
                created=row["created"],
                updated=row["updated"],
                last_sync=json.loads(row["last_sync"]) if row["last_sync"] else None,
                last_publish=json.loads(row["last_publish"]) if row["last_publish"] else None,
            )

    def repo_dir(self, repo_id: str) -> Path:
        return self.state_dir / "repositories" / repo_id

    def publish_dir(self, repo_id: str) -> Path:
        return self.state_dir / "published" / repo_id

    def get(self, repo_id: str) -> Repository:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise NotFound(f"no repository {repo_id}", {"repo_id": repo_id})
        return repo

    def describe(self, repo: Repository, *, details: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": repo.id,
            "display_name": repo.config.get("display_name"),
            "description": repo.config.get("description"),
            "notes": repo.config.get("notes"),
            "importer": redact(repo.config.get("importer", {})),
            "created": iso(repo.created),
            "updated": iso(repo.updated),
            "last_sync": _without_userinfo(repo.last_sync),
            "last_publish": repo.last_publish,
        }
        if details:
            out["content"] = _without_userinfo(content_summary(self.repo_dir(repo.id)))
            published = self.publish_dir(repo.id)
            out["published_path"] = str(published) if published.exists() else None
        return out

    def _save(self, ctx: TaskContext, repo: Repository) -> None:
        """Store ``repo`` with the task's end, and show it to queries once committed."""
        ctx.commit_at_end(
            (
                "INSERT INTO repositories (id, config, created, updated, last_sync, last_publish)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET config = excluded.config,"
                " updated = excluded.updated, last_sync = excluded.last_sync,"
                " last_publish = excluded.last_publish",
                (
                    repo.id,
                    dumps(repo.config),
                    repo.created,
                    repo.updated,
                    dumps(repo.last_sync) if repo.last_sync else None,
                    dumps(repo.last_publish) if repo.last_publish else None,
                ),
            ),
            then=lambda: self.repos.__setitem__(repo.id, repo),
        )

    # -- operations ----------------------------------------------------------------------
    #
    # Each operation changes files (idempotently) and then hands its database change to
    # ``_save``: the change and the task's end commit together. Queries see a Repository
    # object only when it is on disk; operations work on copies until then. Create and
    # update change no file: they are plain functions, applied when their task starts.

    def create(self, ctx: TaskContext) -> dict[str, Any]:
        repo_id = ctx.args["repo_id"]
        now = time.time()
        # No directory yet: sync, copy and publish create what they write into.
        self._save(ctx, Repository(repo_id, dict(ctx.args["config"]), now, now))
        return {"repo_id": repo_id}

    def update(self, ctx: TaskContext) -> dict[str, Any]:
        repo = self._existing(ctx.args["repo_id"])
        changes = ctx.args["config"]
        config = dict(repo.config)
        for key in DESCRIPTIVE:
            if key in changes:
                config[key] = changes[key]
        if "importer" in changes:
            merged = {**config.get("importer", {}), **changes["importer"]}
            if any(changes["importer"].get(key) is not None for key in SOURCES):
                # A new source replaces the old one, whichever of the three it was.
                for key in SOURCES:
                    merged.setdefault(key, None)
                    if changes["importer"].get(key) is None:
                        merged[key] = None
            try:
                config["importer"] = ImporterOptions.from_json(merged).to_json()
            except InvalidRequest as exc:
                raise OperationFailed(f"invalid importer options: {exc.message}") from exc
        self._save(ctx, replace(repo, config=config, updated=time.time()))
        return {"repo_id": repo.id, "changed": sorted(changes)}

    async def delete(self, ctx: TaskContext) -> dict[str, Any]:
        repo_id = ctx.args["repo_id"]
        await anyio.to_thread.run_sync(
            remove_repository, self.repo_dir(repo_id), self.publish_dir(repo_id)
        )

        def forget() -> None:
            self.repos.pop(repo_id, None)

        ctx.commit_at_end(("DELETE FROM repositories WHERE id = ?", (repo_id,)), then=forget)
        return {"repo_id": repo_id}

    async def sync(self, ctx: TaskContext) -> dict[str, Any]:
        repo = self._existing(ctx.args["repo_id"])
        options = ImporterOptions.from_json(repo.config.get("importer", {}))
        if not options.source:
            raise OperationFailed(
                f"repository {repo.id} has no feed; set one with repo update --feed URL"
                " (or --metalink URL, --mirrorlist URL)"
            )
        summary = await sync(self.repo_dir(repo.id), options, ctx.progress)
        last = {"finished": iso(time.time()), "task_id": ctx.task.id, **summary}
        self._save(ctx, replace(repo, last_sync=last))
        return summary

    async def publish(self, ctx: TaskContext) -> dict[str, Any]:
        repo = self._existing(ctx.args["repo_id"])
        summary: dict[str, Any] = await anyio.to_thread.run_sync(
            publish, self.repo_dir(repo.id), self.publish_dir(repo.id), ctx.progress
        )
        last = {"finished": iso(time.time()), "task_id": ctx.task.id, **summary}
        self._save(ctx, replace(repo, last_publish=last))
        return summary

    async def copy(self, ctx: TaskContext) -> dict[str, Any]:
        source = self._existing(ctx.args["from"])
        target = self._existing(ctx.args["to"])
        summary: dict[str, Any] = await anyio.to_thread.run_sync(
            copy_packages,
            self.repo_dir(source.id),
            self.repo_dir(target.id),
            ctx.args.get("name"),
        )
        self._save(ctx, replace(target, updated=time.time()))
        return summary

    def _existing(self, repo_id: str) -> Repository:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise OperationFailed(f"repository {repo_id} does not exist")
        return repo

    def operations(self) -> list[Operation]:
        def on(kind: str) -> Any:
            def claims(args: Mapping[str, Any]) -> tuple[Claim, ...]:
                return (Claim(resource(args["repo_id"]), kind),)  # type: ignore[arg-type]

            return claims

        def copy_claims(args: Mapping[str, Any]) -> tuple[Claim, ...]:
            return (Claim(resource(args["from"]), "read"), Claim(resource(args["to"]), "update"))

        return [
            Operation("repo.create", "create repository", on("create"), apply=self.create),
            Operation("repo.update", "update configuration", on("update"), apply=self.update),
            Operation(
                "repo.delete", "delete repository", on("delete"), self.delete, restartable=True
            ),
            Operation("repo.sync", "sync", on("update"), self.sync, heavy=True, restartable=True),
            Operation(
                "repo.publish", "publish", on("read"), self.publish, heavy=True, restartable=True
            ),
            Operation("repo.copy", "copy packages", copy_claims, self.copy, restartable=True),
        ]
