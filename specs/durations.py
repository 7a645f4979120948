"""Durations written like ``30s``, ``5m``, ``1h30m``, ``6w``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS: dict[str, int] = {"ms": 0, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")


def parse_duration(value: Any) -> timedelta:
    """Parse ``30s``/``5m``/``2h``/``1d``/``6w`` (and combinations like ``1h30m``).

    Bare numbers are refused: a unit is always required, so ``30`` is not silently seconds.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError(
            f"expected a duration like '30s', '5m' or '6w', got {type(value).__name__} {value!r}"
        )
    text = value.strip().lower().replace(" ", "")
    if not text or not _WHOLE.match(text):
        raise ValueError(f"expected a duration like '30s', '5m' or '6w', got {value!r}")
    total = timedelta()
    for number, unit in _PART.findall(text):
        if unit == "ms":
            total += timedelta(milliseconds=float(number))
        else:
            total += timedelta(seconds=float(number) * _UNITS[unit])
    return total


def format_duration(value: timedelta) -> str:
    """The shortest exact form: ``timedelta(minutes=5)`` -> ``5m``."""
    seconds = value.total_seconds()
    if seconds == 0:
        return "0s"
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    for unit in ("w", "d", "h", "m"):
        if whole % _UNITS[unit] == 0:
            return f"{whole // _UNITS[unit]}{unit}"
    return f"{whole}s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d|w))+$",
            "description": "A duration such as 30s, 5m, 1h30m, 6w",
            "examples": ["30s", "5m", "6w"],
        }
    ),
]
