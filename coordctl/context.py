"""What a coordctl command runs in, and how it speaks to coordd.

``Context`` says where the daemon is, where output goes and what the shell hooks in (a
one-shot command has no hooks). The command functions (``coordctl.commands`` and the
``*_commands`` modules beside it) call the daemon through what follows: ``query`` for one
answer, ``pages`` for a paged listing, ``submit`` for a task (printed as accepted or
postponed, or followed to its end with ``--wait``: ``wait_for``).

Start-up time matters here: every script pays it on every call. This module imports only
``argparse``, ``sys`` and coordctl's cheap leaves at the top; the client and the renderers
are imported inside the functions that need them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from coordctl import exitcodes
from coordctl.parser import PROG
from coordd.api import names
from coordd.api.address import client_socket_path

if TYPE_CHECKING:
    from types import ModuleType

    from coordctl.client import Client

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "Command",
    "Context",
    "answer_timeout",
    "detach",
    "ended_status",
    "given",
    "pages",
    "query",
    "report_end",
    "submit",
    "wait_for",
]


Command = Callable[["Context", argparse.Namespace], int]

TIMEOUT_ENV = "COORDCTL_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0


def answer_timeout() -> float:
    """Seconds to wait for a reply: ``$COORDCTL_TIMEOUT`` if it is a positive number, else 60."""
    import math
    import os

    try:
        value = float(os.environ.get(TIMEOUT_ENV, ""))
    except ValueError:
        return DEFAULT_TIMEOUT_S
    return value if math.isfinite(value) and value > 0 else DEFAULT_TIMEOUT_S


class Context:
    """Where the daemon is, where output goes, and the shell's hooks (one-shot: none)."""

    def __init__(
        self,
        socket: Path | None = None,
        json_output: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.socket = socket
        self.json = json_output
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        # The shell's "say when this task ends": called for tasks submitted without --wait
        # and for tasks whose following was interrupted; one-shot commands have none.
        self.watch: Callable[[str], None] | None = None

    def socket_path(self) -> Path:
        if self.socket is not None:
            return self.socket
        return client_socket_path()

    def connect(self, timeout: float | None = None) -> Client:
        """A connection whose replies are awaited ``timeout`` seconds (``answer_timeout``)."""
        from coordctl.client import Client

        limit = answer_timeout() if timeout is None else timeout
        return Client(self.socket_path(), timeout=limit).connect()

    def print(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def json_out(self, value: Any) -> None:
        import json

        self.print(json.dumps(value, indent=2, ensure_ascii=False) + "\n")

    def show(
        self, answer: Any, render: Callable[[ModuleType], str], *, repository: bool = False
    ) -> int:
        """Print the daemon's ``answer`` as JSON, or as ``render(coordctl.output)`` gives it;
        with ``repository``, ``render(coordctl.repo_output)``."""
        if self.json:
            self.json_out(answer)
        elif repository:
            from coordctl import repo_output

            self.print(render(repo_output))
        else:
            from coordctl import output

            self.print(render(output))
        return exitcodes.OK


def query(ctx: Context, method: str, params: dict[str, Any] | None = None) -> Any:
    with ctx.connect() as client:
        return client.call(method, params)


def pages(
    client: Client,
    method: str,
    params: dict[str, Any],
    follow: Callable[[dict[str, Any]], dict[str, Any]],
    limit: int | None,
) -> Iterator[dict[str, Any]]:
    """The answers of a paged ``method`` until ``limit`` items came (``None``: to the end)
    or ``next`` is null; ``follow(answer)`` gives the parameters that ask for the page
    after ``answer`` (its ``next`` as the cursor).

    Each page asks for what is still wanted, at most ``names.MAX_PAGE``; the last answer's
    ``next`` is where a later listing would go on.
    """
    left = limit
    while True:
        size = names.MAX_PAGE if left is None else min(left, names.MAX_PAGE)
        answer: dict[str, Any] = client.call(method, {**params, "limit": size})
        yield answer
        if left is not None:
            left -= size
        if answer.get("next") is None or left == 0:
            return
        params = {**params, **follow(answer)}


def given(params: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """``params`` with those of ``optional`` that were given (not ``None``)."""
    return {**params, **{key: value for key, value in optional.items() if value is not None}}


def submit(
    ctx: Context,
    args: argparse.Namespace,
    method: str,
    params: dict[str, Any],
    fds: Sequence[int] = (),
) -> int:
    """Submit a task; print accepted/postponed, or follow it with ``--wait`` (one done as it
    was accepted, a configuration change, is reported as it ended). ``fds``: descriptors
    passed with the request (and again if it is sent once more)."""
    from coordctl import output
    from coordctl.client import TimedOut

    what: str = args.what
    hint = output.REPO_TASKS_HINT if args.command_name.startswith("repo ") else output.TASKS_HINT
    # A fresh request id: if coordd is too slow to answer, the request is sent once more
    # with it, and coordd answers with the task the first one made rather than a second.
    params = {**params, "request_id": _new_request_id()}
    client = ctx.connect()
    try:
        try:
            answer = client.call(method, params, fds=fds)
        except TimedOut:
            client.close()
            ctx.err.write(f"{PROG}: coordd did not answer in time; asking once more\n")
            ctx.err.flush()
            client = ctx.connect()
            answer = client.call(method, params, fds=fds)
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
    if task["state"] in names.ENDED:  # done as it was accepted: nothing to follow
        client.close()
        return report_end(ctx, what, answer, task)
    try:
        if not args.wait:
            detach(ctx, task["id"])
            client.close()
            return ctx.show(answer, lambda output: output.submitted(what, answer, hint))
        if not ctx.json and answer.get("verdict") == "postponed":
            ctx.print(output.submitted(what, answer, hint) + "\n")
        final = wait_for(ctx, client, task)
    except KeyboardInterrupt:
        client.close()
        ctx.err.write("\n" + output.detached(task["id"]))
        detach(ctx, task["id"])
        return exitcodes.INTERRUPTED
    if final is None:
        return exitcodes.INTERRUPTED
    return report_end(ctx, what, answer, final)


def _new_request_id() -> str:
    import uuid

    return uuid.uuid4().hex


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
    if state == names.ERROR:
        return exitcodes.TASK_FAILED
    if state == names.CANCELED:
        return exitcodes.CANCELED
    return exitcodes.OK
