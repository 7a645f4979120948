"""A reconcile never holds the daemon's event loop (issue 10): while the run waits on a frozen
store or plans for a long time, the loop renews the lease, sweeps, and stops within its bound.

The daemon runs for real (``Daemon.run``: scheduler, real time, jobs at sub-second intervals)
with fakes at the boundaries (tests/fakes/stalls.py): a store that freezes the first call made
on an event loop (a synchronous store call on a loop: SIGSTOP of the database does that), and
a clock whose read during planning burns the CPU (a long plan). Waits are on conditions.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

from reconciler.daemon.heartbeats import MasterSecret
from reconciler.daemon.running import Daemon, DaemonSettings
from reconciler.daemon.stopping import STOP_MARGIN
from specs.loading import load_spec
from tests.daemon.test_running import SPEC
from tests.fakes.cloud import FakeCloud
from tests.fakes.stalls import BurningClock, FreezingStore
from tests.fakes.store import InMemoryStore

GRACE = 0.5


class TimedLeadership:
    """LeadershipPort that always leads, with the (monotonic) time of every renewal."""

    def __init__(self) -> None:
        self.epoch = 0
        self.renewals: list[float] = []
        self.released = False

    def try_acquire(self) -> int | None:
        if self.released:
            return None
        self.epoch += 1
        return self.epoch

    def check(self) -> bool:
        self.renewals.append(time.monotonic())
        return not self.released

    def release(self) -> None:
        self.released = True


def make_daemon(
    tmp_path: Path, store: object, cloud: FakeCloud, leadership: TimedLeadership, **clock: object
) -> Daemon:
    spec_path = tmp_path / "fleet.yaml"
    spec_path.write_text(SPEC.format(nodes="2"))
    return Daemon(
        DaemonSettings(
            paths=(str(spec_path),),
            listen=None,
            poll_interval=0.05,
            leadership_poll=0.1,
            sweep_interval=0.2,
            spec_poll=60.0,
            shutdown_grace=GRACE,
        ),
        load_spec([spec_path]),
        store,  # type: ignore[arg-type]
        cloud,
        leadership,
        MasterSecret("a-master-secret-for-tests"),
        **clock,  # type: ignore[arg-type]
    )


async def until(predicate: Callable[[], object], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def test_a_store_frozen_under_a_reconcile_holds_neither_the_lease_the_sweeps_nor_the_stop(
    tmp_path: Path,
) -> None:
    inner = InMemoryStore()
    store = FreezingStore(inner, longest=8.0)
    cloud = FakeCloud(build_seconds=0)
    leadership = TimedLeadership()
    daemon = make_daemon(tmp_path, store, cloud, leadership)
    off_loop_reads: list[float] = []
    marks = inner.node_marks

    def counted_marks(*args: object, **kwargs: object) -> object:
        off_loop_reads.append(time.monotonic())  # the sweeps' light poll, from worker threads
        return marks(*args, **kwargs)  # type: ignore[arg-type]

    inner.node_marks = counted_marks  # type: ignore[method-assign]

    async def scenario() -> tuple[float, bool]:
        store.armed = True  # the first store call made on an event loop freezes
        running = asyncio.get_running_loop().create_task(daemon.run())
        frozen = await asyncio.to_thread(store.frozen.wait, 15)
        assert frozen, "the reconcile never read the store"
        engine = getattr(daemon, "engine", None)  # where the reconcile runs
        froze_at = store.froze_at
        assert froze_at is not None

        def renewed_and_swept() -> bool:
            return (
                sum(1 for t in leadership.renewals if t > froze_at) >= 3
                and sum(1 for t in off_loop_reads if t > froze_at) >= 2
            )

        await until(renewed_and_swept, 6.0, "lease renewals and sweeps during the freeze")
        # all of it while the reconcile's read is still frozen (not after the fake gave up)
        assert store.thawed_at is None
        assert not store.timed_out
        assert daemon.is_leader
        assert not running.done()
        # a stop signal's stop (what the SIGTERM handler does on the loop)
        stopped_at = time.monotonic()
        daemon.stop("SIGTERM")
        code = await asyncio.wait_for(running, 30)
        took = time.monotonic() - stopped_at
        assert code == 0
        store.thaw.set()
        assert engine is not None
        await asyncio.to_thread(engine.thread.join, 10)
        return took, engine.thread.is_alive()

    took, engine_alive = asyncio.run(scenario())
    # within the daemon's own bound for a stop: the grace, then the stop margin
    assert took < GRACE + STOP_MARGIN, took
    assert leadership.released
    assert store.frozen_call is not None
    # the thawed run made no cloud mutation after the stop (leadership was released)
    assert cloud.mutations == 0
    # the reconcile's thread finished once its call came back, and closed its loop
    assert not engine_alive
    print(f"stopped in {took:.2f} s with the reconcile frozen in {store.frozen_call}")


def test_a_long_cpu_bound_plan_does_not_stop_the_lease_renewal(tmp_path: Path) -> None:
    clock = BurningClock()
    cloud = FakeCloud(build_seconds=0)
    leadership = TimedLeadership()
    daemon = make_daemon(tmp_path, InMemoryStore(), cloud, leadership, clock=clock)
    listed = cloud.list_servers
    burn = 1.5

    async def list_then_plan_for_long() -> object:
        servers = await listed()
        if clock.burnt is None:
            # the run's next read of the clock, on this thread, is the planner's
            clock.burn_on_thread(threading.get_ident(), burn)
        return servers

    cloud.list_servers = list_then_plan_for_long  # type: ignore[method-assign]

    async def scenario() -> None:
        running = asyncio.get_running_loop().create_task(daemon.run())
        await until(lambda: clock.burnt is not None, 15.0, "the long plan")
        daemon.stop("SIGTERM")
        assert await asyncio.wait_for(running, 30) == 0

    asyncio.run(scenario())
    assert clock.burnt is not None
    started, ended = clock.burnt
    during = [t for t in leadership.renewals if started < t < ended]
    # the leadership job (every 0.1 s) renewed the lease while the plan held the CPU
    assert len(during) >= 3, (len(during), ended - started)
    assert daemon.last_plan is not None
    print(f"{len(during)} renewals during a {ended - started:.2f} s plan")
