"""Uploads into the content store: the files an upload brings, and its plan.

An upload (``ContentStore.upload``) is all or nothing. ``upload_plan`` decides it against
the repository's latest version, once before the files enter the pool and again inside the
transaction that commits: a package the version already holds with the same file is
counted and not added again; one whose NEVRA, or path, the version gives to another file
refuses the whole upload (``ContentConflict``) and nothing changes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from coordd.content.records import Package

__all__ = ["ContentConflict", "Nevra", "Uploaded", "nevra_of", "nevra_text", "upload_plan"]


class ContentConflict(Exception):
    """A change refused because of what the repository holds; nothing was changed."""


#: (name, epoch, version, release, arch), the epoch "0" when there is none.
Nevra = tuple[str, str, str, str, str]


@dataclass(frozen=True)
class Uploaded:
    """A package file to upload: its record, and its verified temporary copy in the pool."""

    package: Package
    tmp: Path
    sha256: str
    size: int


# A package of the latest version of a repository (parameters: repo id, then the NEVRA and
# the href): another package of the same NEVRA, or at the same path.
_SAME_PACKAGE: Final = (
    "SELECT u.name, u.epoch, u.version, u.release, u.arch, u.href,"
    " coalesce(u.sha256, u.checksum) FROM repo_content rc JOIN units u ON u.id = rc.unit_id"
    " WHERE rc.repo_id = ? AND rc.removed IS NULL AND u.kind = 'rpm' AND ((u.name = ?"
    " AND coalesce(nullif(u.epoch, ''), '0') = ? AND u.version = ? AND u.release = ?"
    " AND u.arch = ?) OR u.href = ?)"
)


def upload_plan(
    db: sqlite3.Connection, repo_id: str, files: Sequence[Uploaded]
) -> tuple[list[Uploaded], list[str]]:
    """The files to add, and the NEVRAs the latest version already holds with the same
    file; ``ContentConflict`` for those it holds with another file (or another file at
    their path)."""
    wanted: list[Uploaded] = []
    present: list[str] = []
    conflicts: list[str] = []
    for item in files:
        nevra = nevra_of(item.package)
        held = db.execute(_SAME_PACKAGE, (repo_id, *nevra, item.package["href"])).fetchall()
        other = next((row for row in held if row[6] != item.sha256), None)
        if other is not None:
            conflicts.append(
                f"{nevra_text(nevra)} (sha256 {item.sha256[:12]}…): the repository holds"
                f" {nevra_text(tuple(other[:5]))} at {other[5]} with another checksum"
                f" ({str(other[6])[:12]}…)"
            )
        elif held:
            present.append(nevra_text(nevra))
        else:
            wanted.append(item)
    if conflicts:
        raise ContentConflict("; ".join(conflicts))
    return wanted, present


def nevra_of(package: Package) -> Nevra:
    """The package's NEVRA, the epoch "0" when it has none."""
    epoch = package["epoch"] or "0"
    return (package["name"], epoch, package["version"], package["release"], package["arch"])


def nevra_text(nevra: tuple[Any, ...]) -> str:
    """``name-[epoch:]version-release.arch``, as dnf shows a package."""
    name, epoch, version, release, arch = nevra
    evr = f"{epoch}:" if epoch not in (None, "", "0") else ""
    return f"{name}-{evr}{version}-{release}.{arch}"
