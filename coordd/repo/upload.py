"""Uploads: RPM files a client passed as open descriptors, read into the pool.

``repo.upload`` (``coordd.api.methods``) gets the descriptors of the files the client opened
(``coordd.api.fdpassing``), so the daemon reads what the client could read and nothing else.
While the request is served, ``receive`` copies each file into a temporary file of the pool
(reading from offset 0 with ``pread``, which leaves the client's file offset alone),
hashing it as it copies, and reads the RPM header from that copy with createrepo_c: what is
checked is what is stored, whatever happens to the client's file afterwards. A file that is
not a regular file or not an RPM refuses the whole request (-32602, naming the file), and
nothing is kept.

The copies wait, as a ``PendingUpload``, for the ``repo.upload`` task, which the coordinator
orders like any other change of the repository. The task enters them into the pool and
commits the new version (``ContentStore.upload``). The copies live in the pool's temporary
directory, which the daemon empties when it starts: an upload task that waited across a
restart fails and says to upload again. Descriptors are closed by the server when the
request ends; a copy whose task ended without taking it is removed by the next upload.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from coordd.api.errors import InvalidRequest
from coordd.content.paths import UnsafePath, check_href
from coordd.content.pool import Pool
from coordd.content.records import DEPENDENCY_KINDS, Package
from coordd.repo.createrepo import cr

__all__ = [
    "MAX_FILE_BYTES",
    "PendingUpload",
    "UploadedFile",
    "nevra",
    "package_record",
    "parse_nevra",
    "receive",
]

#: The largest file one upload takes (the largest RPMs are debuginfo, a few GiB).
MAX_FILE_BYTES: Final = 16 << 30
_LEAD_MAGIC: Final = b"\xed\xab\xee\xdb"  # an RPM file's first bytes (its lead)
_CHUNK: Final = 1 << 20


@dataclass(frozen=True)
class UploadedFile:
    """One file of an upload, copied into the pool's temporary directory and read."""

    name: str  # as the client named it, for messages
    tmp: Path
    sha256: str
    size: int
    package: Package

    def to_json(self) -> dict[str, Any]:
        """What the task's arguments show of it."""
        return {"file": self.name, "nevra": nevra(self.package), "sha256": self.sha256}


@dataclass
class PendingUpload:
    """An upload's files, waiting for its task."""

    repo_id: str
    files: list[UploadedFile]
    task_id: str | None = None  # set once the task is submitted

    def discard(self) -> None:
        """Remove the temporary copies (those the pool has not taken)."""
        for uploaded in self.files:
            with contextlib.suppress(FileNotFoundError):
                uploaded.tmp.unlink()


def nevra(package: Package) -> str:
    """``name-[epoch:]version-release.arch``, the epoch shown when it is not 0."""
    epoch = package["epoch"]
    evr = f"{epoch}:" if epoch not in ("", "0") else ""
    return f"{package['name']}-{evr}{package['version']}-{package['release']}.{package['arch']}"


def parse_nevra(text: str) -> tuple[str, str, str, str, str]:
    """``name-[epoch:]version-release.arch`` as (name, epoch, version, release, arch), the
    epoch "0" when it is not given; ``ValueError`` saying what is missing."""
    rest, dot, arch = text.rpartition(".")
    rest, dash, release = rest.rpartition("-")
    name, dash2, version = rest.rpartition("-")
    if not (dot and dash and dash2 and name and version and release and arch):
        raise ValueError(f"{text!r} is not name-[epoch:]version-release.arch")
    epoch = "0"
    if ":" in version:
        epoch, _, version = version.partition(":")
        if not epoch.isdigit() or not version:
            raise ValueError(f"{text!r}: the epoch must be a number (name-epoch:version-…)")
        epoch = str(int(epoch))
    return name, epoch, version, release, arch


def _refused(name: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"{name}: {problem}; nothing was uploaded", {"file": name})


