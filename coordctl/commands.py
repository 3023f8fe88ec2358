"""coordctl's commands: one function per command, and the ``Context`` they run in.

The same functions serve a one-shot ``coordctl repo sync --repo-id demo`` (``coordctl.cli``)
and the line ``repo sync --repo-id demo`` typed in the shell (``coordctl.shell``), the way
supervisorctl runs a one-shot command as one shell line. A command function takes a
``Context`` (where the daemon is, how to print, and the shell's hooks) and the arguments
``coordctl.parser`` parsed, and returns the exit status (``coordctl.exitcodes``);
``COMMANDS`` maps each command of the parser to its function. Errors from the daemon are
raised as ``coordd.api.errors`` classes and turned into output and a status in one place,
``execute``.

Start-up time matters here: every script pays it on every call. This module imports only
``argparse``, ``sys`` and coordctl's cheap leaves at the top; the client and the renderers
are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from coordctl import exitcodes
from coordctl.arguments import IMPORTER_OPTIONS
from coordctl.parser import PROG, UsageError
from coordd.api import names
from coordd.api.address import client_socket_path

if TYPE_CHECKING:
    from types import ModuleType

    from coordctl.client import Client
    from coordd.api.errors import CoorddError

Command = Callable[["Context", argparse.Namespace], int]

TIMEOUT_ENV = "COORDCTL_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0


def answer_timeout() -> float:
    """Seconds to wait for a reply: ``$COORDCTL_TIMEOUT`` if it is a positive number, else 60."""
    import math
    import os

    try:
        value = float(os.environ.get(TIMEOUT_ENV, ""))
    except ValueError:
        return DEFAULT_TIMEOUT_S
    return value if math.isfinite(value) and value > 0 else DEFAULT_TIMEOUT_S


class Context:
    """Where the daemon is, where output goes, and the shell's hooks (one-shot: none)."""

    def __init__(
        self,
        socket: Path | None = None,
        json_output: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.socket = socket
        self.json = json_output
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        # The shell's "say when this task ends": called for tasks submitted without --wait
        # and for tasks whose following was interrupted; one-shot commands have none.
        self.watch: Callable[[str], None] | None = None

    def socket_path(self) -> Path:
        if self.socket is not None:
            return self.socket
        return client_socket_path()

    def connect(self, timeout: float | None = None) -> Client:
        """A connection whose replies are awaited ``timeout`` seconds (``answer_timeout``)."""
        from coordctl.client import Client

        limit = answer_timeout() if timeout is None else timeout
        return Client(self.socket_path(), timeout=limit).connect()

    def print(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def json_out(self, value: Any) -> None:
        import json

        self.print(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def show(
        self, answer: Any, render: Callable[[ModuleType], str], *, repository: bool = False
    ) -> int:
        """Print the daemon's ``answer`` as JSON, or as ``render(coordctl.output)`` gives it;
        with ``repository``, ``render(coordctl.repo_output)``."""
        if self.json:
            self.json_out(answer)
        elif repository:
            from coordctl import repo_output

            self.print(render(repo_output))
        else:
            from coordctl import output

            self.print(render(output))
        return exitcodes.OK


def execute(ctx: Context, args: argparse.Namespace) -> int:
    """Run the parsed command; turn the daemon's errors into output and an exit status."""
    from coordd.api.errors import Conflict, CoorddError

    if args.command_name is None:
        args.command_parser.print_help(ctx.err)
        return exitcodes.USAGE
    try:
        return COMMANDS[args.command_name](ctx, args)
    except UsageError as exc:
        return report_usage(ctx, exc)
    except Conflict as exc:
        if ctx.json:
            ctx.json_out({"error": exc.to_json()})
        else:
            from coordctl import output

            ctx.err.write(output.rejected(exc.data))
        return exitcodes.REJECTED
    except CoorddError as exc:
        report_error(ctx, exc)
        return exitcodes.for_error(exc)


def report_error(ctx: Context, exc: CoorddError) -> None:
    if ctx.json:
        ctx.json_out({"error": exc.to_json()})
    else:
        ctx.err.write(f"{PROG}: {exc.message}\n")


def report_usage(ctx: Context, exc: UsageError) -> int:
    if ctx.json:
        from coordd.api.errors import InvalidRequest

        error = InvalidRequest(exc.message, {"usage": exc.parser.format_usage()})
        ctx.json_out({"error": error.to_json()})
    else:
        ctx.err.write(exc.parser.format_usage())
        ctx.err.write(f"{exc.parser.prog}: error: {exc.message}\n")
    return exitcodes.USAGE


# -- task submissions ----------------------------------------------------------------------


def submit(
    ctx: Context,
    args: argparse.Namespace,
    method: str,
    params: dict[str, Any],
    fds: Sequence[int] = (),
) -> int:
    """Submit a task; print accepted/postponed, or follow it with ``--wait`` (one done as it
    was accepted, a configuration change, is reported as it ended). ``fds``: descriptors
    passed with the request (and again if it is sent once more)."""
    from coordctl import output
    from coordctl.client import TimedOut

    what: str = args.what
    hint = output.REPO_TASKS_HINT if args.command_name.startswith("repo ") else output.TASKS_HINT
    # A fresh request id: if coordd is too slow to answer, the request is sent once more
    # with it, and coordd answers with the task the first one made rather than a second.
    params = {**params, "request_id": _new_request_id()}
    client = ctx.connect()
    try:
        try:
            answer = client.call(method, params, fds=fds)
        except TimedOut:
            client.close()
            ctx.err.write(f"{PROG}: coordd did not answer in time; asking once more\n")
            ctx.err.flush()
            client = ctx.connect()
            answer = client.call(method, params, fds=fds)
    except KeyboardInterrupt:
        client.close()
        ctx.err.write(
            "\nInterrupted before coordd answered; the request may still have been queued: "
            "see coordctl tasks list.\n"
        )
        return exitcodes.INTERRUPTED
    except BaseException:
        client.close()
        raise
    task = answer["task"]
    if task["state"] in names.ENDED:  # done as it was accepted: nothing to follow
        client.close()
        return report_end(ctx, what, answer, task)
    try:
        if not args.wait:
            detach(ctx, task["id"])
            client.close()
            return ctx.show(answer, lambda output: output.submitted(what, answer, hint))
        if not ctx.json and answer.get("verdict") == "postponed":
            ctx.print(output.submitted(what, answer, hint) + "\n")
        final = wait_for(ctx, client, task)
    except KeyboardInterrupt:
        client.close()
        ctx.err.write("\n" + output.detached(task["id"]))
        detach(ctx, task["id"])
        return exitcodes.INTERRUPTED
    if final is None:
        return exitcodes.INTERRUPTED
    return report_end(ctx, what, answer, final)


def _new_request_id() -> str:
    import uuid

    return uuid.uuid4().hex


def report_end(ctx: Context, what: str, answer: dict[str, Any], final: dict[str, Any]) -> int:
    """How a submitted task ended: the answer with the task as it ended, or its outcome."""
    ctx.show({**answer, "task": final}, lambda output: output.outcome(what, final))
    return ended_status(final)


def wait_for(ctx: Context, client: Client, task: dict[str, Any]) -> dict[str, Any] | None:
    """Follow ``task`` on ``client`` to its end; ``None`` when Ctrl-C detached from it."""
    from coordctl import output
    from coordctl.follow import follow

    bar = None
    if _is_terminal(ctx.err):
        from coordctl.bar import Bar

        bar = Bar(ctx.err, output.task_title(task))
    try:
        return follow(ctx.connect, client, task, bar)
    except KeyboardInterrupt:
        ctx.err.write("\n" + output.detached(task["id"]))
        ctx.err.flush()
        detach(ctx, task["id"])
        return None


def detach(ctx: Context, task_id: str) -> None:
    """Leave ``task_id`` to run on its own; in the shell, a notice will say how it ended."""
    if ctx.watch is not None:
        ctx.watch(task_id)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def ended_status(task: dict[str, Any]) -> int:
    state = task.get("state")
    if state == names.ERROR:
        return exitcodes.TASK_FAILED
    if state == names.CANCELED:
        return exitcodes.CANCELED
    return exitcodes.OK


def _config_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"repo_id": args.repo_id}
    for key in ("display_name", "description", "notes"):
        value = getattr(args, key)
        if value is not None:
            params[key] = value
    if getattr(args, "auto_publish", None) is not None:
        params["auto_publish"] = args.auto_publish
    if args.retain_versions is not None:  # empty: back to the daemon's default
        params["retain_versions"] = None if args.retain_versions == "" else args.retain_versions
    if args.sign_metadata is not None:
        params["sign_metadata"] = args.sign_metadata
    if args.retain_package_versions is not None:  # empty: keep every version
        retain = args.retain_package_versions
        params["retain_package_versions"] = 0 if retain == "" else retain
    importer: dict[str, Any] = {}
    for _, key, _, _, _ in IMPORTER_OPTIONS:
        value = getattr(args, key)
        if value is not None:
            importer[key] = None if value == "" else value  # an empty value clears it
    if importer:
        params["importer"] = importer
    return params


def cmd_repo_create(ctx: Context, args: argparse.Namespace) -> int:
    return submit(ctx, args, "repo.create", _config_params(args))


def cmd_repo_update(ctx: Context, args: argparse.Namespace) -> int:
    return submit(ctx, args, "repo.update", _config_params(args))


def cmd_repo_delete(ctx: Context, args: argparse.Namespace) -> int:
    return submit(ctx, args, "repo.delete", {"repo_id": args.repo_id})


def cmd_repo_sync(ctx: Context, args: argparse.Namespace) -> int:
    return submit(ctx, args, "repo.sync", {"repo_id": args.repo_id})


def _given(params: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """``params`` with those of ``optional`` that were given (not ``None``)."""
    return {**params, **{key: value for key, value in optional.items() if value is not None}}


def cmd_repo_publish(ctx: Context, args: argparse.Namespace) -> int:
    params = _given({"repo_id": args.repo_id}, version=args.version)
    return submit(ctx, args, "repo.publish", params)


def cmd_repo_copy(ctx: Context, args: argparse.Namespace) -> int:
    params = _given(
        {"source": args.source, "target": args.target}, name=args.name, version=args.version
    )
    return submit(ctx, args, "repo.copy", params)


def cmd_repo_upload(ctx: Context, args: argparse.Namespace) -> int:
    import os

    opened: list[int] = []
    try:
        for name in args.files:
            try:
                opened.append(os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY))
            except OSError as exc:
                raise UsageError(
                    args.command_parser, f"cannot open {name}: {exc.strerror}"
                ) from None
        params = {
            "repo_id": args.repo_id,
            "files": [os.path.basename(name) for name in args.files],
        }
        return submit(ctx, args, "repo.upload", params, fds=opened)
    finally:
        for fd in opened:
            os.close(fd)


def cmd_repo_remove(ctx: Context, args: argparse.Namespace) -> int:
    if not (args.names or args.nevras or args.errata):
        raise UsageError(args.command_parser, "give at least one of --name, --nevra, --erratum")
    params = _given(
        {"repo_id": args.repo_id}, names=args.names, nevras=args.nevras, errata=args.errata
    )
    return submit(ctx, args, "repo.remove", params)


def cmd_repo_rollback(ctx: Context, args: argparse.Namespace) -> int:
    return submit(ctx, args, "repo.rollback", {"repo_id": args.repo_id, "version": args.version})


def cmd_content_orphans_remove(ctx: Context, args: argparse.Namespace) -> int:
    return submit(ctx, args, "content.orphans.remove", {})


# -- queries -------------------------------------------------------------------------------


def query(ctx: Context, method: str, params: dict[str, Any] | None = None) -> Any:
    with ctx.connect() as client:
        return client.call(method, params)


def cmd_repo_list(ctx: Context, args: argparse.Namespace) -> int:
    answer = query(ctx, "repo.list")
    return ctx.show(answer, lambda views: views.repo_list(answer["repositories"]), repository=True)


def cmd_repo_show(ctx: Context, args: argparse.Namespace) -> int:
    answer = query(ctx, "repo.show", {"repo_id": args.repo_id})
    return ctx.show(answer, lambda views: views.repo_show(answer), repository=True)


def pages(
    client: Client,
    method: str,
    params: dict[str, Any],
    follow: Callable[[dict[str, Any]], dict[str, Any]],
    limit: int | None,
) -> Iterator[dict[str, Any]]:
    """The answers of a paged ``method`` until ``limit`` items came (``None``: to the end)
    or ``next`` is null; ``follow(answer)`` gives the parameters that ask for the page
    after ``answer`` (its ``next`` as the cursor).

    Each page asks for what is still wanted, at most ``names.MAX_PAGE``; the last answer's
    ``next`` is where a later listing would go on.
    """
    left = limit
    while True:
        size = names.MAX_PAGE if left is None else min(left, names.MAX_PAGE)
        answer: dict[str, Any] = client.call(method, {**params, "limit": size})
        yield answer
        if left is not None:
            left -= size
        if answer.get("next") is None or left == 0:
            return
        params = {**params, **follow(answer)}


def cmd_repo_versions_list(ctx: Context, args: argparse.Namespace) -> int:
    versions: list[dict[str, Any]] = []
    answer: dict[str, Any] = {}
    with ctx.connect() as client:
        params = {"repo_id": args.repo_id}
        older = pages(
            client,
            "repo.versions.list",
            params,
            lambda answer: {"before": answer["next"]},
            args.limit,
        )
        for answer in older:
            versions += answer["versions"]
    merged = {**answer, "versions": versions}
    return ctx.show(merged, lambda views: views.version_list(args.repo_id, merged), repository=True)


def cmd_repo_versions_show(ctx: Context, args: argparse.Namespace) -> int:
    params = _given({"repo_id": args.repo_id}, version=args.version)
    answer = query(ctx, "repo.versions.show", params)
    return ctx.show(answer, lambda views: views.version_show(answer), repository=True)


def cmd_repo_versions_diff(ctx: Context, args: argparse.Namespace) -> int:
    params = _given(
        {"repo_id": args.repo_id, "limit": args.limit}, version=args.version, against=args.against
    )
    answer = query(ctx, "repo.versions.diff", params)
    return ctx.show(answer, lambda views: views.version_diff(answer), repository=True)


def cmd_repo_content(ctx: Context, args: argparse.Namespace) -> int:
    """Units a page at a time, printed as they come; all from one version, even across
    pages: the first answer names it, and every further page asks for that one."""
    from coordctl import repo_output

    params = _given(
        {"repo_id": args.repo_id, "after": args.after},
        version=args.version,
        type=args.kind,
        name=args.name,
        arch=args.arch,
    )
    limit = None if args.all else args.limit
    stream = ctx.json and args.all  # one JSON array, written as the pages come
    units: list[dict[str, Any]] = []  # --json without --all: the answer, pages merged
    shown = 0
    last: dict[str, Any] = {}
    with ctx.connect() as client:
        try:
            listing = pages(client, "repo.content", params, _after, limit)
            for number, last in enumerate(listing):
                if stream:
                    ctx.print(repo_output.json_items(last["units"], first=shown == 0))
                elif ctx.json:
                    units += last["units"]
                else:
                    if number == 0:
                        ctx.print(repo_output.content_head(last["repo_id"], last["version"]))
                    ctx.print(repo_output.unit_lines(last["units"]))
                shown += len(last["units"])
        except BaseException:
            if stream and shown:
                ctx.print("\n")  # the array stays open: nobody can take it for a whole one
            raise
    if stream:
        ctx.print(repo_output.json_items_end(shown))
    elif ctx.json:
        ctx.json_out({**last, "units": units})
    else:
        ctx.print(repo_output.content_tail(shown, _next_page(args, last)))
    return exitcodes.OK


def _after(answer: dict[str, Any]) -> dict[str, Any]:
    """The page of units after ``answer``, of the version it listed."""
    return {"after": answer["next"], "version": answer["version"]}


def _next_page(args: argparse.Namespace, last: dict[str, Any]) -> list[str] | None:
    """The command that lists the page after ``last``, if the listing was cut short."""
    if last.get("next") is None:
        return None
    words = [PROG, "repo", "content", "--repo-id", args.repo_id, "--version", str(last["version"])]
    for option, value in (("--type", args.kind), ("--name", args.name), ("--arch", args.arch)):
        if value is not None:
            words += [option, value]
    if args.limit != args.command_parser.get_default("limit"):
        words += ["--limit", str(args.limit)]
    return [*words, "--after", str(last["next"])]


def cmd_content_orphans_list(ctx: Context, args: argparse.Namespace) -> int:
    answer = query(ctx, "content.orphans.list", {"limit": args.limit})
    return ctx.show(answer, lambda views: views.orphans(answer), repository=True)


def _list_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": args.limit}
    if args.all:
        params["state"] = names.ALL_STATES
    elif args.state:
        params["state"] = args.state
    return params


def _print_tasks(ctx: Context, answer: dict[str, Any]) -> int:
    return ctx.show(answer, lambda output: output.task_list(answer["tasks"]))


def cmd_repo_tasks_list(ctx: Context, args: argparse.Namespace) -> int:
    params = {**_list_params(args), "repo_id": args.repo_id}
    with ctx.connect() as client:
        answer = client.call("task.list", params)
        if not answer["tasks"] and not args.all:
            client.call("repo.show", {"repo_id": args.repo_id})  # NotFound for a typo
    return _print_tasks(ctx, answer)


def cmd_tasks_list(ctx: Context, args: argparse.Namespace) -> int:
    params = _list_params(args)
    if args.resource is not None:
        params["resource"] = args.resource
    return _print_tasks(ctx, query(ctx, "task.list", params))


def _task_call(ctx: Context, method: str, args: argparse.Namespace) -> dict[str, Any] | None:
    """Call a ``task.*`` method on ``--task-id``; with ``--wait``, follow the task to its end.

    ``None`` when the user detached (Ctrl-C) while waiting.
    """
    client = ctx.connect()
    try:
        task: dict[str, Any] = client.call(method, {"task_id": args.task_id})
        if args.wait and task["state"] not in names.ENDED:
            return wait_for(ctx, client, task)
        return task
    finally:
        client.close()


def cmd_task_details(ctx: Context, args: argparse.Namespace) -> int:
    from coordctl import output

    task = _task_call(ctx, "task.get", args)
    if task is None:
        return exitcodes.INTERRUPTED
    if ctx.json:
        ctx.json_out(task)
    else:
        ctx.print(output.task_details(task))
    return ended_status(task) if args.wait else exitcodes.OK


def cmd_task_cancel(ctx: Context, args: argparse.Namespace) -> int:
    from coordctl import output

    task = _task_call(ctx, "task.cancel", args)
    if task is None:
        return exitcodes.INTERRUPTED
    if ctx.json:
        ctx.json_out(task)
    elif task["state"] in (names.CANCELED, *names.INCOMPLETE):
        ctx.print(output.canceled(task))
    else:  # it ended another way before it could stop
        ctx.print(output.outcome(f"Task {task['id']} ({output.task_title(task)})", task))
    return exitcodes.OK


def cmd_server_status(ctx: Context, args: argparse.Namespace) -> int:
    status = query(ctx, "server.status")
    return ctx.show(status, lambda output: output.server_status(status, str(ctx.socket_path())))


# -- schedules -------------------------------------------------------------------------

SCHEDULE_KINDS = {"repo sync": "sync", "repo publish": "publish", "content orphans": "orphans"}


def _schedule_where(args: argparse.Namespace) -> dict[str, Any]:
    """The kind (from the command's name) and repository a schedule command is about."""
    prefix = args.command_name.rsplit(" schedules ", 1)[0]
    where: dict[str, Any] = {"kind": SCHEDULE_KINDS[prefix]}
    if getattr(args, "repo_id", None) is not None:
        where["repo_id"] = args.repo_id
    return where


def cmd_schedule_create(ctx: Context, args: argparse.Namespace) -> int:
    params = _given(
        {**_schedule_where(args), "schedule": args.schedule, "enabled": args.enabled},
        failure_threshold=args.failure_threshold,
    )
    answer = query(ctx, "schedule.create", params)
    return ctx.show(answer, lambda output: output.schedule_made(answer))


def cmd_schedule_list(ctx: Context, args: argparse.Namespace) -> int:
    answer = query(ctx, "schedule.list", _schedule_where(args))
    return ctx.show(answer, lambda output: output.schedule_list(answer["schedules"]))


def cmd_schedule_show(ctx: Context, args: argparse.Namespace) -> int:
    params = {**_schedule_where(args), "schedule_id": args.schedule_id, "limit": args.limit}
    answer = query(ctx, "schedule.show", params)
    return ctx.show(answer, lambda output: output.schedule_show(answer))


def cmd_schedule_update(ctx: Context, args: argparse.Namespace) -> int:
    params = _given(
        {**_schedule_where(args), "schedule_id": args.schedule_id},
        schedule=args.schedule,
        enabled=args.enabled,
    )
    if args.failure_threshold is not None:  # empty: no threshold
        params["failure_threshold"] = args.failure_threshold or None
    answer = query(ctx, "schedule.update", params)
    return ctx.show(answer, lambda output: output.schedule_show(answer, title="Schedule Updated"))


def cmd_schedule_delete(ctx: Context, args: argparse.Namespace) -> int:
    params = {**_schedule_where(args), "schedule_id": args.schedule_id}
    answer = query(ctx, "schedule.delete", params)
    return ctx.show(answer, lambda output: f"Schedule {answer['deleted']} deleted.\n")


# -- run -------------------------------------------------------------------------------


def cmd_run(ctx: Context, args: argparse.Namespace) -> int:
    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise UsageError(args.command_parser, "give the command to run after --")
    from coordctl.run import run_locked

    return run_locked(
        ctx.socket_path(), args.resources, command, wait=args.wait, json_output=ctx.json
    )


COMMANDS: dict[str, Command] = {
    "repo create": cmd_repo_create,
    "repo update": cmd_repo_update,
    "repo delete": cmd_repo_delete,
    "repo sync": cmd_repo_sync,
    "repo publish": cmd_repo_publish,
    "repo copy": cmd_repo_copy,
    "repo rollback": cmd_repo_rollback,
    "repo upload": cmd_repo_upload,
    "repo remove": cmd_repo_remove,
    "repo list": cmd_repo_list,
    "repo show": cmd_repo_show,
    "repo content": cmd_repo_content,
    "repo versions list": cmd_repo_versions_list,
    "repo versions show": cmd_repo_versions_show,
    "repo versions diff": cmd_repo_versions_diff,
    "repo tasks list": cmd_repo_tasks_list,
    "repo tasks details": cmd_task_details,
    "repo tasks cancel": cmd_task_cancel,
    "tasks list": cmd_tasks_list,
    "tasks details": cmd_task_details,
    "tasks cancel": cmd_task_cancel,
    "content orphans list": cmd_content_orphans_list,
    "content orphans remove": cmd_content_orphans_remove,
    "server status": cmd_server_status,
    "run": cmd_run,
    **{
        f"{prefix} schedules {verb}": command
        for prefix in SCHEDULE_KINDS
        for verb, command in (
            ("create", cmd_schedule_create),
            ("list", cmd_schedule_list),
            ("show", cmd_schedule_show),
            ("update", cmd_schedule_update),
            ("delete", cmd_schedule_delete),
        )
    },
}
"""The function of each command of ``coordctl.parser.build_parser`` but ``shell``, which
``coordctl.cli`` and the shell itself handle (the shell is not a command the shell runs)."""
