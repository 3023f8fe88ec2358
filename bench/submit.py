"""Durable submissions per second over the socket, against ``server.status`` in the same run.

16 concurrent clients create repositories with distinct ids (each a task that the
coordinator accepts and runs); every answer comes after the task's row was committed with
``synchronous=FULL``. In the same run, the same clients call ``server.status`` (no write at
all): the ratio shows what durability and coordination cost over bare dispatch. The CPU time
the daemon (with its database writer) spends per call of each kind is printed too: that is
where the ratio comes from.

Target: >= 2,000 durable submits/s and >= 70 % of the status rate.
Usage: python bench/submit.py [--quick] [--rounds N] [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.load import cpu_seconds, run_load_process
from tests.helpers.daemon import DaemonProcess

CLIENTS = 16


def status_request(client: int, n: int) -> dict[str, Any]:
    return {"method": "server.status"}


def submit_request(client: int, n: int) -> dict[str, Any]:
    # Each load process has its own pid, so ids stay distinct across rounds.
    return {"method": "repo.create", "params": {"repo_id": f"r{os.getpid()}-{client}-{n}"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under 40 s)")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    submits: list[float] = []
    statuses: list[float] = []
    p50s: list[float] = []
    p99s: list[float] = []
    submit_cpus: list[float] = []
    status_cpus: list[float] = []
    with tempfile.TemporaryDirectory(prefix="coordd-bench-") as tmp:
        daemon = DaemonProcess(Path(tmp) / "state", ["--log-level", "warning"])
        try:
            daemon.start()
            assert daemon.proc is not None
            pid = daemon.proc.pid
            for r in range(rounds):
                used = cpu_seconds(pid)
                status = run_load_process(daemon.socket, CLIENTS, seconds, status_request)
                used, status_cpu = cpu_seconds(pid), cpu_seconds(pid) - used
                submit = run_load_process(daemon.socket, CLIENTS, seconds, submit_request)
                submit_cpu = cpu_seconds(pid) - used
                if submit["errors"]:
                    raise SystemExit(f"{submit['errors']} submissions failed")
                statuses.append(status["rate"])
                submits.append(submit["rate"])
                p50s.append(submit["p50_ms"])
                p99s.append(submit["p99_ms"])
                status_cpus.append(status_cpu / status["calls"] * 1e6)
                submit_cpus.append(submit_cpu / submit["calls"] * 1e6)
                print(
                    f"round {r + 1}: submit {submit['rate']:.0f}/s "
                    f"(p50 {submit['p50_ms']:.2f} ms, p99 {submit['p99_ms']:.2f} ms), "
                    f"status {status['rate']:.0f}/s; daemon CPU per call: "
                    f"submit {submit_cpus[-1]:.0f} µs, status {status_cpus[-1]:.0f} µs",
                    flush=True,
                )
            integrity = daemon.call("server.status")
            assert integrity["tasks"]["error"] == 0, integrity
        finally:
            daemon.stop()
            daemon.cleanup()
    submit_rate = statistics.median(submits)
    status_rate = statistics.median(statuses)
    print(
        f"submits_per_s={submit_rate:.0f} status_per_s={status_rate:.0f} "
        f"ratio={submit_rate / status_rate:.2f} p50_ms={statistics.median(p50s):.2f} "
        f"p99_ms={statistics.median(p99s):.2f} submit_cpu_us={statistics.median(submit_cpus):.0f} "
        f"status_cpu_us={statistics.median(status_cpus):.0f}"
    )


if __name__ == "__main__":
    main()
