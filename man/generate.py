"""Write the man pages and the bash completion from the argparse trees, so they cannot drift.

    python man/generate.py          # rewrite man/coordctl.1, man/coordd.8 and
                                    # coordctl/bash-completion/coordctl
    python man/generate.py --check  # exit 1 and name the files that are out of date

Commands, options, their metavars and help come from ``coordctl.parser.build_parser()`` and
``coordd.service.main.build_parser()``; exit statuses from ``coordctl.exitcodes.DESCRIPTIONS``
and ``coordd.service.main.EXIT_*``; the configuration file's layout from
``coordd.service.config``'s docstring. The prose around them lives here.
``man/coordd-api.7`` is written by hand (it documents ``coordd/api/methods.py``);
``tests/test_man.py`` checks that it names every method.

The output is man(7) markup, checked by ``mandoc -Tlint``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from coordctl import exitcodes  # noqa: E402 - after the path is set
from coordctl.completion import bash_script, command_tree  # noqa: E402
from coordctl.parser import build_parser  # noqa: E402
from coordd import __version__  # noqa: E402

# The date on the pages: that of the last change to this generator's prose.
DATE = "2026-12-02"
SOURCE = f"coordd {__version__}"

COORDD_EXIT = {
    "EXIT_OK": "stopped cleanly (SIGTERM or SIGINT), or --check-config found no problem",
    "EXIT_USAGE": "bad command line",
    "EXIT_DATABASE": "the database failed (an I/O error, a corrupt file); the daemon exits "
    "so that its supervisor restarts it on what is on disk",
    "EXIT_RUNNING": "another coordd already uses this state directory or socket",
    "EXIT_CONFIG": "the configuration is invalid, or the state directory or socket cannot be used",
}


# -- roff --------------------------------------------------------------------------------------

_OPTION = re.compile(r"(?<![\w-])(-{1,2}\w[\w-]*)")


def esc(text: str) -> str:
    """Escape text for a roff line: backslashes, and the minus signs of options."""
    text = text.replace("\\", "\\e")
    return _OPTION.sub(lambda m: m.group(1).replace("-", "\\-"), text)


WIDTH = 79  # mandoc's lint wants input lines of at most 80 bytes


def line(text: str) -> str:
    """Filled text as roff input lines: escaped, wrapped, none taken for a request."""
    words = esc(text).split(" ")
    lines: list[str] = []
    current = ""
    for word in words:
        if current and len(current) + 1 + len(word) > WIDTH:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\n".join("\\&" + t if t[:1] in (".", "'") else t for t in lines)


def literal(text: str) -> str:
    """One line of an example, kept as it is."""
    text = esc(text)
    if len(text.encode()) > WIDTH + 1:
        raise ValueError(f"example line too long for a man page: {text!r}")
    return "\\&" + text if text[:1] in (".", "'") else text


def para(text: str) -> list[str]:
    return [".PP", *(line(part) for part in _sentences(text))]


def _sentences(text: str) -> list[str]:
    # One sentence per source line, as man(7) recommends (mandoc's lint checks for it).
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z'])", " ".join(text.split())) if s]


def quoted(text: str) -> str:
    return '"' + esc(text).replace('"', "\\(dq") + '"'


def example(lines: Iterable[str]) -> list[str]:
    out = [".PP", ".EX"]
    out += [literal(text) for text in lines]
    return [*out, ".EE"]


def tagged(tag: list[str], body: str) -> list[str]:
    return [".TP", *tag, *(line(s) for s in _sentences(body))]


# -- argparse ----------------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def option_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._SubParsersAction | argparse._HelpAction)
        and a.help != argparse.SUPPRESS
    ]


def metavar(action: argparse.Action) -> str | None:
    if action.nargs == 0:
        return None
    if isinstance(action.metavar, str):
        return action.metavar
    if action.choices:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper()


def option_tag(action: argparse.Action) -> list[str]:
    if not action.option_strings:
        return [f".I {quoted(metavar(action) or action.dest)}"]
    names = ", ".join(action.option_strings)
    if isinstance(action, argparse.BooleanOptionalAction):
        names = ", ".join(action.option_strings)
    value = metavar(action)
    if value is None:
        return [f".B {quoted(names)}"]
    return [f".BI {quoted(names + ' ')} {quoted(value)}"]


def nobreak(text: str) -> str:
    """Quoted, and not hyphenated where the line breaks (``\\%``)."""
    return '"\\%' + esc(text).replace('"', "\\(dq") + '"'


def synopsis(words: str, parser: argparse.ArgumentParser) -> list[str]:
    """The command's synopsis; names and values marked so they never break at a hyphen."""
    out = [f".B {nobreak(words)}"]
    for action in option_actions(parser):
        value = metavar(action)
        if not action.option_strings:
            more = ' " \\&..."' if action.nargs == "+" else ""  # one or more
            out.append(
                f".IR {nobreak(value or action.dest)}{more}"
                if more
                else f".I {nobreak(value or action.dest)}"
            )
            continue
        name = action.option_strings[0]
        if isinstance(action, argparse.BooleanOptionalAction):
            name = "|".join(action.option_strings)
        if value is None:
            out.append(f".B {nobreak(name)}" if action.required else f".RB \\%[ {quoted(name)} ]")
        elif action.required:
            out.append(f".BI {nobreak(name + ' ')} {nobreak(value)}")
        else:
            out += [f".RB \\%[ {quoted(name)}", f".IR {nobreak(value)} ]"]
    return out


