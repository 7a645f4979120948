"""No trust in absurd figures, at the level of the autoscaler and the endpoints (issue 10).

The daemon in-process (fakes at the boundaries, tests/daemon/test_running.py), its real
``Verifier`` (signed beats, plausibility) and its real jobs: one signed beat with absurd
figures, and a stream of beats from one node inflated up to the plausibility bound (each one
accepted), never scale a region, while the same load reported by every node does; figures
that are not finite (written past the intake: an older replica, a hand-edited row) never
reach a job's decision, ``/v1/fleet``, ``/status`` or ``/metrics``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.core.fleet import NodeMetrics, NodeStatus
from reconciler.core.scaling import PLAUSIBLE_CAPACITY_FACTOR
from reconciler.daemon.heartbeats import (
    HEARTBEATS_PATH,
    HeartbeatRejected,
    derive_node_secret,
    signed_headers,
)
from tests.daemon.test_running import World, make_world

MASTER = b"a-master-secret-for-tests"
INTERVAL = 30  # the spec's heartbeat interval (s)
CAPACITY_PER_BEAT = 1000 * INTERVAL / 60  # 1 vCPU x 1000 emails/min, per 30 s beat
#: the most one beat may report and still be accepted (3x the node's capacity)
AT_THE_BOUND = int(PLAUSIBLE_CAPACITY_FACTOR * CAPACITY_PER_BEAT) - 1


def warmed_world(tmp_path: Path, nodes: int = 3) -> tuple[World, list[str]]:
    """An autoscaled region of ``nodes`` active nodes past their warmup (CPU-bound capacity)."""
    world = make_world(tmp_path, f"{{min: {nodes}, max: 8}}")

    async def create() -> None:
        assert await world.daemon.guard.tick()
        await world.daemon.reconcile_now()

    asyncio.run(create())
    recorded = world.store.load_fleet("acme").nodes
    assert len(recorded) == nodes
    long_ago = world.clock.now() - timedelta(days=90)
    for node in recorded:
        world.store.upsert_node(
            dataclasses.replace(node, status=NodeStatus.ACTIVE, warmup_started_at=long_ago)
        )
    asyncio.run(world.daemon._refresh())  # the verifier knows the nodes and their capacity
    return world, sorted(n.name for n in recorded)


def send(world: World, node: str, sent: int, /, **figures: object) -> int:
    """A signed beat through the daemon's verifier: 202 and recorded, or the refusal's status."""
    now = world.clock.now()
    payload = {
        "node": node,
        "cpu": 0.3,
        "memory": 0.4,
        "disk": 0.5,
        "queue_length": 0,
        "sent": sent,
        "interval_seconds": INTERVAL,
        **figures,
    }
    body = json.dumps(payload).encode()  # NaN and Infinity as Python's JSON writes them
    secret = derive_node_secret(MASTER, node)
    headers = signed_headers(node, secret, "POST", HEARTBEATS_PATH, body, int(now.timestamp()))
    try:
        beat = world.daemon.verifier.verify_beat(
            {k.lower(): v for k, v in headers.items()},
            "POST",
            HEARTBEATS_PATH,
            body,
            now.timestamp(),
        )
    except HeartbeatRejected as exc:
        return exc.status
    world.store.record_heartbeats("acme", [beat.payload.metrics(now)])
    return 202


def beat_all(world: World, names: list[str], sent: dict[str, int]) -> None:
    """Every node beats once (``sent`` per node), then one heartbeat interval passes."""
    for name in names:
        assert send(world, name, sent[name]) == 202
    world.clock.advance(INTERVAL)


def evaluate(world: World) -> int:
    async def run() -> None:
        await world.daemon._job_sweep()
        await world.daemon._job_autoscale()

    asyncio.run(run())
    return world.daemon.desired_counts["dallas"]


def test_one_absurd_beat_and_an_inflated_stream_from_one_node_never_scale_a_region(
    tmp_path: Path,
) -> None:
    world, names = warmed_world(tmp_path)
    honest = int(0.3 * CAPACITY_PER_BEAT)  # every node at 30 % of its capacity
    calm = dict.fromkeys(names, honest)
    for _ in range(4):
        beat_all(world, names, calm)
    assert evaluate(world) == 3
    liar = names[0]
    # one absurd beat (10^9 sent, or 10^9 per second): refused, never recorded
    assert send(world, liar, 10**9) == 422
    assert send(world, liar, 10**6, interval_seconds=1) == 422
    assert evaluate(world) == 3
    # one beat at the plausibility bound is accepted, and moves nothing (median over the
    # window)
    assert send(world, liar, AT_THE_BOUND) == 202
    world.clock.advance(INTERVAL)
    beat_all(world, names[1:], calm)
    assert evaluate(world) == 3
    # a stream of such beats from that node, for ten evaluation windows: each one accepted,
    # none scales the region (it would count 3x its capacity beside two nodes at 30 %: a
    # region at 120 %, without the cap on one node's share)
    inflated = {**calm, liar: AT_THE_BOUND}
    for _ in range(10):
        beat_all(world, names, inflated)
        assert evaluate(world) == 3, world.daemon.decisions
    # the same kind of figures from every node is load, not one node's word: when the region
    # really is busy (every node at 120 %) it scales
    busy = dict.fromkeys(names, int(1.2 * CAPACITY_PER_BEAT))
    for _ in range(4):
        beat_all(world, names, busy)
    assert evaluate(world) == 4
    assert world.daemon.decisions[0].reason.startswith("dallas: 3 -> 4 nodes")


NON_FINITE = (float("nan"), float("inf"), float("-inf"))


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
def test_non_finite_figures_reach_no_job_and_no_endpoint(tmp_path: Path, value: float) -> None:
    world, names = warmed_world(tmp_path)
    # refused at the intake: a non-finite figure in JSON (NaN, Infinity) never validates
    for field in ("cpu", "memory", "disk", "interval_seconds", "sent", "queue_length"):
        assert send(world, names[0], 10, **{field: value}) == 422, field
    for _ in range(3):
        beat_all(world, names, dict.fromkeys(names, 100))
    # past the intake: beats with every figure non-finite (or absurd) written to the store
    now = world.clock.now()
    odd = [
        NodeMetrics(names[0], now, value, value, value, 0, 10**30, 0, 0, value),
        NodeMetrics(names[1], now, value, 0.1, 0.1, 10**12, 50, 0, 0, 0.0),
        NodeMetrics(names[2], now, 0.1, value, 0.1, 0, 50, 10**20, 10**20, -30.0),
    ]
    world.store.record_heartbeats("acme", odd)
    world.clock.advance(1)
    daemon = world.daemon

    async def jobs() -> None:
        await daemon._job_sweep()
        await daemon._job_autoscale()
        await daemon.reconcile_now()

    asyncio.run(jobs())
    assert daemon.desired_counts == {"dallas": 3}
    for decision in daemon.decisions:
        assert decision.utilization is None or math.isfinite(decision.utilization)
        assert math.isfinite(decision.throughput)
    # /v1/fleet: strict JSON (allow_nan=False raises on NaN and infinities)
    json.dumps(daemon.fleet_for(None, None), allow_nan=False)
    json.dumps(daemon.fleet_document(), allow_nan=False)
    status, page = daemon.status_page(None, None)
    assert status == 200
    for word in ("nan", "inf"):
        assert f">{word}" not in page.lower()
    # /metrics: every sample finite (a histogram's le="+Inf" bucket is a label, not a value)
    for family in daemon.metrics.registry.collect():
        for sample in family.samples:
            assert math.isfinite(sample.value), (sample.name, sample.labels, sample.value)
    text = daemon.metrics.render().decode()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert line.rsplit(" ", 1)[1].lower() not in ("nan", "+inf", "-inf", "inf"), line
