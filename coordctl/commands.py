"""coordctl's commands: the table of every command's function, and the commands that
submit tasks.

The same functions serve a one-shot ``coordctl repo sync --repo-id demo`` (``coordctl.cli``)
and the line ``repo sync --repo-id demo`` typed in the shell (``coordctl.shell``), the way
supervisorctl runs a one-shot command as one shell line. A command function takes a
``Context`` (``coordctl.context``: where the daemon is, how to print, and the shell's hooks)
and the arguments ``coordctl.parser`` parsed, and returns the exit status
(``coordctl.exitcodes``); ``COMMANDS`` maps each command of the parser to its function.
Those that submit tasks are here; those that read repositories are in
``coordctl.query_commands``, those about tasks in ``coordctl.task_commands``, the schedule
commands in ``coordctl.schedule_commands``. Errors from the daemon are raised as
``coordd.api.errors`` classes and turned into output and a status in one place,
``execute``.

Start-up time matters here: every script pays it on every call. These modules import only
``argparse``, ``sys`` and coordctl's cheap leaves at the top; the client and the renderers
are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from coordctl import exitcodes, schedule_commands
from coordctl.arguments import IMPORTER_OPTIONS
from coordctl.context import Command, Context, given, query, submit
from coordctl.parser import PROG, UsageError
from coordctl.query_commands import (
    cmd_content_orphans_list,
    cmd_repo_content,
    cmd_repo_list,
    cmd_repo_show,
    cmd_repo_versions_diff,
    cmd_repo_versions_list,
    cmd_repo_versions_show,
)
from coordctl.task_commands import (
    cmd_repo_tasks_list,
    cmd_task_cancel,
    cmd_task_details,
    cmd_tasks_list,
)

if TYPE_CHECKING:
    from coordd.api.errors import CoorddError

__all__ = ["COMMANDS", "Context", "execute", "report_error", "report_usage"]


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


def cmd_repo_publish(ctx: Context, args: argparse.Namespace) -> int:
    params = given({"repo_id": args.repo_id}, version=args.version)
    return submit(ctx, args, "repo.publish", params)


def cmd_repo_copy(ctx: Context, args: argparse.Namespace) -> int:
    params = given(
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
    params = given(
        {"repo_id": args.repo_id}, names=args.names, nevras=args.nevras, errata=args.errata
    )
    return submit(ctx, args, "repo.remove", params)


def cmd_repo_rollback(ctx: Context, args: argparse.Namespace) -> int:
    return submit(ctx, args, "repo.rollback", {"repo_id": args.repo_id, "version": args.version})


def cmd_content_orphans_remove(ctx: Context, args: argparse.Namespace) -> int:
    return submit(ctx, args, "content.orphans.remove", {})


def cmd_server_status(ctx: Context, args: argparse.Namespace) -> int:
    status = query(ctx, "server.status")
    return ctx.show(status, lambda output: output.server_status(status, str(ctx.socket_path())))


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
    **schedule_commands.COMMANDS,
}
"""The function of each command of ``coordctl.parser.build_parser`` but ``shell``, which
``coordctl.cli`` and the shell itself handle (the shell is not a command the shell runs)."""
