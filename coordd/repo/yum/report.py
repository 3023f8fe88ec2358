"""The importer's progress report (DESIGN §6.3): metadata, content per kind, errata.

Nested under ``importer`` in a task's progress; each step has a state, and content has
counters (items and bytes, total and left, successes, errors) overall and per kind. Keys
that only some syncs have appear when they first apply: ``retries`` in ``metadata`` or
``content`` (downloads tried again after a connection error or a 5xx), and for a sync from a
metalink or mirrorlist, ``mirror`` (the mirror used) and ``mirrors_skipped`` (each mirror
refused, with why).
"""

from __future__ import annotations

from typing import Any, Final

from coordd.engine.progress import IN_PROGRESS, NOT_STARTED, Progress

KINDS: Final = ("rpm", "delta_rpm", "file", "tree_file")
COUNTERS: Final = (
    "items_total",
    "items_left",
    "size_total",
    "size_left",
    "num_success",
    "num_error",
)
_MAX_ERROR_DETAILS = 100


class Report:
    """The ``importer`` progress report; holds references to its dicts to stay cheap."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        content: dict[str, Any] = {"state": NOT_STARTED, **dict.fromkeys(COUNTERS, 0)}
        content["error_details"] = []
        content["details"] = {kind: dict.fromkeys(COUNTERS, 0) for kind in KINDS}
        progress.set(
            "importer",
            metadata={"state": NOT_STARTED},
            content=content,
            errata={"state": NOT_STARTED},
        )
        self.metadata = progress.node("importer", "metadata")
        self.content = progress.node("importer", "content")
        self.errata = progress.node("importer", "errata")
        self.kinds: dict[str, dict[str, Any]] = self.content["details"]

    def state(self, step: dict[str, Any], state: str) -> None:
        step["state"] = state
        self.progress.touch()

    def plan(self, kind: str, files: int, size: int) -> None:
        for node in (self.content, self.kinds[kind]):
            node["items_total"] += files
            node["items_left"] += files
            node["size_total"] += size
            node["size_left"] += size
        self.progress.touch()

    def finished(self, kind: str, size_left: int, error: dict[str, Any] | None) -> None:
        for node in (self.content, self.kinds[kind]):
            node["items_left"] -= 1
            node["size_left"] -= size_left
            node["num_error" if error else "num_success"] += 1
        if error and len(self.content["error_details"]) < _MAX_ERROR_DETAILS:
            self.content["error_details"].append(error)
        self.progress.touch()

    def retried(self, step: dict[str, Any]) -> None:
        """One download of ``step`` (``metadata`` or ``content``) is being tried again."""
        step["retries"] = step.get("retries", 0) + 1
        self.progress.touch()

    def mirror_skipped(self, mirror: str, error: str) -> None:
        importer = self.progress.node("importer")
        importer.setdefault("mirrors_skipped", []).append({"mirror": mirror, "error": error})
        self.progress.touch()

    def mirror_used(self, mirror: str) -> None:
        self.progress.node("importer")["mirror"] = mirror
        self.progress.touch()

    def interrupted(self, state: str) -> None:
        for step in (self.metadata, self.content, self.errata):
            if step["state"] == IN_PROGRESS:
                step["state"] = state
        self.progress.touch()


__all__ = ["COUNTERS", "KINDS", "Report"]
