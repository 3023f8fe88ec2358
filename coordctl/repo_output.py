"""What coordctl prints about repositories and the content they hold: the repository list
and record, versions and their differences, a version's units, orphaned content.

Pure functions from the API's JSON (``coordd/api/methods.py``) to strings, built from the
building blocks of ``coordctl.output``; nothing here talks to the daemon or the terminal.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from coordctl.output import (
    block,
    counts_text,
    header,
    human_size,
    kind_counts,
    operation_name,
    records,
    state_text,
)

UNIT_HEAD = f"{'Id':>8}  {'Type':<8}  {'Size':>10}  Unit\n"


# -- repositories ------------------------------------------------------------------------


def _last(record: Any) -> str:
    if not isinstance(record, Mapping):
        return "Never"
    return str(record.get("finished") or "Never")


def repo_list(repos: Sequence[Mapping[str, Any]]) -> str:
    out = header("Repositories")
    if not repos:
        return out + "\nThere are no repositories. Create one with `coordctl repo create`.\n"
    for repo in repos:
        importer = repo.get("importer") or {}
        out += "\n" + block(
            records(
                [
                    ("Id", repo.get("id")),
                    ("Display Name", repo.get("display_name")),
                    ("Description", repo.get("description")),
                    ("Feed", importer.get("feed")),
                    ("Latest Version", _or_none(repo.get("latest_version"))),
                    ("Published Version", _published(repo.get("published_version"))),
                    ("Last Sync", _last(repo.get("last_sync"))),
                    ("Last Publish", _last(repo.get("last_publish"))),
                ]
            )
        )
    return out


def _or_none(number: Any) -> Any:
    return "None" if number is None else number


def _published(number: Any) -> Any:
    if number is None:
        return "Not published"
    return "0 (empty)" if number == 0 else number  # published before its first version


def repo_show(repo: Mapping[str, Any]) -> str:
    importer = {key: value for key, value in (repo.get("importer") or {}).items()}
    if isinstance(importer.get("gpgkey"), str):  # the text is in --json
        importer["gpgkey"] = f"an armored public key of {len(importer['gpgkey'])} characters"
    fields: list[tuple[str, Any]] = [
        ("Id", repo.get("id")),
        ("Display Name", repo.get("display_name")),
        ("Description", repo.get("description")),
        ("Notes", repo.get("notes")),
        ("Created", repo.get("created")),
        ("Updated", repo.get("updated")),
        ("Importer", importer or ""),
        ("Latest Version", _or_none(repo.get("latest_version"))),
        ("Published Version", _published(repo.get("published_version"))),
        ("Retain Versions", repo.get("retain_versions")),
        ("Sign Metadata", bool(repo.get("sign_metadata"))),
        ("Auto Publish", bool(repo.get("auto_publish"))),
        ("Retain Package Versions", repo.get("retain_package_versions") or "All"),
        ("Content", _content_summary(repo.get("content") or {})),
    ]
    for name, key in (("Last Sync", "last_sync"), ("Last Publish", "last_publish")):
        record = repo.get(key)
        fields.append((name, record if isinstance(record, Mapping) and record else "Never"))
    fields.append(("Published Path", repo.get("published_path") or "Not published"))
    tasks = repo.get("tasks") or []
    if tasks:
        fields.append(("Tasks", "\n".join(_task_line(t) for t in tasks)))
    else:
        fields.append(("Tasks", "None"))
    return header("Repository") + "\n" + block(records(fields, sort=False))


def _content_summary(content: Mapping[str, Any]) -> Any:
    """``repo show``'s content: the latest version's counts, size and what it synced."""
    if content.get("version") is None:
        return "None: sync the repository, or copy into it"
    summary: dict[str, Any] = {"Version": content["version"]}
    summary.update(kind_counts(content.get("counts") or {}))
    summary["Size"] = human_size(content.get("size") or 0)
    for name, key in (("Revision", "revision"), ("Synced From", "feed"), ("Synced", "last_sync")):
        if content.get(key) is not None:
            summary[name] = content[key]
    tags = content.get("tags") or {}
    for name, key in (("Content Tags", "content"), ("Repo Tags", "repo")):
        if tags.get(key):
            summary[name] = ", ".join(tags[key])
    if tags.get("distro"):
        summary["Distro Tags"] = ", ".join(
            f"[{cpeid}]: {text}" if cpeid else text for cpeid, text in tags["distro"]
        )
    if content.get("not_carried"):
        summary["Not Carried"] = ", ".join(content["not_carried"])
    return summary


def _task_line(task: Mapping[str, Any]) -> str:
    return f"{operation_name(task)}: {state_text(task)}, task {task.get('id')}"


# -- versions and content ----------------------------------------------------------------


def _version_fields(version: Mapping[str, Any], *, full: bool = False) -> list[tuple[str, Any]]:
    """A version's record; ``full``: with its base, and its counts as a tree of every kind."""
    counts = version.get("counts") or {}
    return [
        ("Version", version.get("number")),
        ("Created", version.get("created")),
        *([("Base", _or_none(version.get("base")))] if full else []),
        ("Note", version.get("note")),
        ("Content", kind_counts(counts) if full else counts_text(counts, "empty")),
        ("Size", human_size(version.get("size") or 0)),
        ("Added", counts_text(version.get("added") or {})),
        ("Removed", counts_text(version.get("removed") or {})),
        ("Published", "yes" if version.get("published") else "no"),
        ("Task Id", version.get("task_id")),
    ]


