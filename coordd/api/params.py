"""Checking the parameters of a request: precise ``InvalidRequest`` messages, nothing more."""

from __future__ import annotations

import math
import re
from typing import Any

from coordd.api.errors import InvalidRequest


class _Absent:
    """A parameter the request did not give, where ``null`` is a value of its own."""

    def __repr__(self) -> str:
        return "<absent>"


#: The default of a parameter whose ``null`` means something (an update's "clear this").
ABSENT: Any = _Absent()

MAX_TEXT = 4096
MAX_REQUEST_ID = 128
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]+")


def text(value: Any, name: str, *, optional: bool = False, max_len: int = MAX_TEXT) -> str | None:
    """A printable string (newlines and tabs allowed) of at most ``max_len`` characters."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string", {"param": name})
    if len(value) > max_len:
        raise InvalidRequest(f"{name} is longer than {max_len} characters", {"param": name})
    if not all(ch.isprintable() or ch in "\n\t" for ch in value):
        raise InvalidRequest(f"{name} has unprintable characters", {"param": name})
    return value


def required_text(value: Any, name: str, *, max_len: int = MAX_TEXT) -> str:
    result = text(value, name, max_len=max_len)
    assert result is not None
    return result


def boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false", {"param": name})
    return value


def integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be an integer", {"param": name})
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}", {"param": name})
    return value


def number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"{name} must be a number", {"param": name})
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low:g} and {high:g}", {"param": name})
    return float(value)


def string_list(value: Any, name: str, *, max_items: int, max_len: int = MAX_TEXT) -> list[str]:
    if not isinstance(value, list) or len(value) > max_items:
        raise InvalidRequest(f"{name} must be a list of at most {max_items} strings")
    return [required_text(item, f"{name}[{i}]", max_len=max_len) for i, item in enumerate(value)]


def obj(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{name} must be an object", {"param": name})
    return value


def request_id(value: Any) -> str | None:
    """A client's id of one submission: 1 to 128 of letters, digits and ``._:-``; or None."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidRequest("request_id must be a non-empty string", {"param": "request_id"})
    if len(value) > MAX_REQUEST_ID:
        raise InvalidRequest(
            f"request_id is longer than {MAX_REQUEST_ID} characters", {"param": "request_id"}
        )
    if not _REQUEST_ID.fullmatch(value):
        raise InvalidRequest(
            "request_id may hold only letters, digits and . _ : -", {"param": "request_id"}
        )
    return value
