"""The socket API's package methods: upload RPM files into a repository, remove packages
and errata from it.

``repo.upload`` takes the files as descriptors passed with the request
(``coordd.api.fdpassing``): they are copied into the pool and read (``coordd.repo.upload``)
before the task is submitted, and kept for the task by an upload id; a request sent again
with its request id finds the same upload. ``repo.remove`` takes globs of names, NEVRAs and
erratum ids. Both are tasks like every other change. ``Api`` (``coordd.api.methods``) puts
these in its table.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread

from coordd.api import fdpassing, params
from coordd.api.content import Submit
from coordd.api.errors import Conflict, InvalidRequest
from coordd.engine.coordinator import Verdict
from coordd.engine.runtime import Runtime
from coordd.engine.tasks import blocker_to_json
from coordd.repo.repositories import Repositories, validate_id
from coordd.repo.upload import PendingUpload, parse_nevra, receive

__all__ = ["MAX_SELECTORS", "PackageMethods"]

MAX_SELECTORS = 1000  # of each kind, in one repo.remove


class PackageMethods:
    """The methods; ``repos`` and ``runtime`` give the daemon's, ``submit`` is
    ``Api._submit``."""

    def __init__(
        self, repos: Callable[[], Repositories], runtime: Callable[[], Runtime], submit: Submit
    ) -> None:
        self._repos = repos
        self._runtime = runtime
        self.submit = submit

    def table(self) -> dict[str, tuple[Callable[..., Awaitable[Any]], str]]:
        return {
            "repo.upload": (self.upload, "admin"),
            "repo.remove": (self.remove, "admin"),
        }

    async def upload(
        self, caller: Any, repo_id: Any, files: Any = None, request_id: Any = None
    ) -> dict[str, Any]:
        """Upload the RPM files passed as descriptors; ``files``: their names, for messages."""
        repo = validate_id(repo_id)
        fds = fdpassing.passed()
        if not fds:
            raise InvalidRequest(
                "repo.upload takes the files as open descriptors passed with the request"
                ' ("fds", see coordd-api(7)); none came',
                {"param": "fds"},
            )
        names = [] if files is None else params.string_list(files, "files", max_items=len(fds))
        rid = params.request_id(request_id)
        repos = self._repos()
        runtime = self._runtime()
        decision = runtime.check("repo.upload", {"repo_id": repo})
        if decision.verdict is Verdict.REJECTED:  # refused before the files are read
            raise Conflict(
                "the requested operation conflicts with operations already queued; "
                "it could never run",
                {"conflicts": [blocker_to_json(b) for b in decision.blockers]},
            )
        for upload_id, stale in list(repos.uploads.items()):
            if stale.task_id is not None and stale.task_id not in runtime.tasks:
                del repos.uploads[upload_id]  # its task ended without taking it
                await anyio.to_thread.run_sync(stale.discard)
        received = await anyio.to_thread.run_sync(receive, repos.content.pool, fds, names)
        pending = PendingUpload(repo, received)
        # A request sent again with its id (the client gave up waiting) must describe the
        # same task: the same upload id, the same files.
        upload_id = (
            uuid.uuid4().hex
            if rid is None
            else hashlib.sha256(f"{caller.uid}:{rid}".encode()).hexdigest()[:32]
        )
        mine = upload_id not in repos.uploads
        if mine:
            repos.uploads[upload_id] = pending
        args = {
            "repo_id": repo,
            "upload_id": upload_id,
            "files": [uploaded.to_json() for uploaded in received],
        }
        try:
            answer = await self.submit("repo.upload", args, caller, rid)
        except BaseException:
            if mine:
                repos.uploads.pop(upload_id, None)
            await anyio.to_thread.run_sync(pending.discard)
            raise
        if answer.get("repeated") or not mine:
            if repos.uploads.get(upload_id) is pending:
                del repos.uploads[upload_id]
            await anyio.to_thread.run_sync(pending.discard)
        else:
            pending.task_id = answer["task"]["id"]
        return answer

    async def remove(
        self,
        caller: Any,
        repo_id: Any,
        names: Any = None,
        nevras: Any = None,
        errata: Any = None,
        request_id: Any = None,
    ) -> dict[str, Any]:
        args: dict[str, Any] = {"repo_id": validate_id(repo_id)}
        if names is not None:
            args["names"] = params.string_list(names, "names", max_items=MAX_SELECTORS, max_len=200)
        if nevras is not None:
            parsed = []
            for index, text in enumerate(
                params.string_list(nevras, "nevras", max_items=MAX_SELECTORS, max_len=500)
            ):
                try:
                    parsed.append(list(parse_nevra(text)))
                except ValueError as exc:
                    raise InvalidRequest(f"nevras[{index}]: {exc}", {"param": "nevras"}) from None
            args["nevras"] = parsed
        if errata is not None:
            args["errata"] = params.string_list(
                errata, "errata", max_items=MAX_SELECTORS, max_len=200
            )
        if not any(args.get(key) for key in ("names", "nevras", "errata")):
            raise InvalidRequest(
                "nothing to remove: give at least one of names (globs), nevras or errata",
                {"param": "names"},
            )
        return await self.submit("repo.remove", args, caller, request_id)
