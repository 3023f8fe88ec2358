"""A publication answers dnf as its feed does: an Enterprise-Linux-style feed (real RPMs,
src.rpms, comps, modules, errata, productid, repomd tags) synced and published by the real
daemon, and the same dnf question asked of the feed and of the published tree.

Also: a filtered copy answers as a feed createrepo_c writes from exactly the copied
packages with what applies to them, and an older version published after a rollback
answers as the feed it was synced from.
"""

from __future__ import annotations

import gzip
import re
import sqlite3
from pathlib import Path
from typing import Any

import createrepo_c as cr
import pytest
from lxml import etree

from coordd.repo.repodata import cr_package
from coordd.repo.yum.decompress import decompressed
from coordd.repo.yum.modulemd import split_documents
from tests.helpers.daemon import DaemonProcess, coordctl
from tests.helpers.dnf import DNF
from tests.helpers.elfeed import (  # noqa: F401 - fixture
    COMPS,
    MODULES,
    ElFeed,
    dnf_answer,
    el_feed,
    write_feed,
)
from tests.helpers.feedserver import FeedServer

pytestmark = pytest.mark.skipif(DNF is None, reason="dnf is not installed")

NS = {
    "c": "http://linux.duke.edu/metadata/common",
    "rpm": "http://linux.duke.edu/metadata/rpm",
    "f": "http://linux.duke.edu/metadata/filelists",
    "o": "http://linux.duke.edu/metadata/other",
}


def done(daemon: DaemonProcess, answer: dict[str, Any]) -> dict[str, Any]:
    task = daemon.call("task.wait", task_id=answer["task"]["id"], timeout=90)
    assert task["state"] == "finished", task
    return task["result"]


def synced(
    daemon: DaemonProcess, repo_id: str, url: str, *, only_newest: bool = False
) -> dict[str, Any]:
    daemon.call("repo.create", repo_id=repo_id, importer={"feed": url, "only_newest": only_newest})
    return done(daemon, daemon.call("repo.sync", repo_id=repo_id))


def published(daemon: DaemonProcess, repo_id: str, version: int | None = None) -> Path:
    args = {} if version is None else {"version": version}
    done(daemon, daemon.call("repo.publish", repo_id=repo_id, **args))
    return Path(daemon.call("repo.show", repo_id=repo_id)["published_path"])


