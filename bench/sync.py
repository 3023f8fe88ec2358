"""Benchmark the yum importer against baselines, on a feed served from 127.0.0.1.

A feed of synthetic packages (3,000 packages, ~200 MB, zst metadata; ``--quick``: 600,
~40 MB) is served by the tests' threaded HTTP server in a separate process, so the
server's work does not share our interpreter's lock. Measured, as medians over repeats:

- ``full_s``/``cpu_s``: a full sync into an empty repository (wall and CPU seconds of this
  process, worker threads included);
- ``resync_s``: a second sync of the unchanged feed;
- ``plain_s``: the same package files fetched with a bare httpx client and the same
  parallelism, each streamed to a file (no verification, no index, no metadata); also
  shown, not in the last line: the same with one single-connection client per worker,
  the pooling the importer uses;
- ``dnf_s``: ``dnf reposync`` of the same feed with the same parallelism (if dnf and its
  reposync plugin are installed);
- ``progress_overhead``: full sync with a live ``Progress`` versus one whose updates do
  nothing, run back to back in alternating order, CPU seconds, as a fraction of the
  latter (median over the pairs); also printed: the number of progress writes times the
  cost of one;
- ``status_p99_ms``: the same sync run as a task of a real coordd while another client
  calls ``server.status`` back to back: the 99th percentile of its latency.

The last line holds the figures as ``key=value`` pairs. Targets: ``ratio_plain`` ≤ 1.25,
``ratio_dnf`` ≤ 1.0, ``resync_ratio`` ≤ 0.05, ``progress_overhead`` < 0.05,
``status_p99_ms`` < 50.

Run from the repository root: ``python bench/sync.py [--quick] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import os
import random
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
import httpx

from coordd.engine.progress import Progress
from coordd.repo.yum.sync import ImporterOptions, sync
from tests.helpers.daemon import DaemonProcess, wait_for
from tests.helpers.feeds import Pkg, build_feed

PARALLEL = 8


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


def make_feed(root: Path, count: int, mean_size: int) -> Any:
    rng = random.Random(42)
    packages = [
        Pkg(f"pkg{i:05d}", f"1.{i % 7}", "1", size=rng.randint(mean_size // 3, mean_size * 5 // 3))
        for i in range(count)
    ]
    return build_feed(root, packages, compression="zst", errata=True)


def start_server(root: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.feedserver", str(root)],
        cwd=Path(__file__).resolve().parents[1],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit(f"feed server did not start: {url!r}")
    return proc, url


def settle() -> None:
    """Write back dirty pages so one measurement does not pay for the last one's writes."""
    os.sync()
    time.sleep(0.2)


def timed(fn: Callable[[], Coroutine[Any, Any, Any]]) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = anyio.run(fn)
    return time.perf_counter() - wall, time.process_time() - cpu, result


async def plain_download_per_connection(url: str, hrefs: list[str], out: Path) -> None:
    """The same, with one single-connection client per worker (as the importer does)."""
    pending = iter(hrefs)

    async def worker() -> None:
        async with httpx.AsyncClient(
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            trust_env=False,
            headers={"Accept-Encoding": "identity"},
        ) as client:
            for href in pending:
                async with client.stream("GET", url + href) as response:
                    response.raise_for_status()
                    target = out / href
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with open(target, "wb") as f:
                        async for chunk in response.aiter_raw():
                            f.write(chunk)

    async with anyio.create_task_group() as tg:
        for _ in range(PARALLEL):
            tg.start_soon(worker)


