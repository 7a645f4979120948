"""Concurrent writers: two sessions upserting one node keep one row; one lock winner."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable

import sqlalchemy as sa
from state_builders import T0, make_node

from reconciler.core.errors import LockHeldError
from reconciler.core.fleet import NodeStatus
from state import SqlStore, open_store
from state import models as m


def _in_threads(count: int, work: Callable[[int], None]) -> list[BaseException]:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            work(index)
        except BaseException as exc:  # collected and asserted on by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_two_sessions_upserting_one_node_keep_one_row(store_url: str, store: SqlStore) -> None:
    stores = [open_store(store_url) for _ in range(2)]
    try:

        def work(index: int) -> None:
            for round_ in range(25):
                stores[index].upsert_node(
                    make_node(
                        id=str(uuid.uuid4()),
                        status=NodeStatus.ACTIVE if round_ % 2 else NodeStatus.WARMING,
                        service_id=4242,
                        ip_address="192.0.2.42",
                        plan=f"plan-{index}",
                    )
                )

        assert _in_threads(2, work) == []
    finally:
        for opened in stores:
            opened.close()
    with store.engine.connect() as connection:
        nodes = connection.execute(sa.select(sa.func.count()).select_from(m.SendingNode))
        vps = connection.execute(sa.select(sa.func.count()).select_from(m.VpsInstance))
        ips = connection.execute(sa.select(sa.func.count()).select_from(m.SmtpIpAddress))
        assert (nodes.scalar_one(), vps.scalar_one(), ips.scalar_one()) == (1, 1, 1)
    (node,) = store.load_fleet("acme").nodes
    assert node.service_id == 4242


def test_only_one_of_two_concurrent_lock_takers_wins(store_url: str, store: SqlStore) -> None:
    stores = [open_store(store_url) for _ in range(4)]
    won: list[int] = []
    try:

        def work(index: int) -> None:
            with contextlib.suppress(LockHeldError):
                won.append(stores[index].acquire_lock("acme", f"owner-{index}", 60, T0).epoch)

        assert _in_threads(4, work) == []
    finally:
        for opened in stores:
            opened.close()
    assert won == [1]


def test_concurrent_heartbeat_recorders(store_url: str, store: SqlStore) -> None:
    """Two daemons recording overlapping batches in opposite orders: no error, no lost beat."""
    from datetime import timedelta

    from state_builders import beat

    names = [f"n{i:03d}" for i in range(300)]
    store.upsert_nodes([make_node(n, id=str(uuid.uuid4())) for n in names])
    stores = [open_store(store_url) for _ in range(2)]
    try:

        def work(index: int) -> None:
            order = names if index == 0 else list(reversed(names))
            for round_ in range(8):
                at = T0 + timedelta(seconds=30 * round_ + index)
                stores[index].record_heartbeats("acme", [beat(n, at) for n in order])

        assert _in_threads(2, work) == []
    finally:
        for opened in stores:
            opened.close()
    last = T0 + timedelta(seconds=30 * 7 + 1)
    assert {n.last_heartbeat for n in store.load_fleet("acme").nodes} == {last}
    assert store.metrics_rows() == 300 * 16  # 16 beats per node, window 20
