"""The interactive shell: ``coordctl`` on a terminal with no command, or ``coordctl shell``.

Each line is parsed by the one-shot parser and run by the same command functions
(``run_line``: ``coordctl.parser`` and ``coordctl.commands``); a mistake prints the usage
and the shell goes on. On top of that:

- completion of commands, options and option values from the argparse tree
  (``coordctl.completion``), plus repository and task ids fetched live from the daemon
  (cached for a moment, fetched in prompt_toolkit's completion thread);
- history in ``$XDG_STATE_HOME/coordd/coordctl_history`` (``~/.local/state/coordd/…``);
- a notice above the prompt when a task this shell submitted ends. A thread holds its own
  connection, subscribed to the events of those tasks only (a busy daemon does not flood an
  idle shell), and hands the notice to a prompt_toolkit ``StdoutProxy``, which prints it
  above the prompt while the prompt is shown (or directly while a command runs). A task
  followed to its end with ``--wait`` gets no notice: its end was printed in front of the
  user; one detached from with Ctrl-C gets one.

Commands run in the main thread with the prompt closed, so Ctrl-C interrupts them (``--wait``
detaches) and lands back at the prompt; Ctrl-C at the prompt clears the line; Ctrl-D,
``exit`` or ``quit`` leave.

Only this module imports prompt_toolkit, and only ``coordctl.cli``, to start the shell,
imports this module.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory
from prompt_toolkit.patch_stdout import StdoutProxy

from coordctl import exitcodes, output
from coordctl.client import Client
from coordctl.commands import Context, execute, report_usage
from coordctl.completion import Command, candidates, command_tree
from coordctl.parser import UsageError, build_parser
from coordd.api import names
from coordd.api.errors import CoorddError, NotFound

PROMPT = "coordctl> "
SHELL_WORDS = ("help", "exit", "quit")
ID_CACHE_S = 2.0
WATCH_POLL_S = 0.2  # how soon a newly watched task is subscribed to
HELP_TAIL = """
In the shell, type commands without 'coordctl': repo tasks list --repo-id demo
  help [COMMAND]   this help, or a command's
  exit, quit       leave (or Ctrl-D)
Tab completes commands, options, repository and task ids. Ctrl-C stops following a task
(--wait) without canceling it.
"""


def history_path() -> Path:
    """``$XDG_STATE_HOME/coordd/coordctl_history``, or under ``~/.local/state``."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "coordd" / "coordctl_history"


class LiveIds:
    """Repository and task ids from the daemon, cached for ``ID_CACHE_S``; [] if unreachable."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, list[str]]] = {}

    def __call__(self, kind: str) -> list[str]:
        with self._lock:
            cached = self._cache.get(kind)
            if cached is not None and time.monotonic() - cached[0] < ID_CACHE_S:
                return cached[1]
            try:
                ids = self._fetch(kind)
            except CoorddError:
                ids = []
            self._cache[kind] = (time.monotonic(), ids)
            return ids

    def _fetch(self, kind: str) -> list[str]:
        with self.ctx.connect(timeout=2.0) as client:
            if kind == "repo":
                return [r["id"] for r in client.call("repo.list")["repositories"]]
            tasks = client.call("task.list")["tasks"]
            ended = client.call("task.list", {"state": list(names.ENDED), "limit": 50})["tasks"]
            return [t["id"] for t in [*tasks, *ended]]


class ShellCompleter(Completer):
    """prompt_toolkit's side of ``coordctl.completion.candidates``."""

    def __init__(self, tree: Command, ids: LiveIds) -> None:
        self.tree = tree
        self.ids = ids

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        text = document.text_before_cursor
        words = text.split()
        current = words.pop() if words and not text[-1:].isspace() else ""
        for word in candidates(self.tree, words, current, self.ids, SHELL_WORDS):
            yield Completion(word, start_position=-len(current))