class Asker:
    """Asks dnf about trees, each with a cache directory (and installroot) of its own."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.count = 0

    def __call__(self, tree: Path, *args: str, check: bool = True, again: bool = False) -> str:
        """dnf's answer, where the tree's and dnf's own paths and times are masked;
        ``again``: in the installroot of the question before."""
        if not again:
            self.count += 1
        where = self.tmp_path / f"dnf-{self.count}"
        self.root = where / "root"
        out = dnf_answer(tree, where / "cache", *args, installroot=self.root, check=check)
        out = out.replace(str(where), "<dnf>").replace(str(tree), "<tree>")
        return "\n".join(
            line
            for line in out.splitlines()
            if not line.startswith(NOISE) and not DOWNLOAD.search(line)
        )

    def same(self, feed: Path, pub: Path, *args: str, after: tuple[str, ...] = ()) -> str:
        """Ask both (``after`` a command run first in the same installroot); the answers
        must be equal, and not empty, or the question asked nothing."""
        answers = []
        for tree in (feed, pub):
            if after:
                self(tree, *after)
            answers.append(self(tree, *args, again=bool(after)))
        expected, answer = answers
        assert answer == expected, args
        assert expected.strip(), args
        return expected


# Lines of -v answers that tell when and how dnf ran, not what it found.
NOISE = ("Loaded plugins", "DNF version", "cachedir", "Last metadata", "Repo-expire",
         "Repo-updated", "Completion plugin", "t: using metadata from")  # fmt: skip
DOWNLOAD = re.compile(r"[0-9.]+ [kMG]?B/s \|")  # a download's progress line
REPOLIST_LINES = ("Repo-revision", "Repo-tags", "Repo-distro-tags", "Repo-pkgs", "Repo-size")


def repolist(asker: Asker, tree: Path) -> list[str]:
    out = asker(tree, "repolist", "-v")
    return [line for line in out.splitlines() if line.startswith(REPOLIST_LINES)]


def primary_lists(tree: Path) -> list[tuple[Any, ...]]:
    """Per package, in primary.xml's order: its href and the order of its dependency
    entries of each kind, of its files (filelists) and of its changelog entries (other)."""
    repomd = cr.Repomd(str(tree / "repodata" / "repomd.xml"))
    docs = {}
    for record in repomd.records:
        if record.type in ("primary", "filelists", "other"):
            with decompressed(tree / record.location_href) as reader:
                docs[record.type] = etree.fromstring(reader.read(1 << 24))
    files = {
        p.get("pkgid"): [f.text for f in p.findall("f:file", NS)]
        for p in docs["filelists"].findall("f:package", NS)
    }
    changelogs = {
        p.get("pkgid"): [(c.get("author"), c.get("date")) for c in p.findall("o:changelog", NS)]
        for p in docs["other"].findall("o:package", NS)
    }
    out = []
    for package in docs["primary"].findall("c:package", NS):
        pkgid = package.find("c:checksum", NS).text
        deps = tuple(
            (kind, tuple(e.get("name") for e in package.findall(f".//rpm:{kind}/rpm:entry", NS)))
            for kind in (
                "provides",
                "requires",
                "conflicts",
                "obsoletes",
                "recommends",
                "suggests",
                "supplements",
                "enhances",
            )
        )
        primary_files = tuple(f.text for f in package.findall("c:format/c:file", NS))
        out.append(
            (
                package.find("c:location", NS).get("href"),
                deps,
                primary_files,
                tuple(files[pkgid]),
                tuple(changelogs[pkgid]),
            )
        )
    return out


@pytest.fixture
def asker(tmp_path: Path) -> Asker:
    return Asker(tmp_path)


def test_createrepo_c_lists_are_written_in_the_order_given(tmp_path: Path) -> None:
    """The binding reverses a list assigned to a Package attribute; cr_package compensates,
    so the XML holds the entries in the record's order."""
    record: Any = {
        "checksum": "0" * 64, "checksum_type": "sha256", "name": "p", "arch": "noarch",
        "epoch": "0", "version": "1", "release": "1", "href": "p-1-1.noarch.rpm",
        "requires": [["a", None, None, None, None, False], ["b", None, None, None, None, False]],
        "files": [["", "/usr/bin/z"], ["", "/usr/bin/a"]],
        "changelogs": [["new <n@x>", 200, "newer"], ["old <o@x>", 100, "older"]],
    }  # fmt: skip
    pkg = cr_package(record)
    assert [r[0] for r in pkg.requires] == ["a", "b"]
    assert [c[0] for c in pkg.changelogs] == ["new <n@x>", "old <o@x>"]
    path = tmp_path / "other.xml.gz"
    writer = cr.OtherXmlFile(str(path), cr.GZ_COMPRESSION)
    writer.add_pkg(pkg)
    writer.close()
    text = gzip.decompress(path.read_bytes()).decode()
    assert text.index("new &lt;n@x&gt;") < text.index("old &lt;o@x&gt;")
    primary = cr.xml_dump_primary(pkg)
    assert primary.index('name="a"') < primary.index('name="b"')
    assert primary.index("/usr/bin/z") < primary.index("/usr/bin/a")


