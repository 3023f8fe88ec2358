"""Serve a directory over HTTP on 127.0.0.1 for a benchmark, and fetch it with curl.

A Python file server takes as much CPU as the client it serves, so every client looks alike
behind it: benchmarks serve their feeds with Debian's ``nginx``, started here with a
configuration of its own (no daemon, every path under a temporary directory). Without nginx
they fall back to the tests' threaded server, with a warning that the figures then measure
the server as much as the client.

``curl_parallel`` is the C baseline: the same files fetched by ``curl --parallel`` with the
same parallelism, each written to a file.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
{user}
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    default_type application/octet-stream;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start listening on 127.0.0.1:{port}")


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """Serve ``root``; yield its base URL (ending in ``/``)."""
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
    )
    if nginx is None:
        print(
            "warning: nginx is not installed (Debian package nginx); serving with Python, "
            "whose CPU cost is in every figure",
            file=sys.stderr,
        )
        with _python_server(root) as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="coordd-nginx-") as work:
        port = _free_port()
        config = Path(work) / "nginx.conf"
        # As root the worker would run as nobody, who may not read a root-owned temp dir.
        user = "user root;" if os.geteuid() == 0 else ""
        config.write_text(CONFIG.format(user=user, work=work, port=port, root=root.resolve()))
        proc = subprocess.Popen([nginx, "-c", str(config), "-e", f"{work}/error.log"])
        try:
            _wait_listening(port, proc, "nginx")
            yield f"http://127.0.0.1:{port}/"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@contextmanager
def _python_server(root: Path) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.feedserver", str(root)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise SystemExit(f"feed server did not start: {url!r}")
    try:
        yield url
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def curl_parallel(url: str, hrefs: Iterable[str], out: Path, parallel: int) -> tuple[float, float]:
    """Fetch ``url + href`` for each href into ``out`` with ``curl --parallel``.

    Returns (wall seconds, CPU seconds of curl).
    """
    curl = shutil.which("curl")
    if curl is None:
        raise SystemExit("curl is not installed (Debian package curl)")
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for href in hrefs:
        target = out / href
        target.parent.mkdir(parents=True, exist_ok=True)
        lines.append(f'url = "{url}{href}"\noutput = "{target}"\n')
    config = out / "curl.config"
    config.write_text("".join(lines))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [
            *(curl, "--silent", "--show-error", "--no-progress-meter", "--fail"),
            *("--parallel", "--parallel-max", str(parallel), "-K", str(config)),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu
