"""coordctl's command line: one argparse tree and one function per command.

The same parser and the same command functions serve a one-shot ``coordctl repo sync
--repo-id demo`` and the line ``repo sync --repo-id demo`` typed in the shell
(``coordctl.shell``), the way supervisorctl runs a one-shot command as one shell line. A
command function takes a ``Context`` (where the daemon is, how to print, and the shell's hooks)
and the parsed arguments, and returns the exit status (``coordctl.exitcodes``). Errors from
the daemon are raised as ``coordd.api.errors`` classes and turned into output and a status in one
place, ``execute``.

Start-up time matters here: every script pays it on every call. This module imports only
``argparse``, ``os`` and ``sys`` at the top; the client, the renderers and above all
prompt_toolkit (the shell only) are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from coordctl import exitcodes

if TYPE_CHECKING:
    from types import ModuleType

    from coordctl.client import Client
    from coordd.api.errors import CoorddError

PROG = "coordctl"
KINDS = ("create", "read", "update", "delete")
STATES = ("waiting", "running", "finished", "error", "canceled", "all")
TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")

DESCRIPTION = (
    "coordctl is the client of coordd, the service that manages yum/dnf repositories for "
    "concurrent users. Every change (create, update, delete, sync, publish, copy) becomes a "
    "task that the daemon runs now, postpones until it is safe, or rejects when it could "
    "never run; coordctl says which and why. With no command, and on a terminal, it starts "
    "an interactive shell that takes the same commands."
)


# -- the parser ------------------------------------------------------------------------


class UsageError(Exception):
    """The command line is wrong; carries the parser whose usage to show."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises ``UsageError`` instead of exiting, so the shell
    survives a mistyped line and ``--json`` can report the error as JSON."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def resource_spec(text: str) -> dict[str, str]:
    """``TYPE:ID=KIND`` → ``{"type", "id", "kind"}`` (the id may itself contain ``:``)."""
    target, sep, kind = text.rpartition("=")
    rtype, colon, rid = target.partition(":")
    if not sep or not colon or not rtype or not rid:
        raise argparse.ArgumentTypeError(
            f"expected TYPE:ID=KIND such as repository:demo=update, got {text!r}"
        )
    if kind not in KINDS:
        raise argparse.ArgumentTypeError(f"KIND must be one of {', '.join(KINDS)}, got {kind!r}")
    return {"type": rtype, "id": rid, "kind": kind}


def resource_filter(text: str) -> dict[str, str]:
    rtype, colon, rid = text.partition(":")
    if not colon or not rtype or not rid:
        raise argparse.ArgumentTypeError(f"expected TYPE:ID such as repository:demo, got {text!r}")
    return {"type": rtype, "id": rid}


# (option, importer key, type, metavar, help): the yum importer's options, sent in the
# ``importer`` object of repo.create and repo.update.
IMPORTER_OPTIONS: tuple[tuple[str, str, Callable[[str], Any], str, str], ...] = (
    ("--feed", "feed", str, "URL", "the URL of the yum repository to sync from"),
    (
        "--metalink",
        "metalink",
        str,
        "URL",
        "instead of --feed: a metalink naming the feed's mirrors (as Fedora and EPEL publish)",
    ),
    (
        "--mirrorlist",
        "mirrorlist",
        str,
        "URL",
        "instead of --feed: a list of the feed's mirrors, one base URL a line",
    ),
    (
        "--only-newest",
        "only_newest",
        boolean,
        "true|false",
        "sync only the newest version of each package name and architecture",
    ),
    (
        "--verify-checksum",
        "verify_checksum",
        boolean,
        "true|false",
        "check each downloaded file's size and checksum against the metadata",
    ),
    (
        "--parallel-downloads",
        "parallel_downloads",
        positive,
        "N",
        "how many files to download at once",
    ),
    (
        "--tls-verify",
        "tls_verify",
        boolean,
        "true|false",
        "verify the feed's TLS certificate",
    ),
    (
        "--ca-file",
        "ca_file",
        str,
        "FILE",
        "a PEM file of CA certificates to verify the feed's certificate with",
    ),
    (
        "--client-cert",
        "client_cert",
        str,
        "FILE",
        "a PEM client certificate to present to the feed (entitlement CDNs)",
    ),
    ("--client-key", "client_key", str, "FILE", "the PEM key of --client-cert; never shown"),
    ("--username", "username", str, "NAME", "the user name for the feed's basic authentication"),
    (
        "--password",
        "password",
        str,
        "PASSWORD",
        "the password for the feed's basic authentication; never shown",
    ),
    (
        "--proxy",
        "proxy",
        str,
        "URL",
        "an HTTP proxy to fetch the feed through (credentials as userinfo; never shown)",
    ),
    (
        "--allow-weak-checksums",
        "allow_weak_checksums",
        boolean,
        "true|false",
        "accept packages whose metadata has only MD5 or SHA-1 checksums",
    ),
)


