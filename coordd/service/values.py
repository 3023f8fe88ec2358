"""The kinds of value a configuration setting takes: paths, bounded integers, durations, log
levels, group names and permission modes.

Each kind reads a value from the TOML file or the command line, checks it, and writes it back
as TOML (``Config.to_toml``). A value that cannot be used raises :class:`Invalid`, whose
message completes "<key> ...", so that ``coordd.service.config`` can name the file, the table
and the key.
"""

from __future__ import annotations

import grp
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordd.service.log import LEVELS

MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR
WEEK = 7 * DAY
KiB = 1024
MiB = 1024 * KiB


class Invalid(Exception):
    """A value cannot be used; the message completes "<key> ..."."""


def _type_name(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names |= {dict: "a table", list: "an array"}
    for cls, name in names.items():
        if type(value) is cls:
            return name
    return f"a {type(value).__name__}"


def describe(value: object) -> str:
    """A value as an error message shows it: its TOML type, then the value."""
    shown = toml_string(value) if isinstance(value, str) else repr(value)
    return f"{_type_name(value)} ({shown})"


def toml_string(text: str) -> str:
    """A TOML basic string. json.dumps is close but escapes non-BMP characters as surrogate
    pairs, which TOML forbids, and leaves DEL unescaped, which TOML requires escaped."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


@dataclass(frozen=True)
class Kind:
    """How one kind of value is read (from the file, or not) and written back as TOML."""

    parse: Callable[[object, bool], Any]  # (value, from_file) -> parsed; raises Invalid
    to_toml: Callable[[Any], str]


def path_kind() -> Kind:
    """An absolute path; one from the command line may be relative to where it was typed."""

    def parse(value: object, from_file: bool) -> Path:
        if isinstance(value, Path) and not from_file:
            text = str(value)
        elif isinstance(value, str):
            text = value
        else:
            raise Invalid(f"must be a path (a string), not {describe(value)}")
        if not text:
            raise Invalid("must be a path, not an empty string")
        if "\0" in text:
            raise Invalid("must not contain a NUL character")
        path = Path(text)
        if not path.is_absolute():
            if from_file:
                raise Invalid(f"must be an absolute path, not {text!r}")
            path = path.absolute()  # a command-line path is relative to where it was typed
        return path

    return Kind(parse, lambda value: toml_string(str(value)))


def int_kind(low: int, high: int) -> Kind:
    """An integer from ``low`` to ``high``."""

    def parse(value: object, from_file: bool) -> int:
        if type(value) is not int:
            raise Invalid(f"must be an integer, not {describe(value)}")
        if not low <= value <= high:
            raise Invalid(f"must be between {low} and {high}, got {value}")
        return value

    return Kind(parse, str)


_DURATION_UNITS = {"w": WEEK, "d": DAY, "h": HOUR, "m": MINUTE, "s": 1.0}
_NUMBER = r"(?:\d+(?:\.\d+)?)"
_DURATION = re.compile(rf"(?:{_NUMBER}[wdhms])+")
_DURATION_PART = re.compile(rf"({_NUMBER})([wdhms])")
_DURATION_HELP = (
    'use a number of seconds (e.g. 90) or a string with units w, d, h, m, s (e.g. "7d", '
    '"12h", "1h30m", "45s")'
)


def parse_duration(value: object) -> float:
    """Seconds from a number of seconds or a string such as ``"7d"``, ``"1h30m"``, ``"90"``.

    Raises ``ValueError`` saying what is accepted.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be a duration, not {describe(value)}; {_DURATION_HELP}")
    if isinstance(value, str):
        text = "".join(value.split()).lower()
        if re.fullmatch(_NUMBER, text):
            seconds = float(text)
        elif _DURATION.fullmatch(text):
            seconds = sum(
                float(number) * _DURATION_UNITS[unit]
                for number, unit in _DURATION_PART.findall(text)
            )
        else:
            raise ValueError(f"cannot read {toml_string(value)} as a duration; {_DURATION_HELP}")
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"must be a finite duration, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """A TOML value for a duration: ``"7d"``, ``"1h30m"``, ``"0s"``; a number if fractional.

    Days are the largest unit shown, as people count retention in days, not weeks.
    """
    if seconds != int(seconds):
        return repr(float(seconds))
    remaining = int(seconds)
    if remaining == 0:
        return '"0s"'
    parts = []
    for unit in "dhms":
        count, remaining = divmod(remaining, int(_DURATION_UNITS[unit]))
        if count:
            parts.append(f"{count}{unit}")
    return toml_string("".join(parts))


def duration_kind(low: float) -> Kind:
    """A duration of at least ``low`` seconds (:func:`parse_duration`)."""

    def parse(value: object, from_file: bool) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if seconds < low:
            raise Invalid(f"must be at least {low:g} seconds, got {seconds:g}")
        return seconds

    return Kind(parse, format_duration)


def _level_parse(value: object, from_file: bool) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, not {describe(value)}")
    if value.lower() not in LEVELS:
        raise Invalid(f"must be one of {', '.join(LEVELS)}, not {toml_string(value)}")
    return value.lower()


def _group_parse(value: object, from_file: bool) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a group name (a string), not {describe(value)}")
    if not value:
        raise Invalid("must be a group name, not an empty string")
    try:
        grp.getgrnam(value)
    except KeyError:
        raise Invalid(f"names group {value!r}, which does not exist on this system") from None
    return value


def _mode_parse(value: object, from_file: bool) -> int:
    if type(value) is int:
        if not 0 <= value <= 0o777:
            raise Invalid(
                f"must be a permission mode from 0 to 0o777, got {value} (decimal); "
                f'write it as a string such as "0660", or as an octal number 0o660'
            )
        return value
    if isinstance(value, str):
        text = value.removeprefix("0o")
        if re.fullmatch("[0-7]{1,4}", text) and int(text, 8) <= 0o777:
            return int(text, 8)
        raise Invalid(f'must be an octal permission mode such as "0660", not {value!r}')
    raise Invalid(f'must be an octal permission mode such as "0660", not {describe(value)}')


#: A log level (``coordd.service.log.LEVELS``), in any case.
LEVEL = Kind(_level_parse, toml_string)
#: The name of a group that exists on this system.
GROUP = Kind(_group_parse, toml_string)
#: A permission mode: "0660" or 0o660.
MODE = Kind(_mode_parse, lambda mode: toml_string(f"{mode:04o}"))