def test_a_publication_answers_dnf_as_its_feed(
    tmp_path: Path,
    make_daemon: Any,
    el_feed: ElFeed,  # noqa: F811 - the fixture imported above
    asker: Asker,
) -> None:
    daemon = make_daemon(name="fidelity").start()
    with FeedServer(el_feed.root) as server:
        synced(daemon, "el", server.url)
    pub = published(daemon, "el")
    feed = el_feed.root

    tags = repolist(asker, feed)
    assert any(line.startswith("Repo-distro-tags") for line in tags), tags
    assert repolist(asker, pub) == tags
    shown = daemon.call("repo.show", repo_id="el")["content"]
    assert shown["tags"]["repo"] == ["fid-repo"]
    assert shown["not_carried"] == []

    # Packages in createrepo_c's order (not by href: src.rpms are in SRPMS/); every list
    # in the feed's order.
    hrefs = [entry[0] for entry in primary_lists(feed)]
    assert hrefs != sorted(hrefs)
    for mine, theirs in zip(primary_lists(pub), primary_lists(feed), strict=True):
        assert mine == theirs
    changelogs = asker.same(feed, pub, "repoquery", "--changelogs", "fid-tool")
    assert changelogs.index("Third entry") < changelogs.index("First entry")
    asker.same(feed, pub, "repoquery", "--qf", "%{name}-%{evr}.%{arch} %{sourcerpm}")
    deps = "%{provides} %{requires} %{conflicts} %{obsoletes} %{recommends} %{suggests}"
    asker.same(feed, pub, "repoquery", "--qf", deps + " %{supplements} %{enhances}", "fid-tool")
    asker.same(feed, pub, "group", "list", "-v", "--hidden")
    asker.same(feed, pub, "group", "info", "-v", "fid-core")
    installed = ("install", "fid-tool-2:1.0-1.x86_64", "fid-data", "fid-langpack-de")
    asker.same(feed, pub, "updateinfo", "list", "--all", after=installed)
    asker.same(feed, pub, "updateinfo", "info", "--all", after=installed)
    asker.same(feed, pub, "module", "list")


def test_only_newest_keeps_what_module_streams_need(
    tmp_path: Path,
    make_daemon: Any,
    el_feed: ElFeed,  # noqa: F811 - the fixture imported above
    asker: Asker,
) -> None:
    """With only-newest, fid-mod 1.0 (stream 1's only package) stays beside 2.0; the older
    fid-tool goes. dnf lists and installs both streams as from the feed."""
    daemon = make_daemon(name="newest").start()
    with FeedServer(el_feed.root) as server:
        synced(daemon, "el", server.url, only_newest=True)
    pub = published(daemon, "el")
    feed = el_feed.root
    names = asker(
        pub, "repoquery", "--qf", "%{name}-%{version}.%{arch}", "--disable-modular-filtering"
    )
    assert "fid-mod-1.0.noarch" in names.split()
    assert "fid-tool-1.0.x86_64" not in names.split()
    asker.same(feed, pub, "module", "list")
    for stream, version in (("1", "1.0"), ("2", "2.0")):
        installed = []
        for tree in (feed, pub):
            asker(tree, "module", "install", f"fid-mod:{stream}")
            installed.append((asker.root / "usr/share/fid-mod/about.txt").read_text())
        assert installed[0] == installed[1] == f"fid-mod {version} noarch\n"


def chosen_modules(present: set[str]) -> str:
    """The modules.yaml of the streams whose artifacts are all in ``present`` (file names),
    with the defaults of their module."""
    docs = split_documents(MODULES, "modules")
    names = {p.removesuffix(".rpm") for p in present}
    keep = [
        d
        for d in docs
        if d.document != "modulemd" or all(re.sub(r"-\d+:", "-", a) in names for a in d.artifacts)
    ]
    if not any(d.document == "modulemd" for d in keep):
        return ""
    return "".join(f"---\n{d.text}...\n" for d in keep)


def el_feed_mod_1(feed: ElFeed) -> list[Path]:
    return [p for p in feed.rpms if p.name.startswith("fid-mod-1.0-1.noarch")]


