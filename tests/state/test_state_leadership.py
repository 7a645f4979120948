"""Leadership: a lease, plus a PostgreSQL advisory lock on a dedicated connection or a lock
file for SQLite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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
        # waits (up to 5 s) until the backend is gone: the next statement must not race it
        conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


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


@pytest.mark.postgres
def test_a_long_fenced_write_does_not_hold_up_the_lease_renewal(pg_url: str) -> None:
    """A fenced write locks the epoch rows in key-share mode for its whole transaction; the
    leader's renewal (an update of the lease only) must not wait for it, or a long write on a
    loaded database makes the leader lose its own lease (found by the daemon benchmark)."""
    import sqlalchemy as sa

    from state.store import current_epoch

    leader = PostgresLeadership(pg_url, "acme", "daemon-1")
    engine = sa.create_engine(pg_url)
    try:
        epoch = leader.try_acquire()
        assert epoch is not None
        with engine.connect() as writer, writer.begin():
            assert current_epoch(writer, "acme", lock="share") == epoch  # the fence, held
            started = time.monotonic()
            assert leader.check()  # renewed, not blocked behind the fence
            assert time.monotonic() - started < 2.0
            # a grant still waits for the fenced write: FOR UPDATE conflicts with KEY SHARE
            with engine.connect() as granting, granting.begin():
                granting.execute(sa.text("SET LOCAL lock_timeout = '200ms'"))
                with pytest.raises(sa.exc.OperationalError):
                    current_epoch(granting, "acme", lock="update")
    finally:
        leader.close()
        engine.dispose()


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


class _Clocks:
    """A wall clock and a monotonic clock that a test moves forward together."""

    def __init__(self) -> None:
        from datetime import UTC, datetime

        self.wall = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        from datetime import timedelta

        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


def test_sqlite_lease_self_fencing_takeover_after_expiry_and_epoch_fencing(
    tmp_path: Path,
) -> None:
    """On SQLite as on PostgreSQL: a leader that does not renew stops by itself on its own
    clock, a standby takes over once the lease expired although the old leader's process still
    holds the lock file, and the new epoch fences the old one's store writes."""
    url = f"sqlite:///{tmp_path}/state.db"
    store = open_store(url)
    lock = tmp_path / "acme.lock"
    clocks = _Clocks()

    def leadership(holder: str) -> FileLeadership:
        return FileLeadership(
            lock, "acme", holder, url=url, clock=clocks.now, monotonic=clocks.monotonic
        )

    a, b, c = leadership("a"), leadership("b"), leadership("c")
    try:
        assert a.try_acquire() == 1
        assert a.valid_until == clocks.mono + 10 - 1  # the lease minus the margin
        store.upsert_node(make_node(), epoch=1)
        assert b.try_acquire() is None  # leased, and a holds the lock file
        clocks.advance(5)
        assert a.check()  # renewed: valid for another lease from now
        clocks.advance(8)
        assert b.try_acquire() is None  # renewed 8 s ago: not expired
        # a is frozen from here on (no renewal), its process keeps the lock file
        clocks.advance(1.5)
        assert a.valid_until <= clocks.mono  # past its own deadline: it must not mutate
        assert b.try_acquire() is None  # the recorded expiry is later than a's own deadline
        clocks.advance(0.6)
        assert b.try_acquire() == 2  # expired: taken over while a still holds the lock file
        with pytest.raises(LeadershipLostError):
            store.upsert_node(make_node(plan="stale"), epoch=1)  # a's writes are fenced
        store.upsert_node(make_node(plan="fresh"), epoch=2)
        assert a.check() is False  # a resumes: its lease ended on its own clock
        assert a.epoch is None
        # a let the lock file go; it names epoch 1, b leads epoch 2: a third waits for b
        assert c.try_acquire() is None
        clocks.advance(1)
        assert b.check()  # b renews and takes the lock file now that it is free
        assert lock.read_text().splitlines() == ["b", "2"]
        assert c.try_acquire() is None
        assert store.load_fleet("acme").nodes[0].plan == "fresh"
    finally:
        for leadership_ in (a, b, c):
            leadership_.close()
        store.close()


_CHILD = """
import sys, time
from state.leadership import FileLeadership
leadership = FileLeadership(sys.argv[1], "acme", "child", url=sys.argv[2], lease_seconds=3)
print("epoch", leadership.try_acquire(), flush=True)
while True:
    time.sleep(0.2)
    if not leadership.check():
        print("lost", flush=True)
        sys.exit(0)
"""


def _child_leader(lock: Path, url: str) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(lock), url],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith("epoch "), line
    assert line.split()[1] != "None", line
    return child


def test_sqlite_leader_process_frozen_then_killed(tmp_path: Path) -> None:
    """Real processes on one SQLite file: a frozen leader (SIGSTOP) is replaced once its lease
    expired and stands down when it resumes; a killed one is replaced at once."""
    url = f"sqlite:///{tmp_path}/state.db"
    open_store(url).close()
    lock = tmp_path / "acme.lock"
    standby = FileLeadership(lock, "acme", "standby", url=url, lease_seconds=3)
    child = _child_leader(lock, url)
    try:
        assert standby.try_acquire() is None
        child.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        while standby.try_acquire() is None:
            assert time.monotonic() - frozen < 10, "no takeover"
            time.sleep(0.1)
        takeover = time.monotonic() - frozen
        assert takeover < 3 + 2, takeover  # the lease, with slack for a loaded machine
        assert standby.check()
        child.send_signal(signal.SIGCONT)
        assert child.communicate(timeout=10)[0].strip() == "lost"  # it stood down by itself
        standby.release()

        child = _child_leader(lock, url)  # leads again (the standby released)
        assert standby.try_acquire() is None
        child.kill()
        child.communicate(timeout=10)
        killed = time.monotonic()
        assert standby.try_acquire() is not None  # its lock file is free: gone, no waiting
        assert time.monotonic() - killed < 1
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGCONT)
            child.kill()
        child.communicate(timeout=10)
        standby.close()
    print(f"SQLite takeover after a frozen leader: {takeover:.1f} s (lease 3 s)")