def command_path(argv: list[str]) -> list[str]:
    """The words of ``argv`` that are not options (nor ``--socket``'s value): the command
    path comes first among them. Values of a command's own options may follow; harmless."""
    words: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--socket":
            skip = True
        elif word == "--":
            break
        elif not word.startswith("-"):
            words.append(word)
    return words


class _Tree:
    """Builds the command tree; with ``path``, only the commands on that path get their
    options (the others are listed, with their help, but left empty). A one-shot command
    parses one path, and adding ~150 options it will not use costs more than its imports."""

    def __init__(self, path: list[str] | None) -> None:
        self.path = path
        common = Parser(add_help=False)
        common.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        self.common = common

    def wanted(self, prefix: tuple[str, ...]) -> bool:
        return self.path is None or tuple(self.path[: len(prefix)]) == prefix

    def group(
        self, parent: Any, prefix: tuple[str, ...], help_text: str, description: str
    ) -> Any | None:
        sub = parent.add_parser(prefix[-1], help=help_text, description=description)
        sub.set_defaults(func=None, command_parser=sub)
        if not self.wanted(prefix):
            return None
        return sub.add_subparsers(title="commands", metavar="COMMAND")

    def leaf(
        self,
        parent: Any,
        prefix: tuple[str, ...],
        func: Callable[[Context, argparse.Namespace], int],
        help_text: str,
        description: str,
        options: Callable[[Parser], None] | None = None,
        *,
        task: str | None = None,
    ) -> None:
        wanted = self.wanted(prefix)
        sub: Parser = parent.add_parser(
            prefix[-1],
            help=help_text,
            description=description,
            parents=[self.common] if wanted else [],
        )
        sub.set_defaults(func=func, what=task, command_parser=sub)
        if not wanted:
            return
        if task is not None:
            sub.add_argument(
                "--wait",
                action="store_true",
                help="follow the task to its end, with a progress line on a terminal; "
                "exit with its outcome",
            )
        if options is not None:
            options(sub)


def build_parser(argv: list[str] | None = None) -> Parser:
    """The command tree; each leaf has ``func`` (and ``what`` for task submissions).

    Given ``argv``, only the commands it names are filled in (see ``_Tree``); the shell, the
    man pages and completion take the whole tree.
    """
    tree = _Tree(None if argv is None else command_path(argv))
    parser = Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog="Run 'coordctl COMMAND --help' for a command's options; see coordctl(1).",
    )
    parser.set_defaults(func=None, command_parser=parser)
    parser.add_argument(
        "--socket",
        type=Path,
        metavar="PATH",
        help="the daemon's Unix socket (default: $COORDD_SOCKET, else the user daemon's "
        "socket if it exists, else the system service's /run/coordd/coordd.sock)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the daemon's answer (or error object) as JSON on standard output; "
        "may also follow the command",
    )
    from coordd import __version__

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    repo = tree.group(
        commands,
        ("repo",),
        "create, configure, sync, publish, copy and delete repositories",
        "Repositories: each change is a task on the repository, run now, postponed or "
        "rejected by the coordinator.",
    )
    if repo is not None:
        _repo_commands(tree, repo)
    tasks = tree.group(
        commands,
        ("tasks",),
        "list, inspect and cancel tasks on all resources",
        "Tasks on every resource: repositories and external locks.",
    )
    if tasks is not None:
        tree.leaf(
            tasks,
            ("tasks", "list"),
            cmd_tasks_list,
            "list tasks",
            "List incomplete tasks on all resources: the running ones first, then the "
            "waiting ones in the order they will run. --state or --all include ended tasks.",
            _tasks_list_options,
        )
        _task_leaves(tree, tasks, ("tasks",))
    server = tree.group(commands, ("server",), "the daemon itself", "The daemon itself.")
    if server is not None:
        tree.leaf(
            server,
            ("server", "status"),
            cmd_server_status,
            "show the daemon's status",
            "Show the daemon's version, uptime, task counts, heavy slots and your access.",
        )
    tree.leaf(
        commands,
        ("run",),
        cmd_run,
        "run a command while holding resources",
        "Run a command while holding resources, as a task the coordinator orders like any "
        "other: 'coordctl run --resource repository:demo=read -- rsync ...' waits for "
        "running updates of demo, and updates wait for it. Exits with the command's status.",
        _run_options,
    )
    tree.leaf(
        commands,
        ("shell",),
        cmd_shell,
        "start the interactive shell",
        "An interactive shell taking the same commands, with completion of commands, "
        "options, repository and task ids, history, and a notice when a task it submitted "
        "ends.",
    )
    return parser


