"""coordctl's argument tables: the types of option values, the yum importer's options, and
for each command the options it takes (``coordctl.parser`` builds the tree from them).

Each ``*_options`` function adds a command's options to its parser; ``IMPORTER_OPTIONS`` is
also what ``coordctl.commands`` reads to send the ``importer`` object. Like the parser, this
module imports only ``argparse``, ``sys`` and the names leaf ``coordd.api.names``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from coordd.api import names

STATES = (*names.STATES, names.ALL_STATES)
TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")


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


def optional_positive(text: str) -> int | str:
    """``positive``, or ``""`` (clear the value)."""
    return "" if text == "" else positive(text)


def optional_count(text: str) -> int | str:
    """``count``, or ``""`` (clear the value)."""
    return "" if text == "" else count(text)


def count(text: str) -> int:
    """A whole number of at least 0 (``--against 0``: the empty version before the first)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {value}")
    return value


def page_size(text: str) -> int:
    """A number of items for a method that answers one page only (1 to ``MAX_PAGE``)."""
    value = positive(text)
    if value > names.MAX_PAGE:
        raise argparse.ArgumentTypeError(f"expected at most {names.MAX_PAGE}, got {value}")
    return value


def resource_spec(text: str) -> dict[str, str]:
    """``TYPE:ID=KIND`` → ``{"type", "id", "kind"}`` (the id may itself contain ``:``)."""
    target, sep, kind = text.rpartition("=")
    rtype, colon, rid = target.partition(":")
    if not sep or not colon or not rtype or not rid:
        raise argparse.ArgumentTypeError(
            f"expected TYPE:ID=KIND such as repository:demo=update, got {text!r}"
        )
    if kind not in names.KINDS:
        raise argparse.ArgumentTypeError(
            f"KIND must be one of {', '.join(names.KINDS)}, got {kind!r}"
        )
    return {"type": rtype, "id": rid, "kind": kind}


def resource_filter(text: str) -> dict[str, str]:
    rtype, colon, rid = text.partition(":")
    if not colon or not rtype or not rid:
        raise argparse.ArgumentTypeError(f"expected TYPE:ID such as repository:demo, got {text!r}")
    return {"type": rtype, "id": rid}


def read_secret(path: str) -> str:
    """The first line of ``path`` (``-``: standard input), for secrets kept off argv."""
    try:
        if path == "-":
            line = sys.stdin.readline()
        else:
            with open(path, encoding="utf-8") as f:
                line = f.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc}") from None
    return line.rstrip("\r\n")


MAX_KEY_FILE = 64 * 1024  # the daemon's bound on gpgkey (coordd.repo.signing.MAX_KEY)


def read_key(path: str) -> str:
    """The text of the armored public key in ``path`` (``-``: standard input); ``""`` stays
    ``""`` (clear the option). The client reads the file: the daemon opens no path."""
    if path == "":
        return ""
    try:
        if path == "-":
            text = sys.stdin.read(MAX_KEY_FILE + 1)
        else:
            with open(path, encoding="ascii") as f:
                text = f.read(MAX_KEY_FILE + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc}") from None
    if len(text) > MAX_KEY_FILE:
        raise argparse.ArgumentTypeError(f"{path} is larger than {MAX_KEY_FILE} bytes")
    return text


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
        "sync only the newest version of each package name and architecture (the packages "
        "of every module stream in modules.yaml stay)",
    ),
    (
        "--verify-checksum",
        "verify_checksum",
        boolean,
        "true|false",
        "kept for compatibility: every file entering the shared pool is verified",
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
        "--password-file",
        "password",
        read_secret,
        "FILE",
        "a file (or - for standard input) whose first line is the password for the feed's "
        "basic authentication; never shown, never on the command line",
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
    (
        "--gpgkey",
        "gpgkey",
        read_key,
        "FILE",
        "an ASCII-armored OpenPGP public key file (or - for standard input); a sync then "
        "requires the feed's repodata/repomd.xml.asc to be a good signature by it",
    ),
)


