"""The content pool: every file of every repository, stored once, named by its sha256.

Layout under ``<state>/content/``::

    sha256/ab/cdef…    a file whose sha256 is abcdef…; immutable
    .tmp/              downloads and uploads in progress (same filesystem, so a rename
                       into the pool is atomic); emptied at start-up

Invariants, relied on by sync, copy, publish and orphan cleanup:

- **A file reaches its pool path only verified**: by ``os.replace`` of a complete
  temporary file whose size and sha256 were checked while it streamed (``enter``).
- **Pool files are immutable.** Nothing opens one for writing; publications hard-link
  them, so a write through one name could otherwise reach every repository.
- **The path is the truth for presence; the ``files`` table for accounting.** A file is
  renamed in before its row is written, so a crash can leave a file without a row, never
  a row without a file. The next sync that names the file finds it (``present``) and
  writes the row; orphan cleanup, which reads only the table, never removes it meanwhile.

Durability: pool files are not fsynced one by one (that would cost more than the download on
a local mirror); the version that references them is. After a power cut a file can come back
short, which ``present`` (a size check) catches: the next sync fetches it again.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import re
import shutil
from pathlib import Path
from typing import IO

__all__ = ["Pool", "hash_file", "link_or_copy"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_READ_CHUNK = 1 << 20


def hash_file(path: Path, algo: str = "sha256") -> tuple[int, str]:
    """The size and ``algo`` hex digest of the file at ``path``."""
    h = hashlib.new(algo)
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


class Pool:
    """The pool directory of one state directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / ".tmp"
        self._dirs: set[Path] = set()
        self._serial = itertools.count()

    def prepare(self) -> None:
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def reset_tmp(self) -> int:
        """Remove every temporary file (none is in use at start-up); return how many."""
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(self.tmp):
                path = self.tmp / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                removed += 1
        self.tmp.mkdir(parents=True, exist_ok=True)
        return removed

    def tmp_file(self, tag: str = "part") -> Path:
        """A fresh temporary path in the pool's filesystem (pid-qualified: several
        processes of one daemon write temporaries at once)."""
        return self.tmp / f"{os.getpid()}-{next(self._serial)}.{tag}"

    def create_tmp(self, tag: str = "part") -> tuple[Path, IO[bytes]]:
        """A new temporary file (``tmp_file``), created and open for writing."""
        path = self.tmp_file(tag)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        return path, os.fdopen(fd, "wb")

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError(f"not a sha256 digest: {sha256!r}")
        return self.root / "sha256" / sha256[:2] / sha256[2:]

    def present(self, sha256: str, size: int | None) -> bool:
        """Whether the pool holds the file (with ``size``, when one is given)."""
        try:
            found = os.stat(self.path(sha256)).st_size
        except OSError:
            return False
        return size is None or found == size

    def enter(self, tmp: Path, sha256: str) -> Path:
        """Rename the verified temporary file ``tmp`` to the pool path of ``sha256``."""
        final = self.path(sha256)
        if final.parent not in self._dirs:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(final.parent)
        os.replace(tmp, final)
        return final

    def remove(self, sha256: str) -> int:
        """Unlink a pool file (an orphan); return the bytes freed (0 if it was gone)."""
        path = self.path(sha256)
        try:
            size = os.stat(path).st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        return size


def link_or_copy(src: Path, dst: Path) -> bool:
    """Hard-link ``src`` to ``dst`` (which must not exist); copy across filesystems.

    Returns True for a link, False for a copy.
    """
    try:
        os.link(src, dst)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
    shutil.copyfile(src, dst)
    return False
