"""What interrupted operations leave in the state directory, cleared before start-up.

A sync streams its downloads and metadata into ``content/.tmp/`` (``coordd.content.pool``),
a legacy repository directory may hold ``repositories/<id>/.tmp/`` and index temporaries
from an older release, and a publish builds in ``published/.<id>.tmp-<hex>`` and swaps
through ``published/.<id>.link-<hex>`` (``coordd.repo.publish``). None of these is ever
read after the operation that made it ends, so at start-up, once the instance lock is held
and before anything else, they are removed: an interrupted sync's downloads must not keep a
full disk full, nor stop the daemon coming back. (Generations of a publication,
``.<id>.gen-<hex>``, are not leftovers: one swapped out stays readable for clients during
its grace period; the next publish prunes it.)
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from coordd.content.migrate import LEGACY_DIR

TMP_DIR = ".tmp"

__all__ = ["Cleared", "clear_leftovers"]

_INDEX_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")
_PUBLISH_TEMPORARY = re.compile(r"^\..+\.(?:tmp|link)-[0-9a-f]{32}$")


@dataclass
class Cleared:
    """What ``clear_leftovers`` removed, and what it could not."""

    paths: int = 0
    bytes: int = 0
    errors: list[str] | None = None


def clear_leftovers(state_dir: Path) -> Cleared:
    """Remove the temporary files and directories of interrupted operations under
    ``state_dir``; never follows a symbolic link out of it."""
    cleared = Cleared(errors=[])
    for entry in _entries(state_dir / "content" / TMP_DIR, cleared):
        _remove(entry, cleared)
    for repo_dir in _entries(state_dir / LEGACY_DIR, cleared):
        if not repo_dir.is_dir() or repo_dir.is_symlink():
            continue
        for entry in _entries(repo_dir, cleared):
            if entry.name == TMP_DIR or _INDEX_TEMPORARY.match(entry.name):
                _remove(entry, cleared)
    for entry in _entries(state_dir / "published", cleared):
        if _PUBLISH_TEMPORARY.match(entry.name):
            _remove(entry, cleared)
    return cleared


def _entries(directory: Path, cleared: Cleared) -> list[Path]:
    try:
        return [directory / name for name in os.listdir(directory)]
    except FileNotFoundError:
        return []
    except OSError as exc:
        assert cleared.errors is not None
        cleared.errors.append(f"{directory}: {exc.strerror}")
        return []


def _remove(path: Path, cleared: Cleared) -> None:
    assert cleared.errors is not None
    size = _size(path)
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        cleared.errors.append(f"{path}: {exc.strerror}")
        return
    cleared.paths += 1
    cleared.bytes += size


def _size(path: Path) -> int:
    """Bytes held by ``path`` (a file, or a directory's files), links not followed."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
        total = 0
        for root, _dirs, files in os.walk(path):
            for name in files:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    continue
        return total
    except OSError:
        return 0