def test_a_filtered_copy_answers_as_a_feed_of_what_it_copied(
    tmp_path: Path,
    make_daemon: Any,
    el_feed: ElFeed,  # noqa: F811 - the fixture imported above
    asker: Asker,
) -> None:
    """A feed that lists fid-mod 1.0 in modules.yaml but lacks its package: a copy of
    fid-d* and fid-m* carries stream 2 and the defaults, not stream 1; the errata of
    fid-data, not those of fid-tool; comps whole."""
    without = [p for p in el_feed.rpms if not p.name.startswith("fid-mod-1.0-1.noarch")]
    source = write_feed(tmp_path / "source-feed", without)
    daemon = make_daemon(name="copy").start()
    with FeedServer(source.root) as server:
        synced(daemon, "src", server.url)
    daemon.call("repo.create", repo_id="dst")
    result = done(daemon, daemon.call("repo.copy", source="src", target="dst", name="fid-[dm]*"))
    assert result["errata"] == 1
    assert result["metadata"] == ["group", "modules", "productid"]
    pub = published(daemon, "dst")

    copied = [p for p in without if p.name.startswith(("fid-d", "fid-m"))]
    expected = write_feed(
        tmp_path / "expected-feed",
        copied,
        comps=COMPS,
        modules=chosen_modules({p.name for p in copied}),
    )
    assert "stream 2" in (chosen_modules({p.name for p in copied}))
    assert "stream 1" not in chosen_modules({p.name for p in copied})
    feed = expected.root
    asker.same(feed, pub, "group", "list", "-v", "--hidden")
    asker.same(feed, pub, "updateinfo", "list", "--all", after=("install", "fid-data"))
    asker.same(feed, pub, "module", "list")
    asker.same(feed, pub, "repoquery", "--qf", "%{name}-%{evr}.%{arch}")

    # Stream 1's package from a feed that has it: its stream joins the target's modules.
    with FeedServer(el_feed.root) as server:
        synced(daemon, "full", server.url)
    more = done(daemon, daemon.call("repo.copy", source="full", target="dst", name="fid-mod"))
    # The same comps and productid are there already: only modules.yaml changes.
    assert (more["copied"], more["metadata"], more["metadata_kept"]) == (1, ["modules"], [])
    pub = published(daemon, "dst")
    both = write_feed(tmp_path / "both-feed", [*copied, *el_feed_mod_1(el_feed)], comps=COMPS)
    asker.same(both.root, pub, "module", "list")
    asker.same(both.root, pub, "module", "info", "fid-mod")

    # Without a filter, everything comes: the target answers as the source feed.
    daemon.call("repo.create", repo_id="all")
    whole = done(daemon, daemon.call("repo.copy", source="src", target="all"))
    assert whole["errata"] == 3
    pub_all = published(daemon, "all")
    assert repolist(asker, pub_all) == repolist(asker, source.root)
    asker.same(source.root, pub_all, "group", "list", "-v", "--hidden")
    asker.same(source.root, pub_all, "module", "list")
    installed = ("install", "fid-tool-2:1.0-1.x86_64", "fid-data", "fid-langpack-de")
    asker.same(source.root, pub_all, "updateinfo", "list", "--all", after=installed)


def test_an_older_version_published_after_a_rollback_answers_as_its_feed(
    tmp_path: Path,
    make_daemon: Any,
    el_feed: ElFeed,  # noqa: F811 - the fixture imported above
    asker: Asker,
) -> None:
    """Version 1 from the whole feed; version 2 from a feed of two packages without
    modules, comps, errata or tags; a rollback to 1 publishes what the whole feed offers."""
    small = write_feed(
        tmp_path / "small-feed",
        [p for p in el_feed.rpms if p.name.startswith("fid-data")],
        comps=None,
        modules=None,
        updateinfo=False,
        productid=False,
        tags=False,
        revision="2",
    )
    daemon = make_daemon(name="rollback").start()
    with FeedServer(el_feed.root) as whole, FeedServer(small.root) as two:
        assert synced(daemon, "el", whole.url)["version"] == 1
        daemon.call("repo.update", repo_id="el", importer={"feed": two.url})
        assert done(daemon, daemon.call("repo.sync", repo_id="el"))["version"] == 2
    second = published(daemon, "el")
    assert asker(second, "module", "list") == ""
    lines = repolist(asker, second)
    assert lines == repolist(asker, small.root)
    assert not any(line.startswith("Repo-tags") for line in lines)
    assert done(daemon, daemon.call("repo.rollback", repo_id="el", version=1))["version"] == 3
    pub = published(daemon, "el")
    feed = el_feed.root
    assert repolist(asker, pub) == repolist(asker, feed)
    asker.same(feed, pub, "repoquery", "--changelogs", "fid-tool")
    asker.same(feed, pub, "group", "list", "-v", "--hidden")
    installed = ("install", "fid-tool-2:1.0-1.x86_64", "fid-data")
    asker.same(feed, pub, "updateinfo", "list", "--all", after=installed)
    asker.same(feed, pub, "module", "list")


