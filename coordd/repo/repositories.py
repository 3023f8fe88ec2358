"""Repositories: their configuration, and the operations that change them (docs/design.md §6).

The configuration lives in the ``repositories`` table of the task store; content lives in
the content store (``coordd.content``: the pool, units and versions) and the published tree
under ``<state>/published/<id>/`` (``coordd.repo.publish``). Every change is a task on
``repository <id>``, and every operation that adds to the pool also holds ``content pool:
read``, so orphan cleanup (``content pool: update``) never runs beside one; the coordinator
has ruled out every conflict by the time an operation here runs, so the operations need
no locks of their own.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio

from coordd.api import params
from coordd.api.errors import InvalidRequest, NotFound, OperationFailed
from coordd.content import versions, worker
from coordd.content.store import DEFAULT_RETAIN, ContentStore, RepoState
from coordd.content.uploads import ContentConflict, Nevra, Uploaded
from coordd.engine.coordinator import Claim, Resource
from coordd.engine.operations import Operation, TaskContext
from coordd.engine.progress import CANCELED, FAILED, FINISHED, IN_PROGRESS
from coordd.engine.tasks import iso
from coordd.repo.publish import DEFAULT_GRACE, finish, prepare, publish_version, unpublish
from coordd.repo.repodata import PACKAGE_FILES
from coordd.repo.upload import PendingUpload
from coordd.repo.yum.options import SOURCES, ImporterOptions, redact, without_userinfo
from coordd.repo.yum.sync import sync
from coordd.store.database import Store, dumps

REPOSITORY = "repository"
MAX_ID = 100
ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:+@")
DESCRIPTIVE = ("display_name", "description", "notes")
MAX_RETAIN = 10_000  # versions a repository keeps, at most
MAX_RETAIN_PACKAGES = 10_000  # versions of each package a sync keeps, at most


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
    if "retain_versions" in args and args["retain_versions"] is not None:
        config["retain_versions"] = params.integer(
            args["retain_versions"], "retain_versions", 1, MAX_RETAIN
        )
    elif "retain_versions" in args:
        config["retain_versions"] = None
    if "sign_metadata" in args:
        config["sign_metadata"] = params.boolean(args["sign_metadata"], "sign_metadata")
    if "auto_publish" in args:
        value = args["auto_publish"]
        config["auto_publish"] = False if value is None else params.boolean(value, "auto_publish")
    if "retain_package_versions" in args:  # null, like 0: keep every version
        value = args["retain_package_versions"]
        config["retain_package_versions"] = params.integer(
            0 if value is None else value,
            "retain_package_versions",
            0,
            MAX_RETAIN_PACKAGES,
        )
    if "importer" in args:
        importer = params.obj(args["importer"], "importer")
        for key, value in importer.items():  # URLs have a tighter bound of their own
            if key == "gpgkey":  # a public key: longer, bounded and checked on its own
                continue
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


def _return_memory() -> None:
    """``malloc_trim``: hand the heap's free pages back to the kernel (glibc keeps them
    otherwise, and a sync of 50,000 packages frees tens of megabytes)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


async def _publish_in_workers(args: dict[str, Any], emit: Callable[[Any], None]) -> dict[str, Any]:
    """Publish a large version: the links and each of primary, filelists and other in a
    worker process of its own, all at once; the rest and the swap in a thread."""
    build = await anyio.to_thread.run_sync(prepare, args)
    args = {**args, "build": build}
    jobs = [{**args, "job": "link"}]
    jobs += [{**args, "job": "package_file", "type": rtype} for rtype in PACKAGE_FILES]
    try:
        try:
            linked, *written = await worker.run_all("coordd.repo.publish", jobs, emit)
        except worker.WorkerError as exc:
            raise OperationFailed(f"publish failed: {exc.message}") from None
        return await anyio.to_thread.run_sync(finish, {**args, **linked, "written": written})
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shutil.rmtree, build, True)
        raise


@dataclass(frozen=True)
class ContentSettings:
    """How the content operations behave (from the configuration)."""

    retain_versions: int = DEFAULT_RETAIN  # per repository unless its config says otherwise
    publish_grace: float = DEFAULT_GRACE
    # The secret key file that signs the repomd.xml of repositories with sign_metadata,
    # and the file of its passphrase ([signing] in the configuration).
    signing_key: str | None = None
    signing_passphrase_file: str | None = None
    # Versions with fewer packages than this are published in a thread, larger ones by a
    # worker process.
    inline_publish: int = 2000


POOL = Resource("content", "pool")
ORPHANS = "content.orphans.remove"


