"""A feed with a large distribution's metadata over small package files, cached on disk.

Each package file is a few hundred bytes to 1 KiB of random bytes (the importer checks
only size and sha256 against primary.xml), but its metadata is as heavy as a real
distribution's: per package about 2.4 KB of primary.xml (a full header, 15-25
provides/requires, the primary subset of its files), 2.2 KB of filelists.xml (35-55
entries) and 0.8 KB of other.xml (2-6 changelog entries). At 50,000 packages that is about
120 MB, 110 MB and 40 MB uncompressed, the size of a large distribution's repodata.

Fast enough to build at that size in well under a minute: XML is written as strings (the
same shapes createrepo_c writes, and the conventions of ``tests/helpers/feeds.py``:
headers, repomd records), streamed through gzip with the open checksum and size counted
on the way, never held as a tree or a whole document. A feed is built once per set of
parameters under ``/var/tmp/coordd-bench-scale-<params>`` and reused; the directory
appears only when complete (built beside it, then renamed).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests.helpers.feeds import FILELISTS_HEAD, OTHER_HEAD, PRIMARY_HEAD, Record, repomd_xml

#: Bump when the output changes, so a cached feed of an older shape is not reused.
GENERATOR_VERSION = 1
CACHE_ROOT = Path("/var/tmp")

_WORDS = (
    "library",
    "tool",
    "daemon",
    "client",
    "server",
    "plugin",
    "module",
    "bindings",
    "utilities",
    "runtime",
    "devel",
    "data",
    "fonts",
    "theme",
    "documentation",
    "extension",
    "driver",
    "framework",
    "toolkit",
    "parser",
    "engine",
    "interface",
    "compression",
    "network",
    "graphics",
    "audio",
    "video",
    "crypto",
    "storage",
    "database",
    "python",
    "perl",
    "ruby",
    "lua",
    "java",
    "golang",
    "rust",
    "shared",
    "static",
    "headers",
    "locale",
    "manual",
    "command-line",
    "support",
    "fast",
    "simple",
    "portable",
    "secure",
    "modern",
    "lightweight",
)
_LANGS = (
    "de",
    "es",
    "fr",
    "it",
    "ja",
    "ko",
    "pl",
    "pt_BR",
    "ru",
    "sv",
    "tr",
    "uk",
    "zh_CN",
    "zh_TW",
    "cs",
    "da",
    "fi",
    "hu",
    "nl",
)
_LICENSES = ("MIT", "GPL-2.0-or-later", "LGPL-2.1-or-later", "Apache-2.0", "BSD-3-Clause")
_AUTHORS = (
    "Fedora Release Engineering &lt;releng@fedoraproject.org&gt;",
    "Jane Maintainer &lt;jane@example.org&gt;",
    "Packager Person &lt;packager@example.com&gt;",
    "Python Maint &lt;python-maint@redhat.com&gt;",
)
_SYSTEM_REQUIRES = (
    '<rpm:entry name="libc.so.6()(64bit)"/>',
    '<rpm:entry name="libc.so.6(GLIBC_2.34)(64bit)"/>',
    '<rpm:entry name="libm.so.6()(64bit)"/>',
    '<rpm:entry name="libgcc_s.so.1()(64bit)"/>',
    '<rpm:entry name="libstdc++.so.6(GLIBCXX_3.4)(64bit)"/>',
    '<rpm:entry name="rtld(GNU_HASH)"/>',
    '<rpm:entry name="/usr/bin/sh" pre="1"/>',
    '<rpm:entry name="python(abi)" flags="EQ" epoch="0" ver="3.12"/>',
    '<rpm:entry name="glibc" flags="GE" epoch="0" ver="2.38"/>',
    '<rpm:entry name="systemd" pre="1"/>',
    '<rpm:entry name="libz.so.1()(64bit)"/>',
    '<rpm:entry name="libssl.so.3()(64bit)"/>',
)


@dataclass(frozen=True)
class BigFeed:
    """A generated feed: its root (to serve), its package hrefs, and what it holds."""

    root: Path
    hrefs: list[str]
    package_bytes: int
    docs: dict[str, dict[str, int]]  # type -> {"open_size", "size"}
    seconds: float  # how long generating it took (when it was built, not this run)
    cached: bool  # reused from an earlier run


class _Document:
    """One metadata document streamed through gzip; knows its open checksum and size."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in finish()
        self.gz = gzip.GzipFile(fileobj=self.raw, mode="wb", compresslevel=6, mtime=0)
        self.open_hash = hashlib.sha256()
        self.open_size = 0

    def write(self, text: str) -> None:
        data = text.encode()
        self.open_hash.update(data)
        self.open_size += len(data)
        self.gz.write(data)

    def finish(self, repodata: Path, base: str) -> Record:
        self.gz.close()
        self.raw.close()
        digest = hashlib.sha256()
        with open(self.path, "rb") as stored:
            while chunk := stored.read(1 << 20):
                digest.update(chunk)
        checksum = digest.hexdigest()
        name = f"{checksum}-{base}.xml.gz"
        self.path.rename(repodata / name)
        return Record(
            href=f"repodata/{name}",
            data=b"",
            open_data=b"",
            checksum=checksum,
            size=(repodata / name).stat().st_size,
            open_size=self.open_size,
            open_checksum=self.open_hash.hexdigest(),
        )


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(_WORDS, k=words))


