"""Recurrences: when a schedule fires, from an ISO 8601 repeating interval.

A schedule is written as Pulp v2 wrote it, an ISO 8601 repeating interval:

    START/INTERVAL          2026-12-01T02:00Z/P1D       every day from START on
    Rn/START/INTERVAL       R5/2026-12-01T02:00Z/P1D    n runs in all, then no more
    R/START/INTERVAL        the same as START/INTERVAL

START is a date and time with a zone (``Z`` or an offset such as ``+01:00``); seconds are
optional. INTERVAL is a duration in weeks (``P1W``), or in days, hours, minutes and seconds
(``P1D``, ``PT6H``, ``P1DT12H``, ``PT30M``): whole numbers, at least one minute in all.
Months and years are refused: their length varies, and a schedule that fires "every month"
on the 31st has no good answer.

The occurrences are START, START + INTERVAL, START + 2 INTERVAL, ... Pure: no clock, no I/O;
the caller says what time it is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from coordd.api.errors import InvalidRequest

MIN_INTERVAL_S = 60
MAX_INTERVAL_S = 366 * 86400 * 10
MAX_REPEATS = 1_000_000
MAX_TEXT = 100

_START = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2}))?"
    r"(?P<zone>Z|[+-]\d{2}(?::?\d{2})?)"
)
_WEEKS = re.compile(r"P(?P<weeks>\d+)W")
_DURATION = re.compile(
    r"P(?:(?P<days>\d+)D)?(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?"
)


@dataclass(frozen=True)
class Recurrence:
    """A parsed schedule: its first occurrence, its interval, and how many runs in all."""

    text: str
    start: float  # seconds since the epoch
    interval: float  # seconds
    repeats: int | None  # None: forever

    def first_after(self, now: float) -> float:
        """The first occurrence later than ``now`` (``start`` itself, if it is later)."""
        if now < self.start:
            return self.start
        steps = math.floor((now - self.start) / self.interval) + 1
        return self.start + steps * self.interval


def parse(text: object, field: str = "schedule") -> Recurrence:
    """Parse a schedule; ``InvalidRequest`` naming ``field`` and the fault otherwise."""
    if not isinstance(text, str):
        raise _bad(field, f"{field} must be a string such as 2026-12-01T02:00Z/P1D")
    if len(text) > MAX_TEXT:
        raise _bad(field, f"{field} is longer than {MAX_TEXT} characters")
    parts = text.split("/")
    repeats: int | None = None
    if len(parts) == 3:
        repeats = _repeats(parts[0], text, field)
        parts = parts[1:]
    if len(parts) != 2:
        raise _bad(
            field,
            f"{field} {text!r} is not START/INTERVAL or Rn/START/INTERVAL "
            "(such as 2026-12-01T02:00Z/P1D or R5/2026-12-01T02:00Z/PT6H)",
        )
    return Recurrence(
        text, _start(parts[0], text, field), _interval(parts[1], text, field), repeats
    )


def _repeats(part: str, text: str, field: str) -> int | None:
    if part == "R":
        return None
    if not re.fullmatch(r"R\d+", part):
        raise _bad(field, f"{field} {text!r}: the repeat count {part!r} is not Rn (such as R5)")
    count = int(part[1:])
    if not 1 <= count <= MAX_REPEATS:
        raise _bad(field, f"{field} {text!r}: the repeat count must be 1 to {MAX_REPEATS}")
    return count


def _start(part: str, text: str, field: str) -> float:
    match = _START.fullmatch(part)
    if match is None:
        raise _bad(
            field,
            f"{field} {text!r}: the start {part!r} is not a date and time with a zone "
            "(such as 2026-12-01T02:00Z or 2026-12-01T02:00+01:00)",
        )
    zone = match["zone"]
    offset = timedelta(0)
    if zone != "Z":
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:] or 0)
        if hours > 23 or minutes > 59:
            raise _bad(field, f"{field} {text!r}: the zone offset {zone!r} is out of range")
        offset = timedelta(hours=hours, minutes=minutes) * (-1 if zone[0] == "-" else 1)
    try:
        year, month, day = (int(x) for x in match["date"].split("-"))
        moment = datetime(
            year,
            month,
            day,
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"] or 0),
            tzinfo=timezone(offset),
        )
    except ValueError as exc:
        raise _bad(
            field, f"{field} {text!r}: the start {part!r} is not a valid time ({exc})"
        ) from None
    return moment.astimezone(UTC).timestamp()


def _interval(part: str, text: str, field: str) -> float:
    weeks = _WEEKS.fullmatch(part)
    if weeks is not None:
        seconds = int(weeks["weeks"]) * 7 * 86400
    else:
        match = _DURATION.fullmatch(part)
        if match is None or part in ("P", "PT") or part.endswith("T"):
            hint = ""
            if re.fullmatch(r"P(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T.*)?", part) and re.match(
                r"P(\d+Y|\d+M)", part
            ):
                hint = "; months and years are not supported, use days or weeks (P30D, P52W)"
            raise _bad(
                field,
                f"{field} {text!r}: the interval {part!r} is not a duration such as P1D, "
                f"PT6H, P1W or PT30M{hint}",
            )
        seconds = (
            int(match["days"] or 0) * 86400
            + int(match["hours"] or 0) * 3600
            + int(match["minutes"] or 0) * 60
            + int(match["seconds"] or 0)
        )
    if seconds < MIN_INTERVAL_S:
        raise _bad(field, f"{field} {text!r}: the interval must be at least one minute (PT1M)")
    if seconds > MAX_INTERVAL_S:
        raise _bad(field, f"{field} {text!r}: the interval must be at most ten years")
    return float(seconds)


def _bad(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, {"param": field})