def test_a_file_leader_that_took_over_from_a_frozen_one_keeps_the_writer_lock(
    tmp_path: Path,
) -> None:
    """The writer lock (CLI apply) is refused while a daemon's lease is live: the lock file is
    held (by the frozen old leader) and the lease is unexpired (renewed by the new one)."""
    from state_builders import T0

    from reconciler.core.errors import LockHeldError

    url = f"sqlite:///{tmp_path}/state.db"
    store = open_store(url)
    lock_path = tmp_path / "state.db.acme.leader.lock"
    clocks = _Clocks()
    old = FileLeadership(lock_path, "acme", "old", url=url, lease_seconds=3)
    new = FileLeadership(lock_path, "acme", "new", url=url, clock=clocks.now, lease_seconds=3)
    try:
        assert old.try_acquire() == 1
        clocks.wall = datetime.now(UTC) + timedelta(seconds=5)  # old's lease has expired
        assert new.try_acquire() == 2
        with pytest.raises(LockHeldError, match="the daemon new leads fleet 'acme'"):
            store.acquire_lock("acme", "cli", 60, T0)
        new.release()
        old.release()
        assert store.acquire_lock("acme", "cli", 60, T0).epoch == 3
    finally:
        old.close()
        new.close()
        store.close()


@pytest.mark.postgres
def test_every_postgres_session_has_timeouts_and_tcp_keepalives(pg_url: str) -> None:
    """A partition or a frozen server is noticed in seconds (issue 10): every session the
    store and the leadership open has the server-side statement, lock and idle-in-transaction
    timeouts, and its socket TCP keepalives and a user timeout (read back from the kernel)."""
    import socket

    import sqlalchemy as sa

    from state.sessions import make_engine, resolve_url

    def settings(connection: sa.Connection) -> dict[str, object]:
        shown = {
            name: connection.execute(sa.text(f"SHOW {name}")).scalar_one()
            for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
        }
        raw = connection.connection.dbapi_connection
        assert raw is not None
        params = raw.info.get_parameters()  # type: ignore[attr-defined]
        fd = raw.pgconn.socket  # type: ignore[attr-defined]
        sock = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)
        try:
            kernel = {
                "SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                "TCP_KEEPIDLE": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                "TCP_KEEPINTVL": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                "TCP_KEEPCNT": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
                "TCP_USER_TIMEOUT": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
            }
        finally:
            sock.close()  # a duplicate of the descriptor: the session stays open
        return {**shown, "connect_timeout": params.get("connect_timeout"), **kernel}

    kernel = {
        "connect_timeout": "5",
        "SO_KEEPALIVE": 1,
        "TCP_KEEPIDLE": 5,
        "TCP_KEEPINTVL": 2,
        "TCP_KEEPCNT": 3,
        "TCP_USER_TIMEOUT": 10_000,
    }
    engine = make_engine(resolve_url(pg_url))  # the store's engine (SqlStore, heartbeats)
    leader = PostgresLeadership(pg_url, "acme", "daemon-1")
    try:
        with engine.connect() as connection:
            assert settings(connection) == {
                "statement_timeout": "30s",
                "lock_timeout": "10s",
                "idle_in_transaction_session_timeout": "1min",
                **kernel,
            }
        assert leader.try_acquire() is not None
        lease = leader._connection  # the lease's own session
        assert lease is not None
        assert settings(lease) == {
            "statement_timeout": "3333ms",  # answers well within the 10 s lease
            "lock_timeout": "3333ms",
            "idle_in_transaction_session_timeout": "1min",
            **kernel,
        }
    finally:
        leader.close()
        engine.dispose()


@pytest.mark.postgres
def test_a_release_blocked_by_a_lock_gives_up_within_a_second(pg_url: str) -> None:
    """A shutdown's release of leadership runs with a 1 s lock and statement timeout (not the
    lease session's 3.3 s): a row held by another session does not hold the stop, and the
    lease session ends with the failed release, so its epoch lock is free for a standby."""
    import sqlalchemy as sa

    leader = PostgresLeadership(pg_url, "acme", "daemon-1")
    standby = PostgresLeadership(pg_url, "acme", "daemon-2")
    engine = sa.create_engine(pg_url)
    try:
        assert leader.try_acquire() == 1
        with engine.connect() as blocker, blocker.begin():
            blocker.execute(sa.text("SELECT 1 FROM leadership WHERE name = 'acme' FOR UPDATE"))
            started = time.monotonic()
            leader.release()
            took = time.monotonic() - started
        assert 0.9 < took < 2.0, took  # its lock timeout, not the lease session's 3.3 s
        assert leader.epoch is None
        assert standby.try_acquire() == 2  # the released session's epoch lock is gone
    finally:
        standby.close()
        leader.close()
        engine.dispose()
