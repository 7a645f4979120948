"""A synthetic recorded fleet for the status page's browser test, its benchmark and the
screenshot in the docs: N nodes over four regions, in every life-cycle status, with heartbeats
(some nodes silent, some bouncing, some warming). Deterministic for a given ``seed``.

It writes through the ``StorePort`` only, so any store (the in-memory one of the tests, SQLite,
PostgreSQL) can hold it.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal

from reconciler.core.fleet import HoldKind, Maintenance, NodeMetrics, NodeStatus, RecordedNode
from reconciler.core.ports import StorePort

REGIONS = ("dallas", "seattle", "amsterdam", "newyork")

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: {name}}}
provider: {{type: simulator, build_time: 1s}}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
  large: {{rid: 53, vcpu: 2, ram_gb: 4, disk_gb: 75, monthly_price: 19.99}}
regions:
  dallas: {{location_id: 13, plan: baseline, nodes: {{min: 1, max: {most}}}}}
  seattle: {{location_id: 12, plan: baseline, nodes: {{min: 1, max: {most}}}}}
  amsterdam: {{location_id: 14, plan: large, nodes: {{min: 1, max: {most}}}}}
  newyork: {{location_id: 15, plan: baseline, nodes: {{min: 1, max: {most}}}}}
ip_pools:
  transactional: {{size: 1, regions: [dallas, seattle], warmup: conservative}}
  bulk: {{size: 1, regions: [amsterdam, newyork], warmup: standard}}
health: {{heartbeat_interval: 30s, missed_beats: 3}}
costs: {{ip_monthly_price: 4.99}}
"""


def spec_text(name: str = "acme", nodes: int = 1000) -> str:
    return SPEC.format(name=name, most=max(2, nodes))


def populate(store: StorePort, fleet: str, count: int, now: datetime, seed: int = 7) -> None:
    """Record ``count`` nodes and their recent heartbeats."""
    rng = random.Random(seed)
    nodes: list[RecordedNode] = []
    beats: list[NodeMetrics] = []
    statuses = (
        [NodeStatus.ACTIVE] * 70
        + [NodeStatus.WARMING] * 18
        + [NodeStatus.PROVISIONING] * 4
        + [NodeStatus.PAUSED] * 3
        + [NodeStatus.DRAINING] * 2
        + [NodeStatus.MAINTENANCE] * 2
        + [NodeStatus.UNHEALTHY] * 1
    )
    for i in range(count):
        region = REGIONS[i % len(REGIONS)]
        pool = "transactional" if region in ("dallas", "seattle") else "bulk"
        status = rng.choice(statuses)
        name = f"{fleet}-{region}-{i // len(REGIONS) + 1:03d}"
        started = (
            now - timedelta(days=rng.randint(1, 40))
            if status is NodeStatus.WARMING
            else (now - timedelta(days=60) if status is NodeStatus.ACTIVE else None)
        )
        silent = status is NodeStatus.UNHEALTHY or rng.random() < 0.01
        last = (
            now - timedelta(minutes=10) if silent else now - timedelta(seconds=rng.randint(1, 40))
        )
        nodes.append(
            RecordedNode(
                id=f"00000000-0000-4000-8000-{i:012d}",
                fleet=fleet,
                name=name,
                region=region,
                plan="large" if region == "amsterdam" else "baseline",
                status=status,
                service_id=2_000_000 + i,
                ip_address=f"198.51.{100 + i // 250}.{i % 250 + 1}",
                hostname=f"{name}.{fleet}.example",
                pool=pool,
                created_at=now - timedelta(days=90),
                rdns_done=status is not NodeStatus.PROVISIONING,
                warmup_started_at=started,
                approximate_cost=Decimal("24.98") if region == "amsterdam" else Decimal("14.98"),
                last_heartbeat=None if status is NodeStatus.PROVISIONING else last,
            )
        )
        if status is NodeStatus.PROVISIONING or silent:
            continue
        bouncy = rng.random() < 0.03
        warming_day = (now - started).days + 1 if status is NodeStatus.WARMING and started else 0
        for k in range(3):
            # a warming IP sends about its warmup limit (10/day on day 1, ~500 after 6 weeks)
            # a beat covers 30 s: a warming IP (10/day on day 1, ~500 after six weeks) sends
            # one mail in a beat now and then
            limit = min(500, 10 * 1.1**warming_day)
            sent = (
                int(rng.random() < limit * rng.uniform(0.5, 1.0) / 2880)
                if warming_day
                else rng.randint(50, 900)
            )
            beats.append(
                NodeMetrics(
                    node=name,
                    at=now - timedelta(seconds=30 * k + rng.randint(0, 5)),
                    cpu=round(rng.uniform(0.05, 0.97 if k == 0 else 0.8), 2),
                    memory=round(rng.uniform(0.2, 0.8), 2),
                    disk=round(rng.uniform(0.1, 0.6), 2),
                    queue_length=0 if warming_day else rng.choice([0, 0, 0, 3, 12, 40, 150, 700]),
                    sent=sent,
                    bounces=sent // 12 if bouncy else rng.randint(0, sent // 200),
                    complaints=rng.randint(0, 1) if rng.random() < 0.05 else 0,
                    interval_seconds=30.0,
                )
            )
    store.upsert_nodes(nodes)
    store.record_heartbeats(fleet, beats)
    # operators' holds: nodes out of rotation are cordoned, drained or in maintenance
    kinds = (HoldKind.CORDON, HoldKind.DRAIN, HoldKind.MAINTENANCE)
    held = [n for n in nodes if n.status in (NodeStatus.MAINTENANCE, NodeStatus.DRAINING)]
    for index, node in enumerate(held):
        kind = HoldKind.DRAIN if node.status is NodeStatus.DRAINING else kinds[index % 3]
        since = now - timedelta(hours=rng.randint(1, 48))
        store.set_maintenance(
            fleet, node.name, Maintenance("disk check", "cli ops@host", since, kind=kind)
        )
