"""Hostile and broken feeds: every case ends in OperationFailed naming the problem, writes
nothing outside the repository, and leaves the previous content exactly as it was."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordd.api.errors import OperationFailed
from coordd.content.paths import UnsafePath, check_href, resolve_in
from coordd.engine.progress import Progress
from coordd.repo.yum.options import ImporterOptions, Limits
from tests.helpers.content import View
from tests.helpers.feeds import Feed, Pkg, Record, build_feed, compress, package_docs, sync
from tests.helpers.feedserver import (
    NOT_FOUND,
    RESET,
    SERVER_ERROR,
    STALL,
    TRICKLE,
    Body,
    FeedServer,
    Redirect,
    make_self_signed,
)

FAST = Limits(grace=0.3, min_rate=2000.0, stall_timeout=1.0, connect_timeout=2.0)
NEW = Pkg("newpkg", "1.0", "1", size=50_000)


def tree(repo: Path) -> tuple[Any, ...]:
    """What the repository holds: its latest version and every record in it."""
    view = View(repo).assert_consistent()
    return (
        view.version,
        view.packages,
        view.errata,
        view.deltas,
        view.tree_files,
        view.metadata_files,
        view.treeinfo,
    )


@dataclass
class Synced:
    """A repository synced from a good feed, and the means to make that feed hostile."""

    base: Path
    feed: Feed
    server: FeedServer
    repo: Path
    before: tuple[Any, ...]
    outside: set[str]

    async def fails(self, match: str, url: str | None = None, **options: Any) -> OperationFailed:
        progress = Progress()
        with pytest.raises(OperationFailed, match=match) as info:
            await sync(
                self.repo,
                ImporterOptions(feed=url or self.server.url, **options),
                progress,
                limits=FAST,
            )
        self.assert_intact()
        states = {k: v["state"] for k, v in progress.snapshot()["importer"].items()}
        assert "FAILED" in states.values(), states
        return info.value

    def assert_intact(self) -> None:
        assert tree(self.repo) == self.before
        assert self.server.count("evil") == 0  # no hostile location was ever fetched
        assert {p.name for p in self.base.iterdir()} == self.outside
        assert not any(
            p.name.startswith("evil")
            for p in self.base.rglob("*")
            if p.is_file() and self.feed.root not in p.parents
        )

    def new_package(self, href: str | None = None) -> Any:
        """Add NEW to the feed, optionally listed under another (hostile) href."""
        package = self.feed.add(NEW)
        # Were a check missing, the download of a traversal href would find these bytes.
        (self.feed.root / "evil.rpm").write_bytes((self.feed.root / NEW.href).read_bytes())
        if href is not None:
            self.replace_in("primary", f'href="{NEW.href}"', f'href="{href}"')
        return package

    def replace_in(self, rtype: str, old: str, new: str) -> None:
        doc = self.feed.docs[rtype].decode()
        assert old in doc, (old, rtype)
        self.feed.write_metadata(docs={rtype: doc.replace(old, new, 1).encode()})


@pytest.fixture
async def synced(tmp_path: Path) -> AsyncIterator[Synced]:
    feed = build_feed(tmp_path / "feed", errata=True)
    with FeedServer(feed.root) as server:
        repo = tmp_path / "repo"
        await sync(repo, ImporterOptions(feed=server.url), Progress())
        yield Synced(
            base=tmp_path,
            feed=feed,
            server=server,
            repo=repo,
            before=tree(repo),
            outside={p.name for p in tmp_path.iterdir()},
        )


def weird_href_cases() -> list[tuple[str, str]]:
    return [
        ("../evil.rpm", "parent directory"),
        ("../../evil.rpm", "parent directory"),
        ("Packages/../../../evil.rpm", "parent directory"),
        ("/tmp/evil.rpm", "absolute path"),
        ("//127.0.0.1/evil.rpm", "absolute path"),
        ("Packages/%2e%2e/%2e%2e/%2e%2e/evil.rpm", "after percent-decoding"),
        ("Packages/%2E%2E/evil.rpm", "after percent-decoding"),
        ("Packages/%252e%252e/%252e%252e/evil.rpm", "after percent-decoding"),
        ("%2fetc%2fevil.rpm", "percent-encoded absolute"),
        ("Packages\\..\\..\\evil.rpm", "backslash"),
        ("Packages/..%5c..%5cevil.rpm", "percent-encoded backslash"),
        ("Packages//evil.rpm", "empty"),
        ("Packages/./evil.rpm", "'.'"),
        ("http://127.0.0.1:1/evil.rpm", "URL scheme"),
        ("evil.rpm?x=1", "query"),
        ("Packages/evil\x01.rpm", "control character"),
        ("repodata/evil.rpm", "which a publication generates"),
    ]


# -- paths --------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("href", "problem"), weird_href_cases())
async def test_package_href_escape(synced: Synced, href: str, problem: str) -> None:
    escaped = href.replace("&", "&amp;").replace("\x01", "&#1;")
    if "\x01" in href:  # not representable in XML 1.0: the parser refuses it first
        synced.new_package(escaped)
        await synced.fails("malformed XML|control character")
        return
    synced.new_package(escaped)
    error = await synced.fails(problem)
    assert "primary" in error.message or "publication" in error.message


@pytest.mark.anyio
async def test_metadata_href_escape(synced: Synced) -> None:
    def tweak(rtype: str, rec: Record) -> None:
        if rtype == "primary":
            rec.href = "../" + rec.href

    synced.feed.write_metadata(tweak=tweak)
    await synced.fails(r"primary metadata .*parent directory")


@pytest.mark.anyio
async def test_delta_filename_escape(synced: Synced) -> None:
    old = synced.feed.packages[0]
    delta = (
        '<?xml version="1.0"?>\n<prestodelta><newpackage name="{n}" epoch="0" version="{v}" '
        'release="{r}" arch="{a}"><delta oldepoch="0" oldversion="0.1" oldrelease="1">'
        "<filename>../../evil.drpm</filename><sequence>x</sequence><size>3</size>"
        '<checksum type="sha256">{c}</checksum></delta></newpackage></prestodelta>\n'
    ).format(n=old.name, v=old.version, r=old.release, a=old.arch, c="0" * 64)
    synced.feed.write_metadata(docs={"prestodelta": delta.encode()})
    await synced.fails("parent directory")


@pytest.mark.anyio
async def test_treeinfo_path_escape(synced: Synced) -> None:
    (synced.feed.root / ".treeinfo").write_text(
        "[general]\nname = x\n[images-x86_64]\nkernel = ../../evil-kernel\n"
    )
    await synced.fails(r"\.treeinfo: unsafe location href.*parent directory")


def test_check_href_accepts_ordinary_paths() -> None:
    for href in (
        "Packages/a/alpha-1.0-1.x86_64.rpm",
        "libstdc++-devel-1.0-1.x86_64.rpm",
        "Packages/g/gtk%2B-1.rpm",
        ".treeinfo",
        "images/pxeboot/vmlinuz",
        "a..b/c...rpm",
    ):
        assert check_href(href) == href
    for href, problem in weird_href_cases():
        if problem == "which a publication generates":
            continue
        with pytest.raises(UnsafePath, match=problem.replace("'", "")):
            check_href(href)


def test_resolve_in_compares_components_and_follows_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "repo" / "content"
    root.mkdir(parents=True)
    sibling = tmp_path / "repo" / "content-evil"
    sibling.mkdir()
    # A symlink inside the root that points at a sibling sharing the root's prefix: a
    # string-prefix check would accept "/…/content-evil/x" as inside "/…/content".
    (root / "link").symlink_to(sibling)
    with pytest.raises(UnsafePath, match="resolves outside"):
        resolve_in(root, "link/x.rpm")
    (root / "up").symlink_to("..")
    with pytest.raises(UnsafePath, match="resolves outside"):
        resolve_in(root, "up/content.json")
    assert resolve_in(root, "Packages/x.rpm") == root.resolve() / "Packages/x.rpm"


# -- xml:base -----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    "base",
    ["http://evil.example.org/", "https://127.0.0.1/", "ftp://127.0.0.1/", "file:///etc/"],
)
async def test_package_xml_base_elsewhere(synced: Synced, base: str) -> None:
    synced.new_package()
    synced.replace_in(
        "primary", f'<location href="{NEW.href}"', f'<location xml:base="{base}" href="{NEW.href}"'
    )
    await synced.fails("xml:base .* points outside the feed")


@pytest.mark.anyio
async def test_xml_base_same_host_is_followed(synced: Synced) -> None:
    """Control: an xml:base on the feed's own host and scheme is legitimate."""
    synced.new_package()
    mirror = synced.feed.root / "mirror"
    (mirror / NEW.href).parent.mkdir(parents=True)
    (mirror / NEW.href).write_bytes((synced.feed.root / NEW.href).read_bytes())
    (synced.feed.root / NEW.href).unlink()
    synced.replace_in(
        "primary",
        f'<location href="{NEW.href}"',
        f'<location xml:base="{synced.server.url}mirror/" href="{NEW.href}"',
    )
    summary = await sync(synced.repo, ImporterOptions(feed=synced.server.url), Progress())
    assert summary["added"] == 1
    assert synced.server.count("mirror/" + NEW.href) == 1


