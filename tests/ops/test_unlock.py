"""`reconcile unlock` (issue 9): says who holds the writer lock (host, pid, since, epoch),
breaks it only when confirmed, and the holder is fenced; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from reconciler.cli.main import main
from reconciler.core.errors import LeadershipLostError, LockHeldError
from reconciler.core.fleet import IntentStatus
from state import open_store


@pytest.fixture
def url(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RECONCILER_DATABASE_URL", database_url)
    return database_url


def test_unlock_says_who_held_the_lock_and_breaks_it(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    holder = open_store(url, upgrade=True)
    try:
        lease = holder.acquire_lock("acme", "otherhost:4242", 300, datetime.now(UTC))
        other = open_store(url)
        try:
            with pytest.raises(LockHeldError) as held:
                other.acquire_lock("acme", "here:1", 300, datetime.now(UTC))
            assert "reconcile unlock" in (held.value.hint or "")
        finally:
            other.close()
        # no terminal and no --yes: refused, nothing broken
        assert main(["unlock", "--fleet", "acme"]) == 1
        captured = capsys.readouterr()
        assert "the writer lock 'acme' is held by otherhost:4242" in captured.out
        assert "host:   otherhost" in captured.out
        assert "pid:    4242" in captured.out
        assert f"epoch:  {lease.epoch}" in captured.out
        assert "since:  " in captured.out
        assert "no terminal" in captured.err
        assert "hint: re-run with --yes" in captured.err
        assert holder.lock_holder("acme", datetime.now(UTC)) is not None
        assert main(["unlock", "--fleet", "acme", "--yes"]) == 0
        out = capsys.readouterr().out
        assert f"broke the writer lock 'acme' (held by otherhost:4242, epoch {lease.epoch})" in out
        assert holder.lock_holder("acme", datetime.now(UTC)) is None
        # the old holder is fenced: its writes are refused
        with pytest.raises(LeadershipLostError):
            holder.begin_intent("acme", "protect", "acme-dallas-001", {}, epoch=lease.epoch)
        # and the next run takes the lock
        taken = holder.acquire_lock("acme", "here:2", 300, datetime.now(UTC))
        assert taken.epoch > lease.epoch
        assert not [i for i in holder.journal("acme") if i.status is IntentStatus.PENDING]
    finally:
        holder.close()
    assert main(["unlock", "--fleet", "acme", "--yes"]) == 0  # here:2's lock (same store)


def test_unlock_of_a_free_lock_does_nothing(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    open_store(url, upgrade=True).close()
    assert main(["unlock", "--fleet", "acme"]) == 0
    assert "the writer lock 'acme' is free: nothing to break" in capsys.readouterr().out


def test_unlock_needs_a_fleet(
    url: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(str(tmp_path))
    assert main(["unlock"]) == 1
    assert "pass --fleet NAME or -f PATH" in capsys.readouterr().err
