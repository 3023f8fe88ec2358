"""Downloads: credentials, client certificates, retries, metalinks and mirrorlists, and
secrets that never show — against real HTTP(S) servers on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from coordd.api.errors import InvalidRequest, OperationFailed
from coordd.engine.progress import Progress
from coordd.repo.repositories import Repositories, Repository
from coordd.repo.yum.options import ImporterOptions, Limits, redact
from tests.helpers.daemon import DaemonProcess, wait_for
from tests.helpers.feeds import Pkg, build_feed, sync
from tests.helpers.feedserver import (
    NOT_FOUND,
    SERVER_ERROR,
    Body,
    Failing,
    FeedServer,
    Redirect,
    make_client_ca,
    make_self_signed,
)

QUICK = Limits(retry_delay=0.01, grace=5.0, stall_timeout=5.0, connect_timeout=2.0)
DOWN = "http://127.0.0.1:9/"  # the discard port: nothing listens there

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")


async def run(repo: Path, limits: Limits = QUICK, **options: Any) -> tuple[dict[str, Any], Any]:
    progress = Progress()
    summary = await sync(repo, ImporterOptions(**options), progress, limits=limits)
    return summary, progress.snapshot()["importer"]


# -- options ------------------------------------------------------------------------------------


def test_credentials_leave_the_url() -> None:
    options = ImporterOptions(feed="https://me:s%3Acr%40t@cdn.example.org/repo/")
    assert options.feed == "https://cdn.example.org/repo/"
    assert (options.username, options.password) == ("me", "s:cr@t")
    assert ImporterOptions.from_json(options.to_json()) == options
    link = ImporterOptions(metalink="https://u@mirrors.example.org/metalink?repo=epel-9&arch=x")
    assert link.metalink == "https://mirrors.example.org/metalink?repo=epel-9&arch=x"
    assert (link.username, link.password) == ("u", None)
    assert link.source == link.metalink


def test_one_source_and_paired_options() -> None:
    bad: list[tuple[dict[str, Any], str]] = [
        ({"feed": "https://a/", "metalink": "https://b/m"}, "metalink"),
        ({"metalink": "https://b/m", "mirrorlist": "https://b/l"}, "mirrorlist"),
        ({"metalink": "file:///srv/metalink"}, "metalink"),
        ({"mirrorlist": "https://b/l#frag"}, "mirrorlist"),
        ({"feed": "file://u:p@localhost/srv/"}, "feed"),
        ({"client_key": "/k.pem"}, "client_key"),
        ({"client_cert": ""}, "client_cert"),
        ({"password": "p"}, "password"),
        ({"username": 3}, "username"),
    ]
    for value, key in bad:
        with pytest.raises(InvalidRequest) as info:
            ImporterOptions.from_json(value)
        assert info.value.data == {"key": key}, value


def test_redact_shows_secrets_as_set() -> None:
    shown = redact(
        {
            "feed": "https://u:pw@host/",
            "proxy": "http://pu:ppw@proxy:3128/",
            "password": "pw",
            "client_key": "/secret/key.pem",
            "client_cert": "/etc/pki/cert.pem",
            "username": "u",
        }
    )
    assert shown == {
        "feed": "https://host/",
        "proxy": "http://proxy:3128/",
        "password": "set",
        "client_key": "set",
        "client_cert": "/etc/pki/cert.pem",
        "username": "u",
    }
    assert redact({"password": None})["password"] is None


# -- credentials and certificates ---------------------------------------------------------------


@pytest.mark.anyio
async def test_feed_behind_basic_auth(tmp_path: Path) -> None:
    feed = build_feed(tmp_path / "feed")
    with FeedServer(feed.root, auth=("reader", "pa:ss@w")) as server:
        with pytest.raises(OperationFailed, match="HTTP 401"):
            await run(tmp_path / "repo", feed=server.url)
        with pytest.raises(OperationFailed, match="HTTP 401"):
            await run(tmp_path / "repo", feed=server.url, username="reader", password="nope")
        summary, _ = await run(
            tmp_path / "repo", feed=server.url, username="reader", password="pa:ss@w"
        )
        assert summary["packages"] == len(feed.packages)
        # The same credentials as the URL's userinfo, percent-encoded.
        url = server.url.replace("://", "://reader:pa%3Ass%40w@")
        summary, _ = await run(tmp_path / "repo2", feed=url)
        assert summary["packages"] == len(feed.packages)
        assert "reader" not in summary["feed"]


@pytest.mark.anyio
async def test_credentials_not_sent_to_another_host(tmp_path: Path) -> None:
    feed = build_feed(tmp_path / "feed")
    new = Pkg("moved", "1.0", "1", size=5000)
    with (
        FeedServer(feed.root, auth=("reader", "secret")) as origin,
        FeedServer(feed.root, auth=("reader", "secret")) as other,
    ):
        options = {"feed": origin.url, "username": "reader", "password": "secret"}
        await run(tmp_path / "repo", **options)
        feed.add(new)
        # The other server wants the same credentials, but is another origin: not sent.
        origin.misbehave(new.href, Redirect(other.url + new.href))
        with pytest.raises(OperationFailed, match=f"{new.href}: HTTP 401 .* from {other.url}"):
            await run(tmp_path / "repo", **options)
        assert other.count(new.href) == 1


@needs_openssl
@pytest.mark.anyio
async def test_feed_requiring_a_client_certificate(tmp_path: Path) -> None:
    tls = make_self_signed(tmp_path)
    authority = make_client_ca(tmp_path / "ca")
    feed = build_feed(tmp_path / "feed")
    with FeedServer(feed.root, tls=tls, client_ca=authority) as server:
        with pytest.raises(OperationFailed, match=r"cannot fetch|failed"):
            await run(tmp_path / "repo", feed=server.url, ca_file=str(tls.cert))
        client = authority.client
        summary, _ = await run(
            tmp_path / "repo",
            feed=server.url,
            ca_file=str(tls.cert),
            client_cert=str(client.cert),
            client_key=str(client.key),
        )
        assert summary["packages"] == len(feed.packages)
        # A certificate with a key that is not its own is refused before any request,
        # without naming the key's path.
        with pytest.raises(OperationFailed, match="cannot load client_cert") as info:
            await run(
                tmp_path / "repo3",
                feed=server.url,
                ca_file=str(tls.cert),
                client_cert=str(client.cert),
                client_key=str(tls.key),
            )
        assert str(tls.key) not in info.value.message


# -- retries ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_retries_cure_passing_failures_and_are_counted(tmp_path: Path) -> None:
    feed = build_feed(tmp_path / "feed")
    href = feed.packages[0].location_href
    with FeedServer(feed.root) as server:
        server.misbehave(href, Failing(2))
        server.misbehave("repodata/repomd.xml", Failing(1))
        summary, report = await run(tmp_path / "repo", feed=server.url)
        assert summary["packages"] == len(feed.packages)
        assert server.count(href) == 3
        assert report["content"]["retries"] == 2
        assert report["metadata"]["retries"] == 1
        assert report["content"]["num_error"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("behaviour", "attempts"), [(SERVER_ERROR, 4), (NOT_FOUND, 1), ("checksum", 1)]
)
async def test_retries_are_bounded_and_only_for_passing_failures(
    tmp_path: Path, behaviour: str, attempts: int
) -> None:
    feed = build_feed(tmp_path / "feed")
    package = feed.packages[0]
    with FeedServer(feed.root) as server:
        if behaviour == "checksum":
            data = (feed.root / package.location_href).read_bytes()
            server.misbehave(package.location_href, Body(bytes(len(data))))
        else:
            server.misbehave(package.location_href, behaviour)
        with pytest.raises(OperationFailed, match=package.location_href):
            await run(tmp_path / "repo", feed=server.url)
        assert server.count(package.location_href) == attempts


# -- metalinks and mirrorlists ------------------------------------------------------------------


def metalink(repomd: bytes, mirrors: list[str]) -> bytes:
    urls = "".join(
        f'<url protocol="http" type="http" preference="{100 - i}">{m}repodata/repomd.xml</url>'
        for i, m in enumerate(mirrors)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<metalink version="3.0" xmlns="http://www.metalinker.org/" type="dynamic">'
        '<files><file name="repomd.xml">'
        f"<size>{len(repomd)}</size>"
        '<verification><hash type="sha256">'
        f"{hashlib.sha256(repomd).hexdigest()}</hash></verification>"
        f'<resources maxconnections="1">{urls}</resources>'
        "</file></files></metalink>"
    ).encode()


@pytest.mark.anyio
async def test_metalink_skips_a_down_and_a_tampered_mirror(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    feed = build_feed(root / "good")
    repomd = (feed.root / "repodata/repomd.xml").read_bytes()
    with FeedServer(root) as server:
        mirrors = [DOWN + "gone/", server.url + "tampered/", server.url + "good/"]
        server.misbehave("tampered/repodata/repomd.xml", Body(repomd.replace(b"<", b" <", 1)))
        (root / "metalink").write_bytes(metalink(repomd, mirrors))
        url = server.url + "metalink?repo=test-9&arch=x86_64"
        summary, report = await run(tmp_path / "repo", metalink=url)
        assert summary["packages"] == len(feed.packages)
        assert summary["mirror"] == summary["feed"] == mirrors[2]
        assert report["mirror"] == mirrors[2]
        skipped = report["mirrors_skipped"]
        assert [s["mirror"] for s in skipped] == mirrors[:2]
        assert "cannot fetch" in skipped[0]["error"]
        assert "does not match the metalink" in skipped[1]["error"]
        assert server.count("good/" + feed.packages[0].location_href) == 1
        assert server.count("tampered/repodata/repomd.xml") == 1
        assert not any(server.count("tampered/" + p.location_href) for p in feed.packages)

        # Unchanged: nothing downloaded, whichever mirror answers first now.
        (root / "metalink").write_bytes(metalink(repomd, mirrors[2:]))
        summary, _ = await run(tmp_path / "repo", metalink=url)
        assert summary["changed"] is False

        # No usable mirror: the sync fails and says why.
        (root / "metalink").write_bytes(metalink(repomd, mirrors[:2]))
        with pytest.raises(OperationFailed, match="none of the 2 mirrors"):
            await run(tmp_path / "repo", metalink=url)


@pytest.mark.anyio
async def test_mirrorlist_skips_a_broken_mirror(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    feed = build_feed(root / "b")
    with FeedServer(root) as server:
        (root / "mirrors").write_text(f"# mirrors\n{server.url}a/\n{server.url}b\n")
        summary, report = await run(tmp_path / "repo", mirrorlist=server.url + "mirrors")
        assert summary["mirror"] == server.url + "b/"
        assert summary["packages"] == len(feed.packages)
        assert "HTTP 404" in report["mirrors_skipped"][0]["error"]


@pytest.mark.anyio
async def test_mirror_list_is_capped(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    root.mkdir()
    with FeedServer(root) as server:
        (root / "mirrors").write_text(f"{server.url}a/\n" * 1000)
        with pytest.raises(OperationFailed, match=r"mirrorlist: .*(over|exceeds) 4096"):
            await run(
                tmp_path / "repo",
                Limits(max_mirror_list=4096),
                mirrorlist=server.url + "mirrors",
            )


# -- secrets never shown ------------------------------------------------------------------------

SECRET = "Zq8-unshown-7Wx"


def test_secrets_never_shown(tmp_path: Path) -> None:
    """A repository whose feed URL, password, proxy and client key carry a secret: every
    answer, every event and the daemon's log lack it, through a sync that works and one
    that fails."""
    tls = make_self_signed(tmp_path)
    secret_dir = tmp_path / f"keys-{SECRET}"
    secret_dir.mkdir()
    key = tls.key.rename(secret_dir / "key.pem")
    feed = build_feed(tmp_path / "feed")
    daemon = DaemonProcess(tmp_path / "state")
    daemon.config_file().write_text('log_level = "debug"\n')
    with FeedServer(feed.root, auth=("reader", SECRET)) as server:
        try:
            daemon.start()
            watcher = daemon.client()
            watcher.call("events.subscribe")
            answers: list[Any] = []

            def call(method: str, **params: Any) -> Any:
                answer = daemon.call(method, **params)
                answers.append(answer)
                return answer

            def finished(task: dict[str, Any]) -> dict[str, Any]:
                return call("task.wait", task_id=task["task"]["id"])  # type: ignore[no-any-return]

            url = server.url.replace("://", f"://reader:{SECRET}@")
            created = call("repo.create", repo_id="s", importer={"feed": url})
            assert finished(created)["state"] == "finished"
            assert finished(call("repo.sync", repo_id="s"))["state"] == "finished"
            shown = call("repo.show", repo_id="s")["importer"]
            assert (shown["username"], shown["password"]) == ("reader", "set")
            assert shown["feed"] == server.url

            # Now through a proxy that is not there, with a client certificate.
            changes = {
                "proxy": f"http://pu:{SECRET}@127.0.0.1:9/",
                "client_cert": str(tls.cert),
                "client_key": str(key),
                "password": SECRET,
                "feed": url,
            }
            assert finished(call("repo.update", repo_id="s", importer=changes))["state"] == (
                "finished"
            )
            failed = finished(call("repo.sync", repo_id="s"))
            assert failed["state"] == "error"
            assert "127.0.0.1:9" in failed["error"]["message"]
            call("repo.list")
            shown = call("repo.show", repo_id="s")["importer"]
            assert shown["client_key"] == "set"
            assert shown["proxy"] == "http://127.0.0.1:9/"
            call("task.list", state="all")
            call("task.list", repo_id="s", state="all")
            for answer in answers:
                assert SECRET not in json.dumps(answer), answer
            events = []
            while (event := watcher.next_notification(0.5)) is not None:
                events.append(event)
            assert any(
                e["params"].get("task", {}).get("operation") == "repo.update" for e in events
            )
            assert SECRET not in json.dumps(events)
            watcher.close()
            wait_for(lambda: " DEBUG coordd.fetch" in daemon.log_text(), "debug lines")
            assert SECRET not in daemon.log_text()
            # Kept where the sync needs it.
            stored = subprocess.run(
                ["sqlite3", str(daemon.state_dir / "coordd.db"), "SELECT config FROM repositories"],
                capture_output=True,
                text=True,
            )
            if stored.returncode == 0:
                assert SECRET in stored.stdout
        finally:
            daemon.cleanup()


@pytest.mark.anyio
async def test_credentials_go_only_to_the_host_of_the_mirror_list(tmp_path: Path) -> None:
    root = tmp_path / "srv"
    feed = build_feed(root / "good")
    repomd = (feed.root / "repodata/repomd.xml").read_bytes()
    with (
        FeedServer(root, auth=("reader", "secret")) as lists,
        FeedServer(root, auth=("reader", "secret")) as elsewhere,
    ):
        mirrors = [elsewhere.url + "good/", lists.url + "good/"]
        (root / "metalink").write_bytes(metalink(repomd, mirrors))
        summary, report = await run(
            tmp_path / "repo", metalink=lists.url + "metalink", username="reader", password="secret"
        )
        assert summary["mirror"] == mirrors[1]
        assert "HTTP 401" in report["mirrors_skipped"][0]["error"]


def test_configuration_stored_before_credentials_moved_out_is_shown_without_them(
    tmp_path: Path,
) -> None:
    url = f"https://u:{SECRET}@cdn.example.org/repo/"
    repo = Repository("old", {"importer": {"feed": url}}, 0.0, 0.0, last_sync={"feed": url})
    shown = Repositories(None, tmp_path).describe(repo)  # type: ignore[arg-type]
    assert SECRET not in json.dumps(shown)
    assert (
        shown["last_sync"]["feed"] == shown["importer"]["feed"] == "https://cdn.example.org/repo/"
    )
