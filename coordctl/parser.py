"""coordctl's command line: one argparse tree, built from the argument tables of
``coordctl.arguments``.

The one-shot command (``coordctl.cli``), the shell (``coordctl.shell``), the man pages and
completion (``man/generate.py``) all take their commands from ``build_parser``. The tree only
describes: each command sets ``command_name`` (``"repo tasks list"``), and
``coordctl.commands.COMMANDS`` holds the function that runs it.

Start-up time matters here: every script pays it on every call. This module imports only
``argparse``, ``pathlib``, ``coordctl.arguments`` and the names leaf ``coordd.api.names``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from coordctl import arguments
from coordd.api import names

PROG = "coordctl"

DESCRIPTION = (
    "coordctl is the client of coordd, the service that manages yum/dnf repositories for "
    "concurrent users. Every change (create, update, delete, sync, publish, copy, rollback, "
    "orphan removal) becomes a task that the daemon runs now, postpones until it is safe, or "
    "rejects when it could never run; coordctl says which and why. With no command, and on "
    "a terminal, it starts an interactive shell that takes the same commands."
)


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

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # A command that has subcommands of its own (``repo sync`` and ``repo sync
        # schedules list``): its required options are required only when no subcommand
        # follows; the subcommand checks its own.
        relaxed = self._required_before_subcommand(args)
        for action in relaxed:
            action.required = False
        try:
            return super().parse_known_args(args, namespace)
        finally:
            for action in relaxed:
                action.required = True

    def _required_before_subcommand(self, args: list[str] | None) -> list[argparse.Action]:
        subcommands = next(
            (a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None
        )
        required = [a for a in self._actions if a.required and a.option_strings]
        if subcommands is None or not required or not args:
            return []
        takes_value = {name for a in self._actions if a.nargs != 0 for name in a.option_strings}
        skip = False
        for word in args:
            if skip:
                skip = False
            elif word.startswith("-"):
                skip = word in takes_value  # ``--opt=value`` carries its own
            else:
                return required if word in subcommands.choices else []
        return []


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
        sub.set_defaults(command_name=None, command_parser=sub)
        if not self.wanted(prefix):
            return None
        return sub.add_subparsers(title="commands", metavar="COMMAND")

    def leaf(
        self,
        parent: Any,
        prefix: tuple[str, ...],
        help_text: str,
        description: str,
        options: Callable[[Parser], None] | None = None,
        *,
        task: str | None = None,
    ) -> Parser | None:
        """The command's parser, or None if it is not on the path (left empty)."""
        wanted = self.wanted(prefix)
        sub: Parser = parent.add_parser(
            prefix[-1],
            help=help_text,
            description=description,
            parents=[self.common] if wanted else [],
        )
        sub.set_defaults(command_name=" ".join(prefix), what=task, command_parser=sub)
        if not wanted:
            return None
        if task is not None:
            sub.add_argument(
                "--wait",
                action="store_true",
                help="follow the task to its end, with a progress line on a terminal; "
                "exit with its outcome",
            )
        if options is not None:
            options(sub)
        return sub


def build_parser(argv: list[str] | None = None) -> Parser:
    """The command tree; each leaf sets ``command_name`` (and ``what`` for task submissions).

    Given ``argv``, only the commands it names are filled in (see ``_Tree``); the shell, the
    man pages and completion take the whole tree.
    """
    tree = _Tree(None if argv is None else command_path(argv))
    parser = Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog="Run 'coordctl COMMAND --help' for a command's options; see coordctl(1). "
        "COORDCTL_TIMEOUT sets the seconds to wait for an answer (default 60); a submission "
        "that is not answered in time is sent once more before coordctl gives up.",
    )
    parser.set_defaults(command_name=None, command_parser=parser)
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
    parser.add_argument("--version", action="version", version=f"{PROG} {names.VERSION}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    repo = tree.group(
        commands,
        ("repo",),
        "create, configure, sync, publish, copy, roll back and delete repositories",
        "Repositories: each change is a task on the repository, run now, postponed or "
        "rejected by the coordinator. Each change of content makes a new version.",
    )
    if repo is not None:
        _repo_commands(tree, repo)
    content = tree.group(
        commands,
        ("content",),
        "the content pool shared by all repositories",
        "The content pool: every file is stored once, whichever repositories hold it.",
    )
    if content is not None:
        _content_commands(tree, content)
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
            "list tasks",
            "List incomplete tasks on all resources: the running ones first, then the "
            "waiting ones in the order they will run. --state or --all include ended tasks.",
            arguments.tasks_list_options,
        )
        _task_leaves(tree, tasks, ("tasks",))
    server = tree.group(commands, ("server",), "the daemon itself", "The daemon itself.")
    if server is not None:
        tree.leaf(
            server,
            ("server", "status"),
            "show the daemon's status",
            "Show the daemon's version, uptime, task counts, heavy slots and your access.",
        )
    tree.leaf(
        commands,
        ("run",),
        "run a command while holding resources",
        "Run a command while holding resources, as a task the coordinator orders like any "
        "other: 'coordctl run --resource repository:demo=read -- rsync ...' waits for "
        "running updates of demo, and updates wait for it. Exits with the command's status.",
        arguments.run_options,
    )
    tree.leaf(
        commands,
        ("shell",),
        "start the interactive shell",
        "An interactive shell taking the same commands, with completion of commands, "
        "options, repository and task ids, history, and a notice when a task it submitted "
        "ends.",
    )
    return parser


