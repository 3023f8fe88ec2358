"""Published trees served over HTTP by nginx with the server block coordd ships
(``contrib/nginx/coordd.conf``, through ``tests.helpers.nginx``): dnf installs from it, and
it serves a tree as a yum mirror should (types, caching, no generation by its own name, a
new publish seen at once)."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from coordd.engine.progress import Progress
from coordd.repo.yum.options import ImporterOptions
from tests.helpers import nginx
from tests.helpers.content import publish
from tests.helpers.daemon import DaemonProcess, coordctl, create
from tests.helpers.dnf import DNF, dnf_command
from tests.helpers.feeds import (  # noqa: F401 - fixture
    Pkg,
    build_feed,
    build_rpm_feed,
    default_packages,
    real_rpms,
    sync,
)
from tests.helpers.feedserver import FeedServer
from tests.helpers.gpg import GPG, make_key, stop_agent, stop_dnf_agents

COMPRESSED = {
    ".gz": "application/gzip",
    ".zst": "application/zstd",
    ".xz": "application/x-xz",
    ".bz2": "application/x-bzip2",
}

pytestmark = pytest.mark.skipif(nginx.NGINX is None, reason="nginx is not installed")


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def ok(daemon: DaemonProcess, *args: str) -> str:
    result = coordctl(daemon, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


@pytest.mark.skipif(DNF is None, reason="dnf is not installed")
@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_dnf_installs_over_http_from_a_tree_nginx_serves(
    tmp_path: Path,
    real_rpms: list[Path],  # noqa: F811 - the fixture imported above
    signed: bool,
) -> None:
    if signed and GPG is None:
        pytest.skip("gpg is not installed (Debian package gnupg)")
    feed = build_rpm_feed(tmp_path / "feed", real_rpms)
    state = tmp_path / "state"
    daemon = DaemonProcess(state)
    key = None
    if signed:
        key = make_key(tmp_path / "key", "mirror signing")
        stop_agent(key)
        daemon.config_file().write_text(f'[signing]\nkey = "{key.secret}"\n')
    try:
        daemon.start()
        with FeedServer(feed.root) as server:
            create(daemon, "el9", "--feed", server.url, "--sign-metadata", str(signed).lower())
            ok(daemon, "repo", "sync", "--repo-id", "el9", "--wait")
        ok(daemon, "repo", "publish", "--repo-id", "el9", "--wait")
        with nginx.serve(state / "published", tmp_path / "nginx") as url:
            base = url + "el9/"
            root = tmp_path / "installroot"
            command = dnf_command(base, tmp_path / "dnf-cache", root)
            if signed:
                command += [
                    "--setopt=t.repo_gpgcheck=1",
                    f"--setopt=t.gpgkey={base}repodata/repomd.xml.key",
                ]
            try:
                result = subprocess.run(
                    [*command, "install", "coordd-hello"],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
            finally:
                stop_dnf_agents(tmp_path / "dnf-cache")
            assert result.returncode == 0, result.stderr
    finally:
        daemon.cleanup()
    assert (root / "usr/share/coordd-hello/hello.txt").read_text() == "coordd-hello 1.1\n"
    log = (tmp_path / "nginx" / "access.log").read_text()
    assert '"GET /el9/repodata/repomd.xml HTTP/1.1" 200' in log
    assert '"GET /el9/Packages/c/coordd-hello-1.1-1.noarch.rpm HTTP/1.1" 200' in log
    assert ('"GET /el9/repodata/repomd.xml.asc HTTP/1.1" 200' in log) == signed
    assert ('"GET /el9/repodata/repomd.xml.key HTTP/1.1" 200' in log) == signed


@pytest.mark.anyio
async def test_the_shipped_configuration_serves_a_tree_as_a_mirror_should(
    tmp_path: Path,
) -> None:
    feed = build_feed(tmp_path / "feed", default_packages(3), compression="zst", treeinfo=True)
    repo = tmp_path / "repo"
    await sync(repo, ImporterOptions(feed=feed.url), Progress())
    published = tmp_path / "published"
    pub = published / "repo"
    publish(repo, pub, grace=3600)
    href = sorted(feed.hrefs)[0]
    with nginx.serve(published, tmp_path / "nginx") as url:
        status, headers, body = get(url + "repo/repodata/repomd.xml")
        assert status == 200
        assert body == (pub / "repodata" / "repomd.xml").read_bytes()
        assert headers["Content-Type"] == "text/xml"
        assert headers["Cache-Control"] == "no-cache"
        [primary] = (pub / "repodata").glob("*-primary.xml.*")
        status, headers, body = get(url + f"repo/repodata/{primary.name}")
        assert (status, body) == (200, primary.read_bytes())
        assert headers["Content-Type"] == COMPRESSED[primary.suffix]
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert "Content-Encoding" not in headers
        status, headers, body = get(url + f"repo/{href}")
        assert (status, body) == (200, (pub / href).read_bytes())
        assert headers["Content-Type"] == "application/x-rpm"
        assert "Cache-Control" not in headers
        status, headers, _ = get(url + "repo/.treeinfo")
        assert (status, headers["Content-Type"]) == (200, "text/plain")
        status, _, listing = get(url)
        assert status == 200
        assert b'href="repo/"' in listing
        assert b".repo." not in listing  # generations are not listed…
        first = os.readlink(pub)
        assert first.startswith(".repo.gen-")
        status, _, _ = get(url + f"{first}/repodata/repomd.xml")
        assert status == 404  # …nor served by their own names
        status, _, _ = get(url + "repo/repodata/repomd.xml", method="POST")
        assert status == 405

        # A new version published: the next request gets the new repomd.xml, and the
        # tree it replaced stays unreachable by name (it stays on disk for the grace).
        feed.add(Pkg("zulu", "1.0", "1"))
        await sync(repo, ImporterOptions(feed=feed.url), Progress())
        publish(repo, pub, grace=3600)
        assert os.readlink(pub) != first
        assert (published / first).is_dir()
        status, _, body = get(url + "repo/repodata/repomd.xml")
        assert (status, body) == (200, (pub / "repodata" / "repomd.xml").read_bytes())
        assert get(url + "repo/Packages/z/zulu-1.0-1.x86_64.rpm")[0] == 200
        assert get(url + f"{first}/repodata/repomd.xml")[0] == 404
