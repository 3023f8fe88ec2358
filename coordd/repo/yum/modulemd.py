"""modules.yaml: a feed's module streams, split into the documents the store keeps.

A modules.yaml is a YAML stream of documents (``modulemd`` for a stream, with the NEVRAs
of its packages under ``data.artifacts.rpms``; ``modulemd-defaults``; ``modulemd-obsoletes``;
``modulemd-translations``). ``read_documents`` splits it at the document markers, which
YAML allows only at the start of a line (``---`` and ``...``: no scalar, however it is
quoted or folded, can hold one there), parses each document with PyYAML's safe loader
(no Python objects, no tags of its own), and keeps each one's text as it was written, so a
publication or a copy writes back the feed's own documents. A document that is not a
mapping with a ``document`` kind is refused with the position where it starts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

import yaml

from coordd.content.modules import MODULEMD, Document, nevra
from coordd.repo.yum.decompress import CORRUPT_DATA_ERRORS, UnsupportedCompression, decompressed
from coordd.repo.yum.errors import MetadataError
from coordd.repo.yum.repomd import FetchedMetadata

__all__ = ["parse_artifact", "read_documents", "split_documents"]

_Loader: Final[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # C when libyaml is there
_MARKER: Final = re.compile(r"^(---|\.\.\.)(?=[ \t]|$)")
_NEVRA: Final = re.compile(
    r"^(?P<name>.+)-(?:(?P<epoch>\d+):)?(?P<version>[^-:]+)-(?P<release>[^-:]+)\.(?P<arch>[^.]+)$"
)


def parse_artifact(text: str) -> str | None:
    """An artifact ``name-[epoch:]version-release.arch`` as ``nevra`` writes it, or None."""
    match = _NEVRA.match(text.strip())
    if match is None:
        return None
    return nevra(match["name"], match["epoch"], match["version"], match["release"], match["arch"])


def _texts(text: str) -> Iterator[tuple[int, str]]:
    """Each document's text (without its markers) and the line it starts on."""
    lines: list[str] = []
    start = 1
    for number, line in enumerate(text.splitlines(keepends=True), 1):
        if _MARKER.match(line):
            if lines and any(part.strip() and not part.lstrip().startswith("#") for part in lines):
                yield start, "".join(lines)
            lines = []
            start = number + 1
            rest = line[3:].strip()
            if line.startswith("---") and rest and not rest.startswith("#"):
                lines.append(rest + "\n")  # content after the marker: "--- !tag" or a scalar
                start = number
            continue
        if line.startswith("%") and not lines:
            continue  # a directive (%YAML 1.2) before the document's marker
        lines.append(line)
    if lines and any(part.strip() and not part.lstrip().startswith("#") for part in lines):
        yield start, "".join(lines)


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def split_documents(text: str, what: str) -> list[Document]:
    """The documents of a modules.yaml (``what`` names it in errors)."""
    docs: list[Document] = []
    for line, body in _texts(text):
        try:
            value = yaml.load(body, Loader=_Loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            raise MetadataError(f"{what}: document at line {line}: {exc}") from None
        if not isinstance(value, dict) or not isinstance(value.get("document"), str):
            raise MetadataError(f"{what}: document at line {line} has no document kind")
        data = value.get("data")
        data = data if isinstance(data, dict) else {}
        kind = value["document"]
        artifacts: list[str] = []
        if kind == MODULEMD:
            name = data.get("name")
            rpms = (data.get("artifacts") or {}).get("rpms") or []
            if not isinstance(rpms, list):
                raise MetadataError(f"{what}: document at line {line}: artifacts are not a list")
            for item in rpms:
                # Only strings: str() of aliases nested in lists would grow without bound.
                parsed = parse_artifact(item) if isinstance(item, str) else None
                if parsed is None:
                    raise MetadataError(f"{what}: document at line {line}: artifact {item!r}")
                artifacts.append(parsed)
        else:
            name = data.get("module", data.get("name"))
        docs.append(Document(kind, _str(name), _str(data.get("stream")), tuple(artifacts), body))
    return docs


def read_documents(metadata: FetchedMetadata) -> list[Document]:
    """The documents of a fetched modules.yaml, decompressed within the size caps."""
    record = metadata.record
    what = record.what()
    limit = min(metadata.cap, record.open_size or metadata.cap)
    chunks: list[bytes] = []
    total = 0
    try:
        with decompressed(metadata.path) as reader:
            while chunk := reader.read(1 << 20):
                total += len(chunk)
                if total > limit:
                    raise MetadataError(f"{what}: larger than {limit} bytes once decompressed")
                chunks.append(chunk)
    except (*CORRUPT_DATA_ERRORS, UnsupportedCompression) as exc:
        raise MetadataError(f"{what}: cannot decompress: {exc}") from None
    data = b"".join(chunks)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetadataError(f"{what}: not UTF-8: {exc}") from None
    return split_documents(text, what)