async def plain_download(url: str, hrefs: list[str], out: Path) -> None:
    limiter = anyio.CapacityLimiter(PARALLEL)
    async with httpx.AsyncClient(
        limits=httpx.Limits(max_connections=PARALLEL, max_keepalive_connections=PARALLEL),
        trust_env=False,
        headers={"Accept-Encoding": "identity"},
    ) as client:

        async def one(href: str) -> None:
            async with limiter, client.stream("GET", url + href) as response:
                response.raise_for_status()
                target = out / href
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(target, "wb") as f:
                    async for chunk in response.aiter_raw():
                        f.write(chunk)

        async with anyio.create_task_group() as tg:
            for href in hrefs:
                tg.start_soon(one, href)


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
    parser.add_argument("--quick", action="store_true", help="a smaller feed (< 40 s)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per measurement")
    parser.add_argument("--packages", type=int, default=None)
    args = parser.parse_args()
    count = args.packages or (600 if args.quick else 3000)
    repeat = args.repeat or 3
    mean_size = 67_000

    base = Path(tempfile.mkdtemp(prefix="coordd-bench-"))
    try:
        feed = make_feed(base / "feed", count, mean_size)
        total = sum(p.size_package for p in feed.packages)
        hrefs = sorted(feed.hrefs)
        print(f"feed: {count} packages, {total / 1e6:.0f} MB, zst metadata; {repeat} repeats")
        server, url = start_server(feed.root)
        try:
            runs: dict[str, list[float]] = {
                k: []
                for k in (
                    *("full", "cpu", "resync", "plain", "plain1", "plain_cpu", "dnf"),
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
                shutil.rmtree(repo)

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
                    shutil.rmtree(repo)
                runs["paired"].append(pair["live"] / pair["null"] - 1)

            def plain(n: int) -> None:
                out = base / f"plain{n}"
                wall, cpu, _ = timed(lambda: plain_download(url, hrefs, out))
                runs["plain"].append(wall)
                runs["plain_cpu"].append(cpu)
                shutil.rmtree(out)
                settle()
                wall, _cpu, _ = timed(lambda: plain_download_per_connection(url, hrefs, out))
                runs["plain1"].append(wall)
                shutil.rmtree(out)

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
                    shutil.rmtree(base / f"daemon{n}", ignore_errors=True)

            def dnf(n: int) -> None:
                work = base / f"dnf{n}"
                elapsed = dnf_reposync(url, work)
                if elapsed is not None:
                    runs["dnf"].append(elapsed)
                shutil.rmtree(work, ignore_errors=True)

            counting = CountingProgress()
            anyio.run(sync, base / "counted", options, counting)
            shutil.rmtree(base / "counted")

            # Every measurement starts with the page cache flushed (the previous one wrote
            # hundreds of MB), and the order rotates so no contender always goes first.
            steps = [full_and_resync, null_progress, plain, dnf, through_daemon]
            for n in range(repeat):
                for step in steps[n % 5 :] + steps[: n % 5]:
                    settle()
                    step(n)
                print(
                    f"run {n + 1}: full {runs['full'][-1]:.2f}s cpu {runs['cpu'][-1]:.2f}s"
                    f" resync {runs['resync'][-1]:.3f}s null-progress {runs['null'][-1]:.2f}s"
                    f" plain {runs['plain'][-1]:.2f}s (cpu {runs['plain_cpu'][-1]:.2f}s)"
                    f" plain-1-conn-clients {runs['plain1'][-1]:.2f}s"
                    + (f" dnf {runs['dnf'][-1]:.2f}s" if runs["dnf"] else "")
                    + f" daemon {runs['daemon'][-1]:.2f}s"
                    f" (status p99 {runs['status_p99'][-1] * 1000:.1f} ms)"
                )
        finally:
            assert server.stdin is not None
            server.stdin.close()
            server.wait(timeout=30)

        med = {k: statistics.median(v) for k, v in runs.items() if v}
        cost = update_cost()
        print(
            f"progress: {counting.writes} writes in a full sync x {cost * 1e6:.2f} us"
            f" = {counting.writes * cost * 1e3:.1f} ms"
            f" ({counting.writes * cost / med['full']:.2%} of its wall time)"
        )
        print(
            f"medians: plain with one-connection clients {med['plain1']:.3f}s"
            f" (the importer {med['full'] / med['plain1']:.2f}x that)"
        )
        figures = {
            "full_s": med["full"],
            "cpu_s": med["cpu"],
            "resync_s": med["resync"],
            "plain_s": med["plain"],
        }
        if "dnf" in med:
            figures["dnf_s"] = med["dnf"]
        figures["ratio_plain"] = med["full"] / med["plain"]
        if "dnf" in med:
            figures["ratio_dnf"] = med["full"] / med["dnf"]
        figures["resync_ratio"] = med["resync"] / med["full"]
        # CPU seconds of adjacent pairs (see null_progress), median over the pairs.
        figures["progress_overhead"] = med["paired"]
        print(f"medians: the same sync as a daemon task {med['daemon']:.3f}s")
        figures["status_p99_ms"] = med["status_p99"] * 1000
        print(" ".join(f"{k}={v:.3f}" for k, v in figures.items()))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