def version_list(repo_id: str, answer: Mapping[str, Any]) -> str:
    """``repo versions list``: newest first, one record each."""
    out = header(f"Versions of {repo_id}")
    versions = answer.get("versions") or []
    if not versions:
        return out + "\nThere are no versions yet. Sync the repository, or copy into it.\n"
    for version in versions:
        out += "\n" + block(records(_version_fields(version)))
    if answer.get("next") is not None:
        out += f"\nOlder versions follow version {answer['next']}: raise --limit to see them.\n"
    return out


def version_show(version: Mapping[str, Any]) -> str:
    """``repo versions show``: one version, with its counts per kind."""
    title = f"Version {version.get('number')} of {version.get('repo_id')}"
    return header(title) + "\n" + block(records(_version_fields(version, full=True), sort=False))


def version_diff(answer: Mapping[str, Any]) -> str:
    """``repo versions diff``: what each side has that the other lacks, counts and units."""
    old, new = answer.get("from"), answer.get("to")
    against = f"version {old}" if old else "an empty repository"
    title = f"Version {new} of {answer.get('repo_id')} against {against}"
    added = answer.get("added") or {}
    removed = answer.get("removed") or {}
    totals = [
        ("Added", counts_text(added.get("counts") or {})),
        ("Removed", counts_text(removed.get("counts") or {})),
    ]
    out = header(title) + "\n" + block(records(totals))
    for name, side in (("Units Added", added), ("Units Removed", removed)):
        units = side.get("units") or []
        if not units:
            continue
        out += f"\n{name}:\n" + UNIT_HEAD + unit_lines(units)
        more = sum((side.get("counts") or {}).values()) - len(units)
        if more > 0:
            out += f"... and {more} more (raise --limit to list them)\n"
    return out


def unit_name(unit: Mapping[str, Any]) -> str:
    """A package or delta as ``name-[epoch:]version-release.arch`` (as dnf writes it); any
    other unit by its name: erratum id, tree file path, metadata type."""
    name = str(unit.get("name"))
    if unit.get("version") is None:
        return name
    epoch = unit.get("epoch")
    evr = f"{unit['version']}-{unit.get('release')}"
    if epoch not in (None, "", "0", 0):
        evr = f"{epoch}:{evr}"
    return f"{name}-{evr}.{unit.get('arch')}"


def unit_lines(units: Iterable[Mapping[str, Any]]) -> str:
    """One line per unit under ``UNIT_HEAD``: columns of a fixed width, so that pages
    printed as they come line up."""
    lines = []
    for unit in units:
        size = unit.get("size")
        shown = "" if size is None else human_size(size)
        lines.append(
            f"{unit.get('id')!s:>8}  {unit.get('type')!s:<8}  {shown:>10}  {unit_name(unit)}"
        )
    return block(lines)


def content_head(repo_id: str, version: Any) -> str:
    return header(f"Content of {repo_id}, version {version}") + "\n" + UNIT_HEAD


def content_tail(shown: int, next_page: Sequence[str] | None) -> str:
    """What ends a listing: that it was empty, or the command for the next page."""
    if shown == 0:
        return "There are no units to show.\n"
    if next_page is None:
        return ""
    return f"\nMore units follow; the next page:\n  {shlex.join(next_page)}\n"


def json_items(items: Sequence[Any], *, first: bool) -> str:
    """Items of a JSON array written as they come (``first``: the first ones); together with
    ``json_items_end`` the same text as ``json.dumps(all_items, indent=2)``."""
    if not items:
        return ""
    text = ",\n".join(
        "  " + json.dumps(item, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        for item in items
    )
    return ("[\n" if first else ",\n") + text


def json_items_end(count: int) -> str:
    return "\n]\n" if count else "[]\n"


def orphans(answer: Mapping[str, Any]) -> str:
    """``content orphans list``: the counts (``orphan_*``), then the first units and files.

    The answer's ``files`` and ``units`` are lists of the first orphans; its ``bytes`` is
    the whole pool's.
    """
    units = answer.get("units") or []
    files = answer.get("files") if isinstance(answer.get("files"), list) else []
    count_units = int(answer.get("orphan_units") or 0)
    count_files = int(answer.get("orphan_files") or 0)
    out = header("Orphaned Content") + "\n"
    out += block(
        records(
            [
                ("Orphaned Units", count_units),
                ("Orphaned Files", count_files),
                ("Orphaned Size", human_size(answer.get("orphan_bytes") or 0)),
                ("Pool Size", human_size(answer.get("bytes") or 0)),
            ]
        )
    )
    if not count_units and not count_files:
        return out + "\nThere is no orphaned content.\n"
    if units:
        # The units of a listing of orphans have no version: their file names say more.
        named = [{**unit, "name": unit.get("href") or unit.get("name")} for unit in units]
        out += "\nUnits:\n" + UNIT_HEAD + unit_lines(named)
        if count_units > len(units):
            out += f"... and {count_units - len(units)} more\n"
    if files:
        out += "\nFiles:\n" + block(
            f"  sha256:{f.get('sha256')}  {human_size(f.get('size') or 0)}" for f in files
        )
        if count_files > len(files):
            out += f"... and {count_files - len(files)} more\n"
    return out + "\nRemove them with `coordctl content orphans remove`.\n"
