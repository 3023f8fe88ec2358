"""Debian's nginx on 127.0.0.1, serving with the server block coordd ships.

``serve(published, work)`` reads ``contrib/nginx/coordd.conf`` — the shipped file, not a
copy — and changes only where it listens (127.0.0.1 and a free port) and its ``root``;
the test fails if the file stops having exactly those directives. It wraps the block in a
configuration of its own (no daemon, every path under ``work``), waits until nginx
listens, yields the base URL, and stops nginx afterwards.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "contrib" / "nginx" / "coordd.conf"
NGINX = shutil.which("nginx") or (
    "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
)
START_TIMEOUT = 20.0

WRAPPER = """\
{user}
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {work}/access.log;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    include {work}/coordd.conf;
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_block(published: Path, port: int) -> str:
    """The shipped server block, listening on 127.0.0.1:``port`` with ``published`` as root."""
    text = SHIPPED.read_text()
    listens = re.findall(r"^\s*listen\s[^;]*;\n", text, re.M)
    roots = re.findall(r"^\s*root\s[^;]*;\n", text, re.M)
    assert listens, "coordd.conf: no listen directive to replace"
    assert len(roots) == 1, "coordd.conf: expected one root directive"
    text = re.sub(r"^\s*listen\s[^;]*;\n", "", text, flags=re.M)
    text = re.sub(
        r"^(\s*)root\s[^;]*;\n",
        lambda m: f"{m.group(1)}listen 127.0.0.1:{port};\n{m.group(1)}root {published};\n",
        text,
        flags=re.M,
    )
    return text


@contextmanager
def serve(published: Path, work: Path) -> Iterator[str]:
    """Serve ``published`` (a coordd state directory's ``published/``); yield the base URL,
    ending in ``/``."""
    assert NGINX is not None
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (work / "coordd.conf").write_text(server_block(published.resolve(), port))
    # As root the worker would run as nobody, who may not read a root-owned temp dir.
    user = "user root;" if os.geteuid() == 0 else ""
    config = work / "nginx.conf"
    config.write_text(WRAPPER.format(user=user, work=work))
    check = subprocess.run(
        [NGINX, "-t", "-c", str(config), "-e", f"{work}/error.log"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [NGINX, "-c", str(config), "-e", f"{work}/error.log"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"nginx exited with {proc.returncode}: {(work / 'error.log').read_text()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("nginx did not start listening") from None
                time.sleep(0.02)
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
