"""Paths that come from feeds and records: the rules that keep them inside their directory.

A relative path that comes from a feed or a stored record must stay below the directory it
is joined to. Real attacks used ``../``, absolute paths, percent-encoded dots and sibling
directories sharing a prefix (librepo CVE-2020-14352, dnf reposync CVE-2018-10897). So the
raw string is checked component by component (and again after percent-decoding), and then
the resolved path, symlinks followed, must lie under the resolved root, compared
component-wise with ``Path.is_relative_to`` rather than as a string prefix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

__all__ = [
    "RESERVED_TOP",
    "UnsafePath",
    "check_href",
    "fsync_dir",
    "resolve_in",
]

# Top-level directory of a publication that the publisher generates; no stored file may
# claim a path in it, or a feed could overwrite the metadata it is published with.
RESERVED_TOP = "repodata"

_MAX_HREF = 4096
_MAX_COMPONENT = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


class UnsafePath(ValueError):
    """A relative path from a feed or an index would leave its directory (or is malformed)."""


# -- path rules ---------------------------------------------------------------------------------


def _check_components(path: str, raw: str, how: str) -> None:
    for part in path.split("/"):
        if part in ("", "."):
            raise UnsafePath(f"{raw!r}: empty or '.' path component{how}")
        if part == "..":
            raise UnsafePath(f"{raw!r}: parent directory component '..'{how}")
        if len(part.encode("utf-8", "surrogateescape")) > _MAX_COMPONENT:
            raise UnsafePath(f"{raw!r}: path component longer than {_MAX_COMPONENT} bytes")


def check_href(href: str) -> str:
    """Return ``href`` if it is a safe relative path, else raise ``UnsafePath`` saying why.

    Checked on the raw string: non-empty, bounded length, no control characters, no
    backslash (a separator on other systems and in some servers), not absolute, no URL
    scheme or network location, no query or fragment, and no empty, ``.`` or ``..``
    component; then the same component rules again after percent-decoding, so ``%2e%2e``
    is caught whatever a server later does with it.
    """
    if not isinstance(href, str) or not href:
        raise UnsafePath("empty path")
    if len(href) > _MAX_HREF:
        raise UnsafePath(f"path longer than {_MAX_HREF} characters")
    if _CONTROL.search(href):
        raise UnsafePath(f"{href!r}: control character in path")
    if "\\" in href:
        raise UnsafePath(f"{href!r}: backslash in path")
    if href.startswith("/"):
        raise UnsafePath(f"{href!r}: absolute path")
    if _SCHEME.match(href):
        raise UnsafePath(f"{href!r}: URL scheme in a relative path")
    if "?" in href or "#" in href:
        raise UnsafePath(f"{href!r}: query or fragment in path")
    _check_components(href, href, "")
    decoded = href
    for _ in range(4):  # decode until stable: %252e%252e is %2e%2e is ..
        again = unquote(decoded)
        if again == decoded:
            break
        decoded = again
    else:
        raise UnsafePath(f"{href!r}: percent-encoding nested too deep")
    if decoded != href:
        if "\\" in decoded or _CONTROL.search(decoded):
            raise UnsafePath(f"{href!r}: percent-encoded backslash or control character")
        if decoded.startswith("/"):
            raise UnsafePath(f"{href!r}: percent-encoded absolute path")
        _check_components(decoded, href, " (after percent-decoding)")
    return href


def resolve_in(root: Path, href: str) -> Path:
    """``root / href`` after ``check_href``, verified to resolve (symlinks too) below ``root``.

    The comparison is ``Path.is_relative_to`` on resolved paths, i.e. component-wise:
    ``/srv/repo-evil`` is not inside ``/srv/repo`` although the string starts with it.
    """
    check_href(href)
    base = root.resolve()
    target = (base / href).resolve()
    if target == base or not target.is_relative_to(base):
        raise UnsafePath(f"{href!r}: resolves outside {base}")
    return target


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