def _package_xml(
    rng: random.Random, i: int, count: int, checksum: str, size: int, href: str
) -> tuple[str, str, str]:
    """The primary, filelists and other XML of package ``i``."""
    name = f"pkg{i}"
    epoch = "1" if i % 50 == 0 else "0"
    ver = f"{1 + i % 17}.{i % 23}.{i % 7}"
    rel = f"{1 + i % 5}.fc40"
    arch = "noarch" if i % 5 == 0 else "x86_64"
    evr = f'epoch="{epoch}" ver="{ver}" rel="{rel}"'
    soname = f"lib{name}.so.{1 + i % 3}"

    paths: list[tuple[str, str]] = [("", f"/usr/bin/{name}"), ("dir", f"/usr/share/{name}")]
    if i % 3 == 0:
        paths.append(("", f"/etc/{name}.conf"))
    if arch != "noarch":
        paths.append(("", f"/usr/lib64/{soname}"))
    paths += [
        ("dir", f"/usr/share/doc/{name}"),
        ("", f"/usr/share/doc/{name}/README"),
        ("", f"/usr/share/man/man1/{name}.1.gz"),
    ]
    for lang in rng.sample(_LANGS, rng.randint(0, 6)):
        paths.append(("", f"/usr/share/locale/{lang}/{name}.mo"))
    for k in range(rng.randint(35, 55) - len(paths)):
        paths.append(("", f"/usr/share/{name}/{rng.choice(_WORDS)[:6]}{k}.py"))

    provides = [
        f'<rpm:entry name="{name}" flags="EQ" {evr}/>',
    ]
    if arch != "noarch":
        provides.append(f'<rpm:entry name="{name}(x86-64)" flags="EQ" {evr}/>')
        provides.append(f'<rpm:entry name="{soname}()(64bit)"/>')
    if i % 3 == 0:
        provides.append(f'<rpm:entry name="config({name})" flags="EQ" {evr}/>')
    for k in range(rng.randint(1, 5)):
        provides.append(f'<rpm:entry name="{name}-{rng.choice(_WORDS)}{k}"/>')
    requires = list(rng.sample(_SYSTEM_REQUIRES, rng.randint(4, 8)))
    for _ in range(rng.randint(3, 9)):
        target = rng.randrange(count)
        requires.append(f'<rpm:entry name="libpkg{target}.so.{1 + target % 3}()(64bit)"/>')
    ind = "\n      "
    primary_files = "".join(
        f'\n    <file type="dir">{p}</file>' if t else f"\n    <file>{p}</file>"
        for t, p in paths
        if p.startswith(("/usr/bin/", "/etc/"))
    )
    primary = (
        f'<package type="rpm">\n  <name>{name}</name>\n  <arch>{arch}</arch>\n'
        f"  <version {evr}/>\n"
        f'  <checksum type="sha256" pkgid="YES">{checksum}</checksum>\n'
        f"  <summary>{_sentence(rng, rng.randint(3, 7))}</summary>\n"
        f"  <description>{_sentence(rng, rng.randint(28, 64))}.</description>\n"
        f"  <packager>Fedora Project</packager>\n  <url>https://{name}.example.org/</url>\n"
        f'  <time file="{1_700_000_000 + i}" build="{1_699_000_000 + i}"/>\n'
        f'  <size package="{size}" installed="{size * 37}" archive="{size * 38}"/>\n'
        f'  <location href="{href}"/>\n  <format>\n'
        f"    <rpm:license>{rng.choice(_LICENSES)}</rpm:license>\n"
        "    <rpm:vendor>Fedora Project</rpm:vendor>\n    <rpm:group>Unspecified</rpm:group>\n"
        f"    <rpm:buildhost>buildvm-x86-{i % 40:02d}.iad2.fedoraproject.org</rpm:buildhost>\n"
        f"    <rpm:sourcerpm>{name}-{ver}-{rel}.src.rpm</rpm:sourcerpm>\n"
        f'    <rpm:header-range start="4504" end="{4504 + 20 * size}"/>\n'
        f"    <rpm:provides>{ind}{ind.join(provides)}\n    </rpm:provides>\n"
        f"    <rpm:requires>{ind}{ind.join(requires)}\n    </rpm:requires>"
        f"{primary_files}\n  </format>\n</package>\n"
    )
    head = f'<package pkgid="{checksum}" name="{name}" arch="{arch}">\n  <version {evr}/>\n'
    filelists = (
        head
        + "".join(
            f'  <file type="dir">{p}</file>\n' if t else f"  <file>{p}</file>\n" for t, p in paths
        )
        + "</package>\n"
    )
    changelogs = []
    for k in range(rng.randint(2, 6)):
        author = rng.choice(_AUTHORS)
        changelogs.append(
            f'  <changelog author="{author} - {ver}-{rel}" date="{1_690_000_000 - k * 86400}">'
            f"- {_sentence(rng, rng.randint(2, 6))} (rhbz#{2_000_000 + i + k})</changelog>\n"
        )
    other = head + "".join(changelogs) + "</package>\n"
    return primary, filelists, other


