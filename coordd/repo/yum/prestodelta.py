"""prestodelta.xml: a feed's delta RPMs as ``Delta`` records (plain functions, worker threads)."""

from __future__ import annotations

from typing import Any

from coordd.content.records import Delta
from coordd.repo.yum.errors import MetadataError
from coordd.repo.yum.options import checked_type
from coordd.repo.yum.repomd import FetchedMetadata
from coordd.repo.yum.safexml import child_text, int_field


def parse_newpackage(element: Any, what: str, allow_weak: bool) -> list[Delta]:
    """One ``<newpackage>`` of prestodelta.xml as delta records.

    Every delta is checked for a filename and checksum before any checksum type is.
    """
    name = element.get("name")
    found: list[tuple[Any, str, str, str | None, int]] = []
    for delta in element.findall("delta"):
        checksum = delta.find("checksum")
        href = child_text(delta, "filename")
        size = int_field(child_text(delta, "size"), what, "delta size", None)
        digest = None if checksum is None else (checksum.text or "").strip().lower()
        if not href or not digest or not name:
            raise MetadataError(f"{what}: delta for {name} lacks filename or checksum")
        found.append(
            (delta, href, digest, None if checksum is None else checksum.get("type"), size)
        )
    return [
        {
            "name": name,
            "epoch": element.get("epoch") or "0",
            "version": element.get("version"),
            "release": element.get("release"),
            "arch": element.get("arch"),
            "oldepoch": delta.get("oldepoch") or "0",
            "oldversion": delta.get("oldversion"),
            "oldrelease": delta.get("oldrelease"),
            "href": href,
            "sequence": child_text(delta, "sequence"),
            "size": size,
            "checksum_type": checked_type(checksum_type, f"{what}: {href}", allow_weak),
            "checksum": digest,
        }
        for delta, href, digest, checksum_type, size in found
    ]


def read_deltas(metadata: FetchedMetadata, *, allow_weak: bool) -> list[Delta]:
    """Every delta RPM the file lists, in order."""
    what = metadata.record.what()
    deltas: list[Delta] = []
    for element in metadata.elements("newpackage", "prestodelta"):
        deltas.extend(parse_newpackage(element, what, allow_weak))
    return deltas


__all__ = ["parse_newpackage", "read_deltas"]