def add_record(root: Path, rtype: str, data: bytes) -> None:
    """Add a record of ``rtype`` to the repomd.xml of the feed ``root``, as a tool that
    writes it (createrepo_c --zck) would."""
    path = root / "repodata" / f"{rtype}.bin"
    path.write_bytes(data)
    repomd = cr.Repomd(str(root / "repodata" / "repomd.xml"))
    record = cr.RepomdRecord(rtype, str(path))
    record.fill(cr.SHA256)
    repomd.set_record(record)
    (root / "repodata" / "repomd.xml").write_text(repomd.xml_dump())


def test_records_a_publication_does_not_carry_are_shown(
    tmp_path: Path,
    make_daemon: Any,
    el_feed: ElFeed,  # noqa: F811 - the fixture imported above
    asker: Asker,
) -> None:
    """The sqlite databases (createrepo_c --database) and a zchunk record are left out of
    the publication, listed by repo show, and dnf answers as from the feed."""
    rpms = [p for p in el_feed.rpms if p.name.startswith("fid-data")]
    feed = write_feed(tmp_path / "db-feed", rpms, modules=None, extra_args=("--database",))
    add_record(feed.root, "primary_zck", b"a stand-in for a zchunk file: never read")
    daemon = make_daemon(name="notcarried").start()
    with FeedServer(feed.root) as server:
        synced(daemon, "db", server.url)
    pub = published(daemon, "db")
    content = daemon.call("repo.show", repo_id="db")["content"]
    assert content["not_carried"] == ["filelists_db", "other_db", "primary_db", "primary_zck"]
    types = {r.type for r in cr.Repomd(str(pub / "repodata" / "repomd.xml")).records}
    assert types == {"primary", "filelists", "other", "group", "updateinfo", "productid"}
    result = coordctl(daemon, "repo", "show", "--repo-id", "db")
    assert result.returncode == 0, result.stderr
    shown = result.stdout
    assert "filelists_db, other_db, primary_db, primary_zck" in shown
    assert "fid-repo" in shown
    asker.same(feed.root, pub, "repoquery", "--qf", "%{name}-%{evr}.%{arch}")


def test_module_documents_and_repomd_go_with_their_units(
    make_daemon: Any,
    el_feed: ElFeed,  # noqa: F811 - the fixture imported above
) -> None:
    """modules.yaml's documents are kept while a unit names the file, a version's repomd
    description while the version exists."""
    daemon = make_daemon(name="orphans").start()
    with FeedServer(el_feed.root) as server:
        synced(daemon, "el", server.url)

    def rows(table: str) -> int:
        db = sqlite3.connect(daemon.state_dir / "content.db")
        try:
            return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        finally:
            db.close()

    assert (rows("module_documents"), rows("version_repomd")) == (3, 1)
    done(daemon, daemon.call("repo.delete", repo_id="el"))
    assert rows("version_repomd") == 0
    assert rows("module_documents") == 3  # an orphan's, until orphans are removed
    done(daemon, daemon.call("content.orphans.remove"))
    assert rows("module_documents") == 0
