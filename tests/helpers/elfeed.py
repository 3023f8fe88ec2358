"""An Enterprise-Linux-style feed built with the real tools, once per session.

``build_el_feed`` builds real RPMs with ``rpmbuild`` (x86_64 and i686 builds of one
package, noarch ones, and their src.rpms; an epoch; every dependency kind; several
changelog entries), writes the repodata with ``createrepo_c`` (revision, content, distro
and repo tags; comps with two groups, an environment and langpacks), then adds with
``modifyrepo_c`` a ``modules.yaml`` (two streams of one module, and its defaults), an
``updateinfo.xml`` (security, bugfix and enhancement errata with references) and a
``productid``. ``rebuild`` writes such a feed again from any subset of its packages, the
feed a filtered copy should look like to dnf.

``dnf_answer`` asks dnf one question about a tree (its own cache directory, ``--refresh``,
``-q``), so a test compares the answers for a feed and for its publication.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.dnf import dnf_command

TOOLS = ("rpmbuild", "createrepo_c", "modifyrepo_c")

REVISION = "20240601"
CONTENT_TAGS = ("binary-x86_64", "fid-content")
DISTRO_TAGS = (("cpe:/o:fid:el:9", "Fid EL 9"),)
REPO_TAGS = ("fid-repo",)
MODULE = "fid-mod"

SPEC = """\
Name: %{pkgname}
%{?pkgepoch:Epoch: %{pkgepoch}}
Version: %{pkgver}
Release: 1%{?dist}
Summary: %{pkgname}, a package of the fidelity feed
License: MIT
URL: https://example.org/%{pkgname}
%{?noarch:BuildArch: noarch}
%{?deps:%{deps}}

%description
%{pkgname} %{pkgver}: the fidelity feed installs it into an installroot.

%install
mkdir -p %{buildroot}/usr/share/%{name} %{buildroot}/usr/bin
echo "%{name} %{version} %{_target_cpu}" > %{buildroot}/usr/share/%{name}/about.txt
echo "b" > %{buildroot}/usr/share/%{name}/b.txt
echo "a" > %{buildroot}/usr/share/%{name}/a.txt
echo "%{name}" > %{buildroot}/usr/bin/%{name}
chmod 755 %{buildroot}/usr/bin/%{name}

%files
/usr/bin/%{name}
/usr/share/%{name}/about.txt
/usr/share/%{name}/b.txt
/usr/share/%{name}/a.txt

%changelog
* Wed Mar 06 2024 Carol Packager <carol@example.org> - %{pkgver}-1
- Third entry, the newest, for %{pkgver}
* Mon Feb 05 2024 Bob Packager <bob@example.org> - 0.9-1
- Second entry
* Tue Jan 02 2024 Alice Packager <alice@example.org> - 0.8-1
- First entry, the oldest
"""

TOOL_DEPS = "\n".join(
    (
        "Requires: fid-data >= 1.0",
        "Requires: /usr/bin/fid-data",
        "Provides: fid-tool-api = 1",
        "Provides: fid-cli",
        "Conflicts: fid-oldtool",
        "Obsoletes: fid-legacy < 1.0",
        "Recommends: fid-extra",
        "Suggests: fid-docs",
        "Supplements: fid-data",
        "Enhances: fid-data",
    )
)


@dataclass(frozen=True)
class Build:
    """One rpmbuild run: a package, its version and the arches it is built for."""

    name: str
    version: str
    arches: tuple[str, ...]  # ("noarch",) or target arches
    epoch: str | None = None
    deps: str = ""


BUILDS = (
    Build("fid-tool", "1.0", ("x86_64", "i686"), epoch="2", deps=TOOL_DEPS),
    Build("fid-tool", "1.1", ("x86_64", "i686"), epoch="2", deps=TOOL_DEPS),
    Build("fid-data", "1.0", ("noarch",)),
    Build("fid-langpack-de", "1.0", ("noarch",), deps="Requires: fid-tool"),
    Build("fid-mod", "1.0", ("noarch",)),
    Build("fid-mod", "2.0", ("noarch",)),
)

COMPS = """\
<?xml version="1.0" encoding="UTF-8"?>
<comps>
  <group>
    <id>fid-core</id>
    <name>Fid Core</name>
    <description>The core of the fidelity feed.</description>
    <default>true</default>
    <uservisible>true</uservisible>
    <packagelist>
      <packagereq type="mandatory">fid-tool</packagereq>
      <packagereq type="default">fid-data</packagereq>
    </packagelist>
  </group>
  <group>
    <id>fid-extras</id>
    <name>Fid Extras</name>
    <description>Optional extras.</description>
    <default>false</default>
    <uservisible>true</uservisible>
    <packagelist>
      <packagereq type="optional">fid-langpack-de</packagereq>
    </packagelist>
  </group>
  <environment>
    <id>fid-env</id>
    <name>Fid Environment</name>
    <description>Everything of the fidelity feed.</description>
    <display_order>10</display_order>
    <grouplist>
      <groupid>fid-core</groupid>
    </grouplist>
    <optionlist>
      <groupid>fid-extras</groupid>
    </optionlist>
  </environment>
  <langpacks>
    <match name="fid-tool" install="fid-langpack-%s"/>
  </langpacks>
