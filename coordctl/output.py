"""What coordctl prints for people: coordd's answers turned into text one can act on.

Pure functions from the API's JSON (``coordd/api/methods.py``, ``Task.to_json``) to strings; nothing
here talks to the daemon or the terminal. The layout follows the Pulp v2 client this service
descends from: a boxed header over a list of ``Label:  value`` records, and for a postponed or
rejected request the resource and operation that caused it, so the reader knows what to wait
for or what to cancel.

Repositories, their versions and content are printed by ``coordctl.repo_output``, from the
building blocks here.

``--json`` bypasses all of this: the command prints the API's answer as it came.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from coordd.api import names

RULE = "+" + "-" * 70 + "+"
WRAP = 80
REPO_TASKS_HINT = 'Progress on this task can be viewed using the commands under "repo tasks".'
TASKS_HINT = 'Progress on this task can be viewed using the commands under "tasks".'
BUSY_TEXT = (
    "The server is busy: every slot for heavy operations (sync, publish) is in use. The task "
    "keeps its place in line and starts when a slot frees."
)
REJECTED_TEXT = (
    "The requested operation conflicts with one or more operations already queued for the "
    "resource. The following operations on the specified resources caused the request to be "
    "rejected:"
)
IMPOSSIBLE_TEXT = "The requested operation was rejected: it can never run."
UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


# -- building blocks ---------------------------------------------------------------------


def wrap(text: str, width: int = WRAP) -> str:
    """Greedy word wrap (``textwrap`` would cost its import on every command)."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return "\n".join(lines)


def header(title: str) -> str:
    return f"{RULE}\n{title.center(len(RULE)).rstrip()}\n{RULE}\n"


ACRONYMS = {"ca": "CA", "tls": "TLS", "url": "URL", "uid": "UID", "gpg": "GPG"}


def label(key: str) -> str:
    """``items_left`` → ``Items Left``, ``delta_rpm`` → ``Delta Rpm``, ``ca_file`` → ``CA File``."""
    return " ".join(
        ACRONYMS.get(word, word[:1].upper() + word[1:]) for word in key.split("_") if word
    )


def is_size_key(key: str) -> bool:
    return (
        key in ("size", "bytes")
        or key.startswith(("size_", "bytes_"))
        or key.endswith(("_size", "_bytes"))
    )


