"""Database faults injected in the driver itself (no mock of our code): the statement is
refused by psycopg / sqlite3 as a failing server would refuse it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


@contextmanager
def failing_statements(
    engine: Engine, starts: str, error: Callable[[], BaseException | None]
) -> Iterator[None]:
    """Inside the block, a statement whose SQL starts with ``starts``, or holds it as a part
    (a data-modifying ``WITH`` part: the heartbeat writer's one-statement batch) raises
    ``error()`` (the driver's exception; ``None`` lets the statement run) in the database
    driver itself, so both SQLAlchemy and the heartbeat writer's raw psycopg path meet it."""

    def matches(statement: object) -> bool:
        text = str(statement).lstrip()
        return text.startswith(starts) or (text.startswith("WITH") and starts in text)

    if engine.dialect.name != "postgresql":

        def hook(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            if matches(statement) and (exc := error()) is not None:
                raise exc

        event.listen(engine, "before_cursor_execute", hook)
        try:
            yield
        finally:
            event.remove(engine, "before_cursor_execute", hook)
        return

    import psycopg

    active = [True]

    class Failing(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            if active[0] and matches(query) and (exc := error()) is not None:
                raise exc
            return super().execute(query, params, **kwargs)

    def checkout(dbapi_connection: Any, *_args: object) -> None:
        dbapi_connection.cursor_factory = Failing

    event.listen(engine.pool, "checkout", checkout)
    try:
        yield
    finally:
        active[0] = False
        event.remove(engine.pool, "checkout", checkout)
