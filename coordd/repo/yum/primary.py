"""primary.xml, filelists.xml and other.xml: a feed's packages as ``Package`` records.

Plain functions, run in worker threads: primary gives each package's record; filelists
and other add its files and changelogs, matched by package checksum (``pkgid``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeVar

from coordd.content.records import (
    DEPENDENCY_KINDS,
    Dependency,
    DependencyKind,
    FileEntry,
    Package,
)
from coordd.repo.yum.errors import MetadataError
from coordd.repo.yum.options import checked_type
from coordd.repo.yum.safexml import XML_BASE, int_field

NS_COMMON: Final = "{http://linux.duke.edu/metadata/common}"
NS_RPM: Final = "{http://linux.duke.edu/metadata/rpm}"
NS_FILELISTS: Final = "{http://linux.duke.edu/metadata/filelists}"
NS_OTHER: Final = "{http://linux.duke.edu/metadata/other}"

_DEP_TAGS: Final[dict[str, DependencyKind]] = {NS_RPM + kind: kind for kind in DEPENDENCY_KINDS}

# Tags of primary.xml, computed once: this loop runs for every package of every sync.
_P_NAME = NS_COMMON + "name"
_P_ARCH = NS_COMMON + "arch"
_P_VERSION = NS_COMMON + "version"
_P_CHECKSUM = NS_COMMON + "checksum"
_P_LOCATION = NS_COMMON + "location"
_P_SIZE = NS_COMMON + "size"
_P_TIME = NS_COMMON + "time"
_P_FORMAT = NS_COMMON + "format"
_P_FILE = NS_COMMON + "file"
_P_HEADER_RANGE = NS_RPM + "header-range"
_P_TEXT = {NS_COMMON + key: key for key in ("summary", "description", "url", "packager")}
_P_FORMAT_TEXT = {
    NS_RPM + key: key for key in ("license", "vendor", "group", "buildhost", "sourcerpm")
}
_TEXT_KEYS: Final = (*_P_TEXT.values(), *_P_FORMAT_TEXT.values())

_T = TypeVar("_T")


@dataclass
class Location:
    """Where a package's file is: its href, under the ``xml:base`` the feed gave, if any."""

    href: str
    base: str | None


def _deps(element: Any) -> list[Dependency]:
    return [
        [
            e.get("name"),
            e.get("flags"),
            e.get("epoch"),
            e.get("ver"),
            e.get("rel"),
            e.get("pre") in ("1", "true", "True"),
        ]
        for e in element
    ]


def _missing(what: str, name: str | None, key: str) -> MetadataError:
    return MetadataError(f"{what}: {name or 'a package'} has no {key}")


def parse_primary_package(
    element: Any, what: str, allow_weak: bool
) -> tuple[Package, Location] | None:
    """One ``<package>`` of primary.xml as a record (None for non-rpm types).

    Files and changelogs start empty: filelists and other fill them in.
    """
    if element.get("type", "rpm") != "rpm":
        return None
    name: str | None = None
    arch: str | None = None
    version: str | None = None
    release: str | None = None
    checksum_type: str | None = None
    checksum: str | None = None
    href: str | None = None
    base: str | None = None
    epoch = "0"
    size: int | None = None
    header_start = header_end = time_file = time_build = size_installed = size_archive = 0
    text = dict.fromkeys(_TEXT_KEYS, "")
    deps: dict[DependencyKind, list[Dependency]] = {}
    files: list[FileEntry] = []
    for child in element:
        tag = child.tag
        if tag == _P_FORMAT:
            for sub in child:
                stag = sub.tag
                dep_kind = _DEP_TAGS.get(stag)
                if dep_kind is not None:
                    deps[dep_kind] = _deps(sub)
                elif stag == _P_FILE:
                    files.append([sub.get("type") or "", sub.text or ""])
                elif stag == _P_HEADER_RANGE:
                    header_start = int_field(sub.get("start"), what, "header-range")
                    header_end = int_field(sub.get("end"), what, "header-range")
                else:
                    key = _P_FORMAT_TEXT.get(stag)
                    if key is not None:
                        text[key] = sub.text or ""
        elif tag == _P_NAME:
            name = child.text
        elif tag == _P_ARCH:
            arch = child.text
        elif tag == _P_VERSION:
            epoch = child.get("epoch") or "0"
            version = child.get("ver")
            release = child.get("rel")
        elif tag == _P_CHECKSUM:
            checksum_type = child.get("type")
            checksum = (child.text or "").strip().lower()
        elif tag == _P_LOCATION:
            href = child.get("href")
            base = child.get(XML_BASE)
        elif tag == _P_SIZE:
            size = int_field(child.get("package"), what, "size", None)
            size_installed = int_field(child.get("installed"), what, "size")
            size_archive = int_field(child.get("archive"), what, "size")
        elif tag == _P_TIME:
            time_file = int_field(child.get("file"), what, "time")
            time_build = int_field(child.get("build"), what, "time")
        else:
            key = _P_TEXT.get(tag)
            if key is not None:
                text[key] = child.text or ""
    # In this order, so a package lacking several fields is reported as before.
    if not name:
        raise _missing(what, name, "name")
    if not arch:
        raise _missing(what, name, "arch")
    if not version:
        raise _missing(what, name, "version")
    if not release:
        raise _missing(what, name, "release")
    if not checksum:
        raise _missing(what, name, "checksum")
    if not href:
        raise _missing(what, name, "href")
    if size is None:
        raise _missing(what, name, "size")
    package: Package = {
        "name": name,
        "epoch": epoch,
        "version": version,
        "release": release,
        "arch": arch,
        "checksum_type": checked_type(checksum_type, f"{what}: package {name}", allow_weak),
        "checksum": checksum,
        "href": href,
        "size": size,
        "summary": text["summary"],
        "description": text["description"],
        "url": text["url"],
        "packager": text["packager"],
        "license": text["license"],
        "vendor": text["vendor"],
        "group": text["group"],
        "buildhost": text["buildhost"],
        "sourcerpm": text["sourcerpm"],
        "header_start": header_start,
        "header_end": header_end,
        "time_file": time_file,
        "time_build": time_build,
        "size_installed": size_installed,
        "size_archive": size_archive,
        "origin": "feed",
        "provides": deps.get("provides", []),
        "requires": deps.get("requires", []),
        "conflicts": deps.get("conflicts", []),
        "obsoletes": deps.get("obsoletes", []),
        "suggests": deps.get("suggests", []),
        "enhances": deps.get("enhances", []),
        "recommends": deps.get("recommends", []),
        "supplements": deps.get("supplements", []),
        "files": files,
        "changelogs": [],
    }
    return package, Location(href, base)


__all__ = [
    "NS_COMMON",
    "NS_FILELISTS",
    "NS_OTHER",
    "NS_RPM",
    "Location",
    "parse_primary_package",
]