def human_size(value: float) -> str:
    """Bytes in binary units: ``0 B``, ``512 B``, ``1.5 KiB``, ``2.9 GiB``."""
    size = float(value)
    for unit in UNITS:
        if abs(size) < 1024 or unit == UNITS[-1]:
            if unit == "B":
                return f"{int(size)} B"
            return f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``, ``3d04h``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def scalar(value: Any, key: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and is_size_key(key):
        return human_size(value)
    return str(value)


def records(fields: Sequence[tuple[str, Any]], indent: int = 0, *, sort: bool = True) -> list[str]:
    """``Label:  value`` lines, values aligned; a mapping or list value becomes a subtree
    (its keys sorted if ``sort``)."""
    if not fields:
        return []
    width = max(len(name) for name, _ in fields) + 2
    pad = " " * indent
    lines: list[str] = []
    for name, value in fields:
        head = f"{name}:".ljust(width)
        if isinstance(value, Mapping):
            lines.append(f"{pad}{name}:")
            lines += tree(value, indent + 2, sort=sort)
        elif isinstance(value, list) and any(isinstance(v, Mapping) for v in value):
            lines.append(f"{pad}{name}:")
            lines += items(value, indent + 2)
        elif isinstance(value, list):
            lines.append(f"{pad}{head}{', '.join(scalar(v) for v in value)}".rstrip())
        else:
            text = value if isinstance(value, str) else scalar(value)
            first, *rest = text.split("\n") if text else [""]
            lines.append(f"{pad}{head}{first}".rstrip())
            lines += [f"{pad}{' ' * width}{more}".rstrip() for more in rest]
    return lines


def tree(value: Mapping[str, Any], indent: int = 0, *, sort: bool = True) -> list[str]:
    """A nested report as an indented tree with readable labels (keys sorted, like Pulp)."""
    keys = sorted(value) if sort else list(value)
    fields: list[tuple[str, Any]] = []
    for key in keys:
        item = value[key]
        if not isinstance(item, Mapping | list) and is_size_key(key):
            item = scalar(item, key)
        fields.append((label(key), item))
    return records(fields, indent, sort=sort)


def items(values: Iterable[Any], indent: int) -> list[str]:
    """A list of records, each introduced by ``-``."""
    lines: list[str] = []
    pad = " " * indent
    for value in values:
        if isinstance(value, Mapping):
            sub = tree(value, indent + 2)
            if sub:
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines += sub[1:]
            else:
                lines.append(f"{pad}-")
        else:
            lines.append(f"{pad}- {scalar(value)}")
    return lines


def block(lines: Iterable[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


# -- tasks -------------------------------------------------------------------------------


def resource_text(resource: Mapping[str, Any]) -> str:
    """``repository - demo``, the way Pulp v2 names a resource."""
    return f"{resource.get('type')} - {resource.get('id')}"


# Operations whose method name does not say what they do in a word or two.
SHORT_NAMES = {"content.orphans.remove": "remove orphans"}


def short_name(operation: str) -> str:
    """``repo.sync`` → ``sync``, ``content.orphans.remove`` → ``remove orphans``."""
    return SHORT_NAMES.get(operation, operation.removeprefix("repo."))


def operation_name(task: Mapping[str, Any]) -> str:
    """``sync``, ``copy (version 3, name a*)``, ``lock: sleep 30``: the operation as a person
    calls it."""
    operation = str(task.get("operation", ""))
    name = short_name(operation)
    args = task.get("args") or {}
    if operation == "lock" and args.get("command"):
        return f"lock: {shlex.join(str(part) for part in args['command'])}"
    if operation == "repo.rollback" and args.get("version"):
        return f"{name} (to version {args['version']})"
    details = [f"{key} {args[key]}" for key in ("version", "name") if args.get(key)]
    if operation in ("repo.copy", "repo.publish") and details:
        return f"{name} ({', '.join(details)})"
    return name


def task_title(task: Mapping[str, Any]) -> str:
    """A short name for a task on one line: ``sync demo``, ``copy a -> b``, ``lock demo``.

    The content pool, which every operation that adds content reads, goes unnamed.
    """
    name = short_name(str(task.get("operation", "")))
    ids = [
        str(claim.get("id"))
        for claim in task.get("resources") or []
        if claim.get("type") != names.POOL_TYPE
    ]
    return f"{name} {' -> '.join(ids)}".strip()


def resources_text(task: Mapping[str, Any]) -> str:
    claims = task.get("resources") or []
    if len(claims) == 1:
        return f"{claims[0]['id']} ({claims[0]['type']})"
    return ", ".join(f"{c['id']} ({c['type']}, {c['kind']})" for c in claims)


def state_text(task: Mapping[str, Any]) -> str:
    state = str(task.get("state", "")).capitalize()
    if task.get("cancel_requested") and task.get("state") not in names.ENDED:
        return f"{state} (cancel requested)"
    return state


def blocker_text(blocker: Mapping[str, Any]) -> str:
    """One reason a task waits: ``update on demo (repository), task …`` or server busy."""
    resource = blocker.get("resource")
    if resource is None:
        return "server busy (every heavy-operation slot is in use)"
    text = f"{blocker.get('operation', blocker.get('reason'))} on {resource['id']} "
    text += f"({resource['type']})"
    if blocker.get("task_id"):
        text += f", task {blocker['task_id']}"
    return text


def result_text(task: Mapping[str, Any]) -> str:
    state = task.get("state")
    if state == names.FINISHED:
        return "Success"
    if state == names.ERROR:
        error = task.get("error") or {}
        return f"Failed: {error.get('message', 'unknown error')}"
    if state == names.CANCELED:
        return "Canceled"
    return "Incomplete"


def start_text(task: Mapping[str, Any]) -> str:
    if task.get("started"):
        return str(task["started"])
    return "Starting" if task.get("state") == names.RUNNING else "Unstarted"


def task_fields(task: Mapping[str, Any]) -> list[tuple[str, Any]]:
    fields: list[tuple[str, Any]] = [
        ("Operations", operation_name(task)),
        ("Resources", resources_text(task)),
        ("State", state_text(task)),
    ]
    waiting = task.get("waiting_for") or []
    if waiting:
        fields.append(("Waiting For", "\n".join(blocker_text(b) for b in waiting)))
    fields += [
        ("Start Time", start_text(task)),
        ("Finish Time", task.get("finished") or "Incomplete"),
        ("Result", result_text(task)),
        ("Task Id", task.get("id")),
    ]
    return fields


def task_list(tasks: Sequence[Mapping[str, Any]], title: str = "Tasks") -> str:
    """Pulp v2.s task list: running first, then waiting in the order they will run."""
    if not tasks:
        return header(title) + "\nThere are no tasks to show.\n"
    # Formatted directly rather than through ``records``: a queue of thousands of tasks is
    # listed by scripts in a loop, and every label here is at most 11 characters wide.
    parts = [header(title)]
    pad = " " * 13
    for task in tasks:
        waiting = task.get("waiting_for") or []
        why = ""
        if waiting:
            why = "Waiting For: " + f"\n{pad}".join(blocker_text(b) for b in waiting) + "\n"
        parts.append(
            f"\nOperations:  {operation_name(task)}\n"
            f"Resources:   {resources_text(task)}\n"
            f"State:       {state_text(task)}\n"
            f"{why}"
            f"Start Time:  {start_text(task)}\n"
            f"Finish Time: {task.get('finished') or 'Incomplete'}\n"
            f"Result:      {result_text(task)}\n"
            f"Task Id:     {task.get('id')}\n"
        )
    return "".join(parts)


def task_details(task: Mapping[str, Any]) -> str:
    fields = task_fields(task)
    fields.insert(-1, ("Submitted", task.get("submitted")))
    fields.insert(-1, ("Submitted By", f"uid {task.get('uid')}"))
    if task.get("reason"):
        fields.insert(-1, ("Reason", task["reason"]))
    if task.get("parent"):
        fields.insert(-1, ("Parent Task", task["parent"]))
    if (task.get("attempts") or 0) > 1:
        fields.insert(-1, ("Attempts", task.get("attempts")))
    error = task.get("error")
    if error and error.get("detail") not in (None, {}, []):
        detail = error["detail"]
        fields.insert(-1, ("Error Detail", detail if isinstance(detail, Mapping) else str(detail)))
    result = task.get("result")
    if isinstance(result, Mapping) and result:
        fields.append(("Result Details", result))
    progress = task.get("progress")
    fields.append(("Progress", progress if progress else ""))
    return header("Task Details") + "\n" + block(records(fields))


def canceled(task: Mapping[str, Any]) -> str:
    if task.get("state") == names.CANCELED:
        return f"Task {task.get('id')} canceled.\n"
    return (
        wrap(
            f"Cancel requested for task {task.get('id')} ({operation_name(task)} on "
            f"{resources_text(task)}); it is asked to stop and ends canceled once it has."
        )
        + "\n"
    )


# -- submissions -------------------------------------------------------------------------


def submitted(what: str, answer: Mapping[str, Any], hint: str = REPO_TASKS_HINT) -> str:
    """The answer to a task-creating request: accepted, or postponed with its blockers;
    ``hint`` says where to follow it."""
    task = answer.get("task") or {}
    blockers = answer.get("waiting_for") or []
    if answer.get("verdict") != "postponed":
        return wrap(f"{what} accepted and started. {hint}") + f"\n\nTask Id:   {task.get('id')}\n"
    conflicts = [b for b in blockers if b.get("resource") is not None]
    busy = len(conflicts) < len(blockers)
    if conflicts:
        intro = f"{what} postponed due to another operation. {hint}"
    else:
        intro = f"{what} postponed because the server is busy. {hint}"
    out = wrap(intro) + "\n\n"
    for blocker in conflicts:
        out += block(blocker_record(blocker)) + "\n"
    if busy:
        out += wrap(BUSY_TEXT) + "\n\n"
    return out + f"Task Id:   {task.get('id')}\n"


def blocker_record(blocker: Mapping[str, Any], task_label: str = "Held By:") -> list[str]:
    """``Resource:``/``Operation:`` as Pulp v2 printed them, and the task that causes it."""
    lines = [f"Resource:  {resource_text(blocker['resource'])}"]
    if blocker.get("operation"):
        lines.append(f"Operation: {blocker['operation']}")
    if blocker.get("task_id"):
        lines.append(f"{task_label:<10} task {blocker['task_id']}")
    else:
        lines.append(f"Reason:    {blocker.get('reason')}")
    return lines


def rejected(data: Any) -> str:
    """A ``Conflict`` error: which queued operations make the request impossible."""
    conflicts = data.get("conflicts", []) if isinstance(data, Mapping) else []
    by_task = any(c.get("task_id") for c in conflicts)
    out = wrap(REJECTED_TEXT if by_task else IMPOSSIBLE_TEXT) + "\n"
    for conflict in conflicts:
        if conflict.get("resource") is not None:
            out += "\n" + block(blocker_record(conflict, "Queued:"))
    return out


def outcome(what: str, task: Mapping[str, Any]) -> str:
    """How a followed task ended (``--wait``)."""
    state = task.get("state")
    if state == names.FINISHED:
        out = f"{what} finished.\n"
        result = task.get("result")
        if isinstance(result, Mapping) and result:
            out += "\n" + block(tree(_counted(result), sort=False))
        return out
    if state == names.CANCELED:
        return f"{what} was canceled (task {task.get('id')}).\n"
    error = task.get("error") or {}
    out = wrap(f"{what} failed: {error.get('message', 'unknown error')}") + "\n"
    detail = error.get("detail")
    if isinstance(detail, Mapping) and detail:
        out += "\n" + block(tree(detail))
    elif detail:
        out += f"\n{detail}\n"
    return out + f"\nTask Id:   {task.get('id')}\n"


def _counted(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result whose counts per kind of unit (a rollback's ``added``, ``removed``) read
    ``1 package, 2 errata``."""
    return {
        key: (
            counts_text(value)
            if isinstance(value, Mapping) and value and set(value) <= set(names.UNIT_KINDS)
            else value
        )
        for key, value in result.items()
    }


def detached(task_id: str) -> str:
    return (
        f"Detached from task {task_id}; it goes on without this client.\n"
        f"Follow it:  coordctl tasks details --task-id {task_id} --wait\n"
        f"Cancel it:  coordctl tasks cancel --task-id {task_id}\n"
    )


# -- counts of units ---------------------------------------------------------------------

# The kinds of unit (``names.UNIT_KINDS``) as people count them: singular, plural.
KIND_NAMES = {
    "rpm": ("package", "packages"),
    "erratum": ("erratum", "errata"),
    "delta": ("delta RPM", "delta RPMs"),
    "file": ("tree file", "tree files"),
    "metadata": ("metadata file", "metadata files"),
}


def _kinds(counts: Mapping[str, Any]) -> list[str]:
    """The kinds of ``counts``: the known ones in their order, then any others."""
    return [*names.UNIT_KINDS, *sorted(k for k in counts if k not in names.UNIT_KINDS)]


def kind_counts(counts: Mapping[str, Any]) -> dict[str, Any]:
    """``{"rpm": 5, …}`` → ``{"Packages": 5, "Errata": 2, …}``, every known kind."""
    out: dict[str, Any] = {}
    for kind in _kinds(counts):
        plural = KIND_NAMES.get(kind, (kind, kind))[1]
        out[" ".join(word[:1].upper() + word[1:] for word in plural.split())] = counts.get(kind, 0)
    return out


def counts_text(counts: Mapping[str, Any], empty: str = "nothing") -> str:
    """``5 packages, 2 errata``: the kinds with units, or ``empty``."""
    parts = []
    for kind in _kinds(counts):
        n = counts.get(kind) or 0
        if n:
            singular, plural = KIND_NAMES.get(kind, (kind, kind))
            parts.append(f"{n} {singular if n == 1 else plural}")
    return ", ".join(parts) or empty


# -- server ------------------------------------------------------------------------------


def server_status(status: Mapping[str, Any], socket: str) -> str:
    tasks = status.get("tasks") or {}
    slots = status.get("slots") or {}
    caller = status.get("caller") or {}
    fields: list[tuple[str, Any]] = [
        ("Socket", socket),
        ("Uptime", duration(float(status.get("uptime_s") or 0))),
        ("Tasks", f"{tasks.get('running', 0)} running, {tasks.get('waiting', 0)} waiting"),
        (
            "History",
            f"{tasks.get('finished', 0)} finished, {tasks.get('error', 0)} failed, "
            f"{tasks.get('canceled', 0)} canceled",
        ),
        ("Heavy Slots", f"{slots.get('in_use', 0)} of {slots.get('total', 0)} in use"),
        ("Repositories", status.get("repositories", 0)),
        *_pool_line(status.get("content")),
        (
            "Your Access",
            f"{', '.join(caller.get('access') or ['none'])} (uid {caller.get('uid')})",
        ),
    ]
    if status.get("stopping"):
        fields.append(("Stopping", "yes: coordd is shutting down and takes no new tasks"))
    return f"coordd {status.get('version', '?')} is running.\n\n" + block(records(fields))


def _pool_line(content: Any) -> list[tuple[str, Any]]:
    """``6 files, 24.0 KiB; orphaned: 6 units, 4 files, 16.0 KiB``, if the status has it."""
    if not isinstance(content, Mapping):
        return []
    text = f"{content.get('files', 0)} files, {human_size(content.get('bytes') or 0)}"
    if content.get("orphan_units") or content.get("orphan_files"):
        text += (
            f"; orphaned: {content.get('orphan_units', 0)} units, "
            f"{content.get('orphan_files', 0)} files, "
            f"{human_size(content.get('orphan_bytes') or 0)}"
        )
    else:
        text += "; nothing orphaned"
    return [("Content", text)]


# -- schedules ---------------------------------------------------------------------------


def _schedule_state(schedule: Mapping[str, Any]) -> str:
    if schedule.get("enabled"):
        return "enabled"
    reason = schedule.get("disabled_reason")
    return f"disabled: {reason}" if reason else "disabled"


def _last_run(schedule: Mapping[str, Any]) -> str:
    fire = schedule.get("last_fire")
    if not isinstance(fire, Mapping):
        return "Never"
    return _fire_text(fire)


def _fire_text(fire: Mapping[str, Any]) -> str:
    text = f"{fire.get('at')} {fire.get('outcome')}"
    if fire.get("task_id"):
        text += f", task {fire['task_id']}"
        if fire.get("task_state"):
            text += f" {fire['task_state']}"
    if fire.get("detail"):
        text += f" ({fire['detail']})"
    return text


def schedule_fields(schedule: Mapping[str, Any]) -> list[tuple[str, Any]]:
    fields: list[tuple[str, Any]] = [
        ("Id", schedule.get("id")),
        ("Operation", schedule.get("operation")),
    ]
    if schedule.get("repo_id"):
        fields.append(("Repository", schedule["repo_id"]))
    fields += [
        ("Schedule", schedule.get("schedule")),
        ("State", _schedule_state(schedule)),
        ("Next Run", schedule.get("next_run") or "None"),
        ("Last Run", _last_run(schedule)),
    ]
    threshold = schedule.get("failure_threshold")
    failures = schedule.get("consecutive_failures") or 0
    fields.append(
        ("Failures", f"{failures} in a row" + (f" (disabled at {threshold})" if threshold else ""))
    )
    if schedule.get("remaining_runs") is not None:
        fields.append(("Remaining Runs", schedule["remaining_runs"]))
    if schedule.get("configured"):
        fields.append(("Set By", "the configuration ([content] orphan_cleanup_interval)"))
    return fields


def schedule_list(schedules: Sequence[Mapping[str, Any]]) -> str:
    if not schedules:
        return header("Schedules") + "\nThere are no schedules.\n"
    parts = [header("Schedules")]
    for schedule in schedules:
        parts.append("\n" + block(records(schedule_fields(schedule), sort=False)))
    return "".join(parts)


def schedule_made(schedule: Mapping[str, Any]) -> str:
    return header("Schedule Created") + "\n" + block(records(schedule_fields(schedule), sort=False))


def schedule_show(schedule: Mapping[str, Any], title: str = "Schedule") -> str:
    fields = schedule_fields(schedule)
    history = schedule.get("history")
    if history is not None:
        fields.append(("Runs", "\n".join(_fire_text(f) for f in history) or "None"))
    return header(title) + "\n" + block(records(fields, sort=False))