def _repo_commands(tree: _Tree, repo: Any) -> None:
    tree.leaf(
        repo,
        ("repo", "create"),
        "create a repository",
        "Create a repository. Its configuration (names, notes, importer options) can be "
        "changed later with 'repo update'.",
        arguments.config_options,
        task="Repository create",
    )
    tree.leaf(
        repo,
        ("repo", "update"),
        "change a repository's configuration",
        "Change a repository's configuration; only the options given change. Postponed "
        "while another operation changes the repository.",
        arguments.config_options,
        task="Repository update",
    )
    tree.leaf(
        repo,
        ("repo", "delete"),
        "delete a repository and its content",
        "Delete a repository: its configuration, its content and its published tree. "
        "Requests queued behind a delete are rejected.",
        arguments.repo_id,
        task="Repository delete",
    )
    sync = tree.leaf(
        repo,
        ("repo", "sync"),
        "sync a repository from its feed",
        "Download the repository's feed: metadata, packages, errata, delta RPMs and "
        "distribution tree files. A heavy operation: it may wait for a free slot. "
        "'repo sync schedules' runs it by itself at set times.",
        arguments.repo_id,
        task="Repository sync",
    )
    if sync is not None:
        _schedule_commands(tree, sync, ("repo", "sync"), "sync")
    publish = tree.leaf(
        repo,
        ("repo", "publish"),
        "publish a repository for dnf/yum",
        "Write a tree dnf and yum can use as a baseurl from one version of the repository, "
        "the latest unless --version names another. A heavy operation: it may wait for a "
        "free slot. 'repo publish schedules' runs it by itself at set times; a repository "
        "with --auto-publish true publishes after each sync that made a new version.",
        arguments.publish_options,
        task="Repository publish",
    )
    if publish is not None:
        _schedule_commands(tree, publish, ("repo", "publish"), "publish")
    tree.leaf(
        repo,
        ("repo", "copy"),
        "copy packages between repositories",
        "Copy packages from a version of one repository (its latest unless --version names "
        "another) into a new version of another, optionally only those whose name matches "
        "a glob, with what applies to them: without --name everything (errata, comps, "
        "modules, productid, delta RPMs, tree files); with --name the errata all of whose "
        "packages the target then holds, the module streams all of whose packages it holds "
        "(with their module's defaults), comps and the other records whole. A record of a "
        "type the target already has stays the target's, except modules.yaml, whose "
        "documents are merged. Reads the source and updates the target.",
        arguments.copy_options,
        task="Repository copy",
    )
    tree.leaf(
        repo,
        ("repo", "upload"),
        "upload RPM files into a repository",
        "Upload local RPM files into a new version of the repository. coordctl opens each "
        "file and passes it to coordd open (over the socket, as a descriptor): coordd reads "
        "exactly the files you can read. A file that is not an RPM, or a package whose "
        "name, epoch, version, release and arch the repository holds with another file, "
        "refuses the whole upload, and nothing changes. Uploaded packages stay through "
        "later syncs, which replace only what came from the feed.",
        arguments.upload_options,
        task="Repository upload",
    )
    tree.leaf(
        repo,
        ("repo", "remove"),
        "remove packages and errata from a repository",
        "Make a new version of the repository without the packages whose name matches a "
        "--name glob or that a --nevra names, and without the errata --erratum names (at "
        "least one; each may be repeated). When nothing matches, no version is made and "
        "the result says nothing was removed. A later sync brings back what its feed "
        "still lists.",
        arguments.remove_options,
        task="Repository remove",
    )
    tree.leaf(
        repo,
        ("repo", "rollback"),
        "make a new version with the content of an older one",
        "Roll a repository back: make a new version that holds what version N held. The "
        "versions in between stay, until retention drops them; publish the new version to "
        "serve it.",
        arguments.rollback_options,
        task="Repository rollback",
    )
    tree.leaf(repo, ("repo", "list"), "list repositories", "List the repositories.")
    tree.leaf(
        repo,
        ("repo", "show"),
        "show a repository",
        "Show a repository: its configuration, its latest and published versions, a "
        "summary of its content (with the feed's repomd tags, and the feed's records a "
        "publication does not carry: the sqlite databases and zchunk files), last sync and "
        "publish, published path and queued tasks.",
        arguments.repo_id,
    )
    tree.leaf(
        repo,
        ("repo", "content"),
        "list the units of a repository version",
        "List the units (packages, errata, delta RPMs, tree files, metadata files) of a "
        "version of the repository, the latest unless --version names another, in order of "
        "their id, a page of --limit at a time. A listing cut short ends with the command "
        "for the next page; --all lists every unit, page after page, all from the same "
        "version.",
        arguments.content_options,
    )
    versions = tree.group(
        repo,
        ("repo", "versions"),
        "list, show and compare a repository's versions",
        "Versions: each change of a repository's content (sync, copy, rollback) makes a new "
        "numbered version; the newest are kept, and the published one.",
    )
    if versions is not None:
        tree.leaf(
            versions,
            ("repo", "versions", "list"),
            "list a repository's versions",
            "List the repository's versions, newest first: what each holds and what it "
            "changed, and which one is published.",
            arguments.versions_list_options,
        )
        tree.leaf(
            versions,
            ("repo", "versions", "show"),
            "show one version",
            "Show one version of the repository, the latest unless --version names another: "
            "when and by which task it was made, its counts per type of unit, and what it "
            "added and removed.",
            arguments.versions_show_options,
        )
        tree.leaf(
            versions,
            ("repo", "versions", "diff"),
            "compare two versions",
            "Compare two versions of the repository: the units the version holds that the "
            "other does not (added), and the reverse (removed). By default, the latest "
            "version against the one before it.",
            arguments.versions_diff_options,
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
            "list a repository's tasks",
            "List the repository's incomplete tasks: the running ones first, then the "
            "waiting ones in the order they will run.",
            arguments.repo_tasks_list_options,
        )
        _task_leaves(tree, repo_tasks, ("repo", "tasks"))


