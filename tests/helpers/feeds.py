"""Fixture feeds built inside the test run.

``build_feed`` writes a complete yum feed into a directory: package files of random bytes
with createrepo_c-generated package metadata (primary, filelists, other), optionally
updateinfo, prestodelta with delta files, a comps file kept as an extra record, and a
``.treeinfo`` with the files it names. Metadata compression is chosen per feed (gz, xz,
bz2, zst or none); ``misleading_names`` gives every file a wrong suffix so only magic-byte
detection can read it.

The repomd.xml is written here by hand rather than by createrepo_c so that hostile tests
can lie in it on purpose (sizes, checksums, checksum types, open-size, xml:base): a
``Feed`` keeps its uncompressed documents and ``Feed.write_metadata`` re-publishes them
with any override.

``build_rpms`` builds a few real noarch RPMs with ``rpmbuild`` (once per session, through
the ``real_rpms`` fixture) for the test that hands a publication to dnf.
"""

from __future__ import annotations

import bz2
import datetime
import gzip
import hashlib
import itertools
import lzma
import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import createrepo_c as cr
import pytest
import zstandard

from coordd.content.store import ContentStore
from coordd.engine.progress import Progress
from coordd.repo.yum import sync as yum
from coordd.repo.yum.options import ImporterOptions

COMPRESSIONS = ("gz", "xz", "bz2", "zst", "none")
SYNC_DEADLINE = 60.0


def content_store(repo_dir: Path) -> ContentStore:
    """The content store a test repository ``repo_dir`` lives in: ``state/`` beside it, so
    the repositories of one test share one pool (the repository's id is its name)."""
    store = ContentStore(repo_dir.parent / "state")
    store.open()
    return store


async def sync(
    repo_dir: Path, options: ImporterOptions, progress: Progress, **kwargs: Any
) -> dict[str, Any]:
    """``coordd.repo.yum.sync.sync`` of the repository ``repo_dir.name`` (``content_store``)
    under a deadline: a hang fails the test cleanly (the sync is cancelled inside the event
    loop) instead of stalling the whole run."""
    store = content_store(repo_dir)
    with anyio.fail_after(SYNC_DEADLINE):
        return await yum.sync(store, repo_dir.name, options, progress, **kwargs)


_SUFFIX = {"gz": ".gz", "xz": ".xz", "bz2": ".bz2", "zst": ".zst", "none": ""}

PRIMARY_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<metadata xmlns="http://linux.duke.edu/metadata/common" '
    'xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="{n}">\n'
)
FILELISTS_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<filelists xmlns="http://linux.duke.edu/metadata/filelists" packages="{n}">\n'
)
OTHER_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<otherdata xmlns="http://linux.duke.edu/metadata/other" packages="{n}">\n'
)


def compress(data: bytes, how: str) -> bytes:
    if how == "gz":
        return gzip.compress(data, mtime=0)
    if how == "xz":
        return lzma.compress(data)
    if how == "bz2":
        return bz2.compress(data)
    if how == "zst":
        return zstandard.ZstdCompressor().compress(data)
    if how == "none":
        return data
    raise ValueError(how)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Pkg:
    """A synthetic package: its EVR and the size of its random payload."""

    name: str
    version: str = "1.0"
    release: str = "1"
    epoch: str = "0"
    arch: str = "x86_64"
    size: int = 4096

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}.rpm"

    @property
    def href(self) -> str:
        return f"Packages/{self.name[0]}/{self.filename}"


@dataclass
class Record:
    """What the feed advertises for one data type in repomd.xml (overridable per test)."""

    href: str
    data: bytes  # as stored (compressed)
    open_data: bytes
    checksum_type: str = "sha256"
    checksum: str | None = None
    size: int | None = None
    open_size: int | None = None
    open_checksum: str | None = None
    base: str | None = None


