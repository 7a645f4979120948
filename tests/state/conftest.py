"""Fixtures of the state store suite.

Every store test runs on SQLite and on PostgreSQL (``store_url``). Creating a PostgreSQL
database costs about two seconds here, so the store tests share one migrated database per
session, emptied (TRUNCATE) before each test; the migration tests use ``database_url`` from
tests/conftest.py (a fresh, empty database each). The PostgreSQL side goes through
``postgres_server``, so it skips locally when PostgreSQL is unreachable and fails in CI.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from state_builders import FakeClock

from state import SqlStore, open_store, sessions
from state import models as m


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def shared_postgres_url(postgres_server: str) -> Iterator[str]:
    """One database migrated to head for the whole session; dropped at the end."""
    name = f"fr_state_{uuid.uuid4().hex[:12]}"
    admin = postgres_server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{postgres_server.rsplit('/', 1)[0]}/{name}"
    try:
        sessions.upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def empty_postgres(url: str) -> None:
    """DELETE is much cheaper than TRUNCATE on the few rows a test leaves behind."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        for table in reversed(m.Base.metadata.sorted_tables):
            conn.execute(f"DELETE FROM {table.name}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """A migrated, empty store database: SQLite file, or the shared PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    url: str = request.getfixturevalue("shared_postgres_url")
    empty_postgres(url)
    return url


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[SqlStore]:
    opened = open_store(store_url, upgrade=True, clock=clock.now)
    try:
        yield opened
    finally:
        opened.close()
