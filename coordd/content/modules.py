"""Module streams as the content database keeps them: the documents of a modules.yaml.

A sync splits each modules.yaml into its documents (``coordd.repo.yum.modulemd``) and keeps
them in ``module_documents`` under the file's checksum: the document kind (``modulemd``,
``modulemd-defaults``, ``modulemd-obsoletes``, …), the module's name and stream, the
stream's artifacts as NEVRAs (``name-epoch:version-release.arch``) and the document's text.
A copy chooses from them which streams apply to the packages a target holds (``choose``)
and writes a modules.yaml of those documents (``write_modules``) without parsing YAML.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from coordd.content.pool import Pool
from coordd.content.records import MetadataFile

__all__ = [
    "MODULEMD",
    "MODULES",
    "Document",
    "choose",
    "documents",
    "nevra",
    "store_documents",
    "write_modules",
]

MODULES: Final = "modules"  # the repomd type of modules.yaml
MODULEMD: Final = "modulemd"  # the kind of document that describes a stream
_HREF: Final = "repodata/modules.yaml.gz"


@dataclass(frozen=True)
class Document:
    """One document of a modules.yaml."""

    document: str  # its kind: modulemd, modulemd-defaults, modulemd-obsoletes, …
    name: str | None  # the module it is about
    stream: str | None
    artifacts: tuple[str, ...]  # for a stream: the NEVRAs of its packages
    text: str  # the document as it was written, without its markers


def nevra(name: str, epoch: Any, version: str, release: str, arch: str) -> str:
    """A package's NEVRA as modulemd artifacts name it (the epoch always written)."""
    try:
        number = int(epoch or 0)
    except (TypeError, ValueError):
        number = 0
    return f"{name}-{number}:{version}-{release}.{arch}"


def store_documents(db: sqlite3.Connection, checksum: str, docs: Sequence[Document]) -> None:
    """Keep ``docs`` as the documents of the modules.yaml whose checksum is ``checksum``."""
    db.executemany(
        "INSERT OR IGNORE INTO module_documents (checksum, position, document, name, stream,"
        " artifacts, text) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (checksum, n, d.document, d.name, d.stream, json.dumps(list(d.artifacts)), d.text)
            for n, d in enumerate(docs)
        ],
    )


def documents(db: sqlite3.Connection, checksum: str) -> list[Document] | None:
    """The documents of a modules.yaml, in its order; None if the store has not split it."""
    rows = db.execute(
        "SELECT document, name, stream, artifacts, text FROM module_documents"
        " WHERE checksum = ? ORDER BY position",
        (checksum,),
    ).fetchall()
    if not rows:
        return None
    return [Document(d, n, s, tuple(json.loads(a)), t) for d, n, s, a, t in rows]


def choose(docs: Iterable[Document], present: set[str]) -> list[Document]:
    """The documents that apply to a repository holding the packages ``present`` (NEVRAs):
    each stream all of whose artifacts are present, and the other documents (defaults,
    obsoletes, translations) of the modules that keep a stream."""
    docs = list(docs)
    kept = [d.document != MODULEMD or set(d.artifacts) <= present for d in docs]
    modules = {
        d.name for d, keep in zip(docs, kept, strict=True) if keep and d.document == MODULEMD
    }
    return [
        d
        for d, keep in zip(docs, kept, strict=True)
        if keep and (d.document == MODULEMD or d.name is None or d.name in modules)
    ]


def write_modules(pool: Pool, docs: Sequence[Document]) -> tuple[MetadataFile, int]:
    """Enter a modules.yaml of ``docs`` (gzip, as every dnf reads it) in the pool; its record
    and its size. The same documents always make the same file, so the same unit."""
    text = "".join(f"---\n{d.text.rstrip()}\n...\n" for d in docs)
    data = gzip.compress(text.encode("utf-8"), mtime=0)
    sha256 = hashlib.sha256(data).hexdigest()
    if not pool.present(sha256, len(data)):
        tmp = pool.tmp_file("modules")
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())  # durable before the version that names it commits
        pool.enter(tmp, sha256)
    record: MetadataFile = {
        "type": MODULES,
        "href": _HREF,
        "size": len(data),
        "checksum_type": "sha256",
        "checksum": sha256,
    }
    return record, len(data)
