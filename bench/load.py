"""Load generation for the benchmarks: many JSON-RPC clients on one asyncio loop.

The load runs in its own process (``run_load_process``) so the daemon's two cores are shared
the same way in every run, and so the measuring loop never shares a GIL with the daemon.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MakeRequest = Callable[[int, int], dict[str, Any]]  # (client, n) -> {"method", "params"}


async def _client(
    socket_path: str, index: int, make: MakeRequest, stop_at: float, latencies: list[float]
) -> int:
    reader, writer = await asyncio.open_unix_connection(socket_path, limit=1 << 22)
    n = 0
    errors = 0
    try:
        while time.perf_counter() < stop_at:
            call = make(index, n)
            message = {"jsonrpc": "2.0", "id": n, **call}
            started = time.perf_counter()
            writer.write(json.dumps(message).encode() + b"\n")
            while True:
                line = await reader.readline()
                reply = json.loads(line)
                if reply.get("id") == n:
                    break  # skip notifications (a granted lock, say)
            latencies.append(time.perf_counter() - started)
            if "error" in reply:
                errors += 1
                if errors == 1:
                    print(f"error reply: {reply['error']}", file=sys.stderr)
            n += 1
    finally:
        writer.close()
    return errors


async def run_load(
    socket_path: str, clients: int, seconds: float, make: MakeRequest
) -> dict[str, float]:
    latencies: list[float] = []
    started = time.perf_counter()
    stop_at = started + seconds
    errors = await asyncio.gather(
        *(_client(socket_path, i, make, stop_at, latencies) for i in range(clients))
    )
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "calls": len(ordered),
        "errors": sum(errors),
        "rate": len(ordered) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000 if ordered else 0.0,
    }


def _worker(socket_path: str, clients: int, seconds: float, make: MakeRequest, out: Any) -> None:
    out.put(asyncio.run(run_load(socket_path, clients, seconds, make)))


def run_load_process(
    socket_path: str | Path, clients: int, seconds: float, make: MakeRequest
) -> dict[str, float]:
    """``run_load`` in a child process; ``make`` must be a module-level function."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(str(socket_path), clients, seconds, make, queue))
    proc.start()
    result: dict[str, float] = queue.get(timeout=seconds + 120)
    proc.join()
    return result


def with_children(pid: int) -> list[int]:
    """Process ``pid`` and its children (the daemon and its database writer)."""
    pids = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        pids += [int(child) for child in children.read_text().split()]
    return pids


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) used so far by process ``pid`` and its children."""
    total = 0
    for each in with_children(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")
