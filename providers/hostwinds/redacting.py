"""Keeping secrets out of logs, errors and ``repr()``.

The Hostwinds API key travels in the form body of every request (``API=<key>``), and
``get_instance`` answers carry the root ``password`` and ``configkey`` in clear. Nothing here
ever returns those values: :class:`Secret` hides the key behind ``***`` and :func:`redact`
scrubs any JSON-like value before it is logged.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

MASK: Final = "***"

#: Field names whose values are always secret, compared case-insensitively.
SECRET_FIELDS: Final = frozenset({"api", "api_key", "apikey", "password", "configkey", "rdata_key"})


class Secret:
    """A string that never shows itself: ``str()``/``repr()``/``format()`` give ``***``.

    Call :meth:`reveal` at the single place the real value is needed (building the form body).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return MASK

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def scrub_text(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each (non-empty) secret in ``text`` with ``***``."""
    for value in secrets:
        if value:
            text = text.replace(value, MASK)
    return text


def redact(value: object, secrets: Iterable[str] = ()) -> object:
    """A copy of a JSON-like ``value`` safe to log.

    Drops the values of secret fields (``API``, ``password``, ``configkey``...) at any depth and
    masks any string containing one of ``secrets`` (e.g. the API key itself).
    """
    known = tuple(s for s in secrets if s)
    return _redact(value, known)


def _redact(value: object, secrets: tuple[str, ...]) -> object:
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            name = str(key)
            if name.lower() in SECRET_FIELDS:
                out[scrub_text(name, secrets)] = MASK
            else:
                out[scrub_text(name, secrets)] = _redact(item, secrets)
        return out
    if isinstance(value, list | tuple):
        return [_redact(item, secrets) for item in value]
    if isinstance(value, str):
        return scrub_text(value, secrets)
    return value


def redact_form(form: Mapping[str, object], secrets: Iterable[str] = ()) -> dict[str, object]:
    """A request form without its ``API`` field (and any secret value), for logging."""
    cleaned = redact(dict(form), secrets)
    assert isinstance(cleaned, dict)
    return cleaned