@pytest.mark.anyio
async def test_metadata_xml_base_elsewhere(synced: Synced) -> None:
    def tweak(rtype: str, rec: Record) -> None:
        if rtype == "primary":
            rec.base = "http://evil.example.org/"

    synced.feed.write_metadata(tweak=tweak)
    await synced.fails("xml:base .* points outside the feed")


@pytest.mark.anyio
async def test_file_feed_xml_base_outside_feed_dir(tmp_path: Path) -> None:
    secret = tmp_path / "secret" / NEW.href
    secret.parent.mkdir(parents=True)
    feed = build_feed(tmp_path / "feed")
    package = feed.add(NEW)
    secret.write_bytes((feed.root / NEW.href).read_bytes())
    doc = (
        feed.docs["primary"]
        .decode()
        .replace(
            f'<location href="{NEW.href}"',
            f'<location xml:base="{(tmp_path / "secret").as_uri()}/" href="{NEW.href}"',
        )
    )
    feed.write_metadata(docs={"primary": doc.encode()})
    with pytest.raises(OperationFailed, match="outside the feed directory"):
        await sync(tmp_path / "repo", ImporterOptions(feed=feed.url), Progress())
    assert package.pkgId  # the bytes were there to steal; the check is what stopped it
    assert View(tmp_path / "repo").info is None


