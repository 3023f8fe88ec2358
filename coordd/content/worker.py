"""CPU-heavy steps in a worker process, so they never hold the daemon's event loop or GIL.

Parsing 270 MB of metadata or compressing a publication's repodata takes seconds of CPU;
in a thread of the daemon it would hold the interpreter lock for most of them. So such a
step runs as ``python -m <module>``: ``run`` sends the step's arguments as one JSON document
on its stdin, reads JSON lines from its stdout (``{"progress": …}`` as it goes, then one
``{"result": …}`` or ``{"error": …, "kind": …}``), and kills it if the task is cancelled.
The module's ``main`` calls ``serve`` with the function that does the work.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import Any

import anyio
from anyio.streams.text import TextReceiveStream

__all__ = ["WorkerError", "run", "run_all", "serve"]

log = logging.getLogger("coordd.worker")

#: The kinds of failure a worker reports, which the caller turns into its own errors.
METADATA, FAILED, INTERNAL = "metadata", "failed", "internal"

Emit = Callable[[dict[str, Any]], None]

_PARENT = "COORDD_WORKER_PARENT"  # the pid of the daemon, which the worker dies with
#: How much a worker yields the CPU: at 10, the kernel gives the daemon and its database
#: writer (at 0) about nine times a worker's share when they compete, so a request waits
#: little for a core while two workers parse or compress. Set by the daemon as soon as the
#: worker exists, so its imports already run at it.
NICENESS = 10
_PR_SET_PDEATHSIG = 1


class WorkerError(Exception):
    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


async def run(module: str, args: dict[str, Any], on_progress: Emit | None = None) -> dict[str, Any]:
    """Run ``python -m module`` with ``args``; return its result, or raise ``WorkerError``."""
    process = await anyio.open_process(
        [sys.executable, "-m", module],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", _PARENT: str(os.getpid())},
    )
    with contextlib.suppress(OSError):  # before its imports take their CPU, all but always
        os.setpriority(os.PRIO_PROCESS, process.pid, NICENESS)
    result: dict[str, Any] | None = None
    error: WorkerError | None = None
    stderr: list[str] = []

    async def read_stderr() -> None:
        assert process.stderr is not None
        async for chunk in TextReceiveStream(process.stderr, errors="replace"):
            if sum(map(len, stderr)) < 65536:
                stderr.append(chunk)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_stderr)
            assert process.stdin is not None
            assert process.stdout is not None
            await process.stdin.send(json.dumps(args).encode())
            await process.stdin.aclose()
            buffer = ""
            async for chunk in TextReceiveStream(process.stdout, errors="replace"):
                buffer += chunk
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    message = json.loads(line) if line.strip() else {}
                    if "progress" in message and on_progress is not None:
                        on_progress(message["progress"])
                    elif "result" in message:
                        result = message["result"]
                    elif "error" in message:
                        error = WorkerError(message["error"], message.get("kind", INTERNAL))
            await process.wait()
    except BaseException:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await process.aclose()
    if error is not None:
        if error.kind == INTERNAL:
            log.error("%s failed: %s\n%s", module, error.message, "".join(stderr).rstrip())
        raise error
    if result is None:
        text = "".join(stderr).strip().splitlines()
        raise WorkerError(
            f"{module} exited with status {process.returncode}" + (f": {text[-1]}" if text else ""),
            INTERNAL,
        )
    return result


async def run_all(
    module: str, jobs: list[dict[str, Any]], on_progress: Emit | None = None
) -> list[dict[str, Any]]:
    """``run`` each of ``jobs`` at once; their results in order. The first failure cancels
    the others and is raised."""
    results: list[dict[str, Any]] = [{} for _ in jobs]
    failures: list[WorkerError] = []

    async def one(n: int, scope: anyio.CancelScope) -> None:
        try:
            results[n] = await run(module, jobs[n], on_progress)
        except WorkerError as exc:
            failures.append(exc)
            scope.cancel()

    async with anyio.create_task_group() as tg:
        for n in range(len(jobs)):
            tg.start_soon(one, n, tg.cancel_scope)
    if failures:
        raise failures[0]
    return results


def _die_with_parent(parent: int) -> None:
    """Ask the kernel to kill this process when the daemon dies (kill -9 included): an
    orphaned worker would go on writing units, or swap a publication, behind the back of
    the daemon that restarts and reruns the task."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the daemon died before the request took effect
        os._exit(1)


def serve(work: Callable[[dict[str, Any], Emit], dict[str, Any]], errors: dict[type, str]) -> int:
    """The worker side: read the arguments, run ``work``, write its result or error.

    ``errors`` maps exception classes to the kind reported for them; anything else is
    reported as internal, with its traceback on stderr.
    """
    _die_with_parent(int(os.environ.get(_PARENT, "0")))
    out = sys.stdout

    def emit(progress: dict[str, Any]) -> None:
        out.write(json.dumps({"progress": progress}) + "\n")
        out.flush()

    try:
        args = json.load(sys.stdin)
        result = work(args, emit)
    except Exception as exc:
        for cls, kind in errors.items():
            if isinstance(exc, cls):
                out.write(json.dumps({"error": str(exc), "kind": kind}) + "\n")
                return 0
        traceback.print_exc()
        out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}", "kind": INTERNAL}) + "\n")
        return 1
    out.write(json.dumps({"result": result}) + "\n")
    out.flush()
    return 0