def options_section(parser: argparse.ArgumentParser) -> list[str]:
    out: list[str] = []
    for action in option_actions(parser):
        help_text = action.help or ""
        if action.choices and "{" not in (metavar(action) or ""):
            help_text += f" One of: {', '.join(str(c) for c in action.choices)}."
        out += tagged(option_tag(action), _capital(help_text))
    return out


def _capital(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    if not text.startswith(("coordctl", "coordd")):  # names keep their case
        text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterable[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    sub = _subparsers(parser)
    if sub is None or parser.get_default("command_name"):  # a command, perhaps with more
        yield path, parser
    if sub is None:
        return
    for name, child in sub.choices.items():
        yield from leaves(child, (*path, name))


# -- coordctl.1 --------------------------------------------------------------------------------


def coordctl_page() -> str:
    parser = build_parser()
    out = [
        f'.TH COORDCTL 1 {DATE} "{SOURCE}" "User Commands"',
        ".SH NAME",
        "coordctl \\- client of coordd, the yum/dnf repository manager",
        ".SH SYNOPSIS",
        ".B coordctl",
        ".RB [ \\-\\-socket",
        ".IR PATH ]",
        ".RB [ \\-\\-json ]",
        ".I COMMAND",
        ".RI [ OPTION ...]",
        ".br",
        ".B coordctl",
        ".RB [ \\-\\-socket",
        ".IR PATH ]",
        ".RB [ shell ]",
        ".SH DESCRIPTION",
        *para(parser.description or ""),
        *para(
            "A request that changes a repository is a task. The coordinator in coordd answers "
            "it at once: accepted (it runs now), postponed (it is stored and runs by itself "
            "when no conflicting task is ahead of it, or when a slot for heavy operations "
            "frees), or rejected (a task already queued makes it impossible, such as a "
            "pending delete of the same repository). coordctl prints which, and for a "
            "postponed or rejected request each resource and operation that caused it. Add "
            "--wait to follow the task to its end."
        ),
        ".SH OPTIONS",
        *para("These options come before the command."),
        *options_section(parser),
        ".SH COMMANDS",
        *para(
            "Every command takes --json to print the daemon's answer as JSON, before or "
            "after the command's name. Task-creating commands take --wait."
        ),
    ]
    for path, leaf in leaves(parser):
        words = " ".join(path)
        out += [f".SS {quoted(words)}", ".PP", *synopsis(f"coordctl {words}", leaf)]
        out += para(leaf.description or "")
        for group in leaf._action_groups:
            if group.title == "importer options" and group.description:
                out += para(
                    f"Importer options: {group.description[0].lower()}{group.description[1:]}"
                )
        out += options_section(leaf)
    out += [
        ".SH OUTPUT",
        *para(
            "A postponed request exits 0 and names, for each resource it waits for, the "
            "resource, the operation ahead of it and that operation's task:"
        ),
        *example(
            [
                "$ coordctl repo update --repo-id demo --only-newest false",
                "Repository update postponed due to another operation. Progress on this task can",
                'be viewed using the commands under "repo tasks".',
                "",
                "Resource:  repository - demo",
                "Operation: update",
                "Held By:   task 300046b3c45511e193f172d46940eff3",
                "",
                "Task Id:   3001afa3c45511e193fa72d46940eff3",
            ]
        ),
        *para(
            "A heavy operation (sync, publish) may instead wait because the server is busy: "
            "every slot for heavy operations is in use. It keeps its place in line."
        ),
        *para(
            "A rejected request exits 3 and names the queued operations that make it impossible:"
        ),
        *example(
            [
                '$ coordctl repo update --repo-id demo --display-name "Rejected Update"',
                "The requested operation conflicts with one or more operations already queued for",
                "the resource. The following operations on the specified resources caused the",
                "request to be rejected:",
                "",
                "Resource:  repository - demo",
                "Operation: delete",
                "Queued:    task 30029630c45511e1940072d46940eff3",
            ]
        ),
        *para(
            "Task lists show the running tasks first, then the waiting ones in the order "
            "they will run, each with its operation, resources, state, what it waits for, "
            "start and finish times (ISO 8601, UTC), result and id. Task details add the "
            "progress report as a tree; sizes are shown in binary units."
        ),
        *para(
            "Each change of a repository's content (sync, copy, rollback) makes a new "
            "numbered version; repo versions list shows them newest first, with what each "
            "holds and changed. Listings of units (repo content, repo versions diff, content "
            "orphans list) print one line per unit: its id, type, size and name, a package as "
            "name-[epoch:]version-release.arch:"
        ),
        *example(
            [
                "$ coordctl repo content --repo-id demo --limit 2",
                "+" + "-" * 70 + "+",
                "                       Content of demo, version 2",
                "+" + "-" * 70 + "+",
                "",
                "      Id  Type            Size  Unit",
                "       2  rpm          4.0 KiB  alpha-1.10-1.x86_64",
                "       3  rpm          4.0 KiB  alpha-1.9-2.x86_64",
                "",
                "More units follow; the next page:",
                "  coordctl repo content --repo-id demo --version 2 --limit 2 --after 3",
            ]
        ),
        *para(
            "repo content lists a page at a time; a listing cut short ends with the command "
            "that lists the next page, of the same version. --limit may exceed the daemon's "
            "page of 1000: coordctl asks for as many pages as it takes. --all lists every "
            "unit, page after page, printed as they come and all from the version the first "
            "page named, even if a sync makes a new one meanwhile."
        ),
        *para(
            "With --json, repo content prints the daemon's answer, its pages merged; with "
            "--all, one JSON array of the units, written as the pages come. Should an error "
            "stop it midway, the array is left open and the error object follows it, so "
            "that no parser takes a partial listing for a whole one; the exit status is the "
            "error's."
        ),
        *para(
            "With --json, the answer is printed as the daemon sent it (see coordd-api(7)); "
            'an error prints {"error": {"code": ..., "message": ..., "data": ...}} on '
            "standard output, with the exit status below."
        ),
        *para(
            "With --wait, a line on standard error shows the progress when it is a "
            "terminal: items and bytes of a sync with its rate and time left, or what the "
            "task waits for. Ctrl-C stops following without canceling the task and prints "
            "how to follow it again (tasks details --wait) or cancel it."
        ),
        ".SH SHELL",
        *para(
            "Without a command, on a terminal, or with the shell command, coordctl reads "
            "commands from a prompt. A line is a command without the leading coordctl, "
            "parsed exactly like the command line; a mistake prints its usage and the shell "
            "goes on."
        ),
        *tagged(['.RI "\\fBhelp\\fP [" COMMAND ]'], "Show the commands, or a command's options."),
        *tagged([".BR exit , \\ quit , \\ Ctrl\\-D"], "Leave the shell."),
        *tagged(
            [".B Tab"],
            "Complete commands, options, choices, and repository and task ids fetched from "
            "the daemon.",
        ),
        *tagged(
            [".B Ctrl\\-C"],
            "Clear the line; while following a task with --wait, stop following it.",
        ),
        *para(
            "When a task submitted from the shell ends, a line saying how it ended is "
            "printed above the prompt. History is kept across sessions."
        ),
        ".SH EXIT STATUS",
    ]
    for status, text in sorted(exitcodes.DESCRIPTIONS.items()):
        out += tagged([f".B {status}"], _capital(text))
    out += para("coordctl run exits with its command's status once the command has run.")
    out += [
        ".SH ENVIRONMENT",
        *tagged(
            [".B COORDD_SOCKET"],
            "The daemon's socket, when --socket is not given.",
        ),
        *tagged(
            [".B COORDCTL_TIMEOUT"],
            "Seconds to wait for the daemon's answer (default 60). A submission that is "
            "not answered in time is sent once more, with the same request id, so that it "
            "cannot make a second task; then coordctl gives up.",
        ),
        *tagged(
            [".B XDG_RUNTIME_DIR"],
            "Where a user's daemon listens: $XDG_RUNTIME_DIR/coordd/coordd.sock.",
        ),
        *tagged(
            [".B XDG_STATE_HOME"],
            "Where the shell keeps its history (default ~/.local/state).",
        ),
        *tagged([".B COLUMNS"], "The width of the progress line, when set."),
        ".SH FILES",
        *tagged(
            [".I $XDG_RUNTIME_DIR/coordd/coordd.sock"],
            "The user daemon's socket (/tmp/coordd-UID/coordd.sock without "
            "XDG_RUNTIME_DIR), tried first.",
        ),
        *tagged(
            [".I /run/coordd/coordd.sock"],
            "The system service's socket, used when no user daemon's socket exists.",
        ),
        *tagged(
            [".I ~/.local/state/coordd/coordctl_history"],
            "The shell's history.",
        ),
        *tagged(
            [".I share/bash-completion/completions/coordctl"],
            "Bash completion, installed under the installation prefix (for example "
            "/usr/local or ~/.local), where bash-completion finds it.",
        ),
        ".SH EXAMPLES",
        *para("Create a repository, sync it and follow the sync, then publish it for dnf:"),
        *example(
            [
                "coordctl repo create --repo-id demo --feed https://mirror.example/os/ \\",
                "    --only-newest true",
                "coordctl repo sync --repo-id demo --wait",
                "coordctl repo publish --repo-id demo --wait",
            ]
        ),
        *para(
            "While demo syncs, an update and a delete of demo are postponed; a further "
            "update is rejected, because the delete will run first. The queue and the "
            "progress of the sync:"
        ),
        *example(
            [
                "coordctl repo update --repo-id demo --only-newest false",
                "coordctl repo delete --repo-id demo",
                'coordctl repo update --repo-id demo --display-name "Rejected Update"',
                "coordctl repo tasks list --repo-id demo",
                "coordctl repo tasks details --task-id TASK_ID",
                "coordctl repo tasks cancel --task-id TASK_ID",
            ]
        ),
        *para(
            "See what the last sync changed, roll back to the version before it and publish "
            "that, or publish an older version as it is:"
        ),
        *example(
            [
                "coordctl repo versions list --repo-id demo",
                "coordctl repo versions diff --repo-id demo",
                "coordctl repo rollback --repo-id demo --version 4 --wait",
                "coordctl repo publish --repo-id demo --wait",
                "coordctl repo publish --repo-id demo --version 4 --wait",
            ]
        ),
        *para("Every kernel package of demo, and the ids of its errata for a script:"),
        *example(
            [
                "coordctl repo content --repo-id demo --type rpm --name 'kernel*' --all",
                "coordctl --json repo content --repo-id demo --type erratum --all |",
                "    jq -r '.[].name'",
            ]
        ),
        *para(
            "Free the space of a deleted repository: its units and files stay in the pool, "
            "orphaned, until they are removed."
        ),
        *example(
            [
                "coordctl repo delete --repo-id old --wait",
                "coordctl content orphans list",
                "coordctl content orphans remove --wait",
            ]
        ),
        *para("Run a command while holding demo for reading, so no update changes it:"),
        *example(
            [
                "coordctl run --resource repository:demo=read -- \\",
                "    rsync -a /srv/demo/ backup:/srv/demo/",
            ]
        ),
        *para("In a script:"),
        *example(
            [
                "if ! coordctl --json repo sync --repo-id demo --wait > result.json; then",
                '    echo "sync failed, status $?" >&2',
                "fi",
            ]
        ),
        ".SH SEE ALSO",
        ".BR coordd (8),",
        ".BR coordd\\-api (7)",
    ]
    return "\n".join(out) + "\n"


# -- coordd.8 ----------------------------------------------------------------------------------


def config_layout() -> list[str]:
    """The configuration file's layout, from ``coordd.service.config``'s docstring; comments are
    realigned to fit the page's 80 columns."""
    import coordd.service.config

    doc = coordd.service.config.__doc__ or ""
    block = doc.split("The file's layout::", 1)[1]
    raw: list[str] = []
    for text in block.split("\n")[1:]:
        if text and not text.startswith("    "):
            break
        raw.append(text[4:])
    while raw and not raw[-1]:
        raw.pop()
    while raw and not raw[0]:
        raw.pop(0)
    split = [text.partition("  #") for text in raw]
    column = max(len(code.rstrip()) for code, sep, _ in split if sep) + 2
    lines = []
    for code, sep, comment in split:
        if not sep:
            lines.append(code)
            continue
        aligned = f"{code.rstrip():<{column}}#{comment}"
        lines.append(aligned if len(aligned) <= WIDTH + 1 else f"{code.rstrip()}  #{comment}")
    return lines


def config_paragraph(opening: str) -> str:
    """The paragraph of ``coordd.service.config``'s docstring that starts with ``opening``."""
    import coordd.service.config

    doc = coordd.service.config.__doc__ or ""
    start = doc.index(opening)
    return doc[start : doc.index("\n\n", start)].replace("``", "")


def config_limits() -> str:
    """The paragraph of ``coordd.service.config``'s docstring that explains the limits."""
    return config_paragraph("The limits keep")


def coordd_page() -> str:
    import coordd.service.main

    parser = coordd.service.main.build_parser()
    exits = {
        name: value
        for name, value in vars(coordd.service.main).items()
        if name.startswith("EXIT_") and isinstance(value, int)
    }
    missing = set(exits) - set(COORDD_EXIT)
    if missing:
        raise SystemExit(f"man/generate.py: describe {sorted(missing)} in COORDD_EXIT")
    out = [
        f'.TH COORDD 8 {DATE} "{SOURCE}" "System Administration"',
        ".SH NAME",
        "coordd \\- repository manager with a conflict\\-aware task coordinator",
        ".SH SYNOPSIS",
        *synopsis("coordd", parser),
        ".SH DESCRIPTION",
        *para(parser.description or ""),
        *para(
            "Each request that changes a repository (create, update, delete, sync, publish, "
            "copy) becomes a task declaring every resource it touches and how: create, "
            "read, update or delete. Reads share; every other pair conflicts. Tasks run in "
            "arrival order per resource, and none overtakes an earlier conflicting task. A "
            "task that can never run, because the queue ahead of it deletes the repository "
            "or creates one that will then exist, is rejected and nothing is stored. Heavy "
            "operations (sync, publish) also need one of a bounded number of slots; without "
            "one they wait with the reason server busy."
        ),
        *para(
            "Tasks are stored in SQLite before the request is answered. After a crash or "
            "restart, waiting tasks come back in their order; a task that was running runs "
            "again if it is restartable (delete, sync, publish, copy), up to max_attempts, "
            "and otherwise ends in error with the reason interrupted. Ended tasks stay in "
            "the history for the retention period. Creating a repository or changing its "
            "configuration is done in the same transaction that stores the task."
        ),
        *para(
            "The daemon runs one child process, its database writer "
            "(python3 -m coordd.store.writer), which commits what the daemon sends it, many "
            "requests to one fsync. It ignores SIGINT and SIGTERM and exits when the daemon "
            "stops or goes away; if it fails or dies, or leaves a commit unanswered for "
            "commit_timeout, the daemon stops with status 70."
        ),
        *para(
            "A published tree answers dnf as its feed does. Its repodata is written from "
            "the stored units in createrepo_c's order (packages by file name, so a src.rpm "
            "sits beside its binaries; dependencies, files and changelog entries as the feed "
            "lists them), with the feed's repomd revision and content, distro and repo tags, "
            "its errata, comps, modules.yaml, productid and other records. With only_newest, "
            "every package a module stream of modules.yaml names stays: dnf hides the "
            "ordinary packages a stream provides and installs a stream only from its own "
            "packages, so a stream without them could not be installed at all. Not carried: "
            "the feed's sqlite databases (*_db, read only by yum 3) and zchunk files (*_zck, "
            "which dnf does without); repo show lists those a feed had. A repository's "
            "signed repomd.xml.asc is not carried either, since a repomd.xml written again "
            "no longer matches the feed's signature."
        ),
        *para(
            "Clients speak JSON-RPC 2.0 on a Unix socket, one message per line; see "
            "coordd-api(7). coordctl(1) is the command-line client."
        ),
        ".SH OPTIONS",
        *options_section(parser),
        ".SH CONFIGURATION",
        *para(
            "Settings come from embedded defaults, then the configuration file, then the "
            "environment and the command line. Durations are seconds or strings such as "
            "7d, 12h, 30m, 45s. An unknown key, a wrong type or a group that does not exist "
            "stops the daemon with a message naming the file, the table and the key. The "
            "file's layout, with the system service's values:"
        ),
        *example(config_layout()),
        *para(config_limits()),
        ".SH SIGNING",
        *para(config_paragraph("[signing] key")),
        ".SH ACCESS",
        *para(
            "The socket's file mode and the peer's credentials (SO_PEERCRED) decide who may "
            "do what: root, the daemon's own user and members of admin_group may change "
            "things; members of read_group may only list and show; everyone else is "
            "refused."
        ),
        ".SH SIGNALS",
        *tagged(
            [".BR SIGTERM , \\ SIGINT"],
            "Stop taking work, give running tasks cancel_grace to finish, stop the rest "
            "(restartable ones resume at the next start) and exit 0. A second signal exits "
            "at once.",
        ),
        *tagged(
            [".B SIGHUP"],
            "Re-read the configuration file; the socket, its mode and the state directory "
            "change only at a restart.",
        ),
        ".SH EXIT STATUS",
    ]
    for name, value in sorted(exits.items(), key=lambda item: item[1]):
        out += tagged([f".B {value}"], _capital(COORDD_EXIT[name]))
    out += tagged([".B 130"], "Interrupted by SIGINT before the daemon was running.")
    out += [
        ".SH ENVIRONMENT",
        *tagged([".B COORDD_SOCKET"], "The socket to listen on (below --socket)."),
        *tagged([".B COORDD_STATE_DIR"], "The state directory (below --state-dir)."),
        *tagged(
            [".BR XDG_RUNTIME_DIR , \\ XDG_STATE_HOME , \\ XDG_CONFIG_HOME"],
            "The user service's default locations.",
        ),
        *tagged(
            [".BR NOTIFY_SOCKET , \\ WATCHDOG_USEC"],
            "Set by systemd: readiness, status and watchdog notifications (Type=notify).",
        ),
        *tagged(
            [".BR LISTEN_FDS , \\ LISTEN_PID , \\ LISTEN_FDNAMES"],
            "Set by systemd for socket activation: the daemon serves the passed socket "
            "instead of binding one.",
        ),
        *tagged(
            [".B COORDD_TEST_CLOCK_FILE"],
            "For tests only: the daemon reads the time of day from this file (seconds since "
            "the epoch, as text) instead of the system clock, for task times, retention and "
            "schedules, so that a test moves time forward by writing the file. Only the "
            "environment of whoever starts the daemon can set it; no client can change the "
            "daemon's time. Never set it on a real service.",
        ),
        ".SH FILES",
        *tagged(
            [".I /run/coordd/coordd.sock"],
            "The system service's socket ($XDG_RUNTIME_DIR/coordd/coordd.sock for a user).",
        ),
        *tagged(
            [".I /var/lib/coordd"],
            "The system service's state (~/.local/state/coordd for a user): coordd.db "
            "(SQLite, WAL; written by one process of its own, which holds "
            "coordd.db-writer.lock), coordd.lock (one daemon per state directory), "
            "content/ (the content pool: every file once, by its SHA-256), content.db "
            "(SQLite: the units and the repositories' versions) and published/ID (the tree "
            "to use as a baseurl).",
        ),
        *tagged(
            [".I /etc/coordd/coordd.toml"],
            "The system service's configuration (~/.config/coordd/coordd.toml for a user).",
        ),
        *tagged(
            [".IR coordd.service , \\ coordd.socket , \\ coordd.sysusers"],
            "systemd units: socket activation, Type=notify, watchdog.",
        ),
        ".SH EXAMPLES",
        *para("As the system service:"),
        *example(["systemctl enable --now coordd.socket coordd.service", "coordctl server status"]),
        *para("As a user, without systemd, with its defaults:"),
        *example(["coordd &", "coordctl server status"]),
        *para("Check a configuration file and print the effective settings:"),
        *example(["coordd --config /etc/coordd/coordd.toml --check-config"]),
        ".SH SEE ALSO",
        ".BR coordctl (1),",
        ".BR coordd\\-api (7),",
        ".BR systemd.socket (5)",
    ]
    return "\n".join(out) + "\n"


# -- files -------------------------------------------------------------------------------------


def tidy(page: str) -> str:
    """Drop a paragraph macro right after a section heading (mandoc: "skipping PP")."""
    out: list[str] = []
    for text in page.split("\n"):
        if text == ".PP" and out and out[-1].startswith((".SH", ".SS")):
            continue
        out.append(text)
    return "\n".join(out)


def outputs() -> dict[Path, str]:
    return {
        ROOT / "man" / "coordctl.1": tidy(coordctl_page()),
        ROOT / "man" / "coordd.8": tidy(coordd_page()),
        ROOT / "coordctl" / "bash-completion" / "coordctl": bash_script(
            command_tree(build_parser())
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report out-of-date files")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
    for path in stale:
        verb = "out of date" if args.check else "written"
        print(f"{path.relative_to(ROOT)}: {verb}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