@dataclass
class Feed:
    """A feed on disk and everything a test needs to know or change about it."""

    root: Path
    compression: str
    packages: list[Any] = field(default_factory=list)  # createrepo_c Package objects
    docs: dict[str, bytes] = field(default_factory=dict)  # uncompressed metadata by type
    deltas: list[dict[str, Any]] = field(default_factory=list)
    tree_files: list[str] = field(default_factory=list)
    misleading_names: bool = False
    revision: str = "1"

    @property
    def url(self) -> str:
        return self.root.resolve().as_uri() + "/"

    @property
    def hrefs(self) -> set[str]:
        return {p.location_href for p in self.packages}

    def package(self, href: str) -> Any:
        return next(p for p in self.packages if p.location_href == href)

    def write_metadata(
        self,
        *,
        docs: dict[str, bytes] | None = None,
        raw: dict[str, bytes] | None = None,
        tweak: Callable[[str, Record], None] | None = None,
    ) -> None:
        """(Re)write repodata/ from ``self.docs`` (updated by ``docs``).

        ``raw`` gives stored bytes for a type as they are (no compression, so a test can
        serve a bomb); ``tweak`` edits each repomd record before repomd.xml is written.
        """
        if docs:
            self.docs.update(docs)
        repodata = self.root / "repodata"
        shutil.rmtree(repodata, ignore_errors=True)
        repodata.mkdir(parents=True)
        records: dict[str, Record] = {}
        for rtype, doc in self.docs.items():
            how = "none" if rtype == "group" else self.compression
            stored = (raw or {}).get(rtype)
            data = stored if stored is not None else compress(doc, how)
            base = "comps.xml" if rtype == "group" else f"{rtype}.xml"
            suffix = ".gz" if self.misleading_names and how != "gz" else _SUFFIX[how]
            if self.misleading_names and how == "gz":
                suffix = ".zst"
            name = f"{sha256(data)}-{base}{suffix}"
            (repodata / name).write_bytes(data)
            records[rtype] = Record(href=f"repodata/{name}", data=data, open_data=doc)
        for rtype, rec in records.items():
            rec.checksum = sha256(rec.data)
            rec.size = len(rec.data)
            if rec.data != rec.open_data:
                rec.open_size = len(rec.open_data)
                rec.open_checksum = sha256(rec.open_data)
            if tweak is not None:
                tweak(rtype, rec)
        (repodata / "repomd.xml").write_bytes(repomd_xml(records, self.revision))

    def add(self, pkg: Pkg, data: bytes | None = None) -> Any:
        """List (and serve) one more package; returns its createrepo_c Package."""
        data = data if data is not None else random.Random(pkg.name).randbytes(pkg.size)
        path = self.root / pkg.href
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        package = cr_package(pkg, data)
        self.packages.append(package)
        self.docs.update(package_docs(self.packages))
        self.bump()
        return package

    def drop(self, href: str) -> None:
        """Stop listing (and serving) the package at ``href``."""
        self.packages = [p for p in self.packages if p.location_href != href]
        (self.root / href).unlink()
        self.docs.update(package_docs(self.packages))
        self.bump()

    def bump(self) -> None:
        self.revision = str(int(self.revision) + 1)
        self.write_metadata()


def repomd_xml(records: dict[str, Record], revision: str) -> bytes:
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<repomd xmlns="http://linux.duke.edu/metadata/repo" '
        'xmlns:rpm="http://linux.duke.edu/metadata/rpm">\n'
        f"  <revision>{revision}</revision>\n"
    ]
    for rtype, rec in records.items():
        out.append(f'  <data type="{rtype}">\n')
        out.append(f'    <checksum type="{rec.checksum_type}">{rec.checksum}</checksum>\n')
        if rec.open_checksum is not None:
            out.append(
                f'    <open-checksum type="{rec.checksum_type}">{rec.open_checksum}'
                "</open-checksum>\n"
            )
        base = f' xml:base="{rec.base}"' if rec.base else ""
        out.append(f'    <location{base} href="{rec.href}"/>\n')
        out.append(f"    <timestamp>{int(time.time())}</timestamp>\n")
        if rec.size is not None:
            out.append(f"    <size>{rec.size}</size>\n")
        if rec.open_size is not None:
            out.append(f"    <open-size>{rec.open_size}</open-size>\n")
        out.append("  </data>\n")
    out.append("</repomd>\n")
    return "".join(out).encode()


