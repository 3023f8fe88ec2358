"""The schedule commands: ``repo sync schedules``, ``repo publish schedules`` and
``content orphans schedules``, each with ``create``, ``list``, ``show``, ``update`` and
``delete``.

One function serves a verb for every kind: the kind comes from the command's name
(``SCHEDULE_KINDS``), the repository from ``--repo-id`` where the kind has one.
``COMMANDS`` is their part of ``coordctl.commands.COMMANDS``.
"""

from __future__ import annotations

import argparse
from typing import Any

from coordctl.context import Command, Context, given, query

__all__ = ["COMMANDS", "SCHEDULE_KINDS"]


SCHEDULE_KINDS = {"repo sync": "sync", "repo publish": "publish", "content orphans": "orphans"}


def _schedule_where(args: argparse.Namespace) -> dict[str, Any]:
    """The kind (from the command's name) and repository a schedule command is about."""
    prefix = args.command_name.rsplit(" schedules ", 1)[0]
    where: dict[str, Any] = {"kind": SCHEDULE_KINDS[prefix]}
    if getattr(args, "repo_id", None) is not None:
        where["repo_id"] = args.repo_id
    return where


def cmd_schedule_create(ctx: Context, args: argparse.Namespace) -> int:
    params = given(
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
    params = given(
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


COMMANDS: dict[str, Command] = {
    f"{prefix} schedules {verb}": command
    for prefix in SCHEDULE_KINDS
    for verb, command in (
        ("create", cmd_schedule_create),
        ("list", cmd_schedule_list),
        ("show", cmd_schedule_show),
        ("update", cmd_schedule_update),
        ("delete", cmd_schedule_delete),
    )
}
"""The schedule commands of every kind, by name."""
