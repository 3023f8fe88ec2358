"""The import graph of coordd and coordctl, read from the source: no cycles, and a client
that needs nothing of the daemon but the shared leaves.

Every ``import`` and ``from … import`` statement counts, wherever it stands: at the top, inside
a function, under ``if TYPE_CHECKING:``. An edge goes to the module a statement names
(``from coordd.api import names`` names ``coordd.api.names``); the parent packages Python
runs on the way are not edges, except where the checks below look at them on purpose.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("coordd", "coordctl")
# What coordctl may import of the daemon: stdlib-only leaves (docs/design.md §9).
CLIENT_MAY_IMPORT = frozenset({"coordd.api.names", "coordd.api.errors", "coordd.api.address"})


def module_files() -> dict[str, Path]:
    """Every module of coordd and coordctl, by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


MODULES = module_files()


def imported_names(module: str, path: Path, source: str | None = None) -> Iterator[str]:
    """The dotted names every import statement of ``module`` asks for, absolute."""
    is_package = path.name == "__init__.py"
    text = path.read_text() if source is None else source
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                here = module.split(".")
                base = here if is_package else here[:-1]
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            for alias in node.names:
                submodule = f"{origin}.{alias.name}"
                yield submodule if submodule in MODULES else origin


def graph() -> dict[str, set[str]]:
    """Module → the modules of coordd and coordctl it imports."""
    edges: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        targets = set()
        for name in imported_names(module, path):
            # ``import a.b.c`` names a.b.c; a name that is no module is the module holding it.
            while name and name not in MODULES and name.split(".")[0] in PACKAGES:
                name = name.rpartition(".")[0]
            if name in MODULES and name != module:
                targets.add(name)
        edges[module] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The shortest cycle through each module that is on one (found by Tarjan's strongly
    connected groups), each written from its first module: ``[a, b, a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            connect(node)

    found: set[tuple[str, ...]] = set()
    for group in groups:
        for start in group:
            found.add(_rotated(_shortest_cycle(edges, group, start)))
    return [list(c) for c in sorted(found)]


def _shortest_cycle(edges: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """Breadth-first inside ``group``: the shortest way from ``start`` back to it."""
    previous: dict[str, str] = {}
    frontier = [start]
    while start not in previous:
        following = []
        for node in frontier:
            for target in sorted(edges[node] & group):
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    path = [start]
    node = previous[start]
    while node != start:
        path.append(node)
        node = previous[node]
    return path[::-1]


def _rotated(cycle: list[str]) -> tuple[str, ...]:
    """The cycle written from its first module, and closed: ``a -> b -> a``."""
    first = cycle.index(min(cycle))
    ring = cycle[first:] + cycle[:first]
    return (*ring, ring[0])


SAMPLE = """
from typing import TYPE_CHECKING
import coordctl.output
from coordd.api import names
from coordd.api.errors import NotFound
from . import exitcodes
if TYPE_CHECKING:
    from coordctl.client import Client
def later():
    from coordctl.shell import run_shell
"""


def test_the_walk_sees_every_kind_of_import():
    # Guards the walk itself, on a sample module (coordctl/sample.py, as if it existed).
    found = set(imported_names("coordctl.sample", ROOT / "coordctl" / "sample.py", SAMPLE))
    assert found == {
        "typing",
        "coordctl.output",
        "coordd.api.names",  # from a package, a module
        "coordd.api.errors",  # from a module, a name
        "coordctl.exitcodes",  # relative
        "coordctl.client",  # under TYPE_CHECKING
        "coordctl.shell",  # in a function
    }
    assert "coordd.api.address" in graph()["coordctl.client"]


def test_cycles_are_named():
    edges = {"a": {"b"}, "b": {"c", "a"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "a"], ["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_coordctl_imports_only_the_shared_leaves_of_coordd():
    edges = graph()
    wrong = {
        f"{module} imports {target}"
        for module, targets in edges.items()
        if module.split(".")[0] == "coordctl"
        for target in targets
        if target.split(".")[0] == "coordd" and target not in CLIENT_MAY_IMPORT
    }
    assert not wrong, sorted(wrong)
    assert set(MODULES) >= CLIENT_MAY_IMPORT


@pytest.mark.parametrize("module", sorted(CLIENT_MAY_IMPORT | {"coordd", "coordd.api"}))
def test_the_shared_leaves_import_only_the_stdlib(module):
    # The packages count too: importing a leaf runs coordd/__init__.py and
    # coordd/api/__init__.py first, so they may import no more than the leaves do (the
    # package coordd reads its __version__ from the names leaf).
    allowed = CLIENT_MAY_IMPORT if module in ("coordd", "coordd.api") else frozenset()
    outside = sorted(
        name
        for name in imported_names(module, MODULES[module])
        if name not in allowed and name.split(".")[0] not in sys.stdlib_module_names
    )
    assert not outside, f"{module} imports {outside}"