def cr_package(pkg: Pkg, data: bytes, *, checksum_type: str = "sha256") -> Any:
    p = cr.Package()
    p.name = pkg.name
    p.epoch = pkg.epoch
    p.version = pkg.version
    p.release = pkg.release
    p.arch = pkg.arch
    p.checksum_type = checksum_type
    p.pkgId = hashlib.new(checksum_type, data).hexdigest()
    p.location_href = pkg.href
    p.size_package = len(data)
    p.size_installed = len(data) * 2
    p.size_archive = len(data) + 100
    p.time_file = 1_700_000_000
    p.time_build = 1_699_000_000
    p.summary = f"The {pkg.name} package"
    p.description = f"{pkg.name} does things & <stuff>."
    p.url = f"https://example.org/{pkg.name}"
    p.rpm_license = "MIT"
    p.rpm_vendor = "coordd tests"
    p.rpm_group = "Unspecified"
    p.rpm_buildhost = "builder.example.org"
    p.rpm_sourcerpm = f"{pkg.name}-{pkg.version}-{pkg.release}.src.rpm"
    p.rpm_packager = "Tester <t@example.org>"
    p.rpm_header_start = 4504
    p.rpm_header_end = 4504 + len(data) // 4
    p.provides = [
        (pkg.name, "EQ", pkg.epoch, pkg.version, pkg.release, False),
        (f"{pkg.name}(x86-64)", "EQ", pkg.epoch, pkg.version, pkg.release, False),
    ]
    p.requires = [
        ("glibc", "GE", "0", "2.28", None, False),
        ("/bin/sh", None, None, None, None, True),
    ]
    p.conflicts = [(f"{pkg.name}-old", "LT", "0", "1", None, False)]
    p.obsoletes = [(f"{pkg.name}-legacy", None, None, None, None, False)]
    p.files = [
        ("", "/usr/bin/", pkg.name),
        ("dir", "/etc/", f"{pkg.name}.d"),
        ("", f"/usr/share/doc/{pkg.name}/", "README"),
    ]
    p.changelogs = [
        (f"Tester <t@example.org> - {pkg.version}-{pkg.release}", 1_690_000_000, "- build")
    ]
    return p


def package_docs(packages: Sequence[Any]) -> dict[str, bytes]:
    n = len(packages)
    primary = PRIMARY_HEAD.format(n=n) + "".join(cr.xml_dump_primary(p) for p in packages)
    filelists = FILELISTS_HEAD.format(n=n) + "".join(cr.xml_dump_filelists(p) for p in packages)
    other = OTHER_HEAD.format(n=n) + "".join(cr.xml_dump_other(p) for p in packages)
    return {
        "primary": (primary + "</metadata>\n").encode(),
        "filelists": (filelists + "</filelists>\n").encode(),
        "other": (other + "</otherdata>\n").encode(),
    }


