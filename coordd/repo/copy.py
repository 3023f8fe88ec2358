"""Copy packages from one repository into another, by hard links (DESIGN §6.1)."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from coordd.api.errors import InvalidRequest, OperationFailed
from coordd.repo.content import (
    CONTENT_DIR,
    ContentIndex,
    UnsafePath,
    link_or_copy,
    reset_tmp,
    resolve_in,
)
from coordd.repo.records import StoredFile


def copy_packages(src_dir: Path, dst_dir: Path, name_glob: str | None = None) -> dict[str, Any]:
    """Copy the packages of one repository into another by hard links.

    ``name_glob`` (fnmatch, case-sensitive) filters on the package name; None copies all.
    A package whose href the destination already holds with the same checksum counts as
    already present; with another checksum it is a conflict and is left alone (two files
    cannot share one path). New entries get ``origin: "copy"``, so a later sync of the
    destination keeps them. Files are linked first, then the destination index is replaced
    in one step: an interrupted copy leaves only unreferenced files, and running it again
    completes it.
    """
    if name_glob is not None and (not isinstance(name_glob, str) or not name_glob):
        raise InvalidRequest("name_glob must be a non-empty string or null", {"key": "name_glob"})
    src = ContentIndex.load(src_dir)
    dst = ContentIndex.load(dst_dir)
    tmp = reset_tmp(dst_dir)
    src_root = src_dir / CONTENT_DIR
    dst_root = dst_dir / CONTENT_DIR
    dst_root.mkdir(parents=True, exist_ok=True)
    claimed: dict[str, StoredFile] = {record["href"]: record for record in dst.files()}
    matched = copied = present = linked = 0
    conflicts: list[str] = []
    for href in sorted(src.packages):
        package = src.packages[href]
        if name_glob is not None and not fnmatch.fnmatchcase(package["name"], name_glob):
            continue
        matched += 1
        existing = claimed.get(href)
        if existing is not None:
            if (existing.get("checksum_type"), existing.get("checksum")) == (
                package["checksum_type"],
                package["checksum"],
            ) and href in dst.packages:
                present += 1
            else:
                conflicts.append(href)
            continue
        try:
            source = resolve_in(src_root, href)
            target = resolve_in(dst_root, href)
        except UnsafePath as exc:
            raise OperationFailed(f"copy refused: {exc}") from exc
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = tmp / f"{uuid.uuid4().hex}.link"
        try:
            if link_or_copy(source, staging):
                linked += 1
            os.replace(staging, target)
        except FileNotFoundError as exc:
            raise OperationFailed(
                f"copy failed: {href} is in the index of {src_dir} but its file is missing"
            ) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staging)
        dst.packages[href] = {**package, "origin": "copy"}
        claimed[href] = dst.packages[href]
        copied += 1
    if copied:
        dst.save(dst_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "matched": matched,
        "copied": copied,
        "linked": linked,
        "already_present": present,
        "conflicts": conflicts,
        "packages": len(dst.packages),
    }


__all__ = ["copy_packages"]