</comps>
"""


def _stream(stream: str, version: str, artifact: str) -> str:
    return f"""\
---
document: modulemd
version: 2
data:
  name: {MODULE}
  stream: "{stream}"
  version: 2024010{stream}000000
  context: c0ffee4{stream}
  arch: x86_64
  summary: The fidelity module, stream {stream}
  description: >-
    Stream {stream} of the fidelity module ({version}).
  license:
    module:
    - MIT
  profiles:
    default:
      rpms:
      - {MODULE}
  api:
    rpms:
    - {MODULE}
  artifacts:
    rpms:
    - {artifact}
...
"""


MODULES = (
    _stream("1", "1.0", f"{MODULE}-0:1.0-1.noarch")
    + _stream("2", "2.0", f"{MODULE}-0:2.0-1.noarch")
    + f"""\
---
document: modulemd-defaults
version: 1
data:
  module: {MODULE}
  stream: "2"
  profiles:
    "1": [default]
    "2": [default]
...
"""
)

ERRATA = (
    # id, type, severity, package name, version, references
    ("FID-2024:0001", "security", "Important", "fid-tool", "1.1", ("cve", "bugzilla")),
    ("FID-2024:0002", "bugfix", None, "fid-data", "1.0", ("bugzilla",)),
    ("FID-2024:0003", "enhancement", None, "fid-langpack-de", "1.0", ("self",)),
)


def updateinfo_xml(packages: Sequence[Path]) -> str:
    """updateinfo.xml for ``ERRATA``, each naming the binary packages of its name and
    version among ``packages`` (an erratum none of whose packages is there is left out)."""
    updates = []
    for ident, kind, severity, name, version, refs in ERRATA:
        files = [
            p
            for p in packages
            if p.name.startswith(f"{name}-{version}-") and not p.name.endswith(".src.rpm")
        ]
        if not files:
            continue
        pkgs = "".join(
            f'<package name="{name}" version="{version}" release="1" epoch="{epoch}"'
            f' arch="{arch}" src="{name}-{version}-1.src.rpm"><filename>{p.name}</filename>'
            "</package>"
            for p in files
            for arch in [p.name.rsplit(".", 2)[-2]]
            for epoch in ["2" if name == "fid-tool" else "0"]
        )
        references = "".join(
            f'<reference href="https://example.org/{kind_}/{ident}" id="{ident}-{kind_}"'
            f' type="{kind_}" title="{ident} {kind_}"/>'
            for kind_ in refs
        )
        sev = f"<severity>{severity}</severity>" if severity else ""
        updates.append(
            f'<update from="security@example.org" status="final" type="{kind}" version="2">'
            f"<id>{ident}</id><title>{kind} update of {name}</title>"
            '<issued date="2024-03-01 00:00:00"/><updated date="2024-03-02 00:00:00"/>'
            f"<rights>MIT</rights><release>Fid EL 9</release>{sev}"
            f"<summary>{name} {version}</summary><description>Fixes {name}.</description>"
            f"<references>{references}</references>"
            f'<pkglist><collection short="fid"><name>Fid EL 9</name>{pkgs}</collection>'
            "</pkglist></update>"
        )
    return '<?xml version="1.0" encoding="UTF-8"?>\n<updates>' + "".join(updates) + "</updates>\n"


def _rpmbuild(spec: Path, top: Path, build: Build, arch: str) -> None:
    defines = {
        "_topdir": str(top),
        "pkgname": build.name,
        "pkgver": build.version,
        "_binary_payload": "w6.gzdio",  # every rpm and dnf reads gzip payloads
        "_source_payload": "w6.gzdio",
        "debug_package": "%{nil}",
        "_build_id_links": "none",
    }
    if build.epoch:
        defines["pkgepoch"] = build.epoch
    if build.deps:
        defines["deps"] = build.deps
    if arch == "noarch":
        defines["noarch"] = "1"
    command = ["rpmbuild", "-ba", "--quiet", "--nodeps"]
    for key, value in defines.items():
        command += ["--define", f"{key} {value}"]
    if arch != "noarch":
        command += ["--target", arch]
    subprocess.run([*command, str(spec)], check=True, capture_output=True)


def build_rpms(workdir: Path) -> list[Path]:
    """Every package of ``BUILDS`` and its src.rpm, built into ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec = workdir / "fid.spec"
    spec.write_text(SPEC)
    top = workdir / "top"
    for build in BUILDS:
        for arch in build.arches:
            _rpmbuild(spec, top, build, arch)
    return sorted(p for p in top.glob("*RPMS/**/*.rpm"))