def updateinfo_xml(packages: Sequence[Any]) -> bytes:
    records = []
    for i, pkg in enumerate(packages[:2]):
        rec = cr.UpdateRecord()
        rec.id = f"COORDD-2024-{i + 1:04d}"
        rec.fromstr = "security@example.org"
        rec.status = "final"
        rec.type = "security" if i == 0 else "bugfix"
        rec.version = "2"
        rec.title = f"Update for {pkg.name}"
        rec.severity = "Important" if i == 0 else "Low"
        rec.summary = "An update"
        rec.description = "Fixes <things> & more."
        rec.release = "Test 1"
        rec.rights = "CC0"
        rec.pushcount = "1"
        rec.reboot_suggested = i == 0
        rec.issued_date = datetime.datetime(2024, 1, 2, 3, 4, 5)
        rec.updated_date = datetime.datetime(2024, 2, 3, 4, 5, 6)
        ref = cr.UpdateReference()
        ref.href = f"https://bugs.example.org/{100 + i}"
        ref.id = str(100 + i)
        ref.type = "bugzilla"
        ref.title = "A bug"
        rec.append_reference(ref)
        coll = cr.UpdateCollection()
        coll.shortname = "test-1"
        coll.name = "Test 1"
        cp = cr.UpdateCollectionPackage()
        cp.name = pkg.name
        cp.version = pkg.version
        cp.release = pkg.release
        cp.epoch = pkg.epoch
        cp.arch = pkg.arch
        cp.src = pkg.rpm_sourcerpm
        cp.filename = pkg.location_href.rsplit("/", 1)[-1]
        cp.sum = pkg.pkgId
        cp.sum_type = cr.SHA256
        coll.append(cp)
        rec.append_collection(coll)
        records.append(cr.xml_dump_updaterecord(rec))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<updates>\n' + "".join(records) + "</updates>\n"
    ).encode()


def prestodelta_xml(deltas: Iterable[dict[str, Any]]) -> bytes:
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<prestodelta>\n']
    for d in deltas:
        parts.append(
            f'  <newpackage name="{d["name"]}" epoch="0" version="{d["version"]}" '
            f'release="{d["release"]}" arch="{d["arch"]}">\n'
            f'    <delta oldepoch="0" oldversion="{d["oldversion"]}" '
            f'oldrelease="{d["oldrelease"]}">\n'
            f"      <filename>{d['href']}</filename>\n"
            f"      <sequence>{d['name']}-{d['oldversion']}-{d['oldrelease']}-abcdef</sequence>\n"
            f"      <size>{d['size']}</size>\n"
            f'      <checksum type="sha256">{d["checksum"]}</checksum>\n'
            "    </delta>\n  </newpackage>\n"
        )
    parts.append("</prestodelta>\n")
    return "".join(parts).encode()


COMPS = b"""<?xml version="1.0" encoding="UTF-8"?>
<comps><group><id>tools</id><name>Tools</name><packagelist>
<packagereq type="default">alpha</packagereq></packagelist></group></comps>
"""


