"""Builders shared by the state store tests (values, fake clock, statement counter)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from reconciler.core.fleet import NodeMetrics, NodeStatus, RecordedNode

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> datetime:
        self.at += timedelta(seconds=seconds)
        return self.at


def make_node(name: str = "acme-dallas-001", **changes: Any) -> RecordedNode:
    values: dict[str, Any] = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
        "fleet": "acme",
        "name": name,
        "region": "dallas",
        "plan": "small",
        "status": NodeStatus.PROVISIONING,
    }
    values.update(changes)
    return RecordedNode(**values)


def beat(node: str, at: datetime, **changes: Any) -> NodeMetrics:
    values: dict[str, Any] = {
        "node": node,
        "at": at,
        "cpu": 0.25,
        "memory": 0.5,
        "disk": 0.1,
        "queue_length": 12,
        "sent": 300,
        "bounces": 1,
        "complaints": 0,
    }
    values.update(changes)
    return NodeMetrics(**values)


@contextmanager
def count_statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements sent to the database inside the block (BEGIN/COMMIT excluded)."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.strip().upper() not in ("BEGIN IMMEDIATE", "BEGIN", "COMMIT", "ROLLBACK"):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)
