"""Matching: observed servers x recorded nodes x pending intents -> the fleet's inventory.

The first step of planning (pure, like the rest of the core). It decides which servers are the
fleet's, joins each to its record, and sorts out what the records and the journal say about
servers that are not (or not yet) there:

- ``nodes``: servers of ours that exist now, each with its record (or none: to be adopted, or
  found by a pending create intent);
- ``pending``: pending create intents whose server is not observed (yet);
- ``settled``: pending create intents whose server is already recorded (close them);
- ``gone``: records whose server is gone (forget them);
- ``unmanaged``: servers that are not ours, listed and never touched;
- ``renamed``: records whose server (same service id) now carries a name that is not ours
  (renamed behind our back): kept, counted, never touched, never replaced;
- ``max_seq``: the highest sequence number used per region (names are never reused).

A server is ours only when its whole name parses as ``<fleet>-<region>-<seq>`` with a region
of the spec or of the store (a recorded node's or a pending intent's): fleet ``dz`` never owns
``dz-eu-dallas-001`` (fleet ``dz-eu``'s node) unless ``eu-dallas`` is one of its regions. A
server with the fleet's prefix that is not ours is reported (a non-blocking warning) and never
touched; a fleet that records nothing beside servers named like its nodes under another prefix
(a renamed fleet?) gets a warning too.

The fleet rules (``reconciler.core.planning``) and the per-node pipeline
(``reconciler.core.pipeline``) work on this inventory.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import attrgetter

from reconciler.core.addresses import parse_node_name, plain_region
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
from reconciler.core.plans import GuardWarning, UnmanagedServer
from specs.model import FleetSpec


@dataclass(slots=True)
class LiveNode:
    """A server we own that exists now (observed), with its record if any."""

    name: str
    region: str
    seq: int
    server: ObservedServer
    record: RecordedNode | None
    status: NodeStatus  # recorded status; PROVISIONING for a server about to be recorded
    plan: str | None  # the plan it runs now (matched by rid), else the recorded plan
    pool: str | None
    protected: bool
    unhealthy: bool
    condemned: str | None = None  # reason it must go whatever the count (ERROR, unhealthy)
    victim: bool = False
    adopting: bool = False  # ADOPT: the engine records it and brings it up itself
    brought_up: bool = False  # ADOPT or RESOLVE: the engine brings it up (rDNS, warming)
    #: pending create intents that named this server (RESOLVE found)
    intent_ids: tuple[int, ...] = ()

    @property
    def in_rotation(self) -> bool:
        return self.status.in_rotation and not self.unhealthy


@dataclass(slots=True)
class PendingCreate:
    """A pending create intent whose server is not observed."""

    intent: RecordedIntent  # the newest one for the name
    name: str
    region: str
    recreate: bool = False  # set by the fleet rules: the region still needs this node


@dataclass(frozen=True, slots=True)
class SettledCreate:
    """A pending create intent whose server is observed and already recorded."""

    name: str
    region: str
    intent_ids: tuple[int, ...]
    node: LiveNode


@dataclass(frozen=True, slots=True)
class GoneRecord:
    """A record whose server is not observed (and no pending create speaks for it)."""

    record: RecordedNode
    #: a pending destroy intent shows that we removed it ourselves
    destroyed_by_us: bool


@dataclass(slots=True)
class Inventory:
    servers: list[ObservedServer]  # one per service id, sorted by id
    nodes: list[LiveNode] = field(default_factory=list)
    pending: list[PendingCreate] = field(default_factory=list)
    settled: list[SettledCreate] = field(default_factory=list)
    gone: list[GoneRecord] = field(default_factory=list)
    unmanaged: list[UnmanagedServer] = field(default_factory=list)
    max_seq: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    warnings: list[GuardWarning] = field(default_factory=list)
    renamed: list[RenamedRecord] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RenamedRecord:
    """A record whose server (same service id) now carries a name that is not the fleet's."""

    record: RecordedNode
    server: ObservedServer


#: servers named in one ownership warning at most
_NAMED = 5


def stopped(server: ObservedServer) -> str | None:
    """Why a server cannot send although it exists (SHUTOFF, suspended, locked), else None:
    such a node is out of rotation (never put into it), counted unavailable, and replaced
    after a timeout."""
    if server.status is ServerStatus.SHUTOFF:
        return "SHUTOFF"
    if server.suspended:
        return "suspended"
    if server.locked:
        return "locked"
    return None


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_NAMED])
    if len(names) > _NAMED:
        shown += f" and {len(names) - _NAMED} more"
    return shown


