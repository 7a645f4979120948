"""Observe the world: one list of the cloud and one load of the store, and a fingerprint.

The fingerprint is what a saved plan is checked against (``reconcile --plan``): a sha256 over
the spec hash and a canonical, sorted form of the recorded and observed state. Volatile fields
(observation time, heartbeat time and load, journal update times) are left out so that two
observations of an unchanged world give the same fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from reconciler.core.fleet import (
    Observed,
    ObservedServer,
    RecordedFleet,
    RecordedIntent,
    RecordedNode,
)
from reconciler.core.ports import CloudPort, StorePort

FINGERPRINT_VERSION = "1"


@dataclass(frozen=True)
class Snapshot:
    """What one observation saw, and the fingerprint of it (computed when first asked for:
    only a saved plan needs it, and at 10,000 nodes it costs as much as the plan)."""

    observed: Observed
    recorded: RecordedFleet
    spec_hash: str

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.spec_hash, self.recorded, self.observed)

    def server(self, service_id: int | None) -> ObservedServer | None:
        if service_id is None:
            return None
        for server in self.observed.servers:
            if server.service_id == service_id:
                return server
        return None

    def servers_named(self, name: str) -> list[ObservedServer]:
        return [s for s in self.observed.servers if s.name == name]

    def node(self, name: str) -> RecordedNode | None:
        for node in self.recorded.nodes:
            if node.name == name:
                return node
        return None

    def pending_create(self, name: str) -> RecordedIntent | None:
        """The oldest pending create intent for ``name``, if any."""
        found = [
            i for i in self.recorded.pending_intents if i.target == name and i.kind == "create"
        ]
        return min(found, key=lambda i: i.id) if found else None


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _server_form(server: ObservedServer) -> dict[str, object]:
    return {
        "service_id": server.service_id,
        "name": server.name,
        "location_id": server.location_id,
        "status": server.status.value,
        "main_ip": server.main_ip,
        "ips": sorted(server.ips),
        "plan_rid": server.plan_rid,
        "locked": server.locked,
        "suspended": server.suspended,
        "hostname": server.hostname,
    }


def _node_form(node: RecordedNode) -> dict[str, object]:
    return {
        "id": node.id,
        "name": node.name,
        "region": node.region,
        "plan": node.plan,
        "status": node.status.value,
        "service_id": node.service_id,
        "ip_address": node.ip_address,
        "hostname": node.hostname,
        "pool": node.pool,
        "protected": node.protected,
        "rdns_done": node.rdns_done,
        "warmup_started_at": _text(node.warmup_started_at),
        "approximate_cost": _text(node.approximate_cost),
    }


def _intent_form(intent: RecordedIntent) -> dict[str, object]:
    return {
        "id": intent.id,
        "kind": intent.kind,
        "target": intent.target,
        "params": dict(sorted(intent.params.items())),
        "status": intent.status.value,
        "attempts": intent.attempts,
        "created_at": _text(intent.created_at),
    }


def canonical_state(spec_hash: str, recorded: RecordedFleet, observed: Observed) -> str:
    """A stable JSON text of what a plan is computed from (sorted, no volatile fields)."""
    document = {
        "version": FINGERPRINT_VERSION,
        "spec_hash": spec_hash,
        "fleet": recorded.fleet,
        "nodes": [_node_form(n) for n in sorted(recorded.nodes, key=lambda n: n.name)],
        "intents": [_intent_form(i) for i in sorted(recorded.pending_intents, key=lambda i: i.id)],
        "cost_overrides": sorted([c.key, c.scope, str(c.value)] for c in recorded.cost_overrides),
        "protected": sorted(recorded.protected_names),
        "servers": [_server_form(s) for s in sorted(observed.servers, key=lambda s: s.service_id)],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def fingerprint(spec_hash: str, recorded: RecordedFleet, observed: Observed) -> str:
    digest = hashlib.sha256(canonical_state(spec_hash, recorded, observed).encode("utf-8"))
    return "sha256:" + digest.hexdigest()


async def observe(
    cloud: CloudPort,
    store: StorePort,
    fleet: str,
    spec_hash: str,
    now: datetime,
    recorded_fleet: Callable[[], Awaitable[RecordedFleet]] | None = None,
) -> Snapshot:
    """One ``list_servers`` and one ``load_fleet``: the whole observation of a reconcile.
    ``recorded_fleet`` (the daemon's fleet in memory, brought up to date with the store)
    stands for ``load_fleet``; either is read after the listing, so that a server in the
    listing has its intent or record in what is read (a writer records before it creates)."""
    servers = await cloud.list_servers()
    recorded = await recorded_fleet() if recorded_fleet is not None else store.load_fleet(fleet)
    observed = Observed(servers=tuple(servers), observed_at=now)
    return Snapshot(observed=observed, recorded=recorded, spec_hash=spec_hash)
