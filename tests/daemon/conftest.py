"""Fixtures shared by the daemon tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.daemon.pgfaults import migrated_postgres
from tests.daemon.privatepg import PrivatePostgres


@pytest.fixture
def pg() -> Iterator[PrivatePostgres]:
    """A private PostgreSQL, migrated, that the test may freeze, stop and restart
    (tests/daemon/privatepg.py)."""
    with migrated_postgres() as server:
        yield server