def known_regions(spec: FleetSpec, recorded: RecordedFleet) -> frozenset[str]:
    """The regions whose servers may be the fleet's: the spec's, the recorded nodes' and the
    pending intents' (a region removed from the spec still owns its servers)."""
    regions = set(spec.regions)
    regions.update(n.region for n in recorded.nodes)
    for intent in recorded.pending_intents:
        region = intent.params.get("region")
        if region:
            regions.add(region)
    return frozenset(regions)


def plan_by_rid(spec: FleetSpec) -> dict[int, list[str]]:
    by_rid: dict[int, list[str]] = defaultdict(list)
    for name in sorted(spec.plans):
        by_rid[spec.plans[name].rid].append(name)
    return by_rid


def match_plan(
    by_rid: Mapping[int, list[str]], rid: int | None, *preferred: str | None
) -> str | None:
    """Our plan name for a Hostwinds rid: a preferred name if it has that rid, else the first."""
    if rid is None:
        return None
    names = by_rid.get(rid)
    if not names:
        return None
    for name in preferred:
        if name is not None and name in names:
            return name
    return names[0]


def protected_names(spec: FleetSpec, recorded: RecordedFleet) -> frozenset[str]:
    """Names protected by the spec (fleet-wide or per region) or by the store."""
    protected: set[str] = set(spec.disruption.protected) | set(recorded.protected_names)
    for region_spec in spec.regions.values():
        protected.update(region_spec.protected)
    return frozenset(protected)


