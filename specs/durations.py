"""Durations written like ``30s``, ``5m``, ``1h30m``, ``6w``."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS: dict[str, int] = {"ms": 0, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")


#: The longest duration any field accepts (each field has its own, narrower range).
MAX_DURATION = timedelta(days=3650)
_MAX_TEXT = 40


def parse_duration(value: Any) -> timedelta:
    """Parse ``30s``/``5m``/``2h``/``1d``/``6w`` (and combinations like ``1h30m``).

    Bare numbers are refused: a unit is always required, so ``30`` is not silently seconds.
    The text is short and the total at most ``MAX_DURATION`` (checked before any conversion).
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, str):
        shown = repr(value) if len(repr(value)) <= _MAX_TEXT else repr(value)[:_MAX_TEXT] + "..."
        raise ValueError(
            f"expected a duration like '30s', '5m' or '6w', got {type(value).__name__} {shown}"
        )
    if len(value) > _MAX_TEXT:
        raise ValueError(f"expected a duration like '30s', '5m' or '6w', got {value[:20]!r}...")
    text = value.strip().lower().replace(" ", "")
    if not text or not _WHOLE.match(text):
        raise ValueError(f"expected a duration like '30s', '5m' or '6w', got {value!r}")
    total_ms = Decimal(0)
    for number, unit in _PART.findall(text):
        factor = Decimal(1) if unit == "ms" else Decimal(_UNITS[unit] * 1000)
        total_ms += Decimal(number) * factor
    if total_ms > Decimal(MAX_DURATION.days) * 86_400_000:
        raise ValueError(f"the duration {value!r} is longer than {format_duration(MAX_DURATION)}")
    return timedelta(milliseconds=float(total_ms))


def within(low: timedelta, high: timedelta) -> AfterValidator:
    """A field's range: ``Annotated[Duration, within(timedelta(seconds=1), ...)]``."""

    def check(value: timedelta) -> timedelta:
        if not low <= value <= high:
            raise ValueError(
                f"the duration must be within {format_duration(low)}..{format_duration(high)}, "
                f"got {format_duration(value)}"
            )
        return value

    return AfterValidator(check)


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