def _copy(fd: int, name: str, tmp: Path) -> tuple[int, str]:
    """Copy the file open on ``fd`` into ``tmp`` from its start; its size and sha256."""
    try:
        info = os.fstat(fd)
    except OSError as exc:
        raise _refused(name, f"cannot read the descriptor: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _refused(name, "not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise _refused(name, f"larger than {MAX_FILE_BYTES} bytes")
    digest = hashlib.sha256()
    offset = 0
    with open(tmp, "xb") as out:
        while True:
            try:
                chunk = os.pread(fd, _CHUNK, offset)
            except OSError as exc:
                raise _refused(name, f"cannot read it: {exc.strerror}") from None
            if not chunk:
                break
            if offset == 0 and not chunk.startswith(_LEAD_MAGIC):
                raise _refused(name, "not an RPM package (it does not start with an RPM lead)")
            offset += len(chunk)
            if offset > MAX_FILE_BYTES:
                raise _refused(name, f"larger than {MAX_FILE_BYTES} bytes")
            digest.update(chunk)
            out.write(chunk)
    if offset == 0:
        raise _refused(name, "not an RPM package (it is empty)")
    return offset, digest.hexdigest()


def _href(pkg: Any) -> str:
    """Where a publication puts an uploaded package: ``Packages/<letter>/<NVRA>.rpm``, a
    name made from the header, never from the client's file name."""
    filename = f"{pkg.name}-{pkg.version}-{pkg.release}.{pkg.arch}.rpm"
    return f"Packages/{pkg.name[:1].lower()}/{filename}"


def package_record(pkg: Any, sha256: str, size: int, href: str) -> Package:
    """A package record from a createrepo_c Package read from an RPM header."""
    record: dict[str, Any] = {
        "name": pkg.name,
        "epoch": pkg.epoch or "0",
        "version": pkg.version,
        "release": pkg.release,
        "arch": pkg.arch,
        "checksum_type": "sha256",
        "checksum": sha256,
        "href": href,
        "size": size,
        "summary": pkg.summary or "",
        "description": pkg.description or "",
        "url": pkg.url or "",
        "packager": pkg.rpm_packager or "",
        "license": pkg.rpm_license or "",
        "vendor": pkg.rpm_vendor or "",
        "group": pkg.rpm_group or "",
        "buildhost": pkg.rpm_buildhost or "",
        "sourcerpm": pkg.rpm_sourcerpm or "",
        "header_start": int(pkg.rpm_header_start or 0),
        "header_end": int(pkg.rpm_header_end or 0),
        "time_file": int(pkg.time_file or 0),
        "time_build": int(pkg.time_build or 0),
        "size_installed": int(pkg.size_installed or 0),
        "size_archive": int(pkg.size_archive or 0),
        "origin": "upload",
    }
    for kind in DEPENDENCY_KINDS:
        record[kind] = [list(dep) for dep in getattr(pkg, kind) or ()]
    record["files"] = [[entry[0] or "", entry[1] + entry[2]] for entry in pkg.files or ()]
    record["changelogs"] = [list(entry) for entry in pkg.changelogs or ()]
    return record  # type: ignore[return-value]


def _read(name: str, tmp: Path, sha256: str, size: int) -> Package:
    try:
        pkg = cr.package_from_rpm(str(tmp), cr.SHA256, "upload.rpm", None, 0)
    except (OSError, cr.CreaterepoCError) as exc:
        raise _refused(name, f"not a readable RPM package ({exc})") from None
    if not (pkg.name and pkg.version and pkg.release and pkg.arch):
        raise _refused(name, "its RPM header lacks a name, version, release or arch")
    href = _href(pkg)
    try:
        check_href(href)
    except UnsafePath as exc:
        raise _refused(name, f"its name makes no safe file name ({exc})") from None
    return package_record(pkg, sha256, size, href)


def receive(pool: Pool, fds: tuple[int, ...], names: list[str]) -> list[UploadedFile]:
    """Copy and read the files open on ``fds`` (in a worker thread); ``InvalidRequest``
    naming the first file refused, and then no copy is kept.

    The same file twice is taken once; two files of one NEVRA that differ refuse the
    upload."""
    received: list[UploadedFile] = []
    try:
        for index, fd in enumerate(fds):
            name = names[index] if index < len(names) else f"file {index + 1}"
            tmp = pool.tmp_file("upload")
            try:
                size, sha256 = _copy(fd, name, tmp)
                package = _read(name, tmp, sha256, size)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                raise
            uploaded = UploadedFile(name, tmp, sha256, size, package)
            twin = next((u for u in received if nevra(u.package) == nevra(package)), None)
            if twin is not None:
                tmp.unlink()
                if twin.sha256 != sha256:
                    raise _refused(
                        name, f"{twin.name} is another file of the same package {nevra(package)}"
                    )
                continue
            received.append(uploaded)
    except BaseException:
        PendingUpload("", received).discard()
        raise
    return received