class Matcher:
    """Builds the inventory of one plan. Used for one call (holds memoized look-ups)."""

    def __init__(
        self,
        spec: FleetSpec,
        observed: Observed,
        recorded: RecordedFleet,
        *,
        unhealthy: frozenset[str] = frozenset(),
    ) -> None:
        self.spec = spec
        self.recorded = recorded
        self.fleet = spec.name
        self.unhealthy = unhealthy
        self.by_rid = plan_by_rid(spec)
        self.protected = protected_names(spec, recorded)
        self.regions = known_regions(spec, recorded)
        self._parsed: dict[str, tuple[str, int] | None] = {}
        self._prefix = f"{self.fleet}-"
        #: known regions that are valid region names: a name ``<fleet>-<region>-<digits>``
        #: with one of them parses without the regular expression (``parse``)
        self._plain_regions = frozenset(r for r in self.regions if plain_region(r))
        #: (rid, recorded plan, region plan) -> match_plan's answer (``make_node``)
        self._matched: dict[tuple[int | None, str | None, str | None], str | None] = {}
        self._region_plans = {name: region.plan for name, region in spec.regions.items()}
        #: one entry per service id (a paginated listing may repeat one); deterministic choice
        unique: dict[int, ObservedServer] = {}
        for seen in observed.servers:
            kept = unique.get(seen.service_id)
            if kept is None or repr(seen) < repr(kept):
                unique[seen.service_id] = seen
        self.servers = [unique[sid] for sid in sorted(unique)]
        self.by_sid = unique

    def parse(self, name: str) -> tuple[str, int] | None:
        """``(region, seq)`` when ``name`` is one of this fleet's node names: it parses as
        ``<fleet>-<region>-<seq>`` and the region is a known one (memoized)."""
        memo = self._parsed
        if name in memo:
            return memo[name]
        parsed: tuple[str, int] | None = None
        if name.startswith(self._prefix):
            # fast path, the same answer as parse_node_name: the sequence is what follows the
            # last hyphen when it is all ASCII digits, the region what precedes it
            region, _, seq = name[len(self._prefix) :].rpartition("-")
            if region in self._plain_regions and len(seq) >= 3 and seq.isascii() and seq.isdigit():
                number = int(seq)
                parsed = (region, number) if number >= 1 else None
            else:
                parsed = parse_node_name(self.fleet, name)
                if parsed is not None and parsed[0] not in self.regions:
                    parsed = None
        memo[name] = parsed
        return parsed

    def look_alikes(self, inventory: Inventory) -> None:
        """A fleet the store records nothing of, beside servers named like its nodes under
        another prefix: a renamed fleet (``metadata.name``) would double the fleet silently."""
        if self.recorded.nodes or self.recorded.pending_intents or not self.spec.regions:
            return
        regions = "|".join(re.escape(r) for r in sorted(self.spec.regions, key=len, reverse=True))
        shape = re.compile(rf"^(?P<prefix>.+)-(?:{regions})-[0-9]{{3,}}$")
        by_prefix: dict[str, list[str]] = defaultdict(list)
        for seen in self.servers:
            if seen.status is ServerStatus.DELETED or self.parse(seen.name) is not None:
                continue
            found = shape.match(seen.name)
            if found is not None and found.group("prefix") != self.fleet:
                by_prefix[found.group("prefix")].append(seen.name)
        for prefix in sorted(by_prefix):
            names = by_prefix[prefix]
            inventory.warnings.append(
                GuardWarning(
                    "rename",
                    f"the store records no node of fleet {self.fleet}, but the account holds "
                    f"{len(names)} server(s) named like its nodes under the prefix {prefix}-: "
                    f"{_names(names)}. A renamed fleet? They are not ours and never touched; "
                    "new nodes are created beside them",
                    hint=f"if fleet {prefix} was renamed to {self.fleet}, put metadata.name "
                    f"back to {prefix!r}: a fleet is never renamed in place",
                )
            )

    def make_node(
        self, name: str, region: str, server: ObservedServer, record: RecordedNode | None
    ) -> LiveNode:
        parsed = self._parsed[name] if name in self._parsed else self.parse(name)
        seq = parsed[1] if parsed is not None else 0
        region_plan = self._region_plans.get(region)
        recorded_plan = record.plan if record is not None else None
        key = (server.plan_rid, recorded_plan, region_plan)
        try:
            matched = self._matched[key]
        except KeyError:
            matched = self._matched[key] = match_plan(self.by_rid, *key)
        current = matched if matched is not None else recorded_plan
        if server.plan_rid is not None and matched is None:
            current = None
        # stopped, suspended or locked: cannot send, never counted in rotation
        halted = stopped(server) is not None
        if record is None:
            return LiveNode(
                name,
                region,
                seq,
                server,
                None,
                NodeStatus.PROVISIONING,
                current,
                None,
                name in self.protected,
                halted or name in self.unhealthy,
            )
        return LiveNode(
            name,
            region,
            seq,
            server,
            record,
            record.status,
            current,
            record.pool,
            name in self.protected or record.protected,
            halted or name in self.unhealthy or record.status is NodeStatus.UNHEALTHY,
        )

    def run(self) -> Inventory:
        fleet = self.fleet
        inventory = Inventory(servers=self.servers)
        max_seq = inventory.max_seq

        # 1. split the observation: ours (name shaped like ours) vs unmanaged (never touched)
        ours_by_sid: dict[int, ObservedServer] = {}  # in service id order
        prefixed: list[str] = []  # the fleet's prefix, not its node name: reported
        parse = self.parse
        for seen in self.servers:
            parsed = parse(seen.name)
            if parsed is None:
                if seen.status is not ServerStatus.DELETED:
                    inventory.unmanaged.append(
                        UnmanagedServer(seen.service_id, seen.name, seen.location_id)
                    )
                    if seen.name.startswith(f"{fleet}-"):
                        prefixed.append(f"{seen.name} (#{seen.service_id})")
                continue
            named, seq = parsed
            if seq > max_seq[named]:
                max_seq[named] = seq
            if seen.status is ServerStatus.DELETED:
                continue
            ours_by_sid[seen.service_id] = seen
        if prefixed:
            inventory.warnings.append(
                GuardWarning(
                    "not_ours",
                    f"{len(prefixed)} server(s) carry the prefix {fleet}- but are not nodes of "
                    f"fleet {fleet} (not <fleet>-<region>-<seq> with a region of the spec or "
                    f"the store): {_names(prefixed)}; never touched",
                    hint="another fleet's servers (e.g. a fleet named "
                    f"{fleet}-<something>) or servers made by hand; rename or remove them by "
                    "hand if they should not be there",
                )
            )
        self.look_alikes(inventory)

        # names are never reused: every recorded name and every intent counts for the sequence
        for record in self.recorded.nodes:
            parsed = parse(record.name)
            if parsed is not None and parsed[1] > max_seq[parsed[0]]:
                max_seq[parsed[0]] = parsed[1]
        create_intents: dict[str, list[RecordedIntent]] = defaultdict(list)
        destroy_targets: set[str] = set()
        for intent in self.recorded.pending_intents:
            if intent.status is not IntentStatus.PENDING:
                continue
            parsed = self.parse(intent.target)
            if parsed is not None:
                max_seq[parsed[0]] = max(max_seq[parsed[0]], parsed[1])
            if intent.kind == "create":
                create_intents[intent.target].append(intent)
            elif intent.kind == "destroy":
                destroy_targets.add(intent.target)

        claimed: set[int] = set()
        nodes = inventory.nodes
        taken: set[str] = set()  # names held by a live record or a server about to be recorded

        # 2. records: match to servers by service id (or by name while the id is unknown)
        live_records = sorted(
            (r for r in self.recorded.nodes if r.status is not NodeStatus.DECOMMISSIONED),
            key=attrgetter("name", "id"),
        )
        # servers by name, each name's in service id order (only records without a service
        # id and pending create intents look servers up by name)
        ours_by_name: dict[str, list[ObservedServer]] = defaultdict(list)
        if create_intents or any(r.service_id is None for r in live_records):
            for seen in ours_by_sid.values():
                ours_by_name[seen.name].append(seen)
        for record in live_records:
            server: ObservedServer | None = None
            if record.service_id is not None:
                candidate = ours_by_sid.get(record.service_id)
                # the id must still carry the node's name: never act on another node's server
                if (
                    candidate is not None
                    and candidate.service_id not in claimed
                    and candidate.name == record.name
                ):
                    server = candidate
                elif (
                    candidate is None
                    and (kept := self.by_sid.get(record.service_id)) is not None
                    and kept.status is not ServerStatus.DELETED
                    and self.parse(kept.name) is None
                ):
                    # renamed behind our back to a name that is not ours: not gone (the
                    # server still runs and is billed); kept, never touched, never replaced
                    claimed.add(kept.service_id)
                    taken.add(record.name)
                    inventory.renamed.append(RenamedRecord(record, kept))
                    inventory.warnings.append(
                        GuardWarning(
                            "renamed",
                            f"{record.name}: its server {kept.service_id} is now named "
                            f"{kept.name!r}, not a node name of fleet {fleet} (renamed behind "
                            "our back?): kept as it is, counted, never touched or replaced",
                            hint=f"rename the server back to {record.name}, or release the "
                            f"node (reconcile node release {record.name}) if it is no longer "
                            "the fleet's",
                        )
                    )
                    continue
            else:
                for candidate in ours_by_name.get(record.name, ()):
                    if candidate.service_id not in claimed:
                        server = candidate
                        break
            if server is None:
                if record.service_id is None and record.name in create_intents:
                    continue  # the pending create intent speaks for it (RESOLVE)
                inventory.gone.append(GoneRecord(record, record.name in destroy_targets))
                continue
            claimed.add(server.service_id)
            taken.add(record.name)
            nodes.append(self.make_node(record.name, record.region, server, record))

        # 3. pending create intents: look the name up first (design §3)
        recorded_nodes = {n.name: n for n in nodes} if create_intents else {}
        for target in sorted(create_intents):
            intents = sorted(create_intents[target], key=lambda i: i.id)
            newest = intents[-1]
            parsed = self.parse(target)
            region = parsed[0] if parsed is not None else newest.params.get("region")
            if region is None:
                inventory.warnings.append(
                    GuardWarning(
                        "intent",
                        f"pending create intent {newest.id} targets {target!r}, which is not a "
                        f"node name of fleet {fleet}: resolve it by hand",
                    )
                )
                continue
            ids = tuple(i.id for i in intents)
            found = next(
                (s for s in ours_by_name.get(target, ()) if s.service_id not in claimed), None
            )
            record_node = recorded_nodes.get(target)
            if record_node is not None:
                inventory.settled.append(SettledCreate(target, region, ids, record_node))
            elif found is not None:
                claimed.add(found.service_id)
                taken.add(target)
                node = self.make_node(target, region, found, None)
                node.brought_up = True
                if node.pool is None:
                    node.pool = newest.params.get("pool") or None
                node.intent_ids = ids
                nodes.append(node)
            else:
                inventory.pending.append(PendingCreate(newest, target, region))

        # 4. servers of ours the store does not know: adopt (or report a duplicate name)
        # (by name, then service id; the claimed ones are skipped)
        unclaimed = [seen for sid, seen in ours_by_sid.items() if sid not in claimed]
        unclaimed.sort(key=attrgetter("name", "service_id"))
        for server in unclaimed:
            name = server.name
            parsed = parse(name)
            assert parsed is not None
            if name in taken:
                inventory.warnings.append(
                    GuardWarning(
                        "duplicate_name",
                        f"server {server.service_id} is named {name} like another node of "
                        "the fleet: not adopted, never touched; remove or rename it by hand",
                    )
                )
                continue
            claimed.add(server.service_id)
            taken.add(name)
            node = self.make_node(name, parsed[0], server, None)
            node.adopting = True
            node.brought_up = True
            nodes.append(node)
        return inventory


def match(
    spec: FleetSpec,
    observed: Observed,
    recorded: RecordedFleet,
    *,
    unhealthy: frozenset[str] = frozenset(),
) -> Inventory:
    """The inventory of ``spec``'s fleet in ``observed`` x ``recorded`` (see the module doc)."""
    return Matcher(spec, observed, recorded, unhealthy=unhealthy).run()
