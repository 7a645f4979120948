"""Builders for planner tests, and a pure simulated apply that mirrors the engine.

``simulated_apply`` applies a plan's changes to (observed, recorded) the way
reconciler.engine.applying does (a CREATE/ADOPT/RESOLVE brings the node all the way up when
its server is ACTIVE), so that "the plan after an apply is empty" can be checked without I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from reconciler.core.addresses import parse_node_name
from reconciler.core.fleet import (
    IntentStatus,
    NodeStatus,
    Observed,
    ObservedServer,
    RecordedFleet,
    RecordedIntent,
    RecordedNode,
    ServerStatus,
)
from reconciler.core.plans import Action, Plan, Resolution
from specs.model import FleetSpec

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
FLEET = "acme"
PLANS: dict[str, dict[str, Any]] = {
    "small": {"rid": 51, "vcpu": 1, "ram_gb": 1, "disk_gb": 25, "monthly_price": "4.99"},
    "baseline": {"rid": 52, "vcpu": 1, "ram_gb": 2, "disk_gb": 50, "monthly_price": "9.99"},
    "large": {"rid": 53, "vcpu": 2, "ram_gb": 4, "disk_gb": 80, "monthly_price": "19.99"},
}
RID = {name: int(p["rid"]) for name, p in PLANS.items()}
LOCATIONS = {"dallas": 13, "seattle": 12, "amsterdam": 14}


def make_spec(
    regions: Mapping[str, Any] | None = None,
    *,
    pools: Mapping[str, Any] | None = None,
    costs: Mapping[str, Any] | None = None,
    disruption: Mapping[str, Any] | None = None,
    **extra: Any,
) -> FleetSpec:
    """A spec; ``regions`` maps a region to a node count, {min, max}, or a full region dict."""
    region_docs: dict[str, Any] = {}
    for name, value in (regions if regions is not None else {"dallas": 2}).items():
        if isinstance(value, Mapping) and "plan" in value:
            region_doc = {"location_id": LOCATIONS.get(name, 20), **value}
        else:
            region_doc = {
                "location_id": LOCATIONS.get(name, 20),
                "plan": "baseline",
                "nodes": value,
            }
        region_docs[name] = region_doc
    doc: dict[str, Any] = {
        "metadata": {"name": FLEET},
        "plans": PLANS,
        "regions": region_docs,
    }
    if pools is not None:
        doc["ip_pools"] = pools
    if costs is not None:
        doc["costs"] = costs
    if disruption is not None:
        doc["disruption"] = disruption
    doc.update(extra)
    return FleetSpec.model_validate(doc)


def ip_for(service_id: int) -> str:
    return f"198.51.{(service_id // 250) % 250}.{service_id % 250 + 1}"


def server(
    name: str,
    service_id: int,
    *,
    status: ServerStatus = ServerStatus.ACTIVE,
    plan: str = "baseline",
    ip: str | None = "auto",
    location_id: int | None = None,
) -> ObservedServer:
    parsed = parse_node_name(FLEET, name)
    location = location_id
    if location is None:
        location = LOCATIONS.get(parsed[0], 20) if parsed else 12
    return ObservedServer(
        service_id=service_id,
        name=name,
        location_id=location,
        status=status,
        main_ip=ip_for(service_id) if ip == "auto" else ip,
        plan_rid=RID[plan],
    )


def node(
    name: str,
    service_id: int | None,
    *,
    status: NodeStatus = NodeStatus.ACTIVE,
    plan: str = "baseline",
    pool: str | None = None,
    rdns_done: bool = True,
    ip: str | None = "auto",
    warmup_started_at: datetime | None = None,
    protected: bool = False,
) -> RecordedNode:
    parsed = parse_node_name(FLEET, name)
    assert parsed is not None
    if ip == "auto":
        ip = ip_for(service_id) if service_id is not None else None
    if warmup_started_at is None and status in (NodeStatus.ACTIVE, NodeStatus.WARMING):
        warmup_started_at = NOW - timedelta(days=60 if status is NodeStatus.ACTIVE else 3)
    return RecordedNode(
        id=f"id-{name}",
        fleet=FLEET,
        name=name,
        region=parsed[0],
        plan=plan,
        status=status,
        service_id=service_id,
        ip_address=ip,
        pool=pool,
        rdns_done=rdns_done,
        warmup_started_at=warmup_started_at,
        protected=protected,
    )


def pair(
    name: str, service_id: int, *, plan: str = "baseline", **node_kw: Any
) -> tuple[ObservedServer, RecordedNode]:
    """A healthy, fully recorded node and its server."""
    return server(name, service_id, plan=plan), node(name, service_id, plan=plan, **node_kw)


def intent(
    intent_id: int, target: str, *, kind: str = "create", age: timedelta = timedelta(hours=1)
) -> RecordedIntent:
    return RecordedIntent(id=intent_id, fleet=FLEET, kind=kind, target=target, created_at=NOW - age)


def world(
    servers: Iterable[ObservedServer] = (),
    nodes: Iterable[RecordedNode] = (),
    intents: Iterable[RecordedIntent] = (),
    **fleet_kw: Any,
) -> tuple[Observed, RecordedFleet]:
    return (
        Observed(servers=tuple(servers), observed_at=NOW),
        RecordedFleet(fleet=FLEET, nodes=tuple(nodes), pending_intents=tuple(intents), **fleet_kw),
    )


# --- the simulated apply -----------------------------------------------------------------


def _brought_up(record: RecordedNode, srv: ObservedServer, now: datetime) -> RecordedNode:
    """The engine's bring-up: ACTIVE with an IP -> rDNS -> warming (else stays provisioning)."""
    if srv.status is ServerStatus.ACTIVE and srv.main_ip:
        return replace(
            record,
            status=NodeStatus.WARMING,
            rdns_done=True,
            ip_address=srv.main_ip,
            warmup_started_at=record.warmup_started_at or now,
        )
    return record