@dataclass
class ElFeed:
    """A feed directory and what it holds."""

    root: Path
    rpms: list[Path] = field(default_factory=list)  # every package file, src.rpms too

    def href(self, rpm: Path) -> str:
        """Where the feed keeps a package: src.rpms in SRPMS/, which sorts after Packages/
        (createrepo_c lists packages by file name, not by path)."""
        if rpm.name.endswith(".src.rpm"):
            return f"SRPMS/{rpm.name}"
        return f"Packages/{rpm.name[0]}/{rpm.name}"


def _modifyrepo(root: Path, path: Path, mdtype: str) -> None:
    subprocess.run(
        ["modifyrepo_c", "--mdtype", mdtype, str(path), str(root / "repodata")],
        check=True,
        capture_output=True,
    )


def write_feed(
    root: Path,
    rpms: Iterable[Path],
    *,
    comps: str | None = COMPS,
    modules: str | None = MODULES,
    updateinfo: bool = True,
    productid: bool = True,
    tags: bool = True,
    revision: str = REVISION,
    extra_args: Sequence[str] = (),
) -> ElFeed:
    """A feed in ``root`` of ``rpms`` with the metadata named, as the real tools write it
    (``tags``: the content, distro and repo tags)."""
    if root.exists():
        shutil.rmtree(root)
    feed = ElFeed(root, sorted(rpms))
    for rpm in feed.rpms:
        target = root / feed.href(rpm)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(rpm, target)
    command = ["createrepo_c", "--quiet", "--revision", revision]
    for tag in CONTENT_TAGS if tags else ():
        command += ["--content", tag]
    for cpeid, text in DISTRO_TAGS if tags else ():
        command += ["--distro", f"{cpeid},{text}"]
    for tag in REPO_TAGS if tags else ():
        command += ["--repo", tag]
    side = root.parent / f".{root.name}-sources"
    side.mkdir(exist_ok=True)
    if comps is not None:
        (side / "comps.xml").write_text(comps)
        command += ["--groupfile", str(side / "comps.xml")]
    subprocess.run([*command, *extra_args, str(root)], check=True, capture_output=True)
    if modules is not None:
        (side / "modules.yaml").write_text(modules)
        _modifyrepo(root, side / "modules.yaml", "modules")
    if updateinfo:
        (side / "updateinfo.xml").write_text(updateinfo_xml(feed.rpms))
        _modifyrepo(root, side / "updateinfo.xml", "updateinfo")
    if productid:
        (side / "productid").write_text(
            "-----BEGIN CERTIFICATE-----\nfid\n-----END CERTIFICATE-----\n"
        )
        _modifyrepo(root, side / "productid", "productid")
    return feed


def build_el_feed(workdir: Path) -> ElFeed:
    """The whole feed: every package of ``BUILDS`` and every kind of metadata."""
    return write_feed(workdir / "feed", build_rpms(workdir / "build"))


@pytest.fixture(scope="session")
def el_feed(tmp_path_factory: pytest.TempPathFactory) -> ElFeed:
    """The EL-style feed, built once per session (skips when the tools are absent)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed")
    return build_el_feed(tmp_path_factory.mktemp("elfeed"))


def dnf_base(tree: Path, cache: Path, installroot: Path | None = None) -> list[str]:
    """dnf on ``tree`` alone, with its own cache directory (and installroot)."""
    root = installroot if installroot is not None else cache / "root"
    return dnf_command(
        tree.as_uri(), cache, root, "--refresh", "--forcearch=x86_64", releasever="9"
    )


def dnf_answer(
    tree: Path, cache: Path, *args: str, installroot: Path | None = None, check: bool = True
) -> str:
    """dnf's answer (stdout) to ``args`` about ``tree``; with ``check``, it must succeed."""
    result = subprocess.run(
        [*dnf_base(tree, cache, installroot), *args], capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"
