"""The ``coordctl`` console script: one command, or the interactive shell.

Like supervisorctl's ``main``, which runs either ``onecmd`` or ``cmdloop``: with a command,
parse it (``coordctl.parser``) and run it (``coordctl.commands``); with ``shell``, or with no
command on a terminal, start the shell (``coordctl.shell``), which runs each line it reads
with the same parser and functions.

Start-up time matters here: every script pays it on every call. prompt_toolkit, which only
the shell needs, is imported only when the shell starts.
"""

from __future__ import annotations

import os
import sys

from coordctl import exitcodes
from coordctl.commands import Context, execute, report_usage
from coordctl.parser import UsageError, build_parser


def main(argv: list[str] | None = None) -> int:
    """The ``coordctl`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    ctx = Context(json_output="--json" in argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return report_usage(ctx, exc)
    ctx.socket, ctx.json = args.socket, args.json
    if args.command_name is None and args.command_parser is parser:
        if sys.stdin.isatty() and sys.stdout.isatty():
            return shell(ctx)
        parser.print_help(ctx.err)
        return exitcodes.USAGE
    try:
        if args.command_name == "shell":
            return shell(ctx)
        return execute(ctx, args)
    except KeyboardInterrupt:
        ctx.err.write("\n")
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``coordctl tasks list | head``): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return exitcodes.OK


def shell(ctx: Context) -> int:
    """The interactive shell, until the user leaves it."""
    from coordctl.shell import run_shell

    return run_shell(ctx)
