"""Structured logs for the daemon and the agent: ``--log-format json|text``.

One line per record. ``extra={...}`` fields are kept (JSON keys, or ``key=value`` in text).
A redacting filter replaces any registered secret value with ``<redacted>`` as a last line of
defence: the code never puts secrets in messages in the first place.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}

REDACTED = "<redacted>"
_HANDLER_NAME = "fleet-reconciler"
LEVELS = ("debug", "info", "warning", "error")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            document.setdefault(key, value)
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


def timestamp(created: float) -> str:
    """ISO 8601 in UTC with its offset and milliseconds: 2026-05-01T12:00:00.123+00:00."""
    return datetime.fromtimestamp(created, tz=UTC).isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = timestamp(record.created)
        line = f"{ts} {record.levelname.lower():<7} {record.getMessage()}"
        extras = _extras(record)
        extras.pop("event", None)
        if extras:
            line += "  " + " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class RedactingFilter(logging.Filter):
    """Replaces registered secret values in messages and extra fields."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 8]

    def add(self, secret: str) -> None:
        if len(secret) >= 8:
            self._secrets.append(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        if any(s in message for s in self._secrets):
            for secret in self._secrets:
                message = message.replace(secret, REDACTED)
            record.msg = message
            record.args = None
        for key, value in _extras(record).items():
            if isinstance(value, str) and any(s in value for s in self._secrets):
                for secret in self._secrets:
                    value = value.replace(secret, REDACTED)
                setattr(record, key, value)
        return True


def configure_logging(
    fmt: str = "text",
    level: int | str = logging.INFO,
    *,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> RedactingFilter:
    """Route the ``reconciler`` loggers (and warnings from libraries) to one handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    redactor = RedactingFilter(secrets)
    handler.addFilter(redactor)
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in list(root.handlers):
        # replace our own handler (configured again: another command in the same process);
        # leave others' (a test harness's) in place
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    # ours: the controller, the adapters (debug shows each Hostwinds request and answer,
    # redacted) and the store
    for name in ("reconciler", "providers", "state"):
        logging.getLogger(name).setLevel(level)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return redactor
