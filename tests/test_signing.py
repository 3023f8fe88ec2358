"""Signed metadata: a sync checks the feed's repomd.xml.asc against the repository's
gpgkey; a publish signs repomd.xml with the daemon's key, and dnf with repo_gpgcheck=1
accepts the tree and refuses it once tampered with.

Keys are throwaway ed25519 keys made by GnuPG in the test (``tests.helpers.gpg``); feeds
are signed with gpg directly, not with the daemon's code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordctl import exitcodes
from coordd.api.errors import InvalidRequest, OperationFailed
from coordd.engine.progress import Progress
from coordd.repo import signing
from coordd.repo.yum.options import ImporterOptions
from coordd.service.config import ConfigError, load_config
from tests.helpers.content import View, publish
from tests.helpers.daemon import coordctl, create, running_daemon
from tests.helpers.dnf import DNF, dnf_command
from tests.helpers.feeds import (  # noqa: F401 - fixtures
    build_feed,
    build_rpm_feed,
    default_packages,
    real_rpms,
    sync,
)
from tests.helpers.feedserver import FeedServer
from tests.helpers.gpg import (
    Key,
    make_key,
    sign_file,
    stop_agent,
    stop_dnf_agents,
    throwaway_key,
)


@pytest.fixture(scope="module")
def gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Key]:
    yield from throwaway_key(tmp_path_factory, "coordd test")


@pytest.fixture(scope="module")
def other_gpg_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Key]:
    """A second key, which signs what the first should have."""
    yield from throwaway_key(tmp_path_factory, "someone else")


def flat(text: str) -> str:
    return " ".join(text.split())


def signed_feed(root: Path, key) -> object:
    feed = build_feed(root, default_packages(3))
    sign_file(key, feed.root / "repodata" / "repomd.xml")
    return feed


# -- verifying a feed ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sync_accepts_a_feed_signed_by_its_gpgkey(tmp_path: Path, gpg_key) -> None:
    feed = signed_feed(tmp_path / "feed", gpg_key)
    options = ImporterOptions(feed=feed.url, gpgkey=gpg_key.public_text)
    summary = await sync(tmp_path / "repo", options, Progress())
    assert summary["version"] == 1
    assert summary["packages"] == 3
    assert summary["signed_by"] == gpg_key.fingerprint
    again = await sync(tmp_path / "repo", options, Progress())  # unchanged: checked again
    assert (again["changed"], again["signed_by"]) == (False, gpg_key.fingerprint)
    unsigned = await sync(tmp_path / "repo", ImporterOptions(feed=feed.url), Progress())
    assert unsigned["signed_by"] is None


@pytest.mark.anyio
@pytest.mark.parametrize("problem", ["missing", "tampered", "other key", "garbage"])
async def test_sync_refuses_a_feed_without_a_good_signature(
    tmp_path: Path, gpg_key, other_gpg_key, problem: str
) -> None:
    feed = signed_feed(tmp_path / "feed", gpg_key)
    repo = tmp_path / "repo"
    await sync(repo, ImporterOptions(feed=feed.url, gpgkey=gpg_key.public_text), Progress())
    # The feed changes: a package more, and the signature goes wrong in one way.
    feed.drop(sorted(feed.hrefs)[0])
    repomd = feed.root / "repodata" / "repomd.xml"
    asc = repomd.with_name("repomd.xml.asc")
    expected = {
        "missing": "repomd.xml.asc: the feed has no signature of repomd.xml, and the "
        "repository's gpgkey requires one",
        "tampered": "repomd.xml.asc: the signature by key "
        f"{gpg_key.fingerprint[-16:]} does not match repomd.xml: it was changed",
        "other key": f"repomd.xml.asc: signed by key {other_gpg_key.fingerprint[-16:]}, "
        "which the repository's gpgkey does not hold",
        "garbage": "repomd.xml.asc: not an OpenPGP signature",
    }[problem]
    if problem == "tampered":  # signed, then changed
        sign_file(gpg_key, repomd)
        repomd.write_bytes(repomd.read_bytes().replace(b"<revision>", b"<revision>9"))
    elif problem == "other key":
        sign_file(other_gpg_key, repomd)
    elif problem == "garbage":
        asc.write_text("-----BEGIN PGP SIGNATURE-----\n\nbm90IGEgc2lnbmF0dXJl\n")
    with FeedServer(feed.root) as server:
        options = ImporterOptions(feed=server.url, gpgkey=gpg_key.public_text)
        with pytest.raises(OperationFailed) as caught:
            await sync(repo, options, Progress())
    assert caught.value.message == expected
    view = View(repo)
    assert view.version == 1  # nothing was committed
    assert len(view.packages) == 3


@pytest.mark.anyio
async def test_a_mirror_without_a_good_signature_is_skipped(
    tmp_path: Path, gpg_key, other_gpg_key
) -> None:
    good = signed_feed(tmp_path / "good", gpg_key)
    bad = build_feed(tmp_path / "bad", default_packages(3))
    sign_file(other_gpg_key, bad.root / "repodata" / "repomd.xml")
    with FeedServer(bad.root) as first, FeedServer(good.root) as second:
        mirrors = tmp_path / "mirrors"
        mirrors.mkdir()
        (mirrors / "list").write_text(f"{first.url}\n{second.url}\n")
        with FeedServer(mirrors) as lists:
            options = ImporterOptions(mirrorlist=lists.url + "list", gpgkey=gpg_key.public_text)
            progress = Progress()
            summary = await sync(tmp_path / "repo", options, progress)
    assert summary["mirror"] == second.url
    assert summary["signed_by"] == gpg_key.fingerprint
    assert "which the repository's gpgkey does not hold" in json.dumps(progress.snapshot())


def test_gpgkey_must_be_an_armored_public_key(gpg_key) -> None:
    for value, message in (
        ("not a key", "gpgkey must be an ASCII-armored OpenPGP public key"),
        (gpg_key.secret.read_text(), "gpgkey holds a secret key: give the public key"),
        ("x" * (signing.MAX_KEY + 1), f"gpgkey is longer than {signing.MAX_KEY} characters"),
        (gpg_key.public_text.replace("\n", "\n\u00e9", 1), "gpgkey must be ASCII text"),
        (7, "gpgkey must be a string or null"),
    ):
        with pytest.raises(InvalidRequest) as caught:
            ImporterOptions(gpgkey=value)  # type: ignore[arg-type]
        assert caught.value.message.startswith(message), caught.value.message
        assert caught.value.data == {"key": "gpgkey"}


@pytest.mark.anyio
async def test_a_gpgkey_gpg_cannot_read_fails_the_sync(tmp_path: Path, gpg_key) -> None:
    feed = signed_feed(tmp_path / "feed", gpg_key)
    broken = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"
    with pytest.raises(OperationFailed) as caught:
        await sync(tmp_path / "repo", ImporterOptions(feed=feed.url, gpgkey=broken), Progress())
    assert caught.value.message.startswith("gpgkey is not a usable OpenPGP public key")


def test_the_daemon_shows_why_a_signed_sync_failed(tmp_path: Path, gpg_key) -> None:
    """Through coordctl: --gpgkey reads the file on the client's side, the key is stored
    and shown, and a feed without a signature fails the task with the reason."""
    feed = build_feed(tmp_path / "feed", default_packages(2))
    with running_daemon(tmp_path / "state") as daemon, FeedServer(feed.root) as server:
        create(daemon, "demo", "--feed", server.url, "--gpgkey", str(gpg_key.public))
        shown = json.loads(coordctl(daemon, "--json", "repo", "show", "--repo-id", "demo").stdout)
        assert shown["importer"]["gpgkey"] == gpg_key.public_text
        show = coordctl(daemon, "repo", "show", "--repo-id", "demo").stdout
        assert f"an armored public key of {len(gpg_key.public_text)} characters" in show
        result = coordctl(daemon, "repo", "sync", "--repo-id", "demo", "--wait")
        assert result.returncode == exitcodes.TASK_FAILED, result.stdout + result.stderr
        assert (
            "Repository sync failed: repomd.xml.asc: the feed has no signature of repomd.xml,"
            " and the repository's gpgkey requires one"
        ) in flat(result.stdout)
        with pytest.raises(InvalidRequest) as caught:  # -32602, naming the key
            daemon.call("repo.update", repo_id="demo", importer={"gpgkey": "x" * 70_000})
        assert caught.value.code == -32602
        assert caught.value.data == {"key": "gpgkey"}
        assert caught.value.message == "gpgkey is longer than 65536 characters"
        refused = coordctl(
            daemon, "repo", "update", "--repo-id", "demo", "--gpgkey", str(gpg_key.secret)
        )
        assert refused.returncode != 0
        assert "gpgkey holds a secret key" in refused.stderr
        sign_file(gpg_key, feed.root / "repodata" / "repomd.xml")
        result = coordctl(daemon, "repo", "sync", "--repo-id", "demo", "--wait")
        assert result.returncode == 0, result.stdout + result.stderr
        cleared = coordctl(daemon, "repo", "update", "--repo-id", "demo", "--gpgkey", "")
        assert cleared.returncode == 0, cleared.stderr
        shown = json.loads(coordctl(daemon, "--json", "repo", "show", "--repo-id", "demo").stdout)
        assert shown["importer"]["gpgkey"] is None


# -- signing a publication -----------------------------------------------------------------------


def dnf_gpg_command(tmp_path: Path, baseurl: str, root: Path, key_url: str) -> list[str]:
    """dnf on ``baseurl`` alone with repo_gpgcheck=1 and the published key, into ``root``."""
    return dnf_command(
        baseurl,
        root / "dnf-cache",
        root,
        "--setopt=t.repo_gpgcheck=1",
        f"--setopt=t.gpgkey={key_url}",
    )


def repoquery(tmp_path: Path, pub: Path, key: Path, name: str) -> subprocess.CompletedProcess[str]:
    command = dnf_gpg_command(tmp_path, pub.as_uri(), tmp_path / name, key.as_uri())
    try:
        return subprocess.run(
            [*command, "repoquery", "--qf", "%{name}-%{version}"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        stop_dnf_agents(tmp_path / name)


@pytest.mark.anyio
@pytest.mark.skipif(DNF is None, reason="dnf is not installed")
async def test_dnf_with_repo_gpgcheck_reads_a_signed_publication_and_refuses_a_tampered_one(
    tmp_path: Path,
    gpg_key,
    real_rpms: list[Path],  # noqa: F811 - the fixture imported above
) -> None:
    feed = build_rpm_feed(tmp_path / "feed", real_rpms)
    repo = tmp_path / "repo"
    await sync(repo, ImporterOptions(feed=feed.url), Progress())
    pub = tmp_path / "published" / "repo"
    summary = publish(repo, pub, signing={"key": str(gpg_key.secret), "passphrase_file": None})
    assert summary["signed_by"] == gpg_key.fingerprint
    repodata = pub / "repodata"
    key = tmp_path / "repomd.xml.key"  # as a client keeps it, outside the tree
    shutil.copyfile(repodata / "repomd.xml.key", key)
    assert key.read_text() == gpg_key.public_text

    accepted = repoquery(tmp_path, pub, key, "good")
    assert accepted.returncode == 0, accepted.stderr
    assert "coordd-hello-1.1" in accepted.stdout.split()

    # A copy of the tree with repomd.xml changed after signing (a revision digit), and one
    # whose signature was made by another key: dnf refuses both.
    tampered = tmp_path / "tampered"
    shutil.copytree(pub, tampered, symlinks=False)
    repomd = tampered / "repodata" / "repomd.xml"
    repomd.write_bytes(repomd.read_bytes().replace(b"<revision>", b"<revision>1", 1))
    refused = repoquery(tmp_path, tampered, key, "tampered")
    assert refused.returncode != 0, refused.stdout
    assert "repomd.xml GPG signature verification error: Bad GPG signature" in refused.stderr
    assert "coordd-hello" not in refused.stdout

    resigned = tmp_path / "resigned"
    shutil.copytree(pub, resigned, symlinks=False)
    other = make_key(tmp_path / "other", "not the publisher")
    try:
        sign_file(other, resigned / "repodata" / "repomd.xml")
    finally:
        stop_agent(other)
    refused = repoquery(tmp_path, resigned, key, "resigned")
    assert refused.returncode != 0, refused.stdout
    assert "repomd.xml GPG signature verification error" in refused.stderr
    assert "coordd-hello" not in refused.stdout

    unsigned = publish(repo, pub)  # without signing: no stale signature stays behind
    assert unsigned["signed_by"] is None
    assert not (pub / "repodata" / "repomd.xml.asc").exists()
    assert not (pub / "repodata" / "repomd.xml.key").exists()


def test_a_key_with_a_passphrase_signs_with_its_passphrase_file(tmp_path: Path) -> None:
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed (Debian package gnupg)")
    key = make_key(tmp_path / "key", passphrase="correct horse")
    stop_agent(key)  # the daemon's gpg must not find the passphrase cached anywhere
    repodata = tmp_path / "repodata"
    repodata.mkdir()
    (repodata / "repomd.xml").write_text("<repomd/>\n")
    wrong = tmp_path / "wrong"
    wrong.write_text("battery staple\n")
    with pytest.raises(signing.SignatureError, match=r"cannot sign repomd\.xml"):
        signing.sign_repomd(repodata, str(key.secret), str(wrong))
    right = tmp_path / "right"
    right.write_text("correct horse\n")
    assert signing.sign_repomd(repodata, str(key.secret), str(right)) == key.fingerprint
    public = (repodata / "repomd.xml.key").read_text()
    signature = (repodata / "repomd.xml.asc").read_bytes()
    assert signing.verify(public, b"<repomd/>\n", signature) == key.fingerprint


def test_the_daemon_publishes_signed_when_asked_and_refuses_without_a_key(
    tmp_path: Path, gpg_key
) -> None:
    feed = build_feed(tmp_path / "feed", default_packages(2))
    state = tmp_path / "state"
    with running_daemon(state) as daemon, FeedServer(feed.root) as server:
        create(daemon, "demo", "--feed", server.url, "--sign-metadata", "true")
        assert coordctl(daemon, "repo", "sync", "--repo-id", "demo", "--wait").returncode == 0
        result = coordctl(daemon, "repo", "publish", "--repo-id", "demo", "--wait")
        assert result.returncode == exitcodes.TASK_FAILED
        assert (
            "Repository publish failed: repository demo is to be published signed"
            " (sign_metadata), but the daemon has no signing key: set [signing] key in its"
            " configuration file"
        ) in flat(result.stdout)
        assert not (state / "published" / "demo").exists()

        daemon.config_file().write_text(f'[signing]\nkey = "{gpg_key.secret}"\n')
        daemon.restart()
        result = coordctl(daemon, "--json", "repo", "publish", "--repo-id", "demo", "--wait")
        assert result.returncode == 0, result.stdout + result.stderr
        task = json.loads(result.stdout)["task"]
        assert task["result"]["signed_by"] == gpg_key.fingerprint
        repodata = state / "published" / "demo" / "repodata"
        assert signing.verify(
            gpg_key.public_text,
            (repodata / "repomd.xml").read_bytes(),
            (repodata / "repomd.xml.asc").read_bytes(),
        )
        shown = json.loads(coordctl(daemon, "--json", "repo", "show", "--repo-id", "demo").stdout)
        assert shown["sign_metadata"] is True
        coordctl(daemon, "repo", "update", "--repo-id", "demo", "--sign-metadata", "false")
        assert coordctl(daemon, "repo", "publish", "--repo-id", "demo", "--wait").returncode == 0
        assert not (repodata / "repomd.xml.asc").exists()


def test_signing_files_must_be_readable_when_the_configuration_is(tmp_path: Path) -> None:
    config = tmp_path / "coordd.toml"
    config.write_text(
        f'[signing]\nkey = "{tmp_path / "absent.asc"}"\n'
        f'passphrase_file = "{tmp_path / "absent.pass"}"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config, {}, system=False)
    assert caught.value.problems == [
        f"{config}: signing.key: cannot read {tmp_path / 'absent.asc'}: No such file or directory",
        f"{config}: signing.passphrase_file: cannot read {tmp_path / 'absent.pass'}:"
        " No such file or directory",
    ]
    (tmp_path / "absent.pass").write_text("x\n")
    config.write_text(f'[signing]\npassphrase_file = "{tmp_path / "absent.pass"}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config, {}, system=False)
    assert caught.value.problems == [
        f"{config}: signing.passphrase_file: there is no signing.key it could unlock"
    ]
