"""How long a one-shot coordctl command takes, against ``python3 -c pass`` in the same run.

Starts a real coordd in a temporary directory, queues 1,000 tasks (one external lock holds
``repository bench`` for update; 999 configuration updates wait behind it), then times, in
interleaved rounds so that machine load affects all three alike:

- ``python -c pass``                       the floor: the interpreter's own start-up
- ``coordctl server status``               the smallest command
- ``coordctl tasks list``                  a large answer: 1,000 tasks rendered as text

Each command runs with its output discarded, after a warm-up run, with bytecode caching on
(in a private ``PYTHONPYCACHEPREFIX``): an installed coordctl has its ``.pyc`` files, even
when the environment running the benchmark says ``PYTHONDONTWRITEBYTECODE``.

Prints the medians, and as its last line ``status_ms=… list_ms=… python_ms=… ratio=…``
(ratio: the slower coordctl command over python). Targets: each command ≤ 100 ms and the
ratio ≤ 4.

    python bench/cli.py            # 40 rounds
    python bench/cli.py --quick    # 12 rounds, under 40 s
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.daemon import DaemonProcess  # noqa: E402 - after the path is set

QUEUED = 1000


def queue_tasks(daemon: DaemonProcess) -> object:
    """Hold ``repository bench`` and queue ``QUEUED - 1`` updates behind the lock."""
    with daemon.client() as client:
        created = client.call("repo.create", {"repo_id": "bench"})
        client.call("task.wait", {"task_id": created["task"]["id"]})
    holder = daemon.client(timeout=60)
    answer = holder.call(
        "lock.acquire",
        {"resources": [{"type": "repository", "id": "bench", "kind": "update"}], "command": ["b"]},
    )
    task_id = answer["task"]["id"]
    while True:
        note = holder.next_notification(10.0)
        if note is None:
            raise RuntimeError("the lock was not granted")
        if note["method"] == "lock.granted" and note["params"]["task_id"] == task_id:
            break
    with daemon.client(timeout=60) as client:
        for i in range(QUEUED - 1):
            client.call("repo.update", {"repo_id": "bench", "display_name": f"update {i}"})
        count = len(client.call("task.list", {"limit": 10_000})["tasks"])
    if count != QUEUED:
        raise RuntimeError(f"expected {QUEUED} queued tasks, found {count}")
    return holder


def time_once(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{command} failed: {result.stderr.decode()[-2000:]}")
    return elapsed * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (under 40 s)")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    args = parser.parse_args()
    rounds = args.rounds or (12 if args.quick else 40)

    with tempfile.TemporaryDirectory(prefix="coordd-bench-") as tmp:
        daemon = DaemonProcess(Path(tmp) / "state")
        try:
            daemon.start()
            began = time.perf_counter()
            holder = queue_tasks(daemon)
            print(f"queued {QUEUED} tasks in {time.perf_counter() - began:.1f} s")
            env = {k: v for k, v in daemon.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
            env["PYTHONPATH"] = str(ROOT)
            coordctl = [sys.executable, "-m", "coordctl", "--socket", str(daemon.socket)]
            commands = {
                "python": [sys.executable, "-c", "pass"],
                "status": [*coordctl, "server", "status"],
                "list": [*coordctl, "tasks", "list"],
            }
            for command in commands.values():  # warm-up: write the bytecode caches
                time_once(command, env)
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(rounds):
                for name, command in commands.items():
                    times[name].append(time_once(command, env))
            holder.close()  # type: ignore[attr-defined]
        finally:
            daemon.cleanup()

    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{rounds} rounds, median (min-max) wall time per run:")
    labels = {
        "python": "python -c pass",
        "status": "coordctl server status",
        "list": f"coordctl tasks list ({QUEUED} tasks)",
    }
    for name, values in times.items():
        print(
            f"  {labels[name]:<36} {medians[name]:7.1f} ms  ({min(values):.1f}-{max(values):.1f})"
        )
    ratio = max(medians["status"], medians["list"]) / medians["python"]
    print(
        f"status_ms={medians['status']:.1f} list_ms={medians['list']:.1f} "
        f"python_ms={medians['python']:.1f} ratio={ratio:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
