"""The writer lock and fencing epochs: a stale writer's mutations are refused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from state_builders import T0, FakeClock, make_node

from reconciler.core.errors import LeadershipLostError, LockHeldError
from reconciler.core.fleet import IntentStatus
from state import SqlStore
from state.store import claim_leadership


def test_lock_held_by_another_owner_names_holder_and_expiry(
    store: SqlStore, clock: FakeClock
) -> None:
    lease = store.acquire_lock("acme", "run-a@host1", 300, clock.now())
    assert lease.epoch == 1
    assert lease.expires_at == clock.now() + timedelta(seconds=300)
    with pytest.raises(LockHeldError) as info:
        store.acquire_lock("acme", "run-b@host2", 300, clock.advance(10))
    assert "run-a@host1" in info.value.message
    assert "12:05:00" in info.value.message  # when it expires
    assert info.value.hint


def test_expired_lock_is_taken_over_with_a_newer_epoch(store: SqlStore, clock: FakeClock) -> None:
    first = store.acquire_lock("acme", "a", 60, clock.now())
    clock.advance(61)
    second = store.acquire_lock("acme", "b", 60, clock.now())
    assert (second.owner, second.epoch) == ("b", first.epoch + 1)
    # the old holder's release does not free the new holder's lock
    store.release_lock(first)
    with pytest.raises(LockHeldError):
        store.acquire_lock("acme", "c", 60, clock.advance(1))


def test_same_owner_renews_with_the_same_epoch(store: SqlStore, clock: FakeClock) -> None:
    first = store.acquire_lock("acme", "a", 60, clock.now())
    renewed = store.acquire_lock("acme", "a", 60, clock.advance(30))
    assert renewed.epoch == first.epoch
    assert renewed.expires_at == clock.now() + timedelta(seconds=60)


def test_a_late_renewal_by_the_same_owner_keeps_its_epoch(
    store: SqlStore, clock: FakeClock
) -> None:
    """A holder starved past its expiry (a loaded machine) must not fence itself by renewing:
    nobody else took the lock meanwhile, so its epoch stays the newest."""
    first = store.acquire_lock("acme", "a", 3, clock.now())
    clock.advance(10)
    late = store.acquire_lock("acme", "a", 3, clock.now())
    assert late.epoch == first.epoch
    # once another writer took it, the old holder comes back with a newer epoch only
    clock.advance(10)
    other = store.acquire_lock("acme", "b", 3, clock.now())
    assert other.epoch == first.epoch + 1
    clock.advance(10)
    again = store.acquire_lock("acme", "a", 3, clock.now())
    assert again.epoch == other.epoch + 1


def test_release_then_acquire_bumps_the_epoch(store: SqlStore, clock: FakeClock) -> None:
    first = store.acquire_lock("acme", "a", 60, clock.now())
    store.release_lock(first)
    second = store.acquire_lock("acme", "b", 60, clock.now())
    assert second.epoch == first.epoch + 1
    assert store.current_epoch("acme") == second.epoch
    other = store.acquire_lock("other-fleet", "b", 60, clock.now())  # locks are per name
    assert other.epoch == 1


def _fenced_writes(store: SqlStore, epoch: int) -> list[Callable[[], object]]:
    pending = store.begin_intent("acme", "create", "n-pending", {})
    return [
        lambda: store.begin_intent("acme", "create", "n1", {}, epoch=epoch),
        lambda: store.retry_intent(pending.id, epoch=epoch),
        lambda: store.finish_intent(pending.id, IntentStatus.DONE, epoch=epoch),
        lambda: store.upsert_node(make_node(), epoch=epoch),
        lambda: store.upsert_nodes([make_node()], epoch=epoch),
        lambda: store.close_node("acme", "acme-dallas-001", T0, epoch=epoch),
    ]


def test_stale_epoch_is_refused_on_every_fenced_write(store: SqlStore, clock: FakeClock) -> None:
    old = store.acquire_lock("acme", "a", 60, clock.now())
    clock.advance(120)
    new = store.acquire_lock("acme", "b", 60, clock.now())
    for write in _fenced_writes(store, old.epoch):
        with pytest.raises(LeadershipLostError, match=f"epoch {old.epoch} is older"):
            write()
    assert [i.target for i in store.journal("acme")] == ["n-pending"]
    assert store.load_fleet("acme").nodes == ()
    # the current holder writes fine
    for write in _fenced_writes(store, new.epoch):
        write()


def test_leadership_epoch_fences_the_writer_lock_holder(store: SqlStore, clock: FakeClock) -> None:
    lease = store.acquire_lock("acme", "cli", 600, clock.now())
    store.upsert_node(make_node(), epoch=lease.epoch)
    with store.engine.begin() as connection:
        leader_epoch = claim_leadership(connection, "acme", "daemon-2", clock.now())
    assert leader_epoch == lease.epoch + 1
    with pytest.raises(LeadershipLostError):
        store.upsert_node(make_node(), epoch=lease.epoch)
    store.upsert_node(make_node(), epoch=leader_epoch)
    assert store.leader("acme") == ("daemon-2", leader_epoch)
    # a lock taken after the leadership gets an epoch newer than the leader's
    clock.advance(601)
    assert store.acquire_lock("acme", "cli", 60, clock.now()).epoch == leader_epoch + 1


def test_no_epoch_means_no_fencing(store: SqlStore, clock: FakeClock) -> None:
    store.acquire_lock("acme", "a", 60, clock.now())
    store.upsert_node(make_node())
    assert len(store.load_fleet("acme").nodes) == 1


def test_a_lock_whose_holder_process_is_gone_is_taken_over_at_once(
    store: SqlStore, clock: FakeClock
) -> None:
    """Issue 9: not after the lease (120 s by default): the holder ran on this host and its
    process is gone. A live holder, or one on another host, still holds it."""
    import os
    import socket
    import subprocess
    import sys

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = f"{socket.gethostname()}:{int(gone.stdout)}"
    first = store.acquire_lock("acme", dead, 300, clock.now())
    second = store.acquire_lock("acme", "cli:2", 300, clock.advance(1))
    assert (second.owner, second.epoch) == ("cli:2", first.epoch + 1)
    store.release_lock(second)
    alive = f"{socket.gethostname()}:{os.getppid()}"  # our parent runs: alive
    store.acquire_lock("acme", alive, 300, clock.advance(1))
    with pytest.raises(LockHeldError):
        store.acquire_lock("acme", "cli:3", 300, clock.advance(1))


def test_lock_holder_says_who_holds_the_lock_and_break_lock_fences_it(
    store: SqlStore, clock: FakeClock
) -> None:
    """`reconcile unlock`: who holds it (host, pid, since, epoch), then broken: the holder's
    writes and its next renewal are refused, the next run takes the lock."""
    assert store.lock_holder("acme", clock.now()) is None
    lease = store.acquire_lock("acme", "otherhost:4242", 300, clock.now())
    holder = store.lock_holder("acme", clock.advance(5))
    assert holder is not None
    assert (holder.owner, holder.host, holder.pid, holder.epoch) == (
        "otherhost:4242",
        "otherhost",
        4242,
        lease.epoch,
    )
    assert holder.acquired_at == T0
    assert holder.expires_at == T0 + timedelta(seconds=300)
    assert store.break_lock("acme", lease.epoch + 1) is False  # not what was shown: nothing
    assert store.lock_holder("acme", clock.now()) is not None
    assert store.break_lock("acme", lease.epoch) is True
    assert store.lock_holder("acme", clock.now()) is None
    assert store.break_lock("acme", lease.epoch) is False  # already broken
    with pytest.raises(LeadershipLostError):
        store.upsert_node(make_node(), epoch=lease.epoch)
    again = store.acquire_lock("acme", "otherhost:4242", 300, clock.advance(1))
    assert again.epoch > lease.epoch + 1  # the old holder renewing gets a new epoch: fenced
    nxt = store.acquire_lock("acme", "cli:2", 300, clock.advance(301))
    assert nxt.epoch == again.epoch + 1


def test_an_expired_lock_has_no_holder(store: SqlStore, clock: FakeClock) -> None:
    store.acquire_lock("acme", "otherhost:1", 60, clock.now())
    assert store.lock_holder("acme", clock.advance(61)) is None