def repo_id(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--repo-id", required=True, metavar="REPO_ID", help="the repository")


def config_options(sub: argparse.ArgumentParser) -> None:
    repo_id(sub)
    sub.add_argument("--display-name", metavar="TEXT", help="a name for people")
    sub.add_argument("--description", metavar="TEXT", help="a description")
    sub.add_argument("--note", "--notes", dest="notes", metavar="TEXT", help="free notes")
    sub.add_argument(
        "--retain-versions",
        type=optional_positive,
        metavar="N",
        help="how many of its newest versions the repository keeps (the published one is "
        "kept too); an empty value restores the configured default ([content] retain_versions)",
    )
    sub.add_argument(
        "--sign-metadata",
        type=boolean,
        metavar="true|false",
        help="sign the published repomd.xml with the daemon's key ([signing] key) and publish "
        "repomd.xml.asc and repomd.xml.key beside it, for clients with repo_gpgcheck=1",
    )
    sub.add_argument(
        "--auto-publish",
        type=boolean,
        metavar="true|false",
        help="publish each new version a sync makes, at once, in a task of its own linked to "
        "the sync",
    )
    sub.add_argument(
        "--retain-package-versions",
        type=optional_count,
        metavar="N",
        help="a sync keeps only the N newest versions of each package name and arch, and "
        "downloads no others; 0 or an empty value keeps every version (the default)",
    )
    importer = sub.add_argument_group(
        "importer options", "How the repository syncs; an empty value clears an option."
    )
    for option, key, convert, metavar, help_text in IMPORTER_OPTIONS:
        importer.add_argument(option, dest=key, type=convert, metavar=metavar, help=help_text)


def version_option(sub: argparse.ArgumentParser, help_text: str, *, required: bool = False) -> None:
    sub.add_argument("--version", type=positive, required=required, metavar="N", help=help_text)


def publish_options(sub: argparse.ArgumentParser) -> None:
    repo_id(sub)
    version_option(sub, "the version to publish (default: the latest)")


def copy_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--from", dest="source", required=True, metavar="REPO_ID", help="the source repository"
    )
    sub.add_argument(
        "--to", dest="target", required=True, metavar="REPO_ID", help="the target repository"
    )
    sub.add_argument("--name", metavar="GLOB", help="copy only packages whose name matches")
    version_option(sub, "the version of the source to copy from (default: its latest)")


def upload_options(sub: argparse.ArgumentParser) -> None:
    repo_id(sub)
    sub.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="RPM files to upload; coordctl opens them and passes them to coordd open, so "
        "coordd reads what you can read",
    )


def remove_options(sub: argparse.ArgumentParser) -> None:
    repo_id(sub)
    sub.add_argument(
        "--name",
        dest="names",
        action="append",
        metavar="GLOB",
        help="remove the packages whose name matches (repeatable)",
    )
    sub.add_argument(
        "--nevra",
        dest="nevras",
        action="append",
        metavar="NEVRA",
        help="remove the package name-[epoch:]version-release.arch (repeatable)",
    )
    sub.add_argument(
        "--erratum",
        dest="errata",
        action="append",
        metavar="ID",
        help="remove the erratum (advisory) of this id (repeatable)",
    )


def rollback_options(sub: argparse.ArgumentParser) -> None:
    repo_id(sub)
    version_option(sub, "the version whose content the new version holds", required=True)


def versions_list_options(sub: argparse.ArgumentParser) -> None:
    repo_id(sub)
    sub.add_argument(
        "--limit", type=positive, default=100, metavar="N", help="show at most N versions"
    )


def versions_show_options(sub: argparse.ArgumentParser) -> None:
    repo_id(sub)
    version_option(sub, "the version to show (default: the latest)")


def versions_diff_options(sub: argparse.ArgumentParser) -> None:
    repo_id(sub)
    version_option(sub, "the version to compare (default: the latest)")
    sub.add_argument(
        "--against",
        type=count,
        metavar="M",
        help="the version to compare it with (default: the one before it; 0: empty)",
    )
    sub.add_argument(
        "--limit",
        type=page_size,
        default=100,
        metavar="N",
        help=f"list at most N units added and N removed (at most {names.MAX_PAGE}); the "
        "counts are always complete",
    )


def content_options(sub: argparse.ArgumentParser) -> None:
    repo_id(sub)
    version_option(sub, "the version to list (default: the latest)")
    sub.add_argument(
        "--type", dest="kind", choices=names.UNIT_KINDS, help="only units of this type"
    )
    sub.add_argument(
        "--name",
        metavar="GLOB",
        help="only units whose name matches: a package's name, an erratum's id, a file's "
        "path (a glob, case-sensitive)",
    )
    sub.add_argument("--arch", metavar="ARCH", help="only packages of this architecture")
    sub.add_argument(
        "--after",
        type=count,
        default=0,
        metavar="ID",
        help="start after the unit with this id (the cursor a listing cut short prints)",
    )
    amount = sub.add_mutually_exclusive_group()
    amount.add_argument(
        "--limit", type=positive, default=100, metavar="N", help="show at most N units"
    )
    amount.add_argument(
        "--all",
        action="store_true",
        help="show every unit, page after page, as they come (instead of --limit)",
    )


