"""Publish after sync: a repository with ``auto_publish`` publishes each version a sync makes.

Once a sync's end is committed, and only if it finished and made a new version, a publish
of that version is submitted at once, as the sync's submitter, with the sync as its
``parent`` and a ``reason`` naming it. A sync that failed, was canceled or changed nothing
queues nothing. The publish is an ordinary task: it may be postponed (a slot, another
task ahead) or rejected (a delete queued meanwhile), which is logged.

The publish is submitted after the sync's end is committed, not with it; so at start-up
(``catch_up``) a repository whose latest version a finished sync made, with no task ever
submitted after that sync and that version not published, gets the publish a crash in
between lost.
"""

from __future__ import annotations

import logging

from coordd.api.errors import CoorddError, NotFound
from coordd.engine.runtime import Runtime
from coordd.engine.tasks import State, Task
from coordd.repo.repositories import Repositories

log = logging.getLogger("coordd.autopublish")


class AutoPublish:
    """Watches task ends and queues the publish a sync of an ``auto_publish`` repository
    asks for."""

    def __init__(self, runtime: Runtime, repos: Repositories) -> None:
        self.runtime = runtime
        self.repos = repos
        runtime.watch_ends(self._task_ended)

    def _task_ended(self, task: Task) -> None:
        if task.operation != "repo.sync" or task.state is not State.FINISHED:
            return
        result = task.result if isinstance(task.result, dict) else {}
        version = result.get("version")
        if not result.get("new_version") or not isinstance(version, int):
            return
        repo = self.repos.repos.get(task.args.get("repo_id", ""))
        if repo is None or not repo.config.get("auto_publish"):
            return
        self.runtime.start_soon(self._publish, task, repo.id, version)

    async def catch_up(self) -> None:
        """Queue the publishes that a stop between a sync's end and its publish lost."""
        for repo_id, repo in list(self.repos.repos.items()):
            state = self.repos.states.get(repo_id)
            latest = state.latest if state is not None else None
            if not repo.config.get("auto_publish") or latest is None or state is None:
                continue
            if latest.note != "sync" or latest.task_id is None:
                continue
            if state.published is not None and state.published >= latest.number:
                continue
            try:
                sync = await self.runtime.get(latest.task_id)
            except NotFound:  # purged long since: that sync's publish is not ours to make
                continue
            if sync.state is not State.FINISHED or await self.runtime.has_child(sync.id):
                continue
            log.info(
                "repository %s: version %d was not published after its sync", repo_id, latest.number
            )
            await self._publish(sync, repo_id, latest.number)

    async def _publish(self, sync: Task, repo_id: str, version: int) -> None:
        try:
            task, decision = await self.runtime.submit(
                "repo.publish",
                {"repo_id": repo_id, "version": version},
                sync.uid,
                parent=sync.id,
                reason=f"auto_publish: version {version} made by sync {sync.id}",
            )
        except CoorddError as exc:
            log.warning(
                "repository %s: the publish of version %d after sync %s was not queued: %s",
                repo_id,
                version,
                sync.id,
                exc.message,
            )
            return
        log.info(
            "repository %s: publish of version %d queued after sync %s: task %s, %s",
            repo_id,
            version,
            sync.id,
            task.id,
            decision.verdict.value,
        )
