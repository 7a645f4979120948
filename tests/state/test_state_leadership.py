"""Leadership: PostgreSQL advisory lock on a dedicated connection; file lock for SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from state_builders import make_node

from reconciler.core.errors import LeadershipLostError
from reconciler.core.ports import LeadershipPort
from state import FileLeadership, PostgresLeadership, SqlStore, leadership_for, open_store
from state.sessions import leader_epoch_key


@pytest.fixture
def pg_url(shared_postgres_url: str) -> str:
    from conftest import empty_postgres

    empty_postgres(shared_postgres_url)
    return shared_postgres_url


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[SqlStore]:
    store = open_store(pg_url)
    yield store
    store.close()


def _holder_pid(url: str, fleet: str) -> int | None:
    """The backend holding the current leader's epoch lock."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        epoch = conn.execute("SELECT epoch FROM leadership WHERE name = %s", (fleet,)).fetchone()
        if epoch is None:
            return None
        key = leader_epoch_key(fleet, int(epoch[0])) & 0xFFFFFFFFFFFFFFFF
        row = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s AND objid = %s AND objsubid = 1",
            (key >> 32, key & 0xFFFFFFFF),
        ).fetchone()
    return None if row is None else int(row[0])


def _terminate(url: str, pid: int) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))


@pytest.mark.postgres
def test_only_one_leader_and_takeover_after_the_connection_dies(
    pg_url: str, pg_store: SqlStore
) -> None:
    first = PostgresLeadership(pg_url, "acme", "daemon-1")
    second = PostgresLeadership(pg_url, "acme", "daemon-2")
    try:
        epoch1 = first.try_acquire()
        assert epoch1 is not None
        assert second.try_acquire() is None
        assert first.check()
        assert first.try_acquire() == epoch1  # already leading: same epoch
        assert pg_store.leader("acme") == ("daemon-1", epoch1)
        pg_store.upsert_node(make_node(), epoch=epoch1)

        pid = _holder_pid(pg_url, "acme")
        assert pid is not None
        _terminate(pg_url, pid)

        assert first.check() is False  # the connection is gone: leadership lost at once
        assert first.epoch is None
        epoch2 = second.try_acquire()
        assert epoch2 is not None
        assert epoch2 > epoch1
        assert pg_store.leader("acme") == ("daemon-2", epoch2)
        with pytest.raises(LeadershipLostError):
            pg_store.upsert_node(make_node(plan="stale"), epoch=epoch1)
        pg_store.upsert_node(make_node(plan="fresh"), epoch=epoch2)
        assert pg_store.load_fleet("acme").nodes[0].plan == "fresh"
    finally:
        first.close()
        second.close()


@pytest.mark.postgres
def test_release_lets_another_lead_and_fleets_are_independent(pg_url: str) -> None:
    a = PostgresLeadership(pg_url, "acme", "a")
    b = PostgresLeadership(pg_url, "acme", "b")
    other = PostgresLeadership(pg_url, "globex", "c")
    try:
        assert a.try_acquire() == 1
        assert other.try_acquire() == 1
        a.release()
        assert a.check() is False
        assert b.try_acquire() == 2
    finally:
        for leadership in (a, b, other):
            leadership.close()


def test_file_leadership(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    open_store(url).close()
    lock = tmp_path / "acme.lock"
    a = FileLeadership(lock, "acme", "a", url=url)
    b = FileLeadership(lock, "acme", "b", url=url)
    try:
        assert a.try_acquire() == 1
        assert b.try_acquire() is None
        assert a.check()
        a.release()
        assert not a.check()
        assert b.try_acquire() == 2
        lock.unlink()  # someone removed the lock file: no longer a safe leader
        assert b.check() is False
    finally:
        a.close()
        b.close()


def test_leadership_for_picks_the_kind(tmp_path: Path) -> None:
    sqlite_leadership = leadership_for(f"sqlite:///{tmp_path}/s.db", "acme", "me")
    pg_leadership = leadership_for("postgresql://u:p@127.0.0.1:1/x", "acme", "me")
    try:
        assert isinstance(sqlite_leadership, FileLeadership)
        assert sqlite_leadership.path == tmp_path / "s.db.acme.leader.lock"
        assert isinstance(pg_leadership, PostgresLeadership)
        ports: list[LeadershipPort] = [sqlite_leadership, pg_leadership]
        assert all(not p.check() for p in ports)
    finally:
        sqlite_leadership.close()
        pg_leadership.close()


@pytest.mark.postgres
def test_a_live_daemon_leader_keeps_the_writer_lock_from_others(
    pg_url: str, pg_store: SqlStore
) -> None:
    from state_builders import T0

    from reconciler.core.errors import LockHeldError

    daemon = PostgresLeadership(pg_url, "acme", "daemon-1")
    try:
        epoch = daemon.try_acquire()
        with pytest.raises(LockHeldError, match="the daemon daemon-1 leads fleet 'acme'") as info:
            pg_store.acquire_lock("acme", "cli", 60, T0)
        assert info.value.hint
        pg_store.upsert_node(make_node(), epoch=epoch)  # the daemon is not fenced
        assert pg_store.acquire_lock("globex", "cli", 60, T0).epoch == 1  # other fleets are free
        pid = _holder_pid(pg_url, "acme")
        assert pid is not None
        _terminate(pg_url, pid)  # the daemon dies: its leadership row stays, but not live
        assert pg_store.acquire_lock("acme", "cli", 60, T0).epoch == (epoch or 0) + 1
    finally:
        daemon.close()


def test_a_live_file_leader_keeps_the_writer_lock_from_others(tmp_path: Path) -> None:
    from state_builders import T0

    from reconciler.core.errors import LockHeldError

    url = f"sqlite:///{tmp_path}/state.db"
    store = open_store(url)
    daemon = leadership_for(url, "acme", "daemon-1")
    try:
        assert daemon.try_acquire() == 1
        with pytest.raises(LockHeldError, match="leads fleet 'acme'"):
            store.acquire_lock("acme", "cli", 60, T0)
        daemon.release()
        assert store.acquire_lock("acme", "cli", 60, T0).epoch == 2
    finally:
        daemon.close()
        store.close()
