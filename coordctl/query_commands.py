"""The commands that read repositories: ``repo list``, ``repo show``, ``repo versions
list/show/diff``, ``repo content`` and ``content orphans list``, shown by
``coordctl.repo_output``.

A listing longer than a page (``names.MAX_PAGE``) is asked for a page at a time
(``coordctl.context.pages``); ``repo content`` prints each page as it comes and stays on
the version its first answer named.
"""

from __future__ import annotations

import argparse
from typing import Any

from coordctl import exitcodes
from coordctl.context import Context, given, pages, query
from coordctl.parser import PROG

__all__ = [
    "cmd_content_orphans_list",
    "cmd_repo_content",
    "cmd_repo_list",
    "cmd_repo_show",
    "cmd_repo_versions_diff",
    "cmd_repo_versions_list",
    "cmd_repo_versions_show",
]


def cmd_repo_list(ctx: Context, args: argparse.Namespace) -> int:
    answer = query(ctx, "repo.list")
    return ctx.show(answer, lambda views: views.repo_list(answer["repositories"]), repository=True)


def cmd_repo_show(ctx: Context, args: argparse.Namespace) -> int:
    answer = query(ctx, "repo.show", {"repo_id": args.repo_id})
    return ctx.show(answer, lambda views: views.repo_show(answer), repository=True)


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
    params = given({"repo_id": args.repo_id}, version=args.version)
    answer = query(ctx, "repo.versions.show", params)
    return ctx.show(answer, lambda views: views.version_show(answer), repository=True)


def cmd_repo_versions_diff(ctx: Context, args: argparse.Namespace) -> int:
    params = given(
        {"repo_id": args.repo_id, "limit": args.limit}, version=args.version, against=args.against
    )
    answer = query(ctx, "repo.versions.diff", params)
    return ctx.show(answer, lambda views: views.version_diff(answer), repository=True)


def cmd_repo_content(ctx: Context, args: argparse.Namespace) -> int:
    """Units a page at a time, printed as they come; all from one version, even across
    pages: the first answer names it, and every further page asks for that one."""
    from coordctl import repo_output

    params = given(
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
