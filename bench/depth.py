"""Submit latency with a deep queue, divided by the latency with a shallow one, same run.

Both daemons hold 1,000 resources with external locks; the deep one also has 100,000 tasks
waiting behind them (100 per resource). One client then submits lock requests on those same
resources, one at a time: each is postponed behind the line and answered once stored
durably. A decision looks only at the lines of the task's own resources, so the ratio of
the median latencies should stay near 1.

Target: latency_ratio <= 1.3.
Usage: python bench/depth.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backlog import build

RESOURCES = 1000


def measure(socket_path: Path, submits: int) -> list[float]:
    from coordctl.client import Client

    latencies = []
    with Client(socket_path) as client:
        for n in range(submits):
            resource = {"type": "bench", "id": f"r{n % RESOURCES}", "kind": "update"}
            started = time.perf_counter()
            result = client.call("lock.acquire", {"resources": [resource], "command": ["true"]})
            latencies.append(time.perf_counter() - started)
            assert result["verdict"] == "postponed", result
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under 40 s)")
    parser.add_argument("--waiting", type=int, default=None, help="waiting tasks when deep")
    args = parser.parse_args()
    waiting = args.waiting or (20_000 if args.quick else 100_000)
    submits = 300 if args.quick else 2000
    rounds = 3
    medians: dict[str, list[float]] = {"shallow": [], "deep": []}
    with tempfile.TemporaryDirectory(prefix="coordd-bench-") as tmp:
        daemons = {
            "shallow": build(Path(tmp) / "shallow", RESOURCES, 0),
            "deep": build(Path(tmp) / "deep", RESOURCES, waiting // RESOURCES),
        }
        try:
            for daemon in daemons.values():
                daemon.start()
            for r in range(rounds):
                for name, daemon in daemons.items():
                    latencies = measure(daemon.socket, submits)
                    medians[name].append(statistics.median(latencies))
                print(
                    f"round {r + 1}: shallow p50 {medians['shallow'][-1] * 1000:.3f} ms, "
                    f"deep p50 {medians['deep'][-1] * 1000:.3f} ms",
                    flush=True,
                )
        finally:
            for daemon in daemons.values():
                daemon.stop()
                daemon.cleanup()
    shallow = statistics.median(medians["shallow"])
    deep = statistics.median(medians["deep"])
    print(
        f"waiting={waiting} shallow_ms={shallow * 1000:.3f} deep_ms={deep * 1000:.3f} "
        f"latency_ratio={deep / shallow:.2f}"
    )


if __name__ == "__main__":
    main()