# -- XML ----------------------------------------------------------------------------------------

LAUGHS = (
    '<!DOCTYPE metadata [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;">]>\n'
)


@pytest.mark.anyio
async def test_primary_with_entity_declarations(synced: Synced) -> None:
    doc = synced.feed.docs["primary"].decode()
    head, _, rest = doc.partition("\n")
    body = rest.replace("<summary>The alpha package</summary>", "<summary>&d;</summary>", 1)
    synced.feed.write_metadata(docs={"primary": (head + "\n" + LAUGHS + body).encode()})
    await synced.fails("primary metadata .*DOCTYPE")


@pytest.mark.anyio
async def test_updateinfo_with_external_entity(synced: Synced) -> None:
    doc = synced.feed.docs["updateinfo"].decode()
    head, _, rest = doc.partition("\n")
    xxe = '<!DOCTYPE updates [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    rest = rest.replace("<title>Update for alpha</title>", "<title>&x;</title>", 1)
    synced.feed.write_metadata(docs={"updateinfo": (head + "\n" + xxe + rest).encode()})
    await synced.fails("updateinfo metadata .*DOCTYPE")


@pytest.mark.anyio
async def test_repomd_with_doctype(synced: Synced) -> None:
    repomd = synced.feed.root / "repodata" / "repomd.xml"
    head, _, rest = repomd.read_text().partition("\n")
    repomd.write_text(head + '\n<!DOCTYPE repomd SYSTEM "http://127.0.0.1:1/x.dtd">\n' + rest)
    await synced.fails("repomd.xml: document has a DOCTYPE")


@pytest.mark.anyio
async def test_malformed_primary(synced: Synced) -> None:
    doc = synced.feed.docs["primary"].decode().replace("</metadata>", "</metadta>")
    synced.feed.write_metadata(docs={"primary": doc.encode()})
    await synced.fails("primary metadata .*malformed XML")


@pytest.mark.anyio
async def test_undeclared_entity(synced: Synced) -> None:
    synced.replace_in("primary", "<summary>The alpha package</summary>", "<summary>&z;</summary>")
    await synced.fails("primary metadata .*malformed XML")


@pytest.mark.anyio
async def test_primary_root_element(synced: Synced) -> None:
    synced.feed.write_metadata(docs={"primary": synced.feed.docs["other"]})
    await synced.fails("primary metadata .*root element")