def _hrefs(count: int) -> Iterator[tuple[int, str]]:
    for i in range(count):
        name = f"pkg{i}"
        arch = "noarch" if i % 5 == 0 else "x86_64"
        yield i, f"Packages/p/{name}-{1 + i % 17}.{i % 23}.{i % 7}-{1 + i % 5}.fc40.{arch}.rpm"


def build_big_feed(root: Path, count: int, seed: int = 0) -> dict[str, dict[str, int]]:
    """Write the feed of ``count`` packages under ``root``; return its documents' sizes."""
    rng = random.Random(seed)
    repodata = root / "repodata"
    repodata.mkdir(parents=True)
    (root / "Packages" / "p").mkdir(parents=True)
    docs = {
        "primary": _Document(repodata / "primary.tmp"),
        "filelists": _Document(repodata / "filelists.tmp"),
        "other": _Document(repodata / "other.tmp"),
    }
    docs["primary"].write(PRIMARY_HEAD.format(n=count))
    docs["filelists"].write(FILELISTS_HEAD.format(n=count))
    docs["other"].write(OTHER_HEAD.format(n=count))
    chunks: dict[str, list[str]] = {kind: [] for kind in docs}
    for i, href in _hrefs(count):
        data = rng.randbytes(rng.randint(300, 1024))
        with open(root / href, "wb") as out:
            out.write(data)
        xml = _package_xml(rng, i, count, hashlib.sha256(data).hexdigest(), len(data), href)
        for kind, text in zip(docs, xml, strict=True):
            chunks[kind].append(text)
        if i % 500 == 499:
            for kind, doc in docs.items():
                doc.write("".join(chunks[kind]))
                chunks[kind].clear()
    for kind, doc in docs.items():
        doc.write("".join(chunks[kind]))
    docs["primary"].write("</metadata>\n")
    docs["filelists"].write("</filelists>\n")
    docs["other"].write("</otherdata>\n")
    records = {kind: doc.finish(repodata, kind) for kind, doc in docs.items()}
    (repodata / "repomd.xml").write_bytes(repomd_xml(records, str(GENERATOR_VERSION)))
    return {
        kind: {"open_size": rec.open_size or 0, "size": rec.size or 0}
        for kind, rec in records.items()
    }


def cached_big_feed(count: int, seed: int = 0) -> BigFeed:
    """The feed of ``count`` packages, built under ``CACHE_ROOT`` unless it already is."""
    final = CACHE_ROOT / f"coordd-bench-scale-{count}p-seed{seed}-v{GENERATOR_VERSION}"
    manifest = final / "manifest.json"
    cached = manifest.exists()
    if not cached:
        building = final.with_name(f"{final.name}.building-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        started = time.perf_counter()
        docs = build_big_feed(building / "feed", count, seed)
        package_bytes = sum(p.stat().st_size for p in (building / "feed/Packages/p").iterdir())
        (building / "manifest.json").write_text(
            json.dumps(
                {
                    "docs": docs,
                    "package_bytes": package_bytes,
                    "seconds": time.perf_counter() - started,
                }
            )
        )
        shutil.rmtree(final, ignore_errors=True)  # a manifest-less leftover
        building.rename(final)
    info = json.loads(manifest.read_text())
    return BigFeed(
        root=final / "feed",
        hrefs=[href for _, href in _hrefs(count)],
        package_bytes=info["package_bytes"],
        docs=info["docs"],
        seconds=info["seconds"],
        cached=cached,
    )
