"""Restart over a large backlog: seconds until the daemon answers, and its peak memory.

The state holds 1,000 held external locks and 100,000 tasks waiting behind them. The
daemon is started over it; ``ready_s`` is the time from exec to the first ``server.status``
answer, ``rss_mb`` the peak resident size (VmHWM) of the daemon and its database writer
process at that point. For comparison the same is measured over an empty state in the same
run.

Targets: ready_s <= 3 and rss_mb <= 300.
Usage: python bench/recovery.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backlog import build, peak_rss_mb

RESOURCES = 1000


def start_timed(daemon) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    daemon.start(wait=False)
    daemon.wait_ready(timeout=120)
    ready = time.perf_counter() - started
    rss = peak_rss_mb(daemon.proc.pid)
    status = daemon.call("server.status")
    daemon.stop()
    return ready, rss, status["tasks"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under 40 s)")
    args = parser.parse_args()
    waiting = 30_000 if args.quick else 100_000
    rounds = 3
    results: dict[str, list[tuple[float, float]]] = {"empty": [], "backlog": []}
    with tempfile.TemporaryDirectory(prefix="coordd-bench-") as tmp:
        daemons = {
            "empty": build(Path(tmp) / "empty", 0, 0),
            "backlog": build(Path(tmp) / "backlog", RESOURCES, waiting // RESOURCES),
        }
        try:
            for r in range(rounds):
                for name, daemon in daemons.items():
                    ready, rss, counts = start_timed(daemon)
                    results[name].append((ready, rss))
                    print(
                        f"round {r + 1} {name}: ready in {ready:.2f} s, peak RSS {rss:.0f} MB, "
                        f"tasks {counts}",
                        flush=True,
                    )
        finally:
            for daemon in daemons.values():
                daemon.cleanup()
    ready_s = statistics.median(r for r, _ in results["backlog"])
    rss_mb = statistics.median(m for _, m in results["backlog"])
    empty_s = statistics.median(r for r, _ in results["empty"])
    empty_mb = statistics.median(m for _, m in results["empty"])
    print(
        f"waiting={waiting} empty_ready_s={empty_s:.2f} empty_rss_mb={empty_mb:.0f} "
        f"ready_s={ready_s:.2f} rss_mb={rss_mb:.0f}"
    )


if __name__ == "__main__":
    main()
