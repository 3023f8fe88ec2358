"""A well-behaved client's latency while hostile clients attack the daemon.

Two attacks, each against a real coordd on a real socket:

- ``unread``: 48 connections pipeline 10,000 ``repo.list`` each (80 KB replies) and never
  read a reply. Meanwhile a probe sends ``server.status`` on one connection every 10 ms, open
  loop (each latency runs from the moment the request was due, so a stalled daemon cannot
  hide its stall by delaying the probe), and opens a fresh connection for one call every
  50 ms. The same probe runs without the attack first, in the same run: ``baseline_*``.
- ``emfile``: the daemon's open-file limit is lowered under it to four above what it has
  open, and 40 connections flood it until ``accept()`` fails with EMFILE. During the
  episode, ``emfile_held_ms`` is a call on a connection opened before it, and
  ``emfile_new_ms`` how long a new client waits for any answer (a result or a refusal;
  capped at 2,000 ms). Then the flood hangs up: ``emfile_recovery_ms`` runs from there to the
  first ``server.status`` answered on a new connection.

The daemon lets one uid have 200 connections here, so that the attackers and the probe,
all root, fit. Figures are medians over the rounds. Target: ``unread_p99_ms`` < 100 and
``emfile_recovery_ms`` < 100.
Usage: python bench/hostile.py [--quick] [--rounds N] [--only unread|emfile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.daemon import DaemonProcess, wait_for

ATTACKERS = 48
PIPELINED = 10_000
ATTACK_S = 7.0  # within the daemon's write deadline (10 s): attackers stay connected
PROBE_EVERY_S = 0.010
FRESH_EVERY_S = 0.050
FLOOD = 40
NEW_CLIENT_CAP_S = 2.0


def frame(method: str, request_id: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "method": method, "id": request_id}).encode() + b"\n"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * fraction) - 1)]


# -- the probe: a well-behaved client, in its own process ------------------------------------


async def _persistent(path: str, seconds: float) -> list[float]:
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
    due: dict[int, float] = {}
    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def send() -> None:
        n = 0
        while (at := start + n * PROBE_EVERY_S) < start + seconds:
            await asyncio.sleep(max(0.0, at - loop.time()))
            due[n] = at
            writer.write(frame("server.status", n))
            n += 1

    async def receive() -> None:
        while due or loop.time() < start + seconds:
            line = await reader.readline()
            if not line:
                return
            reply = json.loads(line)
            latencies.append(loop.time() - due.pop(reply["id"]))

    sender = asyncio.create_task(send())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(receive(), seconds + 10)
    await sender
    end = loop.time()
    latencies += [end - at for at in due.values()]  # never answered: as late as the end
    writer.close()
    return latencies


async def _fresh(path: str, seconds: float) -> list[float]:
    """Latencies of calls on fresh connections; a refused or unanswered one counts as
    ``seconds`` late."""
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(at: float) -> float:
        await asyncio.sleep(max(0.0, at - loop.time()))
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(frame("server.status", "fresh"))
            line = await asyncio.wait_for(reader.readline(), seconds + 10)
        except TimeoutError:
            line = b""
        finally:
            writer.close()
        if not line or "result" not in json.loads(line):
            return seconds
        return loop.time() - at

    count = int(seconds / FRESH_EVERY_S)
    return list(await asyncio.gather(*(one(start + i * FRESH_EVERY_S) for i in range(count))))


def _probe(path: str, seconds: float, out: Any) -> None:
    async def both() -> tuple[list[float], list[float]]:
        return await asyncio.gather(_persistent(path, seconds), _fresh(path, seconds))

    out.put(asyncio.run(both()))


def _attack(path: str, seconds: float, out: Any) -> None:
    data = b"".join(frame("repo.list", i) for i in range(PIPELINED))
    socks = []
    for _ in range(ATTACKERS):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.setblocking(False)
        socks.append(sock)
    sent = dict.fromkeys(socks, 0)
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        pending = [sock for sock in socks if sent[sock] < len(data)]
        _, writable, _ = select.select([], pending, [], 0.05)
        for sock in writable:
            with contextlib.suppress(BlockingIOError, ConnectionError):
                sent[sock] += sock.send(data[sent[sock] : sent[sock] + 65536])
    out.put(sum(sent.values()))
    for sock in socks:
        sock.close()


def probe_during(path: Path, seconds: float, attack: bool) -> tuple[list[float], list[float]]:
    ctx = multiprocessing.get_context("fork")
    probe_out, attack_out = ctx.Queue(), ctx.Queue()
    probe = ctx.Process(target=_probe, args=(str(path), seconds, probe_out))
    attacker = ctx.Process(target=_attack, args=(str(path), seconds, attack_out))
    if attack:
        attacker.start()
    probe.start()
    persistent, fresh = probe_out.get(timeout=seconds + 60)
    probe.join()
    if attack:
        sent = attack_out.get(timeout=60)
        attacker.join()
        if sent >= ATTACKERS * PIPELINED * len(frame("repo.list", PIPELINED)):
            raise SystemExit("the daemon read every request: no backpressure")
    return persistent, fresh


def settled(daemon: DaemonProcess) -> bool:
    assert daemon.proc is not None
    return len(os.listdir(f"/proc/{daemon.proc.pid}/fd")) < 40


def unread(rounds: int, seconds: float) -> dict[str, float]:
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="coordd-bench-") as tmp:
        daemon = DaemonProcess(Path(tmp) / "state", ["--log-level", "warning"])
        try:
            # 48 attackers and the probe's connections are more than one uid's default share.
            daemon.config_file().write_text("[limits]\nmax_connections_per_user = 200\n")
            daemon.start()
            for i in range(200):
                daemon.call("repo.create", repo_id=f"big-{i:03d}", description="d" * 200)
            for r in range(rounds):
                for name, attack in (("baseline", False), ("unread", True)):
                    persistent, fresh = probe_during(daemon.socket, seconds, attack)
                    figures = {
                        f"{name}_p50_ms": statistics.median(persistent) * 1000,
                        f"{name}_p99_ms": percentile(persistent, 0.99) * 1000,
                        f"{name}_max_ms": max(persistent) * 1000,
                        f"{name}_fresh_p99_ms": percentile(fresh, 0.99) * 1000,
                    }
                    for key, value in figures.items():
                        runs.setdefault(key, []).append(value)
                    wait_for(lambda: settled(daemon), "the attackers' connections to close")
                print(
                    f"round {r + 1}: during the attack p99 {runs['unread_p99_ms'][-1]:.1f} ms, "
                    f"max {runs['unread_max_ms'][-1]:.1f} ms, fresh connections p99 "
                    f"{runs['unread_fresh_p99_ms'][-1]:.1f} ms (without: p99 "
                    f"{runs['baseline_p99_ms'][-1]:.1f} ms)",
                    flush=True,
                )
        finally:
            daemon.stop()
            daemon.cleanup()
    return {key: statistics.median(values) for key, values in runs.items()}


# -- descriptors ---------------------------------------------------------------------------


def status_on(sock: socket.socket, timeout: float) -> dict[str, Any] | None:
    """Send ``server.status`` and read one message; None on timeout or end of stream."""
    sock.settimeout(timeout)
    data = b""
    try:
        sock.sendall(frame("server.status", "status"))
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
    except (TimeoutError, ConnectionError):
        return None
    message: dict[str, Any] = json.loads(data)
    return message


def new_client(path: Path, timeout: float) -> tuple[float, dict[str, Any] | None]:
    started = time.perf_counter()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        reply = status_on(sock, timeout)
    return time.perf_counter() - started, reply


def emfile_round(state_dir: Path) -> dict[str, float]:
    """One episode against a fresh daemon (its limit, once lowered, cannot be raised again
    without privileges a container may lack)."""
    daemon = DaemonProcess(state_dir, ["--log-level", "warning"])
    try:
        daemon.start()
        assert daemon.proc is not None
        pid = daemon.proc.pid
        held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        held.connect(str(daemon.socket))
        assert status_on(held, 5.0) is not None
        open_now = len(os.listdir(f"/proc/{pid}/fd"))
        lowered = f"--nofile={open_now + 4}:{open_now + 4}"
        subprocess.run(["prlimit", f"--pid={pid}", lowered], check=True)
        flood = []
        for _ in range(FLOOD):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(daemon.socket))
            flood.append(sock)
        wait_for(
            lambda: "cannot accept connections" in daemon.log_text(),
            "the daemon to run out of descriptors",
        )
        time.sleep(0.5)
        figures = {}
        started = time.perf_counter()
        assert status_on(held, 5.0) is not None
        figures["emfile_held_ms"] = (time.perf_counter() - started) * 1000
        took, reply = new_client(daemon.socket, NEW_CLIENT_CAP_S)
        figures["emfile_new_ms"] = took * 1000
        figures["emfile_new_refused"] = float(reply is not None and "error" in reply)
        for sock in flood:
            sock.close()
        gone = time.perf_counter()
        while True:
            _, reply = new_client(daemon.socket, 5.0)
            if reply is not None and "result" in reply:
                break
        figures["emfile_recovery_ms"] = (time.perf_counter() - gone) * 1000
        held.close()
        assert daemon.proc.poll() is None, "the daemon exited"
        return figures
    finally:
        daemon.stop()
        daemon.cleanup()


def emfile(rounds: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="coordd-bench-") as tmp:
        for r in range(rounds):
            figures = emfile_round(Path(tmp) / f"state{r}")
            for key, value in figures.items():
                runs.setdefault(key, []).append(value)
            print(
                f"round {r + 1}: held connection {figures['emfile_held_ms']:.1f} ms, "
                f"new client answered in {figures['emfile_new_ms']:.1f} ms "
                f"({'refused' if figures['emfile_new_refused'] else 'not refused'}), "
                f"served {figures['emfile_recovery_ms']:.1f} ms after the flood",
                flush=True,
            )
    return {key: statistics.median(values) for key, values in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (under a minute)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--only", choices=("unread", "emfile"), default=None)
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    figures: dict[str, float] = {}
    if args.only in (None, "unread"):
        figures.update(unread(rounds, ATTACK_S))
    if args.only in (None, "emfile"):
        figures.update(emfile(rounds))
    print(" ".join(f"{key}={value:.2f}" for key, value in figures.items()))


if __name__ == "__main__":
    main()
