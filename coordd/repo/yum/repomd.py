"""repomd.xml: the index of a feed's metadata, one record per metadata file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from coordd.repo.yum.errors import MetadataError
from coordd.repo.yum.options import checked_type
from coordd.repo.yum.safexml import XML_BASE, child_text, int_field, iter_xml, parse_xml_bytes

NS_REPO: Final = "{http://linux.duke.edu/metadata/repo}"


@dataclass
class RepomdRecord:
    """One ``<data>`` of repomd.xml: where a metadata file is and how to check it."""

    type: str
    href: str
    base: str | None
    size: int | None
    open_size: int | None
    checksum: tuple[str, str]
    open_checksum: tuple[str, str] | None

    def what(self) -> str:
        """How messages name this file: ``primary metadata (repodata/…-primary.xml.gz)``."""
        return f"{self.type} metadata ({self.href})"


def parse_repomd(data: bytes, allow_weak: bool) -> tuple[str | None, dict[str, RepomdRecord]]:
    """repomd.xml → (revision, records by type)."""
    what = "repomd.xml"
    root = parse_xml_bytes(data, what, NS_REPO + "repomd")
    revision = child_text(root, NS_REPO + "revision")
    records: dict[str, RepomdRecord] = {}
    for data_el in root.findall(NS_REPO + "data"):
        rtype = data_el.get("type")
        if not rtype:
            raise MetadataError(f"{what}: <data> without a type")
        label = f"{what} record {rtype}"
        if rtype in records:
            raise MetadataError(f"{what}: record {rtype} listed twice")
        location = data_el.find(NS_REPO + "location")
        checksum = data_el.find(NS_REPO + "checksum")
        if location is None or not location.get("href") or checksum is None:
            raise MetadataError(f"{label}: lacks location or checksum")
        open_checksum = data_el.find(NS_REPO + "open-checksum")
        size_text = child_text(data_el, NS_REPO + "size")
        open_text = child_text(data_el, NS_REPO + "open-size")
        records[rtype] = RepomdRecord(
            type=rtype,
            href=location.get("href"),
            base=location.get(XML_BASE),
            size=None if size_text is None else int_field(size_text, label, "size", None),
            open_size=None if open_text is None else int_field(open_text, label, "open-size", None),
            checksum=(
                checked_type(checksum.get("type"), label, allow_weak),
                (checksum.text or "").strip().lower(),
            ),
            open_checksum=(
                None
                if open_checksum is None
                else (
                    checked_type(open_checksum.get("type"), label, allow_weak),
                    (open_checksum.text or "").strip().lower(),
                )
            ),
        )
    return revision, records


def parse_tags(data: bytes) -> dict[str, list[Any]]:
    """The ``<tags>`` of repomd.xml: ``content`` and ``repo`` (texts) and ``distro``
    (``[cpeid or None, text]``), each in the feed's order; empty lists when it has none."""
    root = parse_xml_bytes(data, "repomd.xml", NS_REPO + "repomd")
    tags: dict[str, list[Any]] = {"content": [], "distro": [], "repo": []}
    element = root.find(NS_REPO + "tags")
    if element is None:
        return tags
    for child in element:
        text = (child.text or "").strip()
        if child.tag == NS_REPO + "distro":
            tags["distro"].append([child.get("cpeid") or None, text])
        elif child.tag in (NS_REPO + "content", NS_REPO + "repo"):
            tags[child.tag[len(NS_REPO) :]].append(text)
    return tags


@dataclass(frozen=True)
class FetchedMetadata:
    """A metadata file fetched to ``path`` (verified against ``record``), ready to stream."""

    record: RepomdRecord
    path: Path
    cap: int  # decompressed bytes, whatever the record declares
    check_cancelled: Callable[[], None] = lambda: None

    def elements(self, tag: str, root_tag: str) -> Iterator[Any]:
        """The complete ``tag`` elements of the file, streamed by ``iter_xml``."""
        return iter_xml(
            self.path,
            what=self.record.what(),
            tag=tag,
            root_tag=root_tag,
            open_size=self.record.open_size,
            open_checksum=self.record.open_checksum,
            cap=self.cap,
            check_cancelled=self.check_cancelled,
        )


__all__ = ["NS_REPO", "FetchedMetadata", "RepomdRecord", "parse_repomd", "parse_tags"]