def orphans_list_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--limit",
        type=page_size,
        default=100,
        metavar="N",
        help=f"list at most N orphaned units and N files (at most {names.MAX_PAGE}); the "
        "counts are always complete",
    )


def optional_threshold(text: str) -> int | str:
    """A failure threshold, or ``""`` (no threshold: never disabled by failures)."""
    return optional_positive(text)


def _schedule_repo(sub: argparse.ArgumentParser, per_repository: bool) -> None:
    if per_repository:
        repo_id(sub)


def _schedule_id(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--schedule-id", required=True, metavar="SCHEDULE_ID", help="the schedule")


def schedule_create_options(per_repository: bool) -> Callable[[argparse.ArgumentParser], None]:
    def options(sub: argparse.ArgumentParser) -> None:
        _schedule_repo(sub, per_repository)
        sub.add_argument(
            "--schedule",
            required=True,
            metavar="ISO8601",
            help="when it runs: START/INTERVAL or Rn/START/INTERVAL, such as "
            "2026-12-01T02:00Z/P1D (daily from then on) or R5/2026-12-01T02:00Z/PT6H (five "
            "runs, six hours apart); intervals in weeks, days, hours, minutes, seconds",
        )
        sub.add_argument(
            "--failure-threshold",
            type=positive,
            metavar="N",
            help="disable the schedule after N of its tasks in a row failed (default: never)",
        )
        sub.add_argument(
            "--enabled",
            type=boolean,
            default=True,
            metavar="true|false",
            help="whether it runs (default true)",
        )

    return options


def schedule_list_options(per_repository: bool) -> Callable[[argparse.ArgumentParser], None]:
    def options(sub: argparse.ArgumentParser) -> None:
        _schedule_repo(sub, per_repository)

    return options


def schedule_show_options(per_repository: bool) -> Callable[[argparse.ArgumentParser], None]:
    def options(sub: argparse.ArgumentParser) -> None:
        _schedule_repo(sub, per_repository)
        _schedule_id(sub)
        sub.add_argument(
            "--limit", type=positive, default=20, metavar="N", help="show its last N runs"
        )

    return options


def schedule_update_options(per_repository: bool) -> Callable[[argparse.ArgumentParser], None]:
    def options(sub: argparse.ArgumentParser) -> None:
        _schedule_repo(sub, per_repository)
        _schedule_id(sub)
        sub.add_argument(
            "--schedule",
            metavar="ISO8601",
            help="a new START/INTERVAL or Rn/START/INTERVAL (its count of runs starts again)",
        )
        sub.add_argument(
            "--failure-threshold",
            type=optional_threshold,
            metavar="N",
            help="disable the schedule after N of its tasks in a row failed; an empty value: never",
        )
        sub.add_argument(
            "--enabled",
            type=boolean,
            metavar="true|false",
            help="enable or disable it; enabling a disabled schedule clears its failures",
        )

    return options


def schedule_delete_options(per_repository: bool) -> Callable[[argparse.ArgumentParser], None]:
    def options(sub: argparse.ArgumentParser) -> None:
        _schedule_repo(sub, per_repository)
        _schedule_id(sub)

    return options


def state_options(sub: argparse.ArgumentParser) -> None:
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


def repo_tasks_list_options(sub: argparse.ArgumentParser) -> None:
    repo_id(sub)
    state_options(sub)


def tasks_list_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--resource",
        type=resource_filter,
        metavar="TYPE:ID",
        help="only tasks on this resource, e.g. repository:demo",
    )
    state_options(sub)


def details_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--task-id", required=True, metavar="TASK_ID", help="the task")
    sub.add_argument("--wait", action="store_true", help="follow the task to its end, then show it")


def cancel_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--task-id", required=True, metavar="TASK_ID", help="the task")
    sub.add_argument("--wait", action="store_true", help="wait until the task has ended")


def run_options(sub: argparse.ArgumentParser) -> None:
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
