"""The JSON-RPC method table: every method the socket serves, with who may call it.

Methods are named ``noun.verb`` and listed explicitly in ``METHODS``; nothing is looked up by
attribute. Each entry says whether the method only reads (``read``) or changes state
(``admin``); the server checks the caller's credentials against it before dispatch, so a new
method cannot skip the check. ``man/coordd-api.7`` documents each one.

Methods raise ``CoorddError`` subclasses; ``dispatch`` turns them into JSON-RPC errors with
their stable codes, and turns anything else into a bare internal error (logged with its
traceback here, never sent to the client).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from jsonrpcserver import Error, Success
from jsonrpcserver.async_dispatcher import dispatch_request
from jsonrpcserver.dispatcher import create_request, to_response
from jsonrpcserver.response import to_serializable
from jsonrpcserver.sentinels import NOID

from coordd.api import params
from coordd.api.content import ContentMethods, version_param
from coordd.api.errors import (
    INTERNAL_ERROR,
    CoorddError,
    InvalidRequest,
    InvalidState,
    NotFound,
    PermissionDenied,
)
from coordd.api.packages import PackageMethods
from coordd.api.schedules import ScheduleMethods
from coordd.engine.coordinator import Decision, Resource, Verdict
from coordd.engine.locks import Holder, Locks, parse_resources
from coordd.engine.runtime import Runtime
from coordd.engine.tasks import ENDED, State, Task, blocker_to_json
from coordd.repo.autopublish import AutoPublish
from coordd.repo.queries import ContentQueries
from coordd.repo.repositories import (
    REPOSITORY,
    Repositories,
    shown_task,
    validate_config,
    validate_id,
)
from coordd.repo.schedules import Scheduler

log = logging.getLogger("coordd.rpc")

Access = Literal["read", "admin"]
ALL_STATES = tuple(state.value for state in State)
DEFAULT_WAIT_S = 30.0
MAX_WAIT_S = 3600.0
MAX_LIST = 10_000


@dataclass
class Caller:
    """Who is calling, and the connection the call came on."""

    uid: int
    gid: int
    pid: int
    access: frozenset[str]  # the access levels granted: {"read"} or {"read", "admin"}
    notify: Callable[[str, dict[str, Any]], None]
    subscriptions: set[str] = field(default_factory=set)  # "*" or task ids
    held: set[str] = field(default_factory=set)  # lock tasks attached to this connection
    holder: Holder | None = None

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        """A runtime event: pass it on if this caller subscribed to that task (or to all)."""
        task_id = params["task"]["id"] if "task" in params else params.get("id")
        if "*" in self.subscriptions or task_id in self.subscriptions:
            if "task" in params:
                params = {**params, "task": shown_task(params["task"])}
            self.notify(method, params)


@dataclass
class Services:
    runtime: Runtime
    repos: Repositories
    locks: Locks
    queries: ContentQueries | None = None
    scheduler: Scheduler | None = None
    autopublish: AutoPublish | None = None


Method = Callable[..., Awaitable[Any]]


class Api:
    """The methods, bound to the daemon's services."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.table: dict[str, tuple[Method, Access]] = {
            "server.status": (self.server_status, "read"),
            "task.list": (self.task_list, "read"),
            "task.get": (self.task_get, "read"),
            "task.wait": (self.task_wait, "read"),
            "task.cancel": (self.task_cancel, "admin"),
            "events.subscribe": (self.events_subscribe, "read"),
            "events.unsubscribe": (self.events_unsubscribe, "read"),
            "repo.list": (self.repo_list, "read"),
            "repo.show": (self.repo_show, "read"),
            "repo.create": (self.repo_create, "admin"),
            "repo.update": (self.repo_update, "admin"),
            "repo.delete": (self.repo_delete, "admin"),
            "repo.sync": (self.repo_sync, "admin"),
            "repo.publish": (self.repo_publish, "admin"),
            "repo.copy": (self.repo_copy, "admin"),
            "lock.acquire": (self.lock_acquire, "admin"),
            "lock.attach": (self.lock_attach, "admin"),
            "lock.release": (self.lock_release, "admin"),
        }
        #: The methods that take descriptors passed with the request (``fdpassing``).
        self.takes_fds = frozenset({"repo.upload"})
        content = ContentMethods(self._queries, self._submit)
        self.table.update(content.table())  # type: ignore[arg-type]
        schedules = ScheduleMethods(self._scheduler, lambda: self.services.repos)
        self.table.update(schedules.table())  # type: ignore[arg-type]
        packages = PackageMethods(
            lambda: self.services.repos, lambda: self.services.runtime, self._submit
        )
        self.table.update(packages.table())  # type: ignore[arg-type]
        self._methods = {
            name: self._guard(name, method, access) for name, (method, access) in self.table.items()
        }

    def _queries(self) -> ContentQueries:
        queries = self.services.queries
        assert queries is not None, "the daemon's services always have content queries"
        return queries

    def _scheduler(self) -> Scheduler:
        scheduler = self.services.scheduler
        assert scheduler is not None, "the daemon's services always have a scheduler"
        return scheduler

    def _guard(self, name: str, method: Method, access: Access) -> Method:
        check_params = _params_check(inspect.signature(method))

        async def guarded(caller: Caller, /, *args: Any, **kwargs: Any) -> Any:
            if access not in caller.access:
                return _error(
                    PermissionDenied(
                        f"{name} needs {'admin' if access == 'admin' else 'read'} access; "
                        f"uid {caller.uid} has {_describe_access(caller.access)}",
                        {"method": name, "needs": access, "uid": caller.uid},
                    )
                )
            # Checked here, not by jsonrpcserver, whose error says only "Invalid params".
            try:
                check_params(caller, args, kwargs)
            except TypeError as exc:
                return _error(InvalidRequest(f"{name}: {exc}", {"method": name}))
            try:
                return Success(await method(caller, *args, **kwargs))
            except CoorddError as exc:
                return _error(exc)
            except Exception:
                incident = uuid.uuid4().hex[:12]
                log.exception("internal error in %s (incident %s)", name, incident)
                return Error(
                    INTERNAL_ERROR, "internal error", {"incident": incident, "method": name}
                )

        # jsonrpcserver asks for the signature on every call; computed once, it costs nothing.
        guarded.__signature__ = inspect.signature(guarded)  # type: ignore[attr-defined]
        return guarded

    async def dispatch(self, request: dict[str, Any], caller: Caller) -> dict[str, Any] | None:
        """Dispatch one already-validated request object; ``None`` for a notification.

        The framing layer has parsed and checked the request, and answers batches member
        by member; so jsonrpcserver's per-request step is called directly, without its
        parsing, validation and ``asyncio.gather`` over a batch of one.
        """
        parsed, result = await dispatch_request(self._methods, caller, create_request(request))
        if parsed.id is NOID:
            return None
        response = to_serializable(to_response(parsed, result))
        assert isinstance(response, dict)
        return response

    # -- server and tasks ----------------------------------------------------------------

    async def server_status(self, caller: Caller) -> dict[str, Any]:
        status = self.services.runtime.status()
        status["repositories"] = len(self.services.repos.repos)
        queries = self.services.queries
        if queries is not None and queries.stats is not None:
            status["content"] = queries.stats.to_json()
        status["caller"] = {"uid": caller.uid, "access": sorted(caller.access)}
        return status

    async def task_list(
        self,
        caller: Caller,
        resource: Any = None,
        repo_id: Any = None,
        state: Any = None,
        limit: Any = 1000,
    ) -> dict[str, Any]:
        runtime = self.services.runtime
        where: Resource | None = None
        if repo_id is not None:
            where = Resource(REPOSITORY, validate_id(repo_id))
        elif resource is not None:
            res = params.obj(resource, "resource")
            where = Resource(
                params.required_text(res.get("type"), "resource.type", max_len=200),
                params.required_text(res.get("id"), "resource.id", max_len=200),
            )
        states = _states(state)
        count = params.integer(limit, "limit", 1, MAX_LIST)
        tasks: list[Task] = []
        if {"waiting", "running"} & states:
            tasks = [t for t in runtime.incomplete(where) if t.state.value in states]
        ended = states & {s.value for s in ENDED}
        if ended:
            tasks += await runtime.history(where, ended, count)
        if not tasks and repo_id is not None and where is not None:
            self.services.repos.get(
                where.id
            )  # an unknown repository is an error, not an empty list
        return {"tasks": [self._describe(t) for t in tasks[:count]]}

    async def task_get(self, caller: Caller, task_id: Any) -> dict[str, Any]:
        task = await self.services.runtime.get(params.required_text(task_id, "task_id", max_len=64))
        return self._describe(task)

    async def task_wait(
        self,
        caller: Caller,
        task_id: Any,
        timeout: Any = DEFAULT_WAIT_S,  # noqa: ASYNC109 - the JSON-RPC parameter's name
    ) -> dict[str, Any]:
        tid = params.required_text(task_id, "task_id", max_len=64)
        limit = params.number(timeout, "timeout", 0, MAX_WAIT_S)
        task = await self.services.runtime.wait(tid, limit)
        return self._describe(task)

    async def task_cancel(self, caller: Caller, task_id: Any) -> dict[str, Any]:
        task = await self.services.runtime.cancel(
            params.required_text(task_id, "task_id", max_len=64)
        )
        return self._describe(task)

    async def events_subscribe(self, caller: Caller, task_ids: Any = None) -> dict[str, Any]:
        if task_ids is None:
            caller.subscriptions.add("*")
        else:
            caller.subscriptions.update(params.string_list(task_ids, "task_ids", max_items=1000))
        self.services.runtime.subscribe(caller.on_event)
        return {"subscribed": sorted(caller.subscriptions)}

    async def events_unsubscribe(self, caller: Caller) -> dict[str, Any]:
        caller.subscriptions.clear()
        self.services.runtime.unsubscribe(caller.on_event)
        return {"subscribed": []}

    # -- repositories --------------------------------------------------------------------

    async def repo_list(self, caller: Caller) -> dict[str, Any]:
        repos = self.services.repos
        return {"repositories": [repos.describe(r) for _, r in sorted(repos.repos.items())]}

    async def repo_show(self, caller: Caller, repo_id: Any) -> dict[str, Any]:
        repo = self.services.repos.get(validate_id(repo_id))
        out = self.services.repos.describe(repo, details=True)
        out["tasks"] = [
            self._describe(t)
            for t in self.services.runtime.incomplete(Resource(REPOSITORY, repo.id))
        ]
        return out

    async def repo_create(
        self,
        caller: Caller,
        repo_id: Any,
        display_name: Any = None,
        description: Any = None,
        notes: Any = None,
        importer: Any = None,
        retain_versions: Any = None,
        sign_metadata: Any = None,
        auto_publish: Any = None,
        retain_package_versions: Any = None,
        request_id: Any = None,
    ) -> dict[str, Any]:
        fields = _present(
            display_name=display_name,
            description=description,
            notes=notes,
            importer=importer,
            retain_versions=retain_versions,
            sign_metadata=sign_metadata,
            auto_publish=auto_publish,
            retain_package_versions=retain_package_versions,
        )
        args = {"repo_id": validate_id(repo_id), "config": validate_config(fields, partial=False)}
        return await self._submit("repo.create", args, caller, request_id)

    async def repo_update(
        self,
        caller: Caller,
        repo_id: Any,
        display_name: Any = params.ABSENT,
        description: Any = params.ABSENT,
        notes: Any = params.ABSENT,
        importer: Any = params.ABSENT,
        retain_versions: Any = params.ABSENT,
        sign_metadata: Any = params.ABSENT,
        auto_publish: Any = params.ABSENT,
        retain_package_versions: Any = params.ABSENT,
        request_id: Any = None,
    ) -> dict[str, Any]:
        # Here null is a value: it clears a descriptive field (or, in importer, an option;
        # or the repository's own retention, for the configured default).
        fields = {
            key: value
            for key, value in (
                ("display_name", display_name),
                ("description", description),
                ("notes", notes),
                ("importer", importer),
                ("retain_versions", retain_versions),
                ("sign_metadata", sign_metadata),
                ("auto_publish", auto_publish),
                ("retain_package_versions", retain_package_versions),
            )
            if value is not params.ABSENT
        }
        if not fields:
            raise InvalidRequest("nothing to update: give at least one field to change")
        args = {"repo_id": validate_id(repo_id), "config": validate_config(fields, partial=True)}
        return await self._submit("repo.update", args, caller, request_id)

    async def repo_delete(
        self, caller: Caller, repo_id: Any, request_id: Any = None
    ) -> dict[str, Any]:
        args = {"repo_id": validate_id(repo_id)}
        return await self._submit("repo.delete", args, caller, request_id)

    async def repo_sync(
        self, caller: Caller, repo_id: Any, request_id: Any = None
    ) -> dict[str, Any]:
        args = {"repo_id": validate_id(repo_id)}
        return await self._submit("repo.sync", args, caller, request_id)

    async def repo_publish(
        self, caller: Caller, repo_id: Any, version: Any = None, request_id: Any = None
    ) -> dict[str, Any]:
        args: dict[str, Any] = {"repo_id": validate_id(repo_id)}
        if version is not None:
            args["version"] = version_param(version)
        return await self._submit("repo.publish", args, caller, request_id)

    async def repo_copy(
        self,
        caller: Caller,
        source: Any,
        target: Any,
        name: Any = None,
        version: Any = None,
        request_id: Any = None,
    ) -> dict[str, Any]:
        args: dict[str, Any] = {
            "from": validate_id(source, "source"),
            "to": validate_id(target, "target"),
        }
        if args["from"] == args["to"]:
            raise InvalidRequest("source and target must be different repositories")
        if name is not None:
            args["name"] = params.required_text(name, "name", max_len=200)
        if version is not None:
            args["version"] = version_param(version)
        return await self._submit("repo.copy", args, caller, request_id)

    async def _submit(
        self, operation: str, args: dict[str, Any], caller: Caller, request_id: Any
    ) -> dict[str, Any]:
        task, decision, repeated = await self.services.runtime.submit_once(
            operation, args, caller.uid, params.request_id(request_id)
        )
        return self._submitted(task, decision, repeated)

    def _submitted(self, task: Task, decision: Decision, repeated: bool = False) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "verdict": decision.verdict.value,
            "waiting_for": [blocker_to_json(b) for b in decision.blockers],
            "task": self._describe(task),
        }
        if repeated:  # the same request id again: the task it made, nothing new
            answer["repeated"] = True
        return answer

    # -- external locks ------------------------------------------------------------------

    async def lock_acquire(
        self,
        caller: Caller,
        resources: Any,
        command: Any = None,
        pid: Any = None,
        host: Any = None,
        wait: Any = True,
    ) -> dict[str, Any]:
        args: dict[str, Any] = {
            "resources": resources,
            "command": params.string_list(command or [], "command", max_items=256),
            "pid": params.integer(pid if pid is not None else caller.pid, "pid", 0, 2**31),
            "host": params.text(host, "host", optional=True, max_len=255),
        }
        parse_resources(resources)
        if not params.boolean(wait, "wait"):
            # Not willing to wait: report the postponement and store nothing. A rejection
            # is left to submit, which raises it with its reasons.
            decision = self.services.runtime.check("lock", args)
            if decision.verdict is Verdict.POSTPONED:
                return {
                    "verdict": decision.verdict.value,
                    "waiting_for": [blocker_to_json(b) for b in decision.blockers],
                    "task": None,
                }
        holder = self._holder(caller)

        def attach(task: Task) -> None:
            self.services.locks.attach(task.id, holder)
            caller.held.add(task.id)

        task, decision = await self.services.runtime.submit(
            "lock", args, caller.uid, before_start=attach
        )
        result = self._submitted(task, decision)
        result["reattach_grace_s"] = self.services.runtime.settings.reattach_grace_s
        return result

    async def lock_attach(self, caller: Caller, task_id: Any) -> dict[str, Any]:
        tid = params.required_text(task_id, "task_id", max_len=64)
        task = self.services.runtime.tasks.get(tid)
        if task is None:
            ended = await self.services.runtime.get(tid)
            raise InvalidState(
                f"task {tid} has ended ({ended.state.value}); its lock is gone",
                {"task_id": tid, "state": ended.state.value},
            )
        if task.operation != "lock":
            raise InvalidRequest(f"task {tid} is not a lock")
        if self.services.locks.is_attached(tid):
            raise InvalidState(f"task {tid} is already attached to another client")
        self.services.locks.attach(tid, self._holder(caller))
        caller.held.add(tid)
        return self._describe(task)

    async def lock_release(
        self, caller: Caller, task_id: Any, exit_status: Any = None
    ) -> dict[str, Any]:
        tid = params.required_text(task_id, "task_id", max_len=64)
        if tid not in caller.held:
            raise NotFound(f"this connection holds no lock task {tid}")
        status = (
            None if exit_status is None else params.integer(exit_status, "exit_status", -255, 255)
        )
        caller.held.discard(tid)
        task = self.services.runtime.tasks.get(tid)
        if task is not None and task.state is State.WAITING:
            await self.services.runtime.cancel(tid)  # released before it was granted: withdraw
        else:
            self.services.locks.release(tid, status)
        if task is not None:
            task = await self.services.runtime.wait(tid, 10.0)
            return self._describe(task)
        return self._describe(await self.services.runtime.get(tid))

    def _describe(self, task: Task) -> dict[str, Any]:
        return shown_task(self.services.runtime.describe(task))

    def _holder(self, caller: Caller) -> Holder:
        if caller.holder is None:
            caller.holder = Holder(caller.notify)
        return caller.holder

    async def connection_closed(self, caller: Caller) -> None:
        """A client went away: withdraw its waiting locks, release its held ones."""
        self.services.runtime.unsubscribe(caller.on_event)
        if caller.holder is not None:
            caller.holder.closed.set()
        if self.services.runtime.stopping:
            return  # the daemon is going down: clients re-attach after the restart
        for tid in list(caller.held):
            caller.held.discard(tid)
            task = self.services.runtime.tasks.get(tid)
            if task is None:
                continue
            if task.state is State.WAITING:
                with contextlib.suppress(CoorddError):  # it may have just ended
                    await self.services.runtime.cancel(tid)
            else:
                self.services.locks.detach(tid)