def default_packages(n: int = 6, size: int = 4096) -> list[Pkg]:
    """``n`` packages; the first name has three versions so only-newest has work to do."""
    pkgs = [
        Pkg("alpha", "1.0", "1", size=size),
        Pkg("alpha", "1.10", "1", size=size),
        Pkg("alpha", "1.9", "2", size=size),
    ]
    names = ["bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
    for i in range(max(n - 3, 0)):
        name = names[i] if i < len(names) else f"pkg{i:05d}"
        pkgs.append(Pkg(name, "2.0", "3", size=size + 17 * i))
    return pkgs[:n]


def build_feed(
    root: Path,
    packages: Sequence[Pkg] | None = None,
    *,
    compression: str = "gz",
    errata: bool = True,
    deltas: bool = False,
    treeinfo: bool = False,
    comps: bool = False,
    misleading_names: bool = False,
    seed: int = 0,
) -> Feed:
    """Write a complete synthetic feed under ``root`` and return its description."""
    rng = random.Random(seed)
    packages = list(packages if packages is not None else default_packages())
    root.mkdir(parents=True, exist_ok=True)
    feed = Feed(root=root, compression=compression, misleading_names=misleading_names)
    for pkg in packages:
        data = rng.randbytes(pkg.size)
        path = root / pkg.href
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        feed.packages.append(cr_package(pkg, data))
    feed.docs.update(package_docs(feed.packages))
    if errata:
        feed.docs["updateinfo"] = updateinfo_xml(feed.packages)
    if deltas:
        by_name: dict[str, list[Pkg]] = {}
        for pkg in packages:
            by_name.setdefault(pkg.name, []).append(pkg)
        for versions in by_name.values():
            for old, new in itertools.pairwise(versions):
                data = rng.randbytes(512)
                href = (
                    f"drpms/{new.name}-{old.version}-{old.release}_"
                    f"{new.version}-{new.release}.{new.arch}.drpm"
                )
                (root / href).parent.mkdir(parents=True, exist_ok=True)
                (root / href).write_bytes(data)
                feed.deltas.append(
                    {
                        "name": new.name,
                        "version": new.version,
                        "release": new.release,
                        "arch": new.arch,
                        "oldversion": old.version,
                        "oldrelease": old.release,
                        "href": href,
                        "size": len(data),
                        "checksum": sha256(data),
                    }
                )
        feed.docs["prestodelta"] = prestodelta_xml(feed.deltas)
    if comps:
        feed.docs["group"] = COMPS
    if treeinfo:
        lines = ["[general]", "name = Test", "", "[tree]", "arch = x86_64", ""]
        files = {
            "images/pxeboot/vmlinuz": rng.randbytes(3000),
            "images/pxeboot/initrd.img": rng.randbytes(5000),
            "images/install.img": rng.randbytes(7000),
        }
        for href, data in files.items():
            (root / href).parent.mkdir(parents=True, exist_ok=True)
            (root / href).write_bytes(data)
        lines += [
            "[images-x86_64]",
            "kernel = images/pxeboot/vmlinuz",
            "initrd = images/pxeboot/initrd.img",
            "",
            "[stage2]",
            "mainimage = images/install.img",
            "",
            "[checksums]",
        ]
        lines += [f"{href} = sha256:{sha256(data)}" for href, data in files.items()]
        (root / ".treeinfo").write_text("\n".join(lines) + "\n")
        feed.tree_files = sorted(files)
    feed.write_metadata()
    return feed


# -- real RPMs ----------------------------------------------------------------------------------

SPEC = """\
Name: %{pkgname}
Version: %{pkgver}
Release: 1
Summary: coordd test package %{pkgname}
License: MIT
BuildArch: noarch

%description
A package built by the coordd tests.

%install
mkdir -p %{buildroot}/usr/share/%{name}
echo "%{name} %{version}" > %{buildroot}/usr/share/%{name}/hello.txt

%files
/usr/share/%{name}/hello.txt
"""

REAL_PACKAGES = (("coordd-hello", "1.0"), ("coordd-hello", "1.1"), ("coordd-world", "2.0"))


def build_rpms(workdir: Path) -> list[Path]:
    """Build ``REAL_PACKAGES`` with rpmbuild into ``workdir``; return the RPM paths."""
    spec = workdir / "test.spec"
    workdir.mkdir(parents=True, exist_ok=True)
    spec.write_text(SPEC)
    top = workdir / "top"
    for name, version in REAL_PACKAGES:
        subprocess.run(
            [
                "rpmbuild",
                "-bb",
                "--quiet",
                "--define",
                f"_topdir {top}",
                "--define",
                f"pkgname {name}",
                "--define",
                f"pkgver {version}",
                str(spec),
            ],
            check=True,
            capture_output=True,
        )
    return sorted((top / "RPMS" / "noarch").glob("*.rpm"))


@pytest.fixture(scope="session")
def real_rpms(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Real noarch RPMs built once per session (skips when rpmbuild is absent)."""
    if shutil.which("rpmbuild") is None:
        pytest.skip("rpmbuild is not installed")
    return build_rpms(tmp_path_factory.mktemp("rpms"))


def build_rpm_feed(root: Path, rpms: Sequence[Path], *, compression: str = "zst") -> Feed:
    """A feed of real RPMs, metadata read from their headers by createrepo_c."""
    feed = Feed(root=root, compression=compression)
    for rpm in rpms:
        href = f"Packages/{rpm.name[0]}/{rpm.name}"
        (root / href).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rpm, root / href)
        feed.packages.append(cr.package_from_rpm(str(root / href), location_href=href))
    feed.docs.update(package_docs(feed.packages))
    feed.docs["updateinfo"] = updateinfo_xml(feed.packages)
    feed.write_metadata()
    return feed
