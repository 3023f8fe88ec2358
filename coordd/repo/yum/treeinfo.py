""".treeinfo: the files of a distribution tree (installer images, stage2) as records."""

from __future__ import annotations

import configparser

from coordd.content.records import TreeFile
from coordd.repo.yum.errors import MetadataError
from coordd.repo.yum.options import checked_type


def parse_treeinfo(data: bytes, allow_weak: bool) -> list[TreeFile]:
    """The files a .treeinfo names (images-*, stage2, checksums) as tree-file records."""
    what = ".treeinfo"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"{what}: not UTF-8 text") from exc
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # paths are case-sensitive
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise MetadataError(f"{what}: malformed: {exc}") from exc
    checksums: dict[str, tuple[str, str]] = {}
    if parser.has_section("checksums"):
        for path, value in parser.items("checksums"):
            algo, sep, digest = value.partition(":")
            if not sep or not digest:
                raise MetadataError(f"{what}: bad checksum for {path}: {value!r}")
            algo = checked_type(algo, f"{what} checksum of {path}", allow_weak)
            checksums[path] = (algo, digest.strip().lower())
    paths = set(checksums)
    for section in parser.sections():
        if section.startswith("images-") or section == "stage2":
            paths.update(value for _key, value in parser.items(section) if value)
    records: list[TreeFile] = []
    for path in sorted(paths):
        algo_digest = checksums.get(path)
        records.append(
            {
                "href": path,
                "size": None,
                "checksum_type": algo_digest[0] if algo_digest else None,
                "checksum": algo_digest[1] if algo_digest else None,
            }
        )
    return records


__all__ = ["parse_treeinfo"]