def _repo_id(sub: Parser) -> None:
    sub.add_argument("--repo-id", required=True, metavar="REPO_ID", help="the repository")


def _config_options(sub: Parser) -> None:
    _repo_id(sub)
    sub.add_argument("--display-name", metavar="TEXT", help="a name for people")
    sub.add_argument("--description", metavar="TEXT", help="a description")
    sub.add_argument("--note", "--notes", dest="notes", metavar="TEXT", help="free notes")
    importer = sub.add_argument_group(
        "importer options", "How the repository syncs; an empty value clears an option."
    )
    for option, key, convert, metavar, help_text in IMPORTER_OPTIONS:
        importer.add_argument(option, dest=key, type=convert, metavar=metavar, help=help_text)


def _copy_options(sub: Parser) -> None:
    sub.add_argument(
        "--from", dest="source", required=True, metavar="REPO_ID", help="the source repository"
    )
    sub.add_argument(
        "--to", dest="target", required=True, metavar="REPO_ID", help="the target repository"
    )
    sub.add_argument("--name", metavar="GLOB", help="copy only packages whose name matches")


def _repo_commands(tree: _Tree, repo: Any) -> None:
    tree.leaf(
        repo,
        ("repo", "create"),
        cmd_repo_create,
        "create a repository",
        "Create a repository. Its configuration (names, notes, importer options) can be "
        "changed later with 'repo update'.",
        _config_options,
        task="Repository create",
    )
    tree.leaf(
        repo,
        ("repo", "update"),
        cmd_repo_update,
        "change a repository's configuration",
        "Change a repository's configuration; only the options given change. Postponed "
        "while another operation changes the repository.",
        _config_options,
        task="Repository update",
    )
    tree.leaf(
        repo,
        ("repo", "delete"),
        cmd_repo_delete,
        "delete a repository and its content",
        "Delete a repository: its configuration, its content and its published tree. "
        "Requests queued behind a delete are rejected.",
        _repo_id,
        task="Repository delete",
    )
    tree.leaf(
        repo,
        ("repo", "sync"),
        cmd_repo_sync,
        "sync a repository from its feed",
        "Download the repository's feed: metadata, packages, errata, delta RPMs and "
        "distribution tree files. A heavy operation: it may wait for a free slot.",
        _repo_id,
        task="Repository sync",
    )
    tree.leaf(
        repo,
        ("repo", "publish"),
        cmd_repo_publish,
        "publish a repository for dnf/yum",
        "Write a tree dnf and yum can use as a baseurl. A heavy operation: it may wait for "
        "a free slot.",
        _repo_id,
        task="Repository publish",
    )
    tree.leaf(
        repo,
        ("repo", "copy"),
        cmd_repo_copy,
        "copy packages between repositories",
        "Copy packages from one repository into another, optionally only those whose name "
        "matches a glob. Reads the source and updates the target.",
        _copy_options,
        task="Repository copy",
    )
    tree.leaf(repo, ("repo", "list"), cmd_repo_list, "list repositories", "List the repositories.")
    tree.leaf(
        repo,
        ("repo", "show"),
        cmd_repo_show,
        "show a repository",
        "Show a repository: its configuration, content summary, errata, last sync and "
        "publish, published path and queued tasks.",
        _repo_id,
    )
    repo_tasks = tree.group(
        repo,
        ("repo", "tasks"),
        "list, inspect and cancel a repository's tasks",
        "The tasks queued on one repository.",
    )
    if repo_tasks is not None:
        tree.leaf(
            repo_tasks,
            ("repo", "tasks", "list"),
            cmd_repo_tasks_list,
            "list a repository's tasks",
            "List the repository's incomplete tasks: the running ones first, then the "
            "waiting ones in the order they will run.",
            _repo_tasks_list_options,
        )
        _task_leaves(tree, repo_tasks, ("repo", "tasks"))