class Repositories:
    """The repository table in memory, mirrored to the store; content in ``ContentStore``."""

    def __init__(
        self,
        store: Store,
        state_dir: Path,
        content: ContentStore | None = None,
        settings: ContentSettings | None = None,
    ) -> None:
        self.store = store
        self.state_dir = state_dir
        self.content = content if content is not None else ContentStore(state_dir)
        self.settings = settings if settings is not None else ContentSettings()
        self.repos: dict[str, Repository] = {}
        self.states: dict[str, RepoState] = {}
        # Files received by repo.upload requests, waiting for their tasks, by upload id.
        self.uploads: dict[str, PendingUpload] = {}
        self.on_change: Callable[[], Awaitable[Any]] | None = None  # after content changed

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
        self.states = await anyio.to_thread.run_sync(self.content.states)

    def publish_dir(self, repo_id: str) -> Path:
        return self.state_dir / "published" / repo_id

    def get(self, repo_id: str) -> Repository:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise NotFound(f"no repository {repo_id}", {"repo_id": repo_id})
        return repo

    def describe(self, repo: Repository, *, details: bool = False) -> dict[str, Any]:
        """What ``repo list`` and ``repo show`` answer: from memory, at a cost that does
        not grow with the repository."""
        state = self.states.get(repo.id)
        latest = state.latest if state else None
        out: dict[str, Any] = {
            "id": repo.id,
            "display_name": repo.config.get("display_name"),
            "description": repo.config.get("description"),
            "notes": repo.config.get("notes"),
            "importer": redact(repo.config.get("importer", {})),
            "retain_versions": self.retain(repo),
            "sign_metadata": bool(repo.config.get("sign_metadata", False)),
            "auto_publish": bool(repo.config.get("auto_publish", False)),
            "retain_package_versions": int(repo.config.get("retain_package_versions") or 0),
            "created": iso(repo.created),
            "updated": iso(repo.updated),
            "latest_version": latest.number if latest else None,
            "published_version": state.published if state else None,
            "last_sync": _without_userinfo(repo.last_sync),
            "last_publish": repo.last_publish,
        }
        if details:
            synced = state.synced if state else None
            repomd = state.repomd if state else None
            out["content"] = {
                "version": latest.number if latest else None,
                "counts": latest.counts if latest else {},
                "size": latest.size if latest else 0,
                "revision": synced["revision"] if synced else None,
                "feed": without_userinfo(synced["feed"]) if synced and synced["feed"] else None,
                "last_sync": iso(synced["synced_at"]) if synced else None,
                # The feed's repomd tags, and the feed's records a publication leaves out.
                "tags": repomd.get("tags") if repomd else None,
                "not_carried": (repomd.get("not_carried") or []) if repomd else [],
            }
            published = self.publish_dir(repo.id)
            out["published_path"] = str(published) if published.exists() else None
        return out

    def retain(self, repo: Repository) -> int:
        value = repo.config.get("retain_versions")
        return int(value) if isinstance(value, int) else self.settings.retain_versions

    async def _refresh(self, repo_id: str | None, *, pool: bool = True) -> None:
        """Show queries the repository's new state and (unless ``pool`` is false: nothing
        entered or left it) the pool's new counts; give the memory a large operation freed
        back to the system."""
        await anyio.to_thread.run_sync(_return_memory)
        if repo_id is not None:
            self.states[repo_id] = await anyio.to_thread.run_sync(self.content.state, repo_id)
        if pool and self.on_change is not None:
            await self.on_change()

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
    # A content change commits its version in the content store (one transaction) and
    # then hands the repository's row to ``_save``, which commits with the task's end. A
    # crash between the two leaves the version committed and the task to run again; a
    # rerun finds nothing left to change and makes no version. Create and update change
    # no content: they are plain functions, applied when their task starts.

    def create(self, ctx: TaskContext) -> dict[str, Any]:
        repo_id = ctx.args["repo_id"]
        now = time.time()
        self._save(ctx, Repository(repo_id, dict(ctx.args["config"]), now, now))
        return {"repo_id": repo_id}

    def update(self, ctx: TaskContext) -> dict[str, Any]:
        repo = self._existing(ctx.args["repo_id"])
        changes = ctx.args["config"]
        config = dict(repo.config)
        keys = ("retain_versions", "retain_package_versions", "sign_metadata", "auto_publish")
        for key in (*DESCRIPTIVE, *keys):
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
        """Unpublish, then drop the versions (their units become orphans); idempotent."""
        repo_id = ctx.args["repo_id"]
        removed = await anyio.to_thread.run_sync(unpublish, self.publish_dir(repo_id))
        await anyio.to_thread.run_sync(self.content.forget, repo_id)
        await self._refresh(None)

        def forget() -> None:
            self.repos.pop(repo_id, None)
            self.states.pop(repo_id, None)

        ctx.commit_at_end(
            ("DELETE FROM repositories WHERE id = ?", (repo_id,)),
            # Its schedules and their history (coordd.repo.schedules drops them from memory).
            (
                "DELETE FROM schedule_fires WHERE schedule_id IN"
                " (SELECT id FROM schedules WHERE repo_id = ?)",
                (repo_id,),
            ),
            ("DELETE FROM schedules WHERE repo_id = ?", (repo_id,)),
            then=forget,
        )
        return {"repo_id": repo_id, "removed": removed}

    async def sync(self, ctx: TaskContext) -> dict[str, Any]:
        repo = self._existing(ctx.args["repo_id"])
        options = ImporterOptions.from_json(repo.config.get("importer", {}))
        if not options.source:
            raise OperationFailed(
                f"repository {repo.id} has no feed; set one with repo update --feed URL"
                " (or --metalink URL, --mirrorlist URL)"
            )
        try:
            summary = await sync(
                self.content,
                repo.id,
                options,
                ctx.progress,
                task_id=ctx.task.id,
                retain=self.retain(repo),
                retain_packages=int(repo.config.get("retain_package_versions") or 0),
            )
        finally:
            await self._refresh(repo.id)
        last = {"finished": iso(time.time()), "task_id": ctx.task.id, **summary}
        self._save(ctx, replace(repo, last_sync=last))
        return summary

    async def publish(self, ctx: TaskContext) -> dict[str, Any]:
        repo = self._existing(ctx.args["repo_id"])
        state = self.states.get(repo.id)
        number = ctx.args.get("version")
        if number is None:  # the latest; version 0, the empty one, before the first
            number = state.latest.number if state and state.latest else 0
        version = await self.content.db.read(lambda db: versions.get(db, repo.id, number))
        if version is None and number != 0:
            raise OperationFailed(f"repository {repo.id} has no version {number}")
        signing = None
        if repo.config.get("sign_metadata"):
            if self.settings.signing_key is None:
                raise OperationFailed(
                    f"repository {repo.id} is to be published signed (sign_metadata), but the"
                    " daemon has no signing key: set [signing] key in its configuration file"
                )
            signing = {
                "key": self.settings.signing_key,
                "passphrase_file": self.settings.signing_passphrase_file,
            }
        progress = ctx.progress
        progress.set("publish", state=IN_PROGRESS, step="link", items_total=0, items_done=0)
        report = progress.node("publish")

        def emit(values: dict[str, Any]) -> None:
            report.update(values)
            progress.touch()

        args = {
            "db": str(self.content.db.path),
            "pool": str(self.content.pool.root),
            "repo_id": repo.id,
            "number": number,
            "revision": state.synced["revision"] if state and state.synced else None,
            "publish_dir": str(self.publish_dir(repo.id)),
            "grace": self.settings.publish_grace,
            "signing": signing,
        }
        try:
            packages = version.counts.get("rpm", 0) if version else 0
            if packages < self.settings.inline_publish:
                summary = await anyio.to_thread.run_sync(
                    publish_version, args, emit, anyio.from_thread.check_cancelled
                )
            else:
                summary = await _publish_in_workers(args, emit)
            await anyio.to_thread.run_sync(
                self.content.record_publication,
                repo.id,
                number,
                summary["path"],
                summary["revision"],
                ctx.task.id,
            )
        except BaseException as exc:
            report["state"] = FAILED if isinstance(exc, Exception) else CANCELED
            progress.touch()
            raise
        finally:
            await self._refresh(repo.id, pool=False)  # links only: the pool is as it was
        report["state"] = FINISHED
        progress.touch()
        last = {"finished": iso(time.time()), "task_id": ctx.task.id, **summary}
        self._save(ctx, replace(repo, last_publish=last))
        return summary

    async def copy(self, ctx: TaskContext) -> dict[str, Any]:
        source = self._existing(ctx.args["from"])
        target = self._existing(ctx.args["to"])
        state = self.states.get(source.id)
        number = ctx.args.get("version")
        if number is None:
            number = state.latest.number if state and state.latest else 0
        elif await self.content.db.read(lambda db: versions.get(db, source.id, number)) is None:
            raise OperationFailed(f"repository {source.id} has no version {number}")
        summary = await anyio.to_thread.run_sync(
            functools.partial(
                self.content.copy,
                source.id,
                number,
                target.id,
                name=ctx.args.get("name"),
                task_id=ctx.task.id,
                retain=self.retain(target),
            )
        )
        await self._refresh(target.id)
        self._save(ctx, replace(target, updated=time.time()))
        return {"from": source.id, "from_version": number, "to": target.id, **summary}

    async def rollback(self, ctx: TaskContext) -> dict[str, Any]:
        repo = self._existing(ctx.args["repo_id"])
        number = ctx.args["version"]
        try:
            version = await anyio.to_thread.run_sync(
                functools.partial(
                    self.content.rollback,
                    repo.id,
                    number,
                    task_id=ctx.task.id,
                    retain=self.retain(repo),
                )
            )
        except LookupError:
            raise OperationFailed(f"repository {repo.id} has no version {number}") from None
        await self._refresh(repo.id)
        self._save(ctx, replace(repo, updated=time.time()))
        return {
            "repo_id": repo.id,
            "from_version": number,
            "version": version.number if version else None,
            "added": version.added if version else {},
            "removed": version.removed if version else {},
        }

    async def upload(self, ctx: TaskContext) -> dict[str, Any]:
        """Put the files a ``repo.upload`` request received into a new version."""
        repo = self._existing(ctx.args["repo_id"])
        pending = self.uploads.pop(ctx.args["upload_id"], None)
        if pending is None:
            raise OperationFailed(
                "the uploaded files are gone: coordd restarted before this upload ran, and"
                " does not keep uploads across a restart; upload them again"
            )
        files = [Uploaded(f.package, f.tmp, f.sha256, f.size) for f in pending.files]
        try:
            summary = await anyio.to_thread.run_sync(
                functools.partial(
                    self.content.upload,
                    repo.id,
                    files,
                    task_id=ctx.task.id,
                    retain=self.retain(repo),
                )
            )
        except ContentConflict as exc:
            raise OperationFailed(f"upload refused, nothing changed: {exc}") from None
        finally:
            await anyio.to_thread.run_sync(pending.discard)
            await self._refresh(repo.id)
        self._save(ctx, replace(repo, updated=time.time()))
        return {"repo_id": repo.id, **summary}

    async def remove(self, ctx: TaskContext) -> dict[str, Any]:
        """Make a version without the packages and errata the selectors match."""
        repo = self._existing(ctx.args["repo_id"])
        nevras: list[Nevra] = [tuple(n) for n in ctx.args.get("nevras", [])]
        summary = await anyio.to_thread.run_sync(
            functools.partial(
                self.content.remove,
                repo.id,
                names=ctx.args.get("names", []),
                nevras=nevras,
                errata=ctx.args.get("errata", []),
                task_id=ctx.task.id,
                retain=self.retain(repo),
            )
        )
        await self._refresh(repo.id, pool=summary["version"] is not None)
        if summary["version"] is not None:
            self._save(ctx, replace(repo, updated=time.time()))
        return {"repo_id": repo.id, **summary}

    async def remove_orphans(self, ctx: TaskContext) -> dict[str, Any]:
        try:
            return await anyio.to_thread.run_sync(self.content.remove_orphans)
        finally:
            await self._refresh(None)

    def _existing(self, repo_id: str) -> Repository:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise OperationFailed(f"repository {repo_id} does not exist")
        return repo

    def operations(self) -> list[Operation]:
        def on(kind: str, *, pool: bool = False) -> Any:
            def claims(args: Mapping[str, Any]) -> tuple[Claim, ...]:
                claim = Claim(resource(args["repo_id"]), kind)  # type: ignore[arg-type]
                return (claim, Claim(POOL, "read")) if pool else (claim,)

            return claims

        def copy_claims(args: Mapping[str, Any]) -> tuple[Claim, ...]:
            return (
                Claim(resource(args["from"]), "read"),
                Claim(resource(args["to"]), "update"),
                Claim(POOL, "read"),
            )

        def pool_claims(args: Mapping[str, Any]) -> tuple[Claim, ...]:
            return (Claim(POOL, "update"),)

        return [
            Operation("repo.create", "create repository", on("create"), apply=self.create),
            Operation("repo.update", "update configuration", on("update"), apply=self.update),
            Operation(
                "repo.delete", "delete repository", on("delete"), self.delete, restartable=True
            ),
            Operation(
                "repo.sync",
                "sync",
                on("update", pool=True),
                self.sync,
                heavy=True,
                restartable=True,
            ),
            Operation(
                "repo.publish", "publish", on("read"), self.publish, heavy=True, restartable=True
            ),
            Operation("repo.copy", "copy packages", copy_claims, self.copy, restartable=True),
            Operation("repo.upload", "upload packages", on("update", pool=True), self.upload),
            Operation(
                "repo.remove",
                "remove packages and errata",
                on("update", pool=True),
                self.remove,
                restartable=True,
            ),
            Operation(
                "repo.rollback",
                "roll back",
                on("update", pool=True),
                self.rollback,
                restartable=True,
            ),
            Operation(
                ORPHANS,
                "remove orphaned content",
                pool_claims,
                self.remove_orphans,
                heavy=True,
                restartable=True,
            ),
        ]
