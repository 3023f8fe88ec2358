"""Publish after sync: a repository with ``auto_publish`` publishes each version a sync makes.

Once a sync's end is committed, and only if it finished and made a new version, a publish
of that version is submitted at once, as the sync's submitter, with the sync as its
``parent`` and a ``reason`` naming it. A sync that failed, was canceled or changed nothing
queues nothing. The publish is an ordinary task: it may be postponed (a slot, another
task ahead) or rejected (a delete queued meanwhile), which is logged.
"""

from __future__ import annotations

import logging

from coordd.api.errors import CoorddError
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
