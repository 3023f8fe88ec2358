"""Package retention: keep only the newest N versions of each package a feed lists.

A repository's ``retain_package_versions`` (Pulp 3's option of the same name): a sync keeps
the N newest EVRs of each (name, arch) and never downloads the rest, which cuts a sync of
a distribution's update feed, with its dozens of old builds of each package, by most of its
downloads and disk. 0 keeps every version. ``only_newest`` is the same with N = 1 (and
more: it keeps what module streams need); with both set, the smaller count wins.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, TypeVar

from coordd.repo.yum.versions import compare_evr

__all__ = ["newest_versions"]

_P = TypeVar("_P", bound=Mapping[str, Any])


def _newer_first(a: Mapping[str, Any], b: Mapping[str, Any]) -> int:
    return compare_evr(b, a)


def newest_versions(packages: list[_P], count: int) -> list[_P]:
    """The packages among the ``count`` newest EVRs of their (name, arch), in their
    order; ``count`` 0 keeps all. Packages of the same EVR (another build of it, listed
    twice) count as one version and are kept together."""
    if count <= 0:
        return packages
    groups: dict[tuple[str, str], list[_P]] = {}
    for package in packages:
        groups.setdefault((package["name"], package["arch"]), []).append(package)
    kept: set[int] = set()
    newest_first = functools.cmp_to_key(_newer_first)
    for group in groups.values():
        if len(group) <= count:
            kept.update(id(p) for p in group)
            continue
        ordered = sorted(group, key=newest_first)
        distinct = 0
        previous: _P | None = None
        for package in ordered:
            if previous is None or compare_evr(package, previous) != 0:
                distinct += 1
                if distinct > count:
                    break
            kept.add(id(package))
            previous = package
    return [p for p in packages if id(p) in kept]
