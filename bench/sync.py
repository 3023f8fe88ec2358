"""Benchmark the yum importer against the C limit and dnf, on a feed nginx serves.

A feed of 3,000 synthetic packages of 64 KiB each (zst metadata, errata) is served by
Debian's nginx on 127.0.0.1 (``bench/nginx.py``; a Python server takes as much CPU as the
client and hides the differences). Measured, as medians over repeats:

- ``full_s``/``cpu_s``: a full sync into an empty repository (wall, and CPU seconds of this
  process, worker threads included);
- ``resync_s``: a second sync of the unchanged feed;
- ``curl_s``: the same package files fetched by ``curl --parallel`` at the same parallelism,
  each written to a file (the C limit: no verification, no metadata);
- ``dnf_s``: ``dnf reposync`` of the same feed with the same parallelism (if dnf and its
  reposync plugin, Debian's ``dnf-plugins-core``, are installed);
- ``status_p99_ms``: the same sync run as a task of a real coordd while another client
  calls ``server.status`` back to back: the 99th percentile of its latency.

Also printed, outside the last line: the live progress report's overhead (a full sync with a
live ``Progress`` against one whose updates do nothing, CPU seconds of adjacent pairs), and
with ``--curve`` the full sync's wall and CPU at each parallelism beside curl's.

What each contender writes stays until the end of the run: on ext4, creating files soon
after many were deleted costs the kernel a scan of the recently freed inodes (measured: 3,000
files created in 0.14 s of CPU in a quiet directory, 1.4-2.0 s just after another 3,000 were
deleted), which would charge each contender for the one before it. The in-process syncs run
on uvloop, as the daemon does.

The last line holds the figures as ``key=value`` pairs. Targets: ``ratio_curl`` ≤ 1.5 (aim
1.2), ``ratio_dnf`` ≤ 0.5, ``resync_ratio`` ≤ 0.05, ``status_p99_ms`` < 50.

Run from the repository root: ``python3 bench/sync.py [--quick] [--repeat N] [--curve]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio

from bench import nginx
from coordd.content.store import ContentStore
from coordd.engine.progress import Progress
from coordd.repo.yum import sync as importer
from coordd.repo.yum.options import ImporterOptions
from tests.helpers.daemon import DaemonProcess, wait_for
from tests.helpers.feeds import Pkg, build_feed

PARALLEL = 8
DAEMON_LOOP = {"use_uvloop": True}  # the event loop the daemon runs on


class CountingProgress(Progress):
    """A live report that counts how often it is written to."""

    __slots__ = ("writes",)

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def set(self, *path: str, **values: Any) -> None:
        self.writes += 1
        super().set(*path, **values)

    def add(self, *path: str, **deltas: int) -> None:
        self.writes += 1
        super().add(*path, **deltas)

    def touch(self) -> None:
        self.writes += 1
        super().touch()


async def sync(state: Path, options: ImporterOptions, progress: Progress) -> dict[str, Any]:
    """A sync into the content store at ``state`` (its own pool: removing the directory
    makes the next sync a full one)."""
    store = ContentStore(state)
    store.open()
    return await importer.sync(store, "bench", options, progress)


def update_cost() -> float:
    """Seconds for one progress write as the importer makes it per chunk."""
    progress = Progress()
    progress.set("importer", content={"size_left": 0, "details": {"rpm": {"size_left": 0}}})
    content = progress.node("importer", "content")
    kind = content["details"]["rpm"]

    def write() -> None:
        content["size_left"] -= 1
        kind["size_left"] -= 1
        progress.touch()

    n = 200_000
    start = time.perf_counter()
    for _ in range(n):
        write()
    return (time.perf_counter() - start) / n


class NullProgress(Progress):
    """A report whose updates are dropped: the importer still writes its counters into
    plain dicts (it holds references to them), but nothing is versioned or observed."""

    def set(self, *path: str, **values: Any) -> None:
        self.node(*path).update(values)

    def add(self, *path: str, **deltas: int) -> None:
        pass

    def touch(self) -> None:
        pass


def make_feed(root: Path, count: int, size: int) -> Any:
    packages = [Pkg(f"pkg{i:05d}", f"1.{i % 7}", "1", size=size) for i in range(count)]
    return build_feed(root, packages, compression="zst", errata=True)


def settle() -> None:
    """Write back dirty pages so one measurement does not pay for the last one's writes."""
    os.sync()
    time.sleep(0.2)