def simulated_apply(
    spec: FleetSpec,
    observed: Observed,
    recorded: RecordedFleet,
    plan: Plan,
    now: datetime = NOW,
) -> tuple[Observed, RecordedFleet]:
    """Apply every change of ``plan`` as the engine would, with a cloud that never fails."""
    servers: dict[int, ObservedServer] = {s.service_id: s for s in observed.servers}
    records: dict[str, RecordedNode] = {
        n.name: n for n in recorded.nodes if n.status is not NodeStatus.DECOMMISSIONED
    }
    closed: list[RecordedNode] = [
        n for n in recorded.nodes if n.status is NodeStatus.DECOMMISSIONED
    ]
    intents = list(recorded.pending_intents)
    known = [n.service_id for n in recorded.nodes if n.service_id is not None]
    next_sid = max([*servers, *known, 1000]) + 1  # service ids are never reused
    rid_to_plan = {p.rid: name for name, p in sorted(spec.plans.items())}

    def named(name: str) -> ObservedServer | None:
        found = [s for s in servers.values() if s.name == name]
        return min(found, key=lambda s: s.service_id) if found else None

    def close(name: str) -> None:
        record = records.pop(name, None)
        if record is not None:
            closed.append(replace(record, status=NodeStatus.DECOMMISSIONED))

    def create(name: str, region: str, plan_name: str, pool: str | None) -> None:
        nonlocal next_sid
        assert named(name) is None, f"create of an existing name {name}"
        sid = next_sid
        next_sid += 1
        srv = ObservedServer(
            service_id=sid,
            name=name,
            location_id=spec.regions[region].location_id,
            status=ServerStatus.ACTIVE,
            main_ip=ip_for(sid),
            plan_rid=spec.plans[plan_name].rid,
        )
        servers[sid] = srv
        close(name)
        records[name] = _brought_up(
            RecordedNode(
                id=f"id-{name}-{sid}",
                fleet=spec.name,
                name=name,
                region=region,
                plan=plan_name,
                status=NodeStatus.PROVISIONING,
                service_id=sid,
                pool=pool,
            ),
            srv,
            now,
        )

    def adopt(name: str, region: str, srv: ObservedServer, status: str | None) -> None:
        fallback = spec.regions[region].plan if region in spec.regions else "baseline"
        plan_name = rid_to_plan.get(srv.plan_rid or -1) or fallback
        record = RecordedNode(
            id=f"id-{name}-{srv.service_id}",
            fleet=spec.name,
            name=name,
            region=region,
            plan=plan_name,
            status=NodeStatus(status) if status else NodeStatus.PROVISIONING,
            service_id=srv.service_id,
            ip_address=srv.main_ip,
        )
        records[name] = record if status else _brought_up(record, srv, now)

    for change in plan.changes:
        name = change.address
        record = records.get(name)
        if change.action is Action.FORGET:
            close(name)
        elif change.action is Action.RESOLVE:
            mine = [i for i in intents if i.target == name and i.kind == "create"]
            if change.resolution in (Resolution.FOUND, Resolution.RECORDED):
                intents = [i for i in intents if i not in mine]
                if change.resolution is Resolution.FOUND:
                    srv = named(name)
                    assert srv is not None
                    adopt(name, change.region, srv, None)
            else:
                created = min((i.created_at for i in mine if i.created_at), default=None)
                if created is not None and now < created + spec.reconcile.adoption_grace:
                    continue  # the engine waits
                intents = [i for i in intents if i not in mine]
                if change.resolution is Resolution.RECREATE:
                    create(name, change.region, change.plan or "baseline", change.pool)
        elif change.action is Action.ADOPT:
            srv = servers[change.service_id or -1]
            intents = [i for i in intents if not (i.target == name and i.kind == "create")]
            adopt(name, change.region, srv, change.status)
        elif change.action is Action.REPAIR:
            assert record is not None
            srv = servers[change.service_id or -1]
            records[name] = replace(
                record,
                service_id=srv.service_id,
                ip_address=srv.main_ip or record.ip_address,
                plan=rid_to_plan.get(srv.plan_rid or -1) or record.plan,
            )
        elif change.action in (Action.PAUSE, Action.RESUME, Action.DRAIN, Action.ACTIVATE):
            assert record is not None
            assert change.status is not None
            status = change.status
            updated = replace(record, status=status)
            if status.in_rotation and updated.warmup_started_at is None:
                updated = replace(updated, warmup_started_at=now)
            records[name] = updated
        elif change.action is Action.SET_RDNS:
            assert record is not None
            assert record.service_id is not None
            srv = servers[record.service_id]
            records[name] = replace(record, rdns_done=True, ip_address=srv.main_ip)
        elif change.action is Action.RESIZE:
            assert record is not None
            assert change.plan is not None
            sid = change.service_id or -1
            servers[sid] = replace(
                servers[sid], status=ServerStatus.ACTIVE, plan_rid=spec.plans[change.plan].rid
            )
            records[name] = replace(record, plan=change.plan)
        elif change.action is Action.DESTROY:
            servers.pop(change.service_id or -1, None)
            close(name)
        elif change.action is Action.CREATE:
            assert change.plan is not None
            create(name, change.region, change.plan, change.pool)
    return (
        Observed(servers=tuple(servers.values()), observed_at=now),
        replace(
            recorded,
            nodes=tuple(sorted(records.values(), key=lambda n: n.name)) + tuple(closed),
            pending_intents=tuple(i for i in intents if i.status is IntentStatus.PENDING),
        ),
    )
