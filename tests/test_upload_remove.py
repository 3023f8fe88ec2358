"""Upload of local RPMs over the socket (descriptors passed with SCM_RIGHTS), removal of
packages and errata, and package retention at sync time: each through the real daemon on
its real socket, with real RPMs and real dnf where it matters."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coordctl.client import Client
from coordd.api.errors import InvalidRequest, InvalidState
from coordd.repo.yum.retention import newest_versions
from tests.helpers.daemon import DaemonProcess, coordctl, create, running_daemon, wait_for
from tests.helpers.dnf import DNF, dnf_command
from tests.helpers.feeds import (  # noqa: F401 - fixture
    SPEC,
    Pkg,
    build_feed,
    build_rpm_feed,
    real_rpms,
)
from tests.helpers.feedserver import FeedServer


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    with running_daemon(tmp_path / "state") as running:
        create(running, "demo")
        yield running


def run_json(daemon: DaemonProcess, *args: str) -> tuple[int, Any, str]:
    result = coordctl(daemon, "--json", *args)
    out = json.loads(result.stdout) if result.stdout.strip() else None
    return result.returncode, out, result.stderr


def upload(client: Client, repo_id: str, paths: list[Path]) -> dict[str, Any]:
    """``repo.upload`` of ``paths`` opened here, and the task it made, ended."""
    fds = [os.open(path, os.O_RDONLY) for path in paths]
    try:
        answer = client.call(
            "repo.upload", {"repo_id": repo_id, "files": [p.name for p in paths]}, fds=fds
        )
    finally:
        for fd in fds:
            os.close(fd)
    ended: dict[str, Any] = client.call("task.wait", task_id=answer["task"]["id"], timeout=30)
    return ended


def versions(daemon: DaemonProcess, repo_id: str = "demo") -> list[int]:
    listing = daemon.call("repo.versions.list", repo_id=repo_id)
    return [v["number"] for v in listing["versions"]]


def nevras(daemon: DaemonProcess, repo_id: str = "demo", kind: str = "rpm") -> set[str]:
    units = daemon.call("repo.content", repo_id=repo_id, type=kind, limit=1000)["units"]
    if kind != "rpm":
        return {u["name"] for u in units}
    return {f"{u['name']}-{u['version']}-{u['release']}.{u['arch']}" for u in units}


def pool_files(daemon: DaemonProcess) -> list[Path]:
    return sorted(p for p in (daemon.state_dir / "content").rglob("*") if p.is_file())


def open_fds(daemon: DaemonProcess) -> int:
    assert daemon.proc is not None
    return len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))


def rebuild(workdir: Path, name: str, version: str) -> Path:
    """The same NEVRA as the fixture's package, built again with another build host: a
    different file (another checksum)."""
    workdir.mkdir(parents=True)
    (workdir / "test.spec").write_text(SPEC)
    subprocess.run(
        [
            "rpmbuild",
            "-bb",
            "--quiet",
            "--define",
            f"_topdir {workdir / 'top'}",
            "--define",
            f"pkgname {name}",
            "--define",
            f"pkgver {version}",
            "--define",
            "_buildhost elsewhere.example",
            str(workdir / "test.spec"),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = (workdir / "top" / "RPMS" / "noarch").glob("*.rpm")
    return path


# -- upload --------------------------------------------------------------------------------


@pytest.mark.skipif(DNF is None, reason="dnf is not installed")
def test_uploaded_rpms_are_installable_from_the_published_tree(
    daemon: DaemonProcess,
    tmp_path: Path,
    real_rpms: list[Path],  # noqa: F811 - the fixture imported above
) -> None:
    code, out, err = run_json(
        daemon, "repo", "upload", "--repo-id", "demo", *map(str, real_rpms), "--wait"
    )
    assert code == 0, err
    result = out["task"]["result"]
    assert result["version"] == 1
    assert sorted(result["uploaded"]) == [
        "coordd-hello-1.0-1.noarch",
        "coordd-hello-1.1-1.noarch",
        "coordd-world-2.0-1.noarch",
    ]
    assert [f["file"] for f in out["task"]["args"]["files"]] == [p.name for p in real_rpms]
    code, out, err = run_json(daemon, "repo", "publish", "--repo-id", "demo", "--wait")
    assert code == 0, err
    pub = Path(out["task"]["result"]["path"])
    root = tmp_path / "installroot"
    dnf = dnf_command(pub.as_uri(), tmp_path / "dnf-cache", root)
    installed = subprocess.run(
        [*dnf, "install", "coordd-hello", "coordd-world"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stderr
    assert (root / "usr/share/coordd-hello/hello.txt").read_text() == "coordd-hello 1.1\n"
    assert (root / "usr/share/coordd-world/hello.txt").read_text() == "coordd-world 2.0\n"


def test_a_file_that_is_not_an_rpm_refuses_the_whole_upload(
    daemon: DaemonProcess,
    tmp_path: Path,
    real_rpms: list[Path],  # noqa: F811
) -> None:
    text = tmp_path / "notes.rpm"
    text.write_text("not a package\n")
    tasks = daemon.call("task.list", state="all")["tasks"]
    result = coordctl(daemon, "repo", "upload", "--repo-id", "demo", str(real_rpms[0]), str(text))
    assert result.returncode != 0
    assert "notes.rpm: not an RPM package" in result.stderr
    assert "nothing was uploaded" in result.stderr
    # A file cut short after its lead is not an RPM either.
    cut = tmp_path / "cut.rpm"
    cut.write_bytes(real_rpms[0].read_bytes()[:200])
    with (
        daemon.client() as client,
        pytest.raises(InvalidRequest, match=r"cut\.rpm: not a readable"),
    ):
        upload(client, "demo", [real_rpms[1], cut])
    assert versions(daemon) == []
    assert daemon.call("task.list", state="all")["tasks"] == tasks  # no task was made
    assert pool_files(daemon) == []  # neither in the pool nor left in its temporary directory


def test_another_file_of_a_package_the_repository_holds_is_refused(
    daemon: DaemonProcess,
    tmp_path: Path,
    real_rpms: list[Path],  # noqa: F811
) -> None:
    hello_10 = next(p for p in real_rpms if p.name.startswith("coordd-hello-1.0"))
    world = next(p for p in real_rpms if p.name.startswith("coordd-world"))
    with daemon.client() as client:
        assert upload(client, "demo", [hello_10])["state"] == "finished"
        stored = pool_files(daemon)
        other = rebuild(tmp_path / "again", "coordd-hello", "1.0")
        assert other.read_bytes() != hello_10.read_bytes()
        ended = upload(client, "demo", [world, other])
        assert ended["state"] == "error"
        message = ended["error"]["message"]
        assert "upload refused, nothing changed" in message
        assert "coordd-hello-1.0-1.noarch" in message
        assert "another checksum" in message
        assert versions(daemon) == [1]
        assert nevras(daemon) == {"coordd-hello-1.0-1.noarch"}
        assert pool_files(daemon) == stored  # the refused files did not enter the pool
        # The same file again changes nothing and makes no version.
        again = upload(client, "demo", [hello_10])
        assert again["state"] == "finished"
        assert again["result"]["already_present"] == ["coordd-hello-1.0-1.noarch"]
        assert again["result"]["version"] is None
        assert versions(daemon) == [1]


def test_every_descriptor_the_daemon_receives_is_closed(
    daemon: DaemonProcess,
    tmp_path: Path,
    real_rpms: list[Path],  # noqa: F811
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a package\n")
    baseline = open_fds(daemon)

    def send_raw(message: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(20)
            sock.connect(str(daemon.socket))
            socket.send_fds(sock, [json.dumps(message).encode() + b"\n"], fds)
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(65536)
                assert chunk, "the daemon hung up without a reply"
                reply += chunk
        answer: dict[str, Any] = json.loads(reply)
        return answer

    paths = [*real_rpms, text]
    fds = [os.open(p, os.O_RDONLY) for p in paths]
    directory = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with daemon.client() as client:
            assert upload(client, "demo", real_rpms)["state"] == "finished"
            with pytest.raises(InvalidRequest, match="not an RPM"):
                upload(client, "demo", [text])
            with pytest.raises(InvalidRequest, match="not a regular file"):
                client.call("repo.upload", {"repo_id": "demo"}, fds=[directory])
            with pytest.raises(InvalidRequest, match=r"repo\.sync takes no descriptors"):
                client.call("repo.sync", {"repo_id": "demo"}, fds=fds)
            with pytest.raises(InvalidRequest, match=r"repo\.upload takes the files"):
                client.call("repo.upload", {"repo_id": "demo"})  # none passed
        # Declared, and more than came; passed and not declared; in a batch.
        base = {"jsonrpc": "2.0", "id": 1, "method": "repo.upload"}
        reply = send_raw({**base, "params": {"repo_id": "demo"}, "fds": 3}, fds[:1])
        assert "declares 3 descriptors (fds); 1 arrived" in reply["error"]["message"]
        reply = send_raw({**base, "params": {"repo_id": "demo"}}, fds)
        assert "none came" in reply["error"]["message"]
        reply = send_raw([{**base, "params": {"repo_id": "demo"}, "fds": 1}], fds[:1])  # type: ignore[arg-type]
        assert "cannot be passed in a batch" in reply[0]["error"]["message"]  # type: ignore[index]
        reply = send_raw({**base, "method": "no.such", "fds": 2}, fds[:2])
        assert reply["error"]["code"] == -32601
        # More than a request may pass, in one message: the kernel drops those past 64.
        many = [os.dup(fds[-1]) for _ in range(70)]
        try:
            reply = send_raw({**base, "params": {"repo_id": "demo"}, "fds": 64}, many)
        finally:
            for fd in many:
                os.close(fd)
        assert "file 1: not an RPM package" in reply["error"]["message"]
        # Descriptors no request declares are closed at once, not when the connection ends.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(daemon.socket))
            status = {"jsonrpc": "2.0", "id": 1, "method": "server.status"}
            socket.send_fds(sock, [json.dumps(status).encode() + b"\n"], fds)
            assert b'"result"' in sock.recv(65536)
            wait_for(lambda: open_fds(daemon) == baseline + 1, "stray descriptors closed")
        # A connection that goes away with descriptors it passed and never used.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(daemon.socket))
            socket.send_fds(sock, [b'{"jsonrpc": "2.0", "method": "server.st'], fds)
    finally:
        for fd in [*fds, directory]:
            os.close(fd)
    wait_for(lambda: open_fds(daemon) == baseline, f"the daemon back to {baseline} descriptors")
    assert versions(daemon) == [1]


def test_upload_waits_its_turn_and_survives_a_sync(
    daemon: DaemonProcess,
    tmp_path: Path,
    real_rpms: list[Path],  # noqa: F811
) -> None:
    """A repository with a feed: an upload postponed behind a sync runs after it, and the
    next sync of the changed feed keeps the uploaded package (syncs replace only what came
    from the feed)."""
    feed = build_feed(tmp_path / "feed", [Pkg("alpha", "1.0"), Pkg("bravo", "2.0")])
    with FeedServer(feed.root) as server:
        daemon.call("repo.update", repo_id="demo", importer={"feed": server.url})
        world = next(p for p in real_rpms if p.name.startswith("coordd-world"))
        with daemon.client() as client:
            lock = client.call(
                "lock.acquire",
                {"resources": [{"type": "repository", "id": "demo", "kind": "update"}]},
            )
            fd = os.open(world, os.O_RDONLY)
            try:
                answer = client.call("repo.upload", {"repo_id": "demo"}, fds=[fd])
            finally:
                os.close(fd)
            assert answer["verdict"] == "postponed"
            client.call("lock.release", {"task_id": lock["task"]["id"]})
            assert client.call("task.wait", task_id=answer["task"]["id"])["state"] == "finished"
        code, _, err = run_json(daemon, "repo", "sync", "--repo-id", "demo", "--wait")
        assert code == 0, err
        assert nevras(daemon) == {
            "coordd-world-2.0-1.noarch",
            "alpha-1.0-1.x86_64",
            "bravo-2.0-1.x86_64",
        }
        feed.drop(feed.packages[0].location_href)
        code, out, err = run_json(daemon, "repo", "sync", "--repo-id", "demo", "--wait")
        assert code == 0, err
        assert out["task"]["result"]["removed"] == 1
        assert nevras(daemon) == {"coordd-world-2.0-1.noarch", "bravo-2.0-1.x86_64"}


# -- remove --------------------------------------------------------------------------------


def test_remove_by_nevra_name_and_erratum_makes_new_versions(
    daemon: DaemonProcess,
    tmp_path: Path,
    real_rpms: list[Path],  # noqa: F811
) -> None:
    feed = build_rpm_feed(tmp_path / "feed", real_rpms, compression="gz")
    with FeedServer(feed.root) as server:
        daemon.call("repo.update", repo_id="demo", importer={"feed": server.url})
        code, _, err = run_json(daemon, "repo", "sync", "--repo-id", "demo", "--wait")
        assert code == 0, err
        assert versions(daemon) == [1]
        assert nevras(daemon, kind="erratum") == {"COORDD-2024-0001", "COORDD-2024-0002"}

        def remove(*selectors: str) -> dict[str, Any]:
            code, out, err = run_json(
                daemon, "repo", "remove", "--repo-id", "demo", *selectors, "--wait"
            )
            assert code == 0, err
            result: dict[str, Any] = out["task"]["result"]
            return result

        def diff(number: int) -> dict[str, Any]:
            code, out, err = run_json(
                daemon, "repo", "versions", "diff", "--repo-id", "demo", "--version", str(number)
            )
            assert code == 0, err
            return {"added": out["added"], "removed": out["removed"]}

        result = remove("--nevra", "coordd-hello-0:1.0-1.noarch")
        assert result["version"] == 2
        assert result["removed"]["rpm"] == 1
        changed = diff(2)
        assert changed["added"]["counts"]["rpm"] == 0
        assert [u["name"] for u in changed["removed"]["units"]] == ["coordd-hello"]
        assert changed["removed"]["units"][0]["version"] == "1.0"

        result = remove("--name", "coordd-w*")
        assert result["version"] == 3
        assert result["removed"]["rpm"] == 1
        assert nevras(daemon) == {"coordd-hello-1.1-1.noarch"}

        result = remove("--erratum", "COORDD-2024-0002")
        assert result["version"] == 4
        assert result["removed"]["erratum"] == 1
        assert result["removed"]["rpm"] == 0
        assert [u["name"] for u in diff(4)["removed"]["units"]] == ["COORDD-2024-0002"]
        assert nevras(daemon, kind="erratum") == {"COORDD-2024-0001"}

        # Nothing matches: no version, and the result says nothing was removed.
        result = remove("--name", "nothing-*", "--nevra", "coordd-hello-1.0-1.noarch")
        assert result["version"] is None
        assert result["removed"] == {"rpm": 0, "erratum": 0}
        assert versions(daemon) == [4, 3, 2, 1]

        # The next sync, of the unchanged feed, brings back what the feed lists.
        code, out, err = run_json(daemon, "repo", "sync", "--repo-id", "demo", "--wait")
        assert code == 0, err
        assert out["task"]["result"]["added"] == 2
        assert len(nevras(daemon)) == 3

    usage = coordctl(daemon, "repo", "remove", "--repo-id", "demo")
    assert usage.returncode != 0
    assert "give at least one of --name, --nevra, --erratum" in usage.stderr
    with pytest.raises(InvalidRequest, match=r"nevras\[0\]: 'coordd' is not name"):
        daemon.call("repo.remove", repo_id="demo", nevras=["coordd"])


# -- retain_package_versions ---------------------------------------------------------------


def test_newest_versions_keeps_the_newest_evrs_of_each_name_and_arch() -> None:
    packages = [
        {"name": "a", "arch": "x86_64", "epoch": "0", "version": v, "release": r}
        for v, r in (("1.0", "1"), ("1.10", "1"), ("1.9", "2"), ("2.0~rc1", "1"), ("1.10", "1"))
    ]
    packages += [
        {"name": "a", "arch": "noarch", "epoch": "0", "version": "0.1", "release": "1"},
        {"name": "b", "arch": "x86_64", "epoch": "1", "version": "0.1", "release": "1"},
        {"name": "b", "arch": "x86_64", "epoch": "0", "version": "9.9", "release": "1"},
    ]
    kept = newest_versions(packages, 2)
    assert [(p["name"], p["arch"], p["version"]) for p in kept] == [
        ("a", "x86_64", "1.10"),
        ("a", "x86_64", "2.0~rc1"),
        ("a", "x86_64", "1.10"),  # the same EVR listed twice is one version
        ("a", "noarch", "0.1"),
        ("b", "x86_64", "0.1"),
        ("b", "x86_64", "9.9"),
    ]
    assert [p["version"] for p in newest_versions(packages, 1)[:1]] == ["2.0~rc1"]
    assert newest_versions(packages, 0) == packages


def test_retain_package_versions_keeps_and_downloads_only_the_newest(
    daemon: DaemonProcess, tmp_path: Path
) -> None:
    alpha = [
        Pkg("alpha", "1.0"),
        Pkg("alpha", "1.10"),
        Pkg("alpha", "1.9", "2"),
        Pkg("alpha", "0.5", epoch="1"),  # the newest: its epoch
        Pkg("alpha", "1.10", arch="i686"),
    ]
    feed = build_feed(tmp_path / "feed", [*alpha, Pkg("bravo", "2.0"), Pkg("bravo", "1.0")])
    with FeedServer(feed.root) as server:
        code, _, err = run_json(
            daemon,
            "repo",
            "update",
            "--repo-id",
            "demo",
            "--feed",
            server.url,
            "--retain-package-versions",
            "2",
            "--wait",
        )
        assert code == 0, err
        assert daemon.call("repo.show", repo_id="demo")["retain_package_versions"] == 2
        shown = coordctl(daemon, "repo", "show", "--repo-id", "demo").stdout
        assert re.search(r"^Retain Package Versions:\s+2$", shown, re.M), shown
        code, out, err = run_json(daemon, "repo", "sync", "--repo-id", "demo", "--wait")
        assert code == 0, err
        kept = {
            "alpha-0.5-1.x86_64",
            "alpha-1.10-1.x86_64",
            "alpha-1.10-1.i686",
            "bravo-2.0-1.x86_64",
            "bravo-1.0-1.x86_64",
        }
        assert nevras(daemon) == kept
        assert out["task"]["result"]["downloaded"] == len(kept)
        assert server.count(".rpm") == len(kept)
        fetched = {path for path in server.requests if path.endswith(".rpm")}
        assert "Packages/a/alpha-1.0-1.x86_64.rpm" not in fetched
        assert "Packages/a/alpha-1.9-2.x86_64.rpm" not in fetched

        # 1: only the newest; then 0 (every version), which the unchanged feed now gives.
        daemon.call("repo.update", repo_id="demo", retain_package_versions=1)
        code, out, err = run_json(daemon, "repo", "sync", "--repo-id", "demo", "--wait")
        assert code == 0, err
        assert nevras(daemon) == {"alpha-0.5-1.x86_64", "alpha-1.10-1.i686", "bravo-2.0-1.x86_64"}
        assert out["task"]["result"]["downloaded"] == 0
        code, _, err = run_json(
            daemon, "repo", "update", "--repo-id", "demo", "--retain-package-versions", "0"
        )
        assert code == 0, err
        code, out, err = run_json(daemon, "repo", "sync", "--repo-id", "demo", "--wait")
        assert code == 0, err
        assert len(nevras(daemon)) == 7
        assert out["task"]["result"]["downloaded"] == 2
    with pytest.raises(InvalidRequest, match="retain_package_versions must be between 0"):
        daemon.call("repo.update", repo_id="demo", retain_package_versions=-1)


def test_uploads_that_never_run_leave_nothing_and_say_why(
    daemon: DaemonProcess,
    real_rpms: list[Path],  # noqa: F811
) -> None:
    """Copies of a canceled upload go with the next upload; an upload still waiting when
    the daemon restarts fails, saying to upload again (its copies did not survive)."""
    tmp = daemon.state_dir / "content" / ".tmp"
    holder = daemon.client()
    lock = holder.call(
        "lock.acquire", {"resources": [{"type": "repository", "id": "demo", "kind": "update"}]}
    )

    def postponed_upload(path: Path) -> str:
        fd = os.open(path, os.O_RDONLY)
        try:
            answer = holder.call("repo.upload", {"repo_id": "demo"}, fds=[fd])
        finally:
            os.close(fd)
        assert answer["verdict"] == "postponed"
        task_id: str = answer["task"]["id"]
        return task_id

    first = postponed_upload(real_rpms[0])
    canceled = postponed_upload(real_rpms[1])
    assert len(list(tmp.iterdir())) == 2
    assert daemon.call("task.cancel", task_id=canceled)["state"] == "canceled"
    third = postponed_upload(real_rpms[2])
    assert len(list(tmp.iterdir())) == 2  # the first's copy and the third's
    holder.close()
    daemon.restart()
    assert list(tmp.iterdir()) == []
    with daemon.client() as client:
        # The lock ends with the restart (whether interrupted or, once re-attached, released).
        with contextlib.suppress(InvalidState):
            client.call("lock.attach", {"task_id": lock["task"]["id"]})
            client.call("lock.release", {"task_id": lock["task"]["id"]})
        for task_id in (first, third):
            ended = client.call("task.wait", task_id=task_id, timeout=30)
            assert ended["state"] == "error"
            assert "coordd restarted before this upload ran" in ended["error"]["message"]
            assert "upload them again" in ended["error"]["message"]
    assert versions(daemon) == []


def test_a_feed_file_at_the_path_of_an_uploaded_one_replaces_it(
    daemon: DaemonProcess,
    tmp_path: Path,
    real_rpms: list[Path],  # noqa: F811
) -> None:
    """The feed lists another build of an uploaded package at the same path: the feed's
    replaces it (one file per path); the same file in the feed is taken from the pool."""
    world = next(p for p in real_rpms if p.name.startswith("coordd-world"))
    other = rebuild(tmp_path / "again", "coordd-world", "2.0")
    feed = build_rpm_feed(tmp_path / "feed", [other], compression="gz")
    with daemon.client() as client:
        assert upload(client, "demo", [world])["state"] == "finished"
    with FeedServer(feed.root) as server:
        daemon.call("repo.update", repo_id="demo", importer={"feed": server.url})
        uploaded = daemon.call("repo.content", repo_id="demo", type="rpm")["units"]
        code, _out, err = run_json(daemon, "repo", "sync", "--repo-id", "demo", "--wait")
        assert code == 0, err
        assert server.count(".rpm") == 1
        assert sorted(versions(daemon)) == [1, 2]
        diff = daemon.call("repo.versions.diff", repo_id="demo", version=2)
        assert diff["removed"]["units"] == uploaded
        assert diff["added"]["counts"]["rpm"] == 1
        assert nevras(daemon) == {"coordd-world-2.0-1.noarch"}
    same = build_rpm_feed(tmp_path / "same", [world], compression="gz")
    with FeedServer(same.root) as server:
        daemon.call("repo.update", repo_id="demo", importer={"feed": server.url})
        code, _out, err = run_json(daemon, "repo", "sync", "--repo-id", "demo", "--wait")
        assert code == 0, err
        assert server.count(".rpm") == 0  # the pool has it
        assert nevras(daemon) == {"coordd-world-2.0-1.noarch"}