def _state_options(sub: Parser) -> None:
    sub.add_argument(
        "--state",
        action="append",
        choices=STATES,
        help="only tasks in this state (repeat for several); the default is waiting and running",
    )
    sub.add_argument("--all", action="store_true", help="include ended tasks from the history")
    sub.add_argument(
        "--limit", type=positive, default=1000, metavar="N", help="show at most N tasks"
    )


def _repo_tasks_list_options(sub: Parser) -> None:
    _repo_id(sub)
    _state_options(sub)


def _tasks_list_options(sub: Parser) -> None:
    sub.add_argument(
        "--resource",
        type=resource_filter,
        metavar="TYPE:ID",
        help="only tasks on this resource, e.g. repository:demo",
    )
    _state_options(sub)


def _details_options(sub: Parser) -> None:
    sub.add_argument("--task-id", required=True, metavar="TASK_ID", help="the task")
    sub.add_argument("--wait", action="store_true", help="follow the task to its end, then show it")


def _cancel_options(sub: Parser) -> None:
    sub.add_argument("--task-id", required=True, metavar="TASK_ID", help="the task")
    sub.add_argument("--wait", action="store_true", help="wait until the task has ended")


def _task_leaves(tree: _Tree, parent: Any, prefix: tuple[str, ...]) -> None:
    tree.leaf(
        parent,
        (*prefix, "details"),
        cmd_task_details,
        "show a task with its progress report",
        "Show a task: its state, what it waits for, times, result, and its progress report.",
        _details_options,
    )
    tree.leaf(
        parent,
        (*prefix, "cancel"),
        cmd_task_cancel,
        "cancel a task",
        "Cancel a task. A waiting task is canceled at once; a running one is asked to stop, "
        "given a grace period, then stopped.",
        _cancel_options,
    )


def _run_options(sub: Parser) -> None:
    sub.add_argument(
        "--resource",
        dest="resources",
        action="append",
        type=resource_spec,
        required=True,
        metavar="TYPE:ID=KIND",
        help="a resource and the kind of operation (create, read, update, delete); repeat "
        "for several",
    )
    sub.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait until the resources are free (the default), or exit at once with status "
        "75 if they are busy",
    )
    sub.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="-- COMMAND", help="the command to run"
    )


# -- running a command ---------------------------------------------------------------------


class Context:
    """Where the daemon is, where output goes, and the shell's hooks (one-shot: none)."""

    def __init__(
        self,
        socket: Path | None = None,
        json_output: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
        *,
        interactive: bool = False,
    ) -> None:
        self.socket = socket
        self.json = json_output
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.interactive = interactive
        # The shell's "say when this task ends": called for tasks submitted without --wait
        # and for tasks whose following was interrupted; one-shot commands have none.
        self.watch: Callable[[str], None] | None = None

    def socket_path(self) -> Path:
        if self.socket is not None:
            return self.socket
        from coordd.service.locations import client_socket_path

        return client_socket_path()

    def connect(self, timeout: float | None = 60.0) -> Client:
        from coordctl.client import Client

        return Client(self.socket_path(), timeout=timeout).connect()

    def print(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def json_out(self, value: Any) -> None:
        import json

        self.print(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def show(self, answer: Any, render: Callable[[ModuleType], str]) -> int:
        """Print the daemon's ``answer`` as JSON, or as ``render(coordctl.output)`` gives it."""
        if self.json:
            self.json_out(answer)
        else:
            from coordctl import output

            self.print(render(output))
        return exitcodes.OK


def execute(ctx: Context, args: argparse.Namespace) -> int:
    """Run the parsed command; turn the daemon's errors into output and an exit status."""
    from coordd.api.errors import Conflict, CoorddError

    if args.func is None:
        args.command_parser.print_help(ctx.err)
        return exitcodes.USAGE
    try:
        status: int = args.func(ctx, args)
        return status
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
    if args.func is None and args.command_parser is parser:
        if sys.stdin.isatty() and sys.stdout.isatty():
            return cmd_shell(ctx, args)
        parser.print_help(ctx.err)
        return exitcodes.USAGE
    try:
        return execute(ctx, args)
    except KeyboardInterrupt:
        ctx.err.write("\n")
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``coordctl tasks list | head``): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return exitcodes.OK


# -- task submissions ----------------------------------------------------------------------


def submit(ctx: Context, args: argparse.Namespace, method: str, params: dict[str, Any]) -> int:
    """Submit a task; print accepted/postponed, or follow it with ``--wait`` (one done as it
    was accepted, a configuration change, is reported as it ended)."""
    from coordctl import output

    what: str = args.what
    client = ctx.connect()
    try:
        answer = client.call(method, params)
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
    if task["state"] in output.ENDED:  # done as it was accepted: nothing to follow
        client.close()
        return report_end(ctx, what, answer, task)
    try:
        if not args.wait:
            detach(ctx, task["id"])
            client.close()
            return ctx.show(answer, lambda output: output.submitted(what, answer))
        if not ctx.json and answer.get("verdict") == "postponed":
            ctx.print(output.submitted(what, answer) + "\n")
        final = wait_for(ctx, client, task)
    except KeyboardInterrupt:
        client.close()
        ctx.err.write("\n" + output.detached(task["id"]))
        detach(ctx, task["id"])
        return exitcodes.INTERRUPTED
    if final is None:
        return exitcodes.INTERRUPTED
    return report_end(ctx, what, answer, final)


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
    if state == "error":
        return exitcodes.TASK_FAILED
    if state == "canceled":
        return exitcodes.CANCELED
    return exitcodes.OK


def _config_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"repo_id": args.repo_id}
    for key in ("display_name", "description", "notes"):
        value = getattr(args, key)
        if value is not None:
            params[key] = value
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
    return submit(ctx, args, "repo.publish", {"repo_id": args.repo_id})