def _params_check(signature: inspect.Signature) -> Callable[[Caller, Any, Any], None]:
    """A check that params fit a method, raising ``TypeError`` with Python's precise message.

    Params by name, as clients send them, are checked against the names computed here;
    anything else (and every mistake) goes through ``Signature.bind``, exact but too slow to
    run on every request.
    """
    parameters = list(signature.parameters.values())[1:]  # after the caller
    names = frozenset(p.name for p in parameters)
    required = tuple(p.name for p in parameters if p.default is inspect.Parameter.empty)

    def check(caller: Caller, args: Any, kwargs: Any) -> None:
        if args or not kwargs.keys() <= names or not all(r in kwargs for r in required):
            signature.bind(caller, *args, **kwargs)

    return check


def _error(exc: CoorddError) -> Any:
    return Error(exc.code, exc.message, exc.data)


def _describe_access(access: frozenset[str]) -> str:
    if "admin" in access:
        return "admin access"
    if "read" in access:
        return "read-only access"
    return "no access"


def _present(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _states(state: Any) -> set[str]:
    if state is None:
        return {"waiting", "running"}
    values = [state] if isinstance(state, str) else state
    if not isinstance(values, list) or not values:
        raise InvalidRequest("state must be a state name or a list of them")
    for value in values:
        if value == "all":
            return set(ALL_STATES)
        if value not in ALL_STATES:
            raise InvalidRequest(f"unknown state {value!r}; one of {', '.join(ALL_STATES)}, all")
    return set(values)