def _content_commands(tree: _Tree, content: Any) -> None:
    orphans = tree.group(
        content,
        ("content", "orphans"),
        "list and remove content no repository holds",
        "Orphans: units no version of any repository holds (a deleted repository's, those "
        "retention dropped) and the files only they named.",
    )
    if orphans is None:
        return
    tree.leaf(
        orphans,
        ("content", "orphans", "list"),
        "count and list orphaned content",
        "Count the orphaned units and files and the bytes they take, and list the first of them.",
        arguments.orphans_list_options,
    )
    tree.leaf(
        orphans,
        ("content", "orphans", "remove"),
        "remove orphaned content",
        "Remove every orphaned unit and file from the pool. A heavy operation: it waits "
        "until no sync, copy or rollback is adding to the pool, and those wait for it.",
        task="Orphaned content removal",
    )
    _schedule_commands(tree, orphans, ("content", "orphans"), "orphans")


SCHEDULED = {
    "sync": "syncs the repository",
    "publish": "publishes the repository's latest version",
    "orphans": "removes orphaned content from the pool",
}


def _schedule_commands(
    tree: _Tree, parent: Parser | Any, prefix: tuple[str, ...], kind: str
) -> None:
    """``PREFIX schedules create|list|show|update|delete`` for schedules of ``kind``."""
    action = parent
    if isinstance(parent, argparse.ArgumentParser):  # a command with subcommands of its own
        action = parent.add_subparsers(title="commands", metavar="[COMMAND]")
    per_repository = kind != "orphans"
    group = (*prefix, "schedules")
    schedules = tree.group(
        action,
        group,
        f"run '{' '.join(prefix)}' by itself at set times",
        f"Schedules: each {SCHEDULED[kind]} at the times an ISO 8601 repeating interval "
        "names, as a task like any other (postponed or rejected as yours would be). A run "
        "while the schedule's previous task is still waiting or running is skipped; runs "
        "missed while coordd was down happen once when it is back.",
    )
    if schedules is None:
        return
    tree.leaf(
        schedules,
        (*group, "create"),
        "create a schedule",
        f"Create a schedule that {SCHEDULED[kind]} at the times --schedule names.",
        arguments.schedule_create_options(per_repository),
    )
    tree.leaf(
        schedules,
        (*group, "list"),
        "list schedules and their next run",
        "List the schedules: when each runs next, whether it is enabled (and why not), "
        "and what its last run became.",
        arguments.schedule_list_options(per_repository),
    )
    tree.leaf(
        schedules,
        (*group, "show"),
        "show a schedule and its last runs",
        "Show a schedule and its last runs: when, whether the task was accepted, postponed "
        "or rejected, or the run skipped, and how the task ended.",
        arguments.schedule_show_options(per_repository),
    )
    tree.leaf(
        schedules,
        (*group, "update"),
        "change a schedule",
        "Change a schedule's times, failure threshold or whether it is enabled; only the "
        "options given change.",
        arguments.schedule_update_options(per_repository),
    )
    tree.leaf(
        schedules,
        (*group, "delete"),
        "delete a schedule",
        "Delete a schedule and its history; a task it submitted is not canceled.",
        arguments.schedule_delete_options(per_repository),
    )


def _task_leaves(tree: _Tree, parent: Any, prefix: tuple[str, ...]) -> None:
    tree.leaf(
        parent,
        (*prefix, "details"),
        "show a task with its progress report",
        "Show a task: its state, what it waits for, times, result, and its progress report.",
        arguments.details_options,
    )
    tree.leaf(
        parent,
        (*prefix, "cancel"),
        "cancel a task",
        "Cancel a task. A waiting task is canceled at once; a running one is asked to stop, "
        "given a grace period, then stopped.",
        arguments.cancel_options,
    )