def cmd_repo_copy(ctx: Context, args: argparse.Namespace) -> int:
    params = {"source": args.source, "target": args.target}
    if args.name is not None:
        params["name"] = args.name
    return submit(ctx, args, "repo.copy", params)


# -- queries -------------------------------------------------------------------------------


def query(ctx: Context, method: str, params: dict[str, Any] | None = None) -> Any:
    with ctx.connect() as client:
        return client.call(method, params)


def cmd_repo_list(ctx: Context, args: argparse.Namespace) -> int:
    answer = query(ctx, "repo.list")
    return ctx.show(answer, lambda output: output.repo_list(answer["repositories"]))


def cmd_repo_show(ctx: Context, args: argparse.Namespace) -> int:
    answer = query(ctx, "repo.show", {"repo_id": args.repo_id})
    return ctx.show(answer, lambda output: output.repo_show(answer))


def _list_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": args.limit}
    if args.all:
        params["state"] = "all"
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
    from coordctl import output

    client = ctx.connect()
    try:
        task: dict[str, Any] = client.call(method, {"task_id": args.task_id})
        if args.wait and task["state"] not in output.ENDED:
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
    elif task["state"] in ("canceled", "waiting", "running"):
        ctx.print(output.canceled(task))
    else:  # it ended another way before it could stop
        ctx.print(output.outcome(f"Task {task['id']} ({output.task_title(task)})", task))
    return exitcodes.OK


def cmd_server_status(ctx: Context, args: argparse.Namespace) -> int:
    status = query(ctx, "server.status")
    return ctx.show(status, lambda output: output.server_status(status, str(ctx.socket_path())))


# -- run and shell -------------------------------------------------------------------------


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


def cmd_shell(ctx: Context, args: argparse.Namespace) -> int:
    if ctx.interactive:
        ctx.err.write("already in the shell\n")
        return exitcodes.USAGE
    from coordctl.shell import run_shell

    return run_shell(ctx)


def run_line(ctx: Context, argv: list[str], parser: argparse.ArgumentParser | None = None) -> int:
    """Parse and run one shell line with the one-shot parser; never raises ``SystemExit``."""
    parser = parser or build_parser()
    line_ctx = Context(ctx.socket, ctx.json, ctx.out, ctx.err, interactive=True)
    line_ctx.watch = ctx.watch
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return report_usage(line_ctx, exc)
    except SystemExit as exc:  # --help and --version print, then exit
        return exc.code if isinstance(exc.code, int) else exitcodes.OK
    if args.socket is not None:
        line_ctx.socket = args.socket
    line_ctx.json = args.json or ctx.json
    return execute(line_ctx, args)
