"""The writer lock on PostgreSQL (issue 9): a holder whose database session is gone is taken
over at once, not after its lease; a live session keeps the lock, whatever its host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from conftest import empty_postgres
from state_builders import FakeClock

from reconciler.core.errors import LockHeldError
from state import SqlStore, open_store

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url(shared_postgres_url: str) -> str:
    empty_postgres(shared_postgres_url)
    return shared_postgres_url


@pytest.fixture
def pg_store(pg_url: str, clock: FakeClock) -> Iterator[SqlStore]:
    opened = open_store(pg_url, upgrade=False, clock=clock.now)
    try:
        yield opened
    finally:
        opened.close()


def test_a_live_session_on_another_host_keeps_the_lock(
    pg_url: str, pg_store: SqlStore, clock: FakeClock
) -> None:
    holder = open_store(pg_url, upgrade=False, clock=clock.now)
    try:
        lease = holder.acquire_lock("acme", "otherhost:77", 300, clock.now())
        with pytest.raises(LockHeldError):
            pg_store.acquire_lock("acme", "here:1", 300, clock.advance(5))
        seen = pg_store.lock_holder("acme", clock.now())
        assert seen is not None
        assert seen.alive is True
        # renewing keeps the same session and epoch
        assert holder.acquire_lock("acme", "otherhost:77", 300, clock.now()).epoch == lease.epoch
        with pytest.raises(LockHeldError):
            pg_store.acquire_lock("acme", "here:1", 300, clock.advance(5))
    finally:
        holder.close()


def test_a_holder_whose_session_is_gone_is_taken_over_at_once(
    pg_url: str, pg_store: SqlStore, clock: FakeClock
) -> None:
    """The holder's process died on another host: its connection ended, and PostgreSQL freed
    its epoch's advisory lock with it. The next run does not wait for the 300 s lease."""
    holder = open_store(pg_url, upgrade=False, clock=clock.now)
    lease = holder.acquire_lock("acme", "otherhost:77", 300, clock.now())
    holder.close()  # the session ends without releasing the lock row (a killed process)
    seen = pg_store.lock_holder("acme", clock.advance(1))
    assert seen is not None
    assert seen.alive is False
    taken = pg_store.acquire_lock("acme", "here:1", 300, clock.now())
    assert (taken.owner, taken.epoch) == ("here:1", lease.epoch + 1)


def test_a_killed_process_s_lock_is_taken_over_at_once(pg_url: str, pg_store: SqlStore) -> None:
    """A real process takes the lock under another host's name and is SIGKILLed."""
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from datetime import UTC, datetime
        from state import open_store
        store = open_store({pg_url!r}, upgrade=False)
        store.acquire_lock("acme", "otherhost:99", 300, datetime.now(UTC))
        print("held", flush=True)
        time.sleep(60)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(LockHeldError):
            pg_store.acquire_lock("acme", "here:1", 300, datetime.now(UTC))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        # PostgreSQL notices the closed connection at once (a local socket)
        for _ in range(50):
            try:
                lease = pg_store.acquire_lock("acme", "here:1", 300, datetime.now(UTC))
                break
            except LockHeldError:
                time.sleep(0.1)
        else:
            raise AssertionError("the killed holder's lock was not taken over")
        assert lease.owner == "here:1"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
