"""The commands about tasks: ``tasks list``, ``tasks details``, ``tasks cancel`` and their
``repo tasks`` forms, which list one repository's tasks."""

from __future__ import annotations

import argparse
from typing import Any

from coordctl import exitcodes
from coordctl.context import Context, ended_status, query, wait_for
from coordd.api import names

__all__ = ["cmd_repo_tasks_list", "cmd_task_cancel", "cmd_task_details", "cmd_tasks_list"]


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