# -- compression --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_expands_past_declared_open_size(synced: Synced) -> None:
    def tweak(rtype: str, rec: Record) -> None:
        if rtype == "primary":
            assert rec.open_size is not None
            rec.open_size = rec.open_size // 4

    synced.feed.write_metadata(tweak=tweak)
    await synced.fails("primary metadata .*decompresses past its declared open-size of")


@pytest.mark.anyio
async def test_bomb_without_open_size_hits_the_cap(synced: Synced) -> None:
    doc = synced.feed.docs["primary"]
    head, _, rest = doc.partition(b">\n")
    bomb = compress(head + b">\n" + b" " * (8 << 20) + rest, "bz2")
    assert len(bomb) < 2000

    def tweak(rtype: str, rec: Record) -> None:
        if rtype == "primary":
            rec.open_size = rec.open_checksum = None

    synced.feed.write_metadata(raw={"primary": bomb}, tweak=tweak)
    progress = Progress()
    with pytest.raises(OperationFailed, match="decompresses past the cap of 1048576 bytes"):
        await sync(
            synced.repo,
            ImporterOptions(feed=synced.server.url),
            progress,
            limits=Limits(max_metadata_size=1 << 20),
        )
    synced.assert_intact()


@pytest.mark.anyio
async def test_open_checksum_mismatch(synced: Synced) -> None:
    def tweak(rtype: str, rec: Record) -> None:
        if rtype == "filelists":
            rec.open_checksum = "0" * 64

    synced.feed.write_metadata(tweak=tweak)
    await synced.fails("filelists metadata .*open-checksum mismatch")


@pytest.mark.anyio
async def test_truncated_compressed_data(synced: Synced) -> None:
    data = gzip.compress(synced.feed.docs["primary"])[:-40]

    def tweak(rtype: str, rec: Record) -> None:
        if rtype == "primary":
            rec.open_size = rec.open_checksum = None

    synced.feed.write_metadata(raw={"primary": data}, tweak=tweak)
    await synced.fails("primary metadata .*corrupt compressed data")


@pytest.mark.anyio
async def test_zchunk_is_refused(synced: Synced) -> None:
    synced.feed.write_metadata(raw={"other": b"\x00ZCK1" + b"\x00" * 100})
    await synced.fails("other metadata .*zchunk")


# -- checksums and sizes ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_metadata_checksum_mismatch(synced: Synced) -> None:
    def tweak(rtype: str, rec: Record) -> None:
        if rtype == "primary":
            rec.checksum = "0" * 64

    synced.feed.write_metadata(tweak=tweak)
    await synced.fails("primary metadata .*checksum mismatch")


@pytest.mark.anyio
async def test_metadata_size_mismatch(synced: Synced) -> None:
    def tweak(rtype: str, rec: Record) -> None:
        if rtype == "updateinfo":
            assert rec.size is not None
            rec.size += 1

    synced.feed.write_metadata(tweak=tweak)
    await synced.fails("updateinfo metadata .*server announces")


@pytest.mark.anyio
async def test_package_checksum_mismatch(synced: Synced) -> None:
    synced.new_package()
    path = synced.feed.root / NEW.href
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    error = await synced.fails(f"{NEW.href}: checksum mismatch")
    assert error.data["errors"][0]["href"] == NEW.href


@pytest.mark.anyio
async def test_package_larger_than_declared(synced: Synced) -> None:
    synced.new_package()
    data = (synced.feed.root / NEW.href).read_bytes()
    synced.server.misbehave(NEW.href, Body(data + b"more"))
    await synced.fails(f"{NEW.href}: server announces {NEW.size + 4} bytes")


@pytest.mark.anyio
async def test_package_size_in_metadata_wrong(synced: Synced) -> None:
    synced.new_package()
    synced.replace_in("primary", f'<size package="{NEW.size}"', f'<size package="{NEW.size - 1}"')
    await synced.fails("server announces")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("algo", "message"),
    [("sha1", "sha1 is weaker"), ("md5", "md5 is weaker"), ("crc32", "unknown checksum type")],
)
async def test_weak_or_unknown_metadata_checksum(synced: Synced, algo: str, message: str) -> None:
    def tweak(rtype: str, rec: Record) -> None:
        if rtype == "primary":
            rec.checksum_type = algo

    synced.feed.write_metadata(tweak=tweak)
    await synced.fails(f"repomd.xml record primary: checksum type .*{message}|{message}")


