"""The typed records of a content index: packages, errata, deltas, tree and metadata files.

The parsers produce them, the index stores them as JSON objects (key order as declared
here, which is the order on disk), and publish and copy consume them; mypy checks that all
three agree. Every stored file has ``href``, ``size``, ``checksum_type`` and ``checksum``;
``checksum_type``/``checksum`` may be null only for tree files the .treeinfo lists without
a checksum, and ``size`` only for files whose size nothing declared before download.
"""

from __future__ import annotations

from typing import Final, Literal, TypedDict

DependencyKind = Literal[
    "provides",
    "requires",
    "conflicts",
    "obsoletes",
    "suggests",
    "enhances",
    "recommends",
    "supplements",
]

#: The dependency lists a package record holds, as in primary.xml.
DEPENDENCY_KINDS: Final[tuple[DependencyKind, ...]] = (
    "provides",
    "requires",
    "conflicts",
    "obsoletes",
    "suggests",
    "enhances",
    "recommends",
    "supplements",
)

#: ``[name, flags, epoch, version, release, pre]``; ``pre`` is a bool, the rest str or null.
Dependency = list[str | bool | None]
#: ``[type, path]`` of one file a package installs (type "" for a plain file).
FileEntry = list[str]
#: ``[type, directory, name]``: a file as the content database keeps a whole file list,
#: split the way filelists.xml's writer takes it (the directory with its trailing "/").
ListedFile = list[str]
#: ``[author, date, text]`` of one changelog entry (date in seconds since the epoch).
Changelog = list[str | int]

Origin = Literal["feed", "copy", "upload"]


class Package(TypedDict):
    """A package: its file, and what createrepo_c needs to write primary, filelists, other.

    ``origin`` is ``"feed"``, ``"copy"`` or ``"upload"``: a sync drops only what its feed no
    longer lists.
    """

    name: str
    epoch: str
    version: str
    release: str
    arch: str
    checksum_type: str
    checksum: str
    href: str
    size: int
    summary: str
    description: str
    url: str
    packager: str
    license: str
    vendor: str
    group: str
    buildhost: str
    sourcerpm: str
    header_start: int
    header_end: int
    time_file: int
    time_build: int
    size_installed: int
    size_archive: int
    origin: Origin
    provides: list[Dependency]
    requires: list[Dependency]
    conflicts: list[Dependency]
    obsoletes: list[Dependency]
    suggests: list[Dependency]
    enhances: list[Dependency]
    recommends: list[Dependency]
    supplements: list[Dependency]
    files: list[FileEntry]
    changelogs: list[Changelog]


class Delta(TypedDict):
    """A delta RPM (prestodelta): the new package's NEVRA, the old EVR, and its file."""

    name: str
    epoch: str
    version: str | None
    release: str | None
    arch: str | None
    oldepoch: str
    oldversion: str | None
    oldrelease: str | None
    href: str
    sequence: str | None
    size: int
    checksum_type: str
    checksum: str


class TreeFile(TypedDict):
    """A file of a distribution tree (named by .treeinfo), or the .treeinfo itself."""

    href: str
    size: int | None
    checksum_type: str | None
    checksum: str | None


class MetadataFile(TypedDict):
    """An extra repomd record kept as it is (comps, modules, productid, …)."""

    type: str
    href: str
    size: int | None
    checksum_type: str
    checksum: str


class ErratumPackage(TypedDict):
    """One package an erratum's collection lists."""

    name: str | None
    epoch: str | None
    version: str | None
    release: str | None
    arch: str | None
    src: str | None
    filename: str | None
    sum_type: str | None
    sum: str | None
    reboot_suggested: bool
    restart_suggested: bool
    relogin_suggested: bool


class ErratumCollection(TypedDict):
    """A ``<collection>`` of an erratum's package list, with its module if it has one."""

    short: str | None
    name: str | None
    module: dict[str, str] | None
    packages: list[ErratumPackage]


# An erratum (one ``<update>`` of updateinfo.xml). "from" is a keyword, so the class syntax
# cannot name that key.
Erratum = TypedDict(
    "Erratum",
    {
        "id": str | None,
        "from": str | None,
        "status": str | None,
        "type": str | None,
        "version": str | None,
        "title": str | None,
        "issued_date": str | None,
        "updated_date": str | None,
        "rights": str | None,
        "release": str | None,
        "pushcount": str | None,
        "severity": str | None,
        "summary": str | None,
        "description": str | None,
        "solution": str | None,
        "reboot_suggested": bool,
        "references": list[dict[str, str]],
        "collections": list[ErratumCollection],
    },
)

#: Any record that names a file stored under ``content/``.
StoredFile = Package | Delta | TreeFile | MetadataFile

__all__ = [
    "DEPENDENCY_KINDS",
    "Changelog",
    "Delta",
    "Dependency",
    "DependencyKind",
    "Erratum",
    "ErratumCollection",
    "ErratumPackage",
    "FileEntry",
    "ListedFile",
    "MetadataFile",
    "Origin",
    "Package",
    "StoredFile",
    "TreeFile",
]
