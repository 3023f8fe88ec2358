"""The live progress line ``--wait`` draws on a terminal.

One line, redrawn in place with a carriage return and "erase to end of line" (plain ANSI, no
terminal library: this runs on the one-shot path, where every import is paid for). A sync
shows a bar with items and bytes done, the transfer rate and the time left; any other task a
spinner with its state and elapsed time, or what it waits for.

``line()`` is pure (task, clock, width → text) so it can be tested without a terminal.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, TextIO

from coordctl.output import blocker_text, duration, human_size
from coordd.api import names

SPINNER = "|/-\\"
RATE_WINDOW_S = 5.0
MIN_REDRAW_S = 0.1
BAR_CELLS = 20


def content_progress(task: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The sync report's ``importer.content`` node once it has totals, else ``None``."""
    progress = task.get("progress") or {}
    importer = progress.get("importer") if isinstance(progress, Mapping) else None
    content = importer.get("content") if isinstance(importer, Mapping) else None
    if isinstance(content, Mapping) and isinstance(content.get("items_total"), int):
        return content
    return None


def _stage(task: Mapping[str, Any]) -> str | None:
    """The first step of a progress report that is in progress (``metadata``, ``errata``)."""
    progress = task.get("progress") or {}
    importer = progress.get("importer") if isinstance(progress, Mapping) else None
    if not isinstance(importer, Mapping):
        return None
    for step in ("metadata", "content", "errata"):
        node = importer.get(step)
        if isinstance(node, Mapping) and node.get("state") == names.STEP_IN_PROGRESS:
            return step
    return None


class Rate:
    """Bytes per second over a sliding window of samples."""

    def __init__(self, window: float = RATE_WINDOW_S) -> None:
        self.window = window
        self.samples: deque[tuple[float, float]] = deque()

    def add(self, now: float, done: float) -> None:
        if self.samples and done < self.samples[-1][1]:
            self.samples.clear()  # the count went back (a re-run): start over
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()

    def per_second(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        if t1 - t0 < 0.2:
            return None
        return (d1 - d0) / (t1 - t0)


def line(
    task: Mapping[str, Any], title: str, now: float, rate: Rate, frame: int, width: int = 80
) -> str:
    """The text of the progress line for ``task``, at most ``width - 1`` characters."""
    spin = SPINNER[frame % len(SPINNER)]
    state = task.get("state")
    if state == names.WAITING:
        blockers = task.get("waiting_for") or []
        why = "; ".join(blocker_text(b) for b in blockers) or "its turn"
        return _fit([f"{spin} {title}: waiting for {why}"], width)
    content = content_progress(task)
    if (
        state == names.RUNNING
        and content is not None
        and content.get("state") != names.STEP_NOT_STARTED
    ):
        return _fit(_content_parts(title, content, now, rate), width)
    stage = _stage(task)
    text = f"{spin} {title}: {stage or state}"
    started = task.get("started")
    if started and state == names.RUNNING:
        text += f" {duration(max(0.0, time.time() - _parse_iso(str(started))))}"
    return _fit([text], width)


def _fit(parts: list[str], width: int) -> str:
    """Join the parts that fit, most important first; cut the first one if it alone is long."""
    limit = max(10, width - 1)
    text = parts[0][:limit]
    for part in parts[1:]:
        if len(text) + 1 + len(part) > limit:
            break
        text += " " + part
    return text


def _content_parts(title: str, content: Mapping[str, Any], now: float, rate: Rate) -> list[str]:
    items_total = int(content.get("items_total") or 0)
    items_done = items_total - int(content.get("items_left") or 0)
    size_total = int(content.get("size_total") or 0)
    size_done = size_total - int(content.get("size_left") or 0)
    rate.add(now, size_done)
    if size_total:
        fraction = size_done / size_total
    else:
        fraction = items_done / items_total if items_total else 1.0
    fraction = min(1.0, max(0.0, fraction))
    filled = int(fraction * BAR_CELLS)
    parts = [
        f"{title} [{'#' * filled}{'-' * (BAR_CELLS - filled)}] {fraction * 100:3.0f}%",
        f"{items_done}/{items_total} items",
    ]
    if size_total:
        parts.append(f"{human_size(size_done)}/{human_size(size_total)}")
    speed = rate.per_second()
    if speed is not None and speed > 0:
        parts.append(f"{human_size(speed)}/s")
        if size_total > size_done:
            parts.append(f"{duration((size_total - size_done) / speed)} left")
    errors = int(content.get("num_error") or 0)
    if errors:
        parts.insert(2, f"{errors} failed")
    return parts


def _parse_iso(value: str) -> float:
    """``2026-01-02T03:04:05Z`` → epoch seconds, UTC (no ``strptime``: it imports ``locale``)."""
    try:
        y, m, d = int(value[0:4]), int(value[5:7]), int(value[8:10])
        hh, mm, ss = int(value[11:13]), int(value[14:16]), int(value[17:19])
    except ValueError:
        return time.time()
    # Days from the civil date (Howard Hinnant's algorithm), then seconds.
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return float(days * 86400 + hh * 3600 + mm * 60 + ss)


class Bar:
    """Draws ``line()`` in place on ``stream``; ``clear()`` before printing anything else."""

    def __init__(self, stream: TextIO, title: str) -> None:
        self.stream = stream
        self.title = title
        self.rate = Rate()
        self.frame = 0
        self.drawn = False
        self._last = 0.0
        self._text = ""

    def width(self) -> int:
        columns = os.environ.get("COLUMNS", "")
        if columns.isdigit() and int(columns) > 0:
            return int(columns)
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (OSError, ValueError, AttributeError):
            return 80

    def draw(self, task: Mapping[str, Any], *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < MIN_REDRAW_S:
            return
        self._last = now
        self.frame += 1
        text = line(task, self.title, now, self.rate, self.frame, self.width())
        if text == self._text:
            return
        self._text = text
        self.stream.write(f"\r{text}\x1b[K")
        self.stream.flush()
        self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False
            self._text = ""
