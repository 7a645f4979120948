"""The reputation job reads the store incrementally (issue 14): each run hands the store the
snapshot and cursor of the previous one (``reputation_snapshot_since``), except after a store
error and every ``WHOLE_READ_EVERY``, when it reads whole."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.errors import StoreError
from reconciler.core.fleet import RecordedFleet
from reconciler.core.reputation import ReputationSnapshot
from reconciler.daemon.reputation import WHOLE_READ_EVERY, ReputationJob
from state.reputation import SqlReputationStore
from state.store import open_store
from tests.daemon.test_running import make_world


class Recording:
    """A ReputationStorePort over the SQLite store, saying what each read was handed."""

    def __init__(self, inner: SqlReputationStore) -> None:
        self.inner = inner
        self.handed: list[ReputationSnapshot | None] = []
        self.answered: list[ReputationSnapshot] = []
        self.fail = False

    def reputation_snapshot_since(
        self,
        fleet: str,
        since: datetime,
        today: datetime,
        held: ReputationSnapshot | None,
        cursor: object | None,
    ) -> tuple[ReputationSnapshot, object | None]:
        self.handed.append(held)
        if self.fail:
            raise StoreError("the store is out")
        snapshot, _ = self.inner.reputation_snapshot_since(fleet, since, today, held, cursor)
        self.answered.append(snapshot)
        return snapshot, "cursor"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_each_run_hands_over_the_last_snapshot_but_after_an_error_or_ten_minutes(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path)
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        reads = Recording(SqlReputationStore(store))
        job = ReputationJob("acme", store, reads, None)  # type: ignore[arg-type]
        spec = world.daemon.spec
        fleet = RecordedFleet(fleet="acme", nodes=())
        now = world.clock.now()

        def run(at: datetime) -> None:
            asyncio.run(job.run(spec, fleet, at, epoch=None))

        run(now)
        run(now + timedelta(seconds=30))
        assert reads.handed == [None, reads.answered[0]]
        reads.fail = True
        with pytest.raises(StoreError):
            run(now + timedelta(seconds=60))
        reads.fail = False
        run(now + timedelta(seconds=90))
        assert reads.handed[-1] is None  # after an error: whole
        run(now + timedelta(seconds=120))
        assert reads.handed[-1] is reads.answered[-2]
        run(now + timedelta(seconds=90) + WHOLE_READ_EVERY)
        assert reads.handed[-1] is None  # every ten minutes: whole
        run(now + timedelta(seconds=80))  # the clock went back: whole
        assert reads.handed[-1] is None
    finally:
        store.close()
