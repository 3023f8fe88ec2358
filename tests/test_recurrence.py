"""ISO 8601 repeating intervals: what is accepted, what is refused and how, and when they fire."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coordd.api.errors import InvalidRequest
from coordd.engine.recurrence import parse


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "start", "interval", "repeats"),
    [
        ("2026-12-01T02:00Z/P1D", "2026-12-01T02:00", 86400, None),
        ("R5/2026-12-01T02:00Z/PT6H", "2026-12-01T02:00", 6 * 3600, 5),
        ("R/2026-12-01T02:00:30Z/PT30M", "2026-12-01T02:00:30", 1800, None),
        ("2026-12-01T03:00+01:00/P1W", "2026-12-01T02:00", 7 * 86400, None),
        ("2026-12-01T00:30-0130/P1DT12H", "2026-12-01T02:00", 36 * 3600, None),
        ("2012-12-15T00:00Z/PT1M", "2012-12-15T00:00", 60, None),
        ("R1/2026-12-01T02:00+05/PT90S", "2026-11-30T21:00", 90, 1),
    ],
)
def test_schedules_parse(text, start, interval, repeats):
    recurrence = parse(text)
    assert recurrence.start == at(start)
    assert recurrence.interval == interval
    assert recurrence.repeats == repeats
    assert recurrence.text == text


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("P1D", "is not START/INTERVAL or Rn/START/INTERVAL"),
        ("2026-12-01T02:00Z", "is not START/INTERVAL"),
        ("a/b/c/d", "is not START/INTERVAL"),
        ("2026-12-01T02:00/P1D", "is not a date and time with a zone"),
        ("2026-12-01/P1D", "is not a date and time with a zone"),
        ("2026-13-01T02:00Z/P1D", "is not a valid time"),
        ("2026-02-30T02:00Z/P1D", "is not a valid time"),
        ("2026-12-01T02:00+25:00/P1D", "zone offset '+25:00' is out of range"),
        ("2026-12-01T02:00Z/1D", "the interval '1D' is not a duration"),
        ("2026-12-01T02:00Z/P", "the interval 'P' is not a duration"),
        ("2026-12-01T02:00Z/PT", "the interval 'PT' is not a duration"),
        ("2026-12-01T02:00Z/P1DT", "the interval 'P1DT' is not a duration"),
        ("2026-12-01T02:00Z/P1.5D", "is not a duration"),
        ("2026-12-01T02:00Z/P1M", "months and years are not supported"),
        ("2026-12-01T02:00Z/P1Y", "months and years are not supported"),
        ("2026-12-01T02:00Z/PT30S", "at least one minute"),
        ("2026-12-01T02:00Z/P0D", "at least one minute"),
        ("2026-12-01T02:00Z/P99999W", "at most ten years"),
        ("R0/2026-12-01T02:00Z/P1D", "the repeat count must be 1 to"),
        ("X5/2026-12-01T02:00Z/P1D", "the repeat count 'X5' is not Rn"),
        ("R-1/2026-12-01T02:00Z/P1D", "is not Rn"),
        ("x" * 101, "longer than 100 characters"),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(text, says):
    with pytest.raises(InvalidRequest) as caught:
        parse(text)
    assert caught.value.code == -32602
    assert caught.value.data == {"param": "schedule"}
    assert says in caught.value.message
    assert caught.value.message.startswith("schedule ")


def test_a_schedule_that_is_not_text_is_refused():
    with pytest.raises(InvalidRequest, match="schedule must be a string"):
        parse(5)
    with pytest.raises(InvalidRequest) as caught:
        parse(None, "when")
    assert caught.value.data == {"param": "when"}


def test_the_first_occurrence_after_a_moment():
    recurrence = parse("2026-12-01T02:00Z/P1D")
    start = at("2026-12-01T02:00")
    assert recurrence.first_after(start - 5) == start
    assert recurrence.first_after(start) == start + 86400  # strictly after
    assert recurrence.first_after(start + 1) == start + 86400
    # Days missed: the next is the first occurrence after now, not the one after the last run.
    assert recurrence.first_after(start + 3.5 * 86400) == start + 4 * 86400
