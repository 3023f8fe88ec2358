"""Benchmark the content store at a distribution's scale, through a real daemon.

A feed of 50,000 small packages whose metadata is as large as a big distribution's (about
120 MB of primary.xml, 110 MB of filelists.xml and 40 MB of other.xml uncompressed, gz;
``bench/bigfeed.py``, cached under /var/tmp) and the 3,000 x 64 KiB feed of
``bench/sync.py`` are served by nginx (``bench/nginx.py``). A real coordd with a fresh
state directory then:

- syncs repository ``big`` from the large feed as a task: ``big_s`` (wall), while the RSS
  of the daemon and all its descendants is sampled from /proc every 0.2 s: ``peak_mb``, and
  again a few seconds after the sync: ``after_mb``. Meanwhile another process submits
  durable tasks (``repo.update`` of a small repository) back to back at 20/s:
  ``submit_p99_sync_ms``, against the same measured with the daemon idle before the sync
  for 30 s, so that both are the 99th percentile of some 600 submissions:
  ``submit_p99_idle_ms``;
- ``curl_big_s``: the same package files fetched by ``curl --parallel`` at the importer's
  default parallelism (the C limit); ``ratio_big = big_s / curl_big_s``;
- syncs repository ``big2`` from the same feed: ``big2_s``, and ``big2_bytes``, the
  sync's ``bytes_downloaded`` (with a shared content pool, nothing is fetched again);
- runs ``repo.show big``, a walk of ``repo.content`` pages (and one page filtered by name),
  and ``repo.publish big`` (``publish_s``, its wall), while another process calls
  ``server.status`` back to back: ``status_worst_ms``, the worst latency it saw;
- syncs repository ``wide`` from the 3,000 x 64 KiB feed (1,000 with ``--quick``) beside
  curl, as the baseline of a feed whose cost is its bytes (printed, not in the last line).

What curl writes stays until the end of the run (see ``bench/sync.py``: on ext4, files
created soon after many were deleted cost seconds of kernel time).

The last line holds the figures as ``key=value`` pairs.

Targets: ``peak_mb`` <= 300 (aim 150); ``after_mb`` <= 120; ``big2_bytes`` = 0 and
``big2_s`` <= 0.5 x ``big_s``; ``status_worst_ms`` <= 100; ``publish_s`` <= 10;
``submit_p99_sync_ms`` < 2 x ``submit_p99_idle_ms``.

Run from the repository root: ``python3 bench/scale.py [--quick] [--packages N]``
(``--quick``: 3,000 packages with proportionally small metadata, under a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import queue
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import nginx
from bench.bigfeed import cached_big_feed
from bench.sync import make_feed, settle
from coordctl.client import Client, NotReachable
from coordd.api.errors import CoorddError, ProtocolError
from coordd.repo.yum.options import ImporterOptions
from tests.helpers.daemon import DaemonProcess

FULL_PACKAGES = 50_000
QUICK_PACKAGES = 3_000
WIDE_PACKAGES = 3_000
QUICK_WIDE_PACKAGES = 1_000
WIDE_SIZE = 64 * 1024
SUBMIT_RATE = 20.0  # durable submissions per second: a busy admin script, not a load test
SAMPLE_S = 0.2
ENDED = ("finished", "error", "canceled")


# -- memory ------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the database writer, any worker processes)."""
    found = [pid]
    for each in found:  # grows while it is walked: breadth first
        for children in Path(f"/proc/{each}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                found += [int(child) for child in children.read_text().split()]
    return found


def rss_mb(pid: int) -> float:
    """The sum of VmRSS over ``pid`` and its descendants, in MB."""
    total_kb = 0
    for each in descendants(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    break
    return total_kb / 1024


class RssSampler(threading.Thread):
    """Samples ``rss_mb(pid)`` every ``SAMPLE_S`` seconds until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []  # (perf_counter, MB)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.samples.append((time.perf_counter(), rss_mb(self.pid)))
            self.stopped.wait(SAMPLE_S)

    def peak(self, start: float, end: float) -> float:
        return max((mb for t, mb in self.samples if start <= t <= end), default=0.0)

    def stop(self) -> None:
        self.stopped.set()
        self.join()


# -- a second client, in a process of its own ------------------------------------------------------


def _probe(socket_path: str, mode: str, stop: Any, out: Any) -> None:
    """Call the daemon until ``stop`` is set; put what it saw on ``out``.

    ``status``: ``server.status`` back to back. ``submit``: a durable ``repo.update`` of
    repository ``probe`` at ``SUBMIT_RATE`` per second. A call the daemon answers by
    closing the connection counts with the time it took to fail, and is a failure; the
    probe then connects again.
    """
    latencies: list[float] = []
    failures: list[str] = []
    interval = 1 / SUBMIT_RATE
    client: Client | None = None
    due = time.perf_counter()
    n = 0
    while not stop.is_set():
        started = time.perf_counter()
        try:
            if client is None:
                client = Client(socket_path, timeout=120).connect()
            if mode == "status":
                client.call("server.status")
            else:
                client.call("repo.update", repo_id="probe", description=f"probe {n}")
        except (ProtocolError, NotReachable, OSError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            if client is not None:
                client.close()
                client = None
        latencies.append(time.perf_counter() - started)
        n += 1
        if mode == "submit":
            due += interval
            stop.wait(max(0.0, due - time.perf_counter()))
    if client is not None:
        client.close()
    out.put({"latencies": latencies, "failures": failures})


class Probe:
    """``_probe`` in a child process, so its timing never waits for this process's GIL."""

    def __init__(self, daemon: DaemonProcess, mode: str) -> None:
        context = multiprocessing.get_context("fork")
        self.mode = mode
        self.stop_event = context.Event()
        self.queue: Any = context.Queue()
        self.proc = context.Process(
            target=_probe, args=(str(daemon.socket), mode, self.stop_event, self.queue)
        )
        self.failures: list[str] = []

    def __enter__(self) -> Probe:
        self.proc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()

    def stop(self) -> list[float]:
        """Stop calling; the latencies seen, sorted (failures are kept in ``failures``)."""
        self.stop_event.set()
        deadline = time.monotonic() + 180
        while True:
            try:
                seen: dict[str, Any] = self.queue.get(timeout=1)
                break
            except queue.Empty:
                if not self.proc.is_alive() or time.monotonic() > deadline:
                    raise SystemExit(f"the {self.mode} probe ended without a result") from None
        self.proc.join()
        self.failures = seen["failures"]
        if self.failures:
            print(
                f"  {self.mode} probe: {len(self.failures)} calls failed,"
                f" first: {self.failures[0]}",
                flush=True,
            )
        return sorted(seen["latencies"])


def p99(ordered: list[float]) -> float:
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(len(ordered) * 0.99) - 1)]