def timed(fn: Callable[[], Coroutine[Any, Any, Any]]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = anyio.run(fn, backend_options=DAEMON_LOOP)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def dnf_reposync(url: str, work: Path) -> float | None:
    dnf = shutil.which("dnf")
    if dnf is None:
        return None
    args = [
        dnf,
        "reposync",
        "-q",
        f"--repofrompath=bench,{url}",
        "--repo=bench",
        "--setopt=bench.gpgcheck=0",
        "--setopt=reposdir=/nonexistent",
        f"--setopt=cachedir={work / 'cache'}",
        f"--setopt=max_parallel_downloads={PARALLEL}",
        "--releasever=1",
        f"--download-path={work / 'out'}",
        "--norepopath",
    ]
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        print(f"dnf reposync unavailable: {result.stderr.strip()[:200]}", file=sys.stderr)
        return None
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repeat, no curve (< 40 s)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per measurement")
    parser.add_argument("--packages", type=int, default=3000)
    parser.add_argument(
        "--curve", action="store_true", help="also the full sync's wall at each parallelism"
    )
    args = parser.parse_args()
    count = args.packages
    repeat = args.repeat or (1 if args.quick else 3)
    size = 64 * 1024

    base = Path(tempfile.mkdtemp(prefix="coordd-bench-"))
    try:
        feed = make_feed(base / "feed", count, size)
        total = sum(p.size_package for p in feed.packages)
        hrefs = sorted(feed.hrefs)
        print(f"feed: {count} packages, {total / 1e6:.0f} MB, zst metadata; {repeat} repeats")
        with nginx.serve(feed.root) as url:
            runs: dict[str, list[float]] = {
                k: []
                for k in (
                    *("full", "cpu", "resync", "curl", "curl_cpu", "dnf"),
                    *("null", "paired", "daemon", "status_p99"),
                )
            }
            options = ImporterOptions(feed=url, parallel_downloads=PARALLEL)

            def full_and_resync(n: int) -> None:
                repo = base / f"repo{n}"
                wall, cpu, summary = timed(lambda: sync(repo, options, Progress()))
                assert summary["packages"] == count, summary
                runs["full"].append(wall)
                runs["cpu"].append(cpu)
                settle()
                wall, _cpu, summary = timed(lambda: sync(repo, options, Progress()))
                assert summary["changed"] is False, summary
                runs["resync"].append(wall)

            def null_progress(n: int) -> None:
                # Right beside a full sync with a live report, each first in turn, so the
                # pair sees the same machine: the difference sought is far below the
                # drift of a loaded 2-core machine over a whole run.
                pair: dict[str, float] = {}
                for kind in ("live", "null") if n % 2 else ("null", "live"):
                    repo = base / f"{kind}{n}"
                    report = Progress() if kind == "live" else NullProgress()
                    settle()
                    wall, cpu, _ = timed(
                        lambda repo=repo, report=report: sync(repo, options, report)
                    )
                    pair[kind] = cpu
                    if kind == "null":
                        runs["null"].append(wall)
                runs["paired"].append(pair["live"] / pair["null"] - 1)

            def curl(n: int) -> None:
                out = base / f"curl{n}"
                wall, cpu = nginx.curl_parallel(url, hrefs, out, PARALLEL)
                runs["curl"].append(wall)
                runs["curl_cpu"].append(cpu)

            def through_daemon(n: int) -> None:
                # The same sync as a task of a real daemon, while another client calls
                # server.status back to back: the event loop must stay responsive.
                daemon = DaemonProcess(base / f"daemon{n}", ["--log-level", "warning"])
                try:
                    daemon.start()
                    daemon.call(
                        "repo.create",
                        repo_id="bench",
                        importer={"feed": url, "parallel_downloads": PARALLEL},
                    )
                    wait_for(lambda: daemon.call("repo.list")["repositories"], "the create")
                    latencies: list[float] = []
                    done = threading.Event()

                    def poll() -> None:
                        with daemon.client() as client:
                            while not done.is_set():
                                started = time.perf_counter()
                                client.call("server.status")
                                latencies.append(time.perf_counter() - started)

                    poller = threading.Thread(target=poll)
                    started = time.perf_counter()
                    task = daemon.call("repo.sync", repo_id="bench")["task"]
                    poller.start()
                    with daemon.client(timeout=600) as client:
                        ended = client.call("task.wait", {"task_id": task["id"], "timeout": 600})
                    runs["daemon"].append(time.perf_counter() - started)
                    done.set()
                    poller.join()
                    assert ended["state"] == "finished", ended
                    latencies.sort()
                    runs["status_p99"].append(latencies[int(len(latencies) * 0.99) - 1])
                finally:
                    daemon.stop()
                    daemon.cleanup()

            def dnf(n: int) -> None:
                work = base / f"dnf{n}"
                elapsed = dnf_reposync(url, work)
                if elapsed is not None:
                    runs["dnf"].append(elapsed)

            counting = CountingProgress()
            anyio.run(sync, base / "counted", options, counting, backend_options=DAEMON_LOOP)

            # Every measurement starts with the page cache flushed (the previous one wrote
            # hundreds of MB), and the order rotates so no contender always goes first.
            steps = [full_and_resync, curl, dnf, through_daemon]
            if not args.quick:
                steps.insert(1, null_progress)
            for n in range(repeat):
                for step in steps[n % len(steps) :] + steps[: n % len(steps)]:
                    settle()
                    step(n)
                print(
                    f"run {n + 1}: full {runs['full'][-1]:.2f}s cpu {runs['cpu'][-1]:.2f}s"
                    f" resync {runs['resync'][-1]:.3f}s"
                    f" curl {runs['curl'][-1]:.2f}s (cpu {runs['curl_cpu'][-1]:.2f}s)"
                    + (f" null-progress {runs['null'][-1]:.2f}s" if runs["null"] else "")
                    + (f" dnf {runs['dnf'][-1]:.2f}s" if runs["dnf"] else "")
                    + f" daemon {runs['daemon'][-1]:.2f}s"
                    f" (status p99 {runs['status_p99'][-1] * 1000:.1f} ms)"
                )
            if args.curve:
                parallelism_curve(base, url, hrefs)

        med = {k: statistics.median(v) for k, v in runs.items() if v}
        if runs["paired"]:
            cost = update_cost()
            print(
                f"progress: {counting.writes} writes in a full sync x {cost * 1e6:.2f} us"
                f" = {counting.writes * cost * 1e3:.1f} ms"
                f" ({counting.writes * cost / med['full']:.2%} of its wall time);"
                f" overhead of a live report {med['paired']:.1%} of CPU"
            )
        print(
            f"medians: the same sync as a daemon task {med['daemon']:.3f}s;"
            f" curl CPU {med['curl_cpu']:.2f}s"
        )
        figures = {
            "full_s": med["full"],
            "cpu_s": med["cpu"],
            "resync_s": med["resync"],
            "curl_s": med["curl"],
        }
        if "dnf" in med:
            figures["dnf_s"] = med["dnf"]
        figures["ratio_curl"] = med["full"] / med["curl"]
        if "dnf" in med:
            figures["ratio_dnf"] = med["full"] / med["dnf"]
        figures["resync_ratio"] = med["resync"] / med["full"]
        figures["status_p99_ms"] = med["status_p99"] * 1000
        print(" ".join(f"{k}={v:.3f}" for k, v in figures.items()))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def parallelism_curve(base: Path, url: str, hrefs: list[str]) -> None:
    """The full sync's wall and CPU at each parallelism, against curl's at the same."""
    print("parallelism curve (median of 3): downloads, importer wall/CPU s, curl wall s")
    for parallel in (1, 2, 4, 6, 8, 12, 16):
        options = ImporterOptions(feed=url, parallel_downloads=parallel)
        walls, cpus, curls = [], [], []
        for n in range(3):
            repo = base / f"curve{parallel}-{n}"
            settle()
            wall, cpu, summary = timed(
                lambda repo=repo, options=options: sync(repo, options, Progress())
            )
            assert summary["packages"] == len(hrefs), summary
            walls.append(wall)
            cpus.append(cpu)
            settle()
            out = base / f"curvecurl{parallel}-{n}"
            curls.append(nginx.curl_parallel(url, hrefs, out, parallel)[0])
        print(
            f"  {parallel:2d}: {statistics.median(walls):.2f} / {statistics.median(cpus):.2f}"
            f"  curl {statistics.median(curls):.2f}"
        )


if __name__ == "__main__":
    main()
