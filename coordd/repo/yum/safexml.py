"""Safe XML for feed metadata: lxml with entities, network and DTDs off, DOCTYPEs refused.

``iter_xml`` streams the elements of a (compressed) metadata file with flat memory, under
the declared ``open-size`` and a hard cap, verifying the ``open-checksum``; ``parse_xml_bytes``
reads a small document (repomd.xml) with the same refusals. The helpers at the end read
values out of elements with the messages every parser shares.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from lxml import etree

from coordd.repo.yum.decompress import CORRUPT_DATA_ERRORS, UnsupportedCompression, decompressed
from coordd.repo.yum.errors import MetadataError

XML_BASE: Final = "{http://www.w3.org/XML/1998/namespace}base"

_READ_CHUNK = 1 << 20


def _xml_parser_options() -> dict[str, Any]:
    return {
        "resolve_entities": False,
        "no_network": True,
        "load_dtd": False,
        "dtd_validation": False,
        "huge_tree": False,
        "remove_comments": True,
        "remove_pis": True,
    }


def _refuse_doctype(element: Any, what: str, root_tag: str) -> None:
    tree = element.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise MetadataError(f"{what}: document has a DOCTYPE (entity declarations refused)")
    root = tree.getroot()
    if root.tag != root_tag:
        raise MetadataError(f"{what}: root element is {root.tag!r}, expected {root_tag!r}")


def parse_xml_bytes(data: bytes, what: str, root_tag: str) -> Any:
    """Parse a small XML document (repomd.xml) with the same refusals as the streams."""
    parser = etree.XMLParser(**_xml_parser_options())
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise MetadataError(f"{what}: malformed XML: {exc}") from exc
    _refuse_doctype(root, what, root_tag)
    return root


def iter_xml(
    path: Path,
    *,
    what: str,
    tag: str,
    root_tag: str,
    open_size: int | None,
    open_checksum: tuple[str, str] | None,
    cap: int,
    check_cancelled: Callable[[], None] = lambda: None,
) -> Iterator[Any]:
    """Stream the elements named ``tag`` out of a (compressed) XML file, safely.

    Each element is yielded complete, then cleared and detached, so memory stays flat.
    The decompressed size may not exceed the declared ``open_size`` nor ``cap``; the
    declared ``open_checksum`` is verified at the end.
    """
    limit = min(open_size, cap) if open_size is not None else cap
    hasher = hashlib.new(open_checksum[0]) if open_checksum else None
    parser = etree.XMLPullParser(events=("end",), tag=tag, **_xml_parser_options())
    total = 0
    checked = False
    try:
        with decompressed(path) as stream:
            while True:
                check_cancelled()
                chunk = stream.read(_READ_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    if open_size is not None and limit == open_size:
                        raise MetadataError(
                            f"{what}: decompresses past its declared open-size of {open_size} bytes"
                        )
                    raise MetadataError(f"{what}: decompresses past the cap of {cap} bytes")
                if hasher is not None:
                    hasher.update(chunk)
                parser.feed(chunk)
                for _event, element in parser.read_events():
                    if not checked:
                        _refuse_doctype(element, what, root_tag)
                        checked = True
                    yield element
                    element.clear()
                    parent = element.getparent()
                    if parent is not None:
                        while element.getprevious() is not None:
                            del parent[0]
            root = parser.close()
    except UnsupportedCompression as exc:
        raise MetadataError(f"{what}: {exc}") from exc
    except CORRUPT_DATA_ERRORS as exc:
        raise MetadataError(f"{what}: corrupt compressed data: {exc}") from exc
    except etree.XMLSyntaxError as exc:
        raise MetadataError(f"{what}: malformed XML: {exc}") from exc
    if not checked:
        _refuse_doctype(root, what, root_tag)
    if open_size is not None and total != open_size:
        raise MetadataError(
            f"{what}: decompressed size {total} differs from its declared open-size {open_size}"
        )
    if hasher is not None and open_checksum is not None:
        digest = hasher.hexdigest()
        if digest != open_checksum[1].lower():
            raise MetadataError(
                f"{what}: open-checksum mismatch: expected {open_checksum[0]} "
                f"{open_checksum[1]}, got {digest}"
            )


def int_field(value: str | None, what: str, field: str, default: int | None = 0) -> int:
    """A number from an attribute or text; ``default`` when absent (None: it is required)."""
    if value is None or value == "":
        if default is None:
            raise MetadataError(f"{what}: missing number in {field}")
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise MetadataError(f"{what}: {field} is not a number: {value!r}") from exc


def child_text(element: Any, tag: str) -> str | None:
    """The text of ``element``'s first child ``tag`` ("" if empty), None if there is none."""
    child = element.find(tag)
    return None if child is None else (child.text or "")


__all__ = ["XML_BASE", "child_text", "int_field", "iter_xml", "parse_xml_bytes"]
