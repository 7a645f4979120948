"""Shared fixtures.

PostgreSQL: ``RECONCILER_TEST_POSTGRES_URL`` (CI sets it) points at a server where we may
create databases. Tests marked ``postgres`` skip locally when it is unreachable, and **fail**
in CI (``CI=true``) so the PostgreSQL run can never silently skip there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

# Real counterparts (BIND, sshd, postconf, Chromium, promtool) from .ci/services.
pytest_plugins = ["tests.services.plugin"]

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_admin_url() -> str:
    return os.environ.get("RECONCILER_TEST_POSTGRES_URL", DEFAULT_PG_URL)


def _postgres_reachable(url: str) -> str | None:
    try:
        import psycopg

        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure means unreachable
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a reachable PostgreSQL, or skip (fail in CI)."""
    url = postgres_admin_url()
    problem = _postgres_reachable(url)
    if problem is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL must be reachable in CI at {url}: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {url}: {problem}")
    return url


@pytest.fixture
def fresh_postgres_url(postgres_server: str) -> Iterator[str]:
    """A new, empty database for one test; dropped afterwards."""
    import psycopg

    name = f"fr_test_{uuid.uuid4().hex[:12]}"
    admin_dsn = postgres_server.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_server.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path}/state.db"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """Each store test runs against SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/state.db"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url
