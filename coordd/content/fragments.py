"""A package's entries in primary, filelists and other.xml, kept as the feed wrote them.

A sync keeps each ``<package>`` element of a feed's three package files (``rpm_xml``, by
pkgid and file type), serialized again by lxml from the safely parsed tree, so what a
publication writes is the feed's own XML: every field, in the feed's order, with nothing
lost in a conversion to createrepo_c's ``Package`` and back. Publishing then costs a
decompression and a copy per package instead of building a ``Package`` from stored JSON,
which took half of a large publication's CPU.

A primary fragment is kept without its ``<location>``: the unit's href is written in its
place at publish time (a feed may list a package under an ``xml:base``, and two units may
share a pkgid at two hrefs). The namespace declarations lxml repeats on a detached element
are dropped when they are the ones the published file declares on its root. Fragments are
zstd-compressed one by one (about 1 KB each); a package without one (an upload, a package
migrated from an older release) is written from its stored record as before.
"""

from __future__ import annotations

from typing import Any, Final
from xml.sax.saxutils import quoteattr

import zstandard
from lxml import etree

__all__ = ["TYPES", "Fragments"]

#: The package files fragments are kept for, with the namespace of each.
TYPES: Final = {
    "primary": "http://linux.duke.edu/metadata/common",
    "filelists": "http://linux.duke.edu/metadata/filelists",
    "other": "http://linux.duke.edu/metadata/other",
}

_RPM_NS: Final = "http://linux.duke.edu/metadata/rpm"
#: What stands for the location while a primary fragment is serialized. A NUL byte, which
#: XML cannot contain, then marks the place in what is stored.
_PLACEHOLDER: Final = "coordd-location"
_MARK: Final = b"\0"

#: The declarations the published files' roots make, as lxml writes them on a fragment.
_DECLARATIONS: Final = {
    "primary": f' xmlns="{TYPES["primary"]}" xmlns:rpm="{_RPM_NS}"'.encode(),
    "filelists": f' xmlns="{TYPES["filelists"]}"'.encode(),
    "other": f' xmlns="{TYPES["other"]}"'.encode(),
}
_OPEN: Final = b"<package"
#: For reading a fragment back: it was written by lxml, but read it as strictly as a feed.
_PARSER: Final = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


class Fragments:
    """Makes and reads fragments; one per thread or process (the codecs keep state)."""

    def __init__(self) -> None:
        self._compress = zstandard.ZstdCompressor(level=3).compress
        self._decompress = zstandard.ZstdDecompressor().decompress

    def make(self, rtype: str, element: Any) -> bytes | None:
        """The fragment of ``element`` (a ``<package>`` of file type ``rtype``), or None
        for one that cannot be kept (then the package is written from its record)."""
        location = None
        if rtype == "primary":
            found = element.findall(f"{{{TYPES['primary']}}}location")
            if len(found) != 1:
                return None
            location = found[0]
            saved = dict(location.attrib)
            location.attrib.clear()
            location.set("href", _PLACEHOLDER)
        try:
            data = etree.tostring(element, encoding="UTF-8", with_tail=False)
        finally:
            if location is not None:
                location.attrib.clear()
                location.attrib.update(saved)
        declarations = _DECLARATIONS[rtype]
        if data.startswith(_OPEN + declarations):
            data = _OPEN + data[len(_OPEN) + len(declarations) :]
        if location is not None:
            placeholder = f'<location href="{_PLACEHOLDER}"/>'.encode()
            if data.count(placeholder) != 1:  # the feed has an element just like it
                return None
            before, _placeholder, after = data.partition(placeholder)
            data = before + _MARK + after
        return self._compress(data)

    def text(self, fragment: bytes, href: str | None = None) -> str:
        """The XML of ``fragment``, a line of its own, with ``href`` as a primary one's
        location."""
        data = self._decompress(fragment)
        if href is not None:
            before, _mark, after = data.partition(_MARK)
            location = f"<location href={quoteattr(href)}/>".encode()
            data = before + location + after
        return data.decode() + "\n"

    def entries(self, rtype: str, fragment: bytes) -> list[list[Any]]:
        """What a filelists fragment lists, as ``ListedFile`` entries, or an other one, as
        changelog entries ``[author, date, text]``: the forms ``rpm_files`` and
        ``rpm_changelogs`` keep."""
        ns = TYPES[rtype]
        wrapped = f'<r xmlns="{ns}">'.encode() + self._decompress(fragment) + b"</r>"
        package = etree.fromstring(wrapped, _PARSER)[0]
        if rtype == "filelists":
            listed: list[list[Any]] = []
            for entry in package.iter(f"{{{ns}}}file"):
                head, _, tail = (entry.text or "").rpartition("/")
                listed.append([entry.get("type") or "", head + "/", tail])
            return listed
        return [
            [entry.get("author") or "", int(entry.get("date") or 0), entry.text or ""]
            for entry in package.iter(f"{{{ns}}}changelog")
        ]