@pytest.mark.anyio
async def test_weak_package_checksum(synced: Synced) -> None:
    package = synced.new_package()
    data = (synced.feed.root / NEW.href).read_bytes()
    package.checksum_type = "md5"
    package.pkgId = hashlib.md5(data).hexdigest()
    synced.feed.write_metadata(docs=package_docs(synced.feed.packages))
    await synced.fails("package newpkg: checksum type md5 is weaker than sha256")


@pytest.mark.anyio
async def test_two_packages_claim_one_path(synced: Synced) -> None:
    synced.new_package("Packages/b/bravo-2.0-3.x86_64.rpm")
    await synced.fails("two different packages at 'Packages/b/bravo-2.0-3.x86_64.rpm'")


# -- transport ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_body_trickles_forever(synced: Synced) -> None:
    synced.new_package()
    synced.server.misbehave(NEW.href, TRICKLE)
    await synced.fails(f"{NEW.href}: too slow")


@pytest.mark.anyio
async def test_metadata_trickles_forever(synced: Synced) -> None:
    synced.server.misbehave("repodata/repomd.xml", TRICKLE)
    await synced.fails("repomd.xml: too slow")


@pytest.mark.anyio
async def test_body_stalls(synced: Synced) -> None:
    synced.new_package()
    synced.server.misbehave(NEW.href, STALL)
    await synced.fails(f"{NEW.href}: stalled")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("behaviour", "message"),
    [(NOT_FOUND, "HTTP 404"), (SERVER_ERROR, "HTTP 500"), (RESET, "failed|cannot fetch")],
)
async def test_package_transport_errors(synced: Synced, behaviour: str, message: str) -> None:
    synced.new_package()
    synced.server.misbehave(NEW.href, behaviour)
    await synced.fails(f"{NEW.href}: .*({message})")


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["repodata/repomd.xml", "primary"])
async def test_metadata_transport_errors(synced: Synced, path: str) -> None:
    if path == "primary":
        synced.feed.bump()
        path = next(
            p.name for p in (synced.feed.root / "repodata").iterdir() if "primary" in p.name
        )
        path = "repodata/" + path
    synced.server.misbehave(path, SERVER_ERROR)
    await synced.fails(r"HTTP 500 Internal Server Error from http://127\.0\.0\.1:\d+/" + path)


@pytest.mark.anyio
async def test_connection_refused(synced: Synced) -> None:
    await synced.fails("cannot fetch", url="http://127.0.0.1:9/")


@pytest.mark.anyio
async def test_redirect_to_file_and_loops(synced: Synced) -> None:
    synced.new_package()
    synced.server.misbehave(NEW.href, Redirect("file:///etc/passwd"))
    await synced.fails("refusing redirect from .* to non-HTTP URL file:///etc/passwd")
    synced.server.misbehave(NEW.href, Redirect("/" + NEW.href))
    await synced.fails("more than 5 redirects")


@pytest.mark.anyio
async def test_http_redirect_is_followed(synced: Synced) -> None:
    """Control: a redirect that keeps the scheme (or upgrades it) is fine."""
    synced.new_package()
    moved = synced.feed.root / "moved.rpm"
    moved.write_bytes((synced.feed.root / NEW.href).read_bytes())
    synced.server.misbehave(NEW.href, Redirect(synced.server.url + "moved.rpm", status=301))
    summary = await sync(synced.repo, ImporterOptions(feed=synced.server.url), Progress())
    assert summary["added"] == 1
    assert synced.server.count("moved.rpm") == 1


@pytest.mark.anyio
async def test_https_to_http_redirect_refused(tmp_path: Path) -> None:
    tls = make_self_signed(tmp_path)
    feed = build_feed(tmp_path / "feed")
    repo = tmp_path / "repo"
    with FeedServer(feed.root) as plain, FeedServer(feed.root, tls=tls) as secure:
        options = ImporterOptions(feed=secure.url, ca_file=str(tls.cert))
        await sync(repo, options, Progress())
        before = tree(repo)
        feed.add(NEW)
        secure.misbehave(NEW.href, Redirect(plain.url + NEW.href))
        with pytest.raises(OperationFailed, match="refusing redirect from https to http"):
            await sync(repo, options, Progress(), limits=FAST)
        secure.misbehave("repodata/repomd.xml", Redirect(plain.url + "repodata/repomd.xml"))
        with pytest.raises(OperationFailed, match="refusing redirect from https to http"):
            await sync(repo, options, Progress(), limits=FAST)
        assert plain.count() == 0  # the downgraded URL was never requested
        assert tree(repo) == before