class Watcher:
    """Prints a notice when a task this shell submitted ends (see the module docstring)."""

    def __init__(self, ctx: Context, proxy: StdoutProxy) -> None:
        self.ctx = ctx
        self.proxy = proxy
        self.watched: set[str] = set()  # tasks whose end is still to be told
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coordctl-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def watch(self, task_id: str) -> None:
        """Say when ``task_id`` ends (a command left it running: no ``--wait``, or Ctrl-C)."""
        with self._lock:
            self.watched.add(task_id)

    def _run(self) -> None:
        while not self._stop.is_set():
            client: Client | None = None
            try:
                client = self.ctx.connect(timeout=10.0)
                subscribed: set[str] = set()  # on this connection
                while not self._stop.is_set():
                    with self._lock:
                        new = self.watched - subscribed
                    if new:
                        self._subscribe(client, sorted(new))
                        subscribed |= new
                    message = client.next_notification(WATCH_POLL_S)
                    if message is not None and message.get("method") == "task.changed":
                        self._changed(message.get("params", {}).get("task") or {})
            except CoorddError:
                self._stop.wait(1.0)  # the daemon is away: try again
            finally:
                if client is not None:
                    client.close()

    def _subscribe(self, client: Client, task_ids: list[str]) -> None:
        """Events of ``task_ids`` from now on; and those that ended before, told now."""
        client.call("events.subscribe", {"task_ids": task_ids})
        for task_id in task_ids:
            try:
                self._changed(client.call("task.get", {"task_id": task_id}))
            except NotFound:
                self._forget(task_id)  # purged from the history already

    def _changed(self, task: dict[str, Any]) -> None:
        if task.get("state") not in names.ENDED or not self._forget(str(task.get("id"))):
            return
        self.proxy.write(notice(task))
        self.proxy.flush()

    def _forget(self, task_id: str) -> bool:
        """Stop watching ``task_id``; whether it was watched (its end not yet told)."""
        with self._lock:
            if task_id not in self.watched:
                return False
            self.watched.discard(task_id)
            return True


def notice(task: dict[str, Any]) -> str:
    """``Task 1f2e… (sync demo) finished.`` and the like."""
    name = f"Task {task.get('id')} ({output.task_title(task)})"
    state = task.get("state")
    if state == names.FINISHED:
        return f"{name} finished.\n"
    if state == names.CANCELED:
        return f"{name} was canceled.\n"
    error = task.get("error") or {}
    return f"{name} failed: {error.get('message', 'unknown error')}\n"


def show_help(tree: Command, words: list[str], out: Any) -> None:
    node = tree
    for word in words:
        child = node.children.get(word)
        if child is None:
            out.write(f"no command {' '.join(words)!r}; type help for the list\n")
            return
        node = child
    out.write(node.parser.format_help())
    if node is tree:
        out.write(HELP_TAIL)


def run_shell(ctx: Context) -> int:
    """The read-eval-print loop; returns the exit status of the shell itself (0)."""
    parser = build_parser()
    tree = command_tree(parser)
    out = ctx.out
    path = history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        history: FileHistory | None = FileHistory(str(path))
    except OSError as exc:
        ctx.err.write(f"coordctl: no history ({path}: {exc.strerror})\n")
        history = None
    session: PromptSession[str] = PromptSession(
        history=history,
        completer=ShellCompleter(tree, LiveIds(ctx)),
        complete_while_typing=False,
        complete_in_thread=True,
    )
    greet(ctx)
    with StdoutProxy(raw=True) as proxy:
        watcher = Watcher(ctx, proxy)
        ctx.watch = watcher.watch
        watcher.start()
        try:
            loop(ctx, session, parser, tree, out)
        finally:
            watcher.stop()
    return exitcodes.OK


def greet(ctx: Context) -> None:
    try:
        with ctx.connect(timeout=5.0) as client:
            status = client.call("server.status")
        ctx.print(
            f"coordctl shell: coordd {status.get('version')} on {ctx.socket_path()}. "
            "Type help for commands, Ctrl-D to leave.\n"
        )
    except CoorddError as exc:
        ctx.err.write(f"coordctl: {exc.message}\n")
        ctx.err.write("The shell starts anyway; commands fail until the daemon answers.\n")


def loop(ctx: Context, session: PromptSession[str], parser: Any, tree: Command, out: Any) -> None:
    while True:
        try:
            line = session.prompt(PROMPT)
        except KeyboardInterrupt:
            continue
        except EOFError:
            out.write("\n")
            return
        try:
            words = shlex.split(line)
        except ValueError as exc:
            ctx.err.write(f"coordctl: {exc}\n")
            continue
        if not words:
            continue
        if words[0] in ("exit", "quit"):
            return
        if words[0] == "help":
            show_help(tree, words[1:], out)
            continue
        try:
            run_line(ctx, words, parser)
        except KeyboardInterrupt:
            ctx.err.write("\ninterrupted\n")
        except Exception as exc:
            ctx.err.write(f"coordctl: {type(exc).__name__}: {exc}\n")
        sys.stdout.flush()


def run_line(ctx: Context, argv: list[str], parser: argparse.ArgumentParser | None = None) -> int:
    """Parse and run one shell line with the one-shot parser; never raises ``SystemExit``."""
    parser = parser or build_parser()
    line_ctx = Context(ctx.socket, ctx.json, ctx.out, ctx.err)
    line_ctx.watch = ctx.watch
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return report_usage(line_ctx, exc)
    except SystemExit as exc:  # --help and --version print, then exit
        return exc.code if isinstance(exc.code, int) else exitcodes.OK
    if args.command_name == "shell":
        line_ctx.err.write("already in the shell\n")
        return exitcodes.USAGE
    if args.socket is not None:
        line_ctx.socket = args.socket
    line_ctx.json = args.json or ctx.json
    return execute(line_ctx, args)
