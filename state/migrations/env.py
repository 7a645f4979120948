"""Alembic environment: online migrations on the connection the caller passes in
``config.attributes["connection"]`` (see ``state.sessions.alembic_config``), or on a URL given
as the ``sqlalchemy.url`` option. No alembic.ini, no logging configuration: the application
owns logging and never logs the URL's password."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from state.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from state.sessions import make_engine, resolve_url

    url = context.config.get_main_option("sqlalchemy.url")
    engine = make_engine(resolve_url(url), pool=False, statement_timeout_ms=0)
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `reconcile db upgrade`")
run_migrations_online()
