"""rpm's version comparison (``rpmvercmp``, EVR order) and the newest-only selection."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar


def _isalpha(c: str) -> bool:
    return c.isascii() and c.isalpha()


def _isdigit(c: str) -> bool:
    return "0" <= c <= "9"


def rpmvercmp(a: str, b: str) -> int:
    """Compare two version (or release) strings exactly as rpm's ``rpmvercmp`` does.

    Segments of ASCII letters or digits are compared in turn (digits numerically and
    newer than letters); other characters only separate; ``~`` sorts before anything,
    even the end of the string; ``^`` sorts after the end but before anything else.
    Returns -1, 0 or 1.
    """
    if a == b:
        return 0
    i = j = 0
    la, lb = len(a), len(b)
    while i < la or j < lb:
        while i < la and not (_isalpha(a[i]) or _isdigit(a[i])) and a[i] not in "~^":
            i += 1
        while j < lb and not (_isalpha(b[j]) or _isdigit(b[j])) and b[j] not in "~^":
            j += 1
        ca = a[i] if i < la else ""
        cb = b[j] if j < lb else ""
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            i += 1
            j += 1
            continue
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            i += 1
            j += 1
            continue
        if not (ca and cb):
            break
        si, sj = i, j
        if _isdigit(ca):
            while i < la and _isdigit(a[i]):
                i += 1
            while j < lb and _isdigit(b[j]):
                j += 1
            isnum = True
        else:
            while i < la and _isalpha(a[i]):
                i += 1
            while j < lb and _isalpha(b[j]):
                j += 1
            isnum = False
        seg_a, seg_b = a[si:i], b[sj:j]
        if not seg_b:
            return 1 if isnum else -1
        if isnum:
            seg_a, seg_b = seg_a.lstrip("0"), seg_b.lstrip("0")
            if len(seg_a) != len(seg_b):
                return 1 if len(seg_a) > len(seg_b) else -1
        if seg_a != seg_b:
            return 1 if seg_a > seg_b else -1
    if i >= la and j >= lb:
        return 0
    return -1 if i >= la else 1


def epoch_number(value: Any) -> int:
    """An epoch from metadata as a number (missing or malformed: 0, as rpm does)."""
    try:
        return int(value or 0)
    except ValueError:
        return 0


def compare_evr(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    """Compare the (epoch, version, release) of two package records, rpm-style."""
    ea, eb = epoch_number(a.get("epoch")), epoch_number(b.get("epoch"))
    if ea != eb:
        return 1 if ea > eb else -1
    return rpmvercmp(a.get("version") or "", b.get("version") or "") or rpmvercmp(
        a.get("release") or "", b.get("release") or ""
    )


_P = TypeVar("_P", bound=Mapping[str, Any])


def newest_only(packages: list[_P]) -> list[_P]:
    """Keep the newest EVR of each (name, arch); on a tie, the first one listed."""
    best: dict[tuple[str, str], _P] = {}
    for package in packages:
        key = (package["name"], package["arch"])
        current = best.get(key)
        if current is None or compare_evr(package, current) > 0:
            best[key] = package
    return list(best.values())


__all__ = ["compare_evr", "epoch_number", "newest_only", "rpmvercmp"]