# -- the daemon ----------------------------------------------------------------------------------


def run_task(daemon: DaemonProcess, method: str, **params: Any) -> tuple[float, dict[str, Any]]:
    """Submit ``method`` and wait for its task to end; (wall seconds, the ended task)."""
    started = time.perf_counter()
    with daemon.client(timeout=None) as client:
        task = client.call(method, params)["task"]
        while task["state"] not in ENDED:
            task = client.call("task.wait", task_id=task["id"], timeout=600)
    wall = time.perf_counter() - started
    if task["state"] != "finished":
        raise SystemExit(f"{method} {params} ended {task['state']}: {task['error']}")
    return wall, task


def timed_call(client: Client, method: str, **params: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = client.call(method, params)
    return time.perf_counter() - started, result


def browse_content(client: Client, pages: int) -> None:
    """Walk ``pages`` pages of ``repo.content big``, then one page filtered by name."""
    try:
        after = None
        for n in range(pages):
            query: dict[str, Any] = {"repo_id": "big", "limit": 1000}
            if after is not None:
                query["after"] = after
            wall, page = timed_call(client, "repo.content", **query)
            print(f"  repo.content page {n + 1}: {len(page['units'])} units in {wall:.3f}s")
            after = page["next"]
            if after is None:
                break
        wall, page = timed_call(client, "repo.content", repo_id="big", limit=1000, name="pkg1*")
        more = "" if page["next"] is None else ", more to come"
        print(f"  repo.content name=pkg1*: {len(page['units'])} units in {wall:.3f}s{more}")
    except CoorddError as exc:  # the rest of the run still measures something: report it
        print(f"  repo.content failed: {type(exc).__name__}: {exc}")


def sync_repo(
    daemon: DaemonProcess, repo_id: str, url: str, parallel: int
) -> tuple[float, dict[str, Any]]:
    run_task(
        daemon,
        "repo.create",
        repo_id=repo_id,
        importer={"feed": url, "parallel_downloads": parallel},
    )
    settle()
    wall, task = run_task(daemon, "repo.sync", repo_id=repo_id)
    return wall, task["result"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_PACKAGES:,} packages (under a minute)"
    )
    parser.add_argument("--packages", type=int, default=None, help="packages in the big feed")
    args = parser.parse_args()
    count = args.packages or (QUICK_PACKAGES if args.quick else FULL_PACKAGES)
    idle_s = 3.0 if args.quick else 30.0  # about as many submissions as beside the sync
    after_s = 3.0 if args.quick else 5.0
    parallel = ImporterOptions().parallel_downloads

    started = time.perf_counter()
    feed = cached_big_feed(count)
    how = f"built in {feed.seconds:.1f}s"
    if feed.cached:
        how = f"cached ({how})"
    sizes = ", ".join(
        f"{kind} {doc['open_size'] / 1e6:.1f} MB ({doc['size'] / 1e6:.1f} MB gz)"
        for kind, doc in feed.docs.items()
    )
    print(
        f"big feed: {count:,} packages, {feed.package_bytes / 1e6:.1f} MB of packages;"
        f" {sizes}; {how}, ready in {time.perf_counter() - started:.1f}s at {feed.root}",
        flush=True,
    )
    base = Path(tempfile.mkdtemp(prefix="coordd-bench-scale-"))
    figures: dict[str, float] = {}
    try:
        wide = make_feed(
            base / "wide", QUICK_WIDE_PACKAGES if args.quick else WIDE_PACKAGES, WIDE_SIZE
        )
        wide_hrefs = sorted(wide.hrefs)
        with nginx.serve(feed.root) as big_url, nginx.serve(wide.root) as wide_url:
            daemon = DaemonProcess(base / "state", ["--log-level", "warning"])
            try:
                daemon.start()
                assert daemon.proc is not None
                pid = daemon.proc.pid
                print(f"daemon: {rss_mb(pid):.0f} MB at start", flush=True)
                run_task(daemon, "repo.create", repo_id="probe")

                with Probe(daemon, "submit") as probe:
                    time.sleep(idle_s)
                    idle = probe.stop()
                figures["submit_p99_idle_ms"] = p99(idle) * 1000
                print(f"idle: {len(idle)} submits, p99 {p99(idle) * 1000:.1f} ms", flush=True)

                # 1. The big sync, its memory, and submissions beside it.
                run_task(
                    daemon,
                    "repo.create",
                    repo_id="big",
                    importer={"feed": big_url, "parallel_downloads": parallel},
                )
                settle()
                with Probe(daemon, "submit") as probe:
                    sampler = RssSampler(pid)
                    sampler.start()
                    sync_start = time.perf_counter()
                    big_s, task = run_task(daemon, "repo.sync", repo_id="big")
                    sync_end = time.perf_counter()
                    during = probe.stop()
                time.sleep(after_s)
                after_mb = rss_mb(pid)
                sampler.stop()
                peak_mb = sampler.peak(sync_start, sync_end)
                summary = task["result"]
                print(
                    f"big: {summary['packages']:,} packages,"
                    f" {summary['bytes_downloaded'] / 1e6:.1f} MB downloaded in {big_s:.2f}s;"
                    f" RSS peak {peak_mb:.0f} MB, {after_mb:.0f} MB {after_s:g}s later;"
                    f" {len(during)} submits beside it, p99 {p99(during) * 1000:.1f} ms,"
                    f" worst {during[-1] * 1000 if during else math.nan:.1f} ms",
                    flush=True,
                )
                figures.update(big_s=big_s, peak_mb=peak_mb, after_mb=after_mb)
                figures["submit_p99_sync_ms"] = p99(during) * 1000

                # 2. The C limit for the same files.
                settle()
                curl_big_s, curl_cpu = nginx.curl_parallel(
                    big_url, feed.hrefs, base / "curl-big", parallel
                )
                print(f"curl: {curl_big_s:.2f}s (cpu {curl_cpu:.2f}s)", flush=True)
                figures.update(curl_big_s=curl_big_s, ratio_big=big_s / curl_big_s)

                # 3. The same feed into a second repository.
                sampler = RssSampler(pid)
                sampler.start()
                big2_start = time.perf_counter()
                big2_s, summary2 = sync_repo(daemon, "big2", big_url, parallel)
                big2_end = time.perf_counter()
                sampler.stop()
                print(
                    f"big2: {summary2['packages']:,} packages,"
                    f" {summary2['bytes_downloaded']:,} bytes downloaded in {big2_s:.2f}s"
                    f" ({big2_s / big_s:.2f} x big); RSS peak"
                    f" {sampler.peak(big2_start, big2_end):.0f} MB",
                    flush=True,
                )
                figures.update(big2_s=big2_s, big2_bytes=summary2["bytes_downloaded"])

                # 4. Reading and publishing while another client asks for the status.
                with Probe(daemon, "status") as probe, daemon.client(timeout=600) as client:
                    time.sleep(0.5)
                    wall, shown = timed_call(client, "repo.show", repo_id="big")
                    held = shown["content"]["counts"].get("rpm")
                    print(f"  repo.show: {held} packages, in {wall:.3f}s", flush=True)
                    browse_content(client, pages=5)
                    publish_s, _ = run_task(daemon, "repo.publish", repo_id="big")
                    print(f"  repo.publish: {publish_s:.2f}s", flush=True)
                    statuses = probe.stop()
                worst = statuses[-1] * 1000
                print(
                    f"status beside show/content/publish: {len(statuses)} calls,"
                    f" p99 {p99(statuses) * 1000:.1f} ms, worst {worst:.1f} ms;"
                    f" daemon now {rss_mb(pid):.0f} MB",
                    flush=True,
                )
                figures.update(status_worst_ms=worst, publish_s=publish_s)

                # 5. The baseline: a feed whose cost is its bytes, not its metadata.
                wide_s, wide_summary = sync_repo(daemon, "wide", wide_url, parallel)
                settle()
                curl_wide_s, _ = nginx.curl_parallel(
                    wide_url, wide_hrefs, base / "curl-wide", parallel
                )
                print(
                    f"wide: {wide_summary['packages']:,} x {WIDE_SIZE // 1024} KiB in"
                    f" {wide_s:.2f}s, curl {curl_wide_s:.2f}s (ratio {wide_s / curl_wide_s:.2f});"
                    f" daemon now {rss_mb(pid):.0f} MB",
                    flush=True,
                )
            finally:
                daemon.stop()
                daemon.cleanup()
                logged = daemon.log_text().strip().splitlines()
                if logged:
                    print("daemon log, last lines:", *logged[-10:], sep="\n  ")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f}s")
    keys = (
        *("big_s", "curl_big_s", "ratio_big", "peak_mb", "after_mb", "big2_s", "big2_bytes"),
        *("status_worst_ms", "publish_s", "submit_p99_idle_ms", "submit_p99_sync_ms"),
    )
    print(
        " ".join(
            f"{key}={int(figures[key])}" if key == "big2_bytes" else f"{key}={figures[key]:.3f}"
            for key in keys
        )
    )


if __name__ == "__main__":
    main()
