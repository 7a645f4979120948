"""The planner: a pure function of (desired, observed, recorded, now, options) -> Plan.

No I/O, no clock, no logging, no randomness: the same inputs give the same plan, byte for byte.
The rules are described in docs/planning.md; the comments here point at them by name.

Planning is three named units: ``core.matching`` (observed x recorded x intents -> the
inventory), this module's fleet rules (counts, victims, guards, budgets, creates, the
summary) and ``core.pipeline`` (each node's next step into service).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from reconciler.core.addresses import node_hostname, node_name
from reconciler.core.billing import paid_until, unused_paid
from reconciler.core.collector import collector_paused
from reconciler.core.costs import CostResolver, cents, price_warnings, sort_constants
from reconciler.core.fleet import (
    IntentStatus,
    NodeStatus,
    Observed,
    PausedBy,
    PricePlan,
    RecordedFleet,
    RecordedIntent,
    RecordedNode,
    ServerStatus,
)
from reconciler.core.lifecycle import (
    BREAKER_HINT,
    DEADLINE_REASON,
    SLOT_HINT,
    breaker_open,
    held_by_operator,
    hold,
    may_hold,
    provisioning_overdue,
    slot_failed,
)
from reconciler.core.matching import (
    LiveNode,
    Matcher,
    PendingCreate,
    SettledCreate,
    match_plan,
    stopped,
)
from reconciler.core.pipeline import (
    StepContext,
    may_step,
    next_changes,
    node_change,
    pipeline_for,
    rotation_status,
)
from reconciler.core.plans import (
    Action,
    AppliedConstant,
    Change,
    GuardWarning,
    Plan,
    PlanSummary,
    Resolution,
    UnmanagedServer,
)
from reconciler.core.upkeep import upkeep
from specs.durations import format_duration
from specs.model import FleetSpec, PoolStatus

#: order of the changes of one address: the order the engine must apply them in
ACTION_ORDER: dict[Action, int] = {
    action: index
    for index, action in enumerate(
        (
            Action.FORGET,
            Action.RESOLVE,
            Action.ADOPT,
            Action.REPAIR,
            Action.PAUSE,
            Action.BOOT,
            Action.RESUME,
            Action.RESIZE,
            Action.SET_RDNS,
            Action.PROVISION,
            Action.ACTIVATE,
            Action.DRAIN,
            Action.DESTROY,
            Action.CREATE,
        )
    )
}

MASS_DESTROY_HINT = "re-run with --allow-mass-destroy if this is intended"
#: statuses that mean a recorded node is out of service (for the disruption budget)
_OUT_OF_SERVICE = frozenset({NodeStatus.DRAINING, NodeStatus.UNHEALTHY, NodeStatus.MAINTENANCE})


@dataclass(frozen=True, slots=True)
class PlanOptions:
    """Inputs to the planner that come from outside the spec and the two states."""

    spec_hash: str = ""
    allow_mass_destroy: bool = False
    #: per-region counts decided by the autoscaler; default: the fixed count, or min for
    #: {min, max}; always clamped to [min, max]
    desired_counts: Mapping[str, int] | None = None
    #: node names the health evaluation found unhealthy (daemon)
    unhealthy: frozenset[str] = frozenset()
    #: unhealthy past the grace period: destroy + replace
    replace_unhealthy: frozenset[str] = frozenset()
    #: draining nodes whose queue is known to be empty (from heartbeats)
    queue_empty: frozenset[str] = frozenset()
    #: False (CLI runs): a draining node with no heartbeat data counts as drained
    metrics_known: bool = False
    #: per-region reason replacing the default create/destroy reason (autoscaler decisions,
    #: e.g. "dallas: 3 -> 4 nodes, utilization 0.86 >= 0.80")
    scaling_reasons: Mapping[str, str] | None = None
    #: node name -> plan name the node should run instead of its region's plan (vertical
    #: scaling); names of plans absent from the spec are ignored
    node_plans: Mapping[str, str] | None = None
    #: decisions recorded with their inputs, copied to Plan.notes first
    notes: tuple[str, ...] = ()
    #: reputation (daemon): node name -> why it must be out of the sending rotation now
    #: (listed with a pause action, quarantined). A node in rotation is paused (status
    #: ``paused``); a ``paused`` node not in the map returns to rotation. None (CLI runs, no
    #: assessment yet): reputation decides nothing.
    reputation_paused: Mapping[str, str] | None = None
    #: a node's first heartbeat is part of its verification (the daemon receives them)
    require_heartbeat: bool = False
    #: per region: nodes destroyed for missing their provisioning deadline within the
    #: circuit breaker's window (from the journal)
    provisioning_failures: Mapping[str, int] | None = None
    #: re-creates allowed per slot after a create was sent and its server never appeared
    #: (default one retry); then the slot fails and waits for `reconcile node retry NAME`
    create_retries: int = 1
    #: node name -> the bootstrap bundle version (content hash) the node should run now
    #: (from the engine); a node in service on another version is re-bootstrapped, rolling
    #: within the disruption budget (core.upkeep). None: not compared.
    bundle_versions: Mapping[str, str] | None = None
    #: the most nodes the fleet had at once within ``disruption.mass_delete_window`` (the
    #: store's node history), asked only when the plan scales down: the mass-delete guard
    #: judges a scale-down against it too (a shrink in steps is still a mass delete). None:
    #: the current size only
    recent_fleet_size: Callable[[], int] | None = None
    #: the provider's price list (``get_price_list``, cached by the caller): spec plans whose
    #: ``monthly_price`` differs get a warning with both figures. None: not checked
    price_list: tuple[PricePlan, ...] | None = None


@dataclass(slots=True)
class _Builder:
    changes: list[Change] = field(default_factory=list)
    warnings: list[GuardWarning] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, change: Change) -> None:
        self.changes.append(change)

    def warn(
        self,
        guard: str,
        message: str,
        *,
        blocking: bool = False,
        hint: str | None = None,
        subject: str | None = None,
    ) -> None:
        self.warnings.append(GuardWarning(guard, message, blocking, hint, subject))


def _never_served(node: LiveNode) -> bool:
    """A server in ERROR, or a provisioning node condemned (its deadline passed)."""
    return node.server.status is ServerStatus.ERROR or (
        node.status is NodeStatus.PROVISIONING and node.condemned is not None
    )


def create_attempt(params: Mapping[str, str]) -> int:
    """Which attempt of its slot a create intent is (``params["attempt"]``, 1 when absent)."""
    raw = params.get("attempt", "1")
    return int(raw) if raw.isdigit() and 0 < len(raw) < 4 else 1


def desired_count(spec: FleetSpec, region: str, options: PlanOptions) -> int:
    """The node count the plan aims at for ``region`` (0 for a region not in the spec)."""
    region_spec = spec.regions.get(region)
    if region_spec is None:
        return 0
    wanted = region_spec.min_nodes
    if options.desired_counts is not None and region in options.desired_counts:
        wanted = options.desired_counts[region]
    return max(region_spec.min_nodes, min(region_spec.max_nodes, wanted))


def plan(
    spec: FleetSpec,
    observed: Observed,
    recorded: RecordedFleet,
    now: datetime,
    options: PlanOptions = PlanOptions(),
) -> Plan:
    """Compute the plan that brings ``observed``/``recorded`` to ``spec`` (see docs/planning.md)."""
    with collector_paused():
        return _Planner(spec, observed, recorded, now, options).run()


class _Planner:
    """The fleet rules of one plan, on the inventory built by ``core.matching``: removals and
    guards, the nodes that stay (health, resize, the per-node pipeline), creates, summary."""

    def __init__(
        self,
        spec: FleetSpec,
        observed: Observed,
        recorded: RecordedFleet,
        now: datetime,
        options: PlanOptions,
    ) -> None:
        self.spec = spec
        self.observed = observed
        self.recorded = recorded
        self.now = now
        self.options = options
        self.fleet = spec.name
        self.costs = CostResolver(spec, recorded.cost_overrides)
        self.out = _Builder()
        self.used_constants: set[AppliedConstant] = set()
        self.matcher = Matcher(spec, observed, recorded, unhealthy=options.unhealthy)
        self.by_rid = self.matcher.by_rid
        self.parse = self.matcher.parse
        self.servers = self.matcher.servers
        self.steps = StepContext(
            spec, now, options.unhealthy, require_heartbeat=options.require_heartbeat
        )
        #: new disruptions of in-rotation nodes this plan may still start (set by removals)
        self.disruption_left = 0
        #: the victims of scale-downs, region by region (sorted), each region's in
        #: scale-down order (set with ``LiveNode.victim``)
        self.victims: list[LiveNode] = []

    # --- helpers -------------------------------------------------------------------------

    def cost(self, plan_name: str | None, pool: str | None) -> Decimal:
        value, constants = self.costs.node(plan_name, pool)
        self.used_constants.update(constants)
        # per node in cents, as recorded: plan totals and status sums agree to the cent
        return cents(value)

    def rid(self, plan_name: str | None) -> int | None:
        plan_spec = self.spec.plans.get(plan_name) if plan_name is not None else None
        return plan_spec.rid if plan_spec is not None else None

    def target_plan(self, node: LiveNode) -> str:
        overrides = self.options.node_plans
        if overrides is not None:
            wanted = overrides.get(node.name)
            if wanted is not None and wanted in self.spec.plans:
                return wanted
        region = self.spec.regions[node.region]
        if node.plan is not None and node.plan in region.vertical_plans:
            # a vertical scale-up the spec allows (made by the daemon): kept, so a plain
            # `reconcile` run never undoes it
            return node.plan
        return region.plan

    def region_reason(self, region: str, present: int, desired: int) -> str:
        reasons = self.options.scaling_reasons
        if reasons is not None and region in reasons:
            return reasons[region]
        if region not in self.spec.regions:
            return f"region {region} is not in the spec"
        noun = "node" if present == 1 else "nodes"
        return f"{region}: {present} {noun}, spec wants {desired}"

    # --- the plan ------------------------------------------------------------------------

    def run(self) -> Plan:
        spec, options, out = self.spec, self.options, self.out

        # 1-4. the inventory: ours vs unmanaged, records x servers, intents (core.matching)
        inventory = self.matcher.run()
        out.warnings.extend(inventory.warnings)
        nodes = inventory.nodes
        for gone in inventory.gone:
            self.forget(gone.record, gone.destroyed_by_us)
        for settled in inventory.settled:
            self.settle(settled)

        # 5-7, one pass over the nodes: records that differ from the cloud (drift), condemned
        # nodes, and the nodes of each region
        by_region: dict[str, list[LiveNode]] = defaultdict(list)
        deadlines = spec.provisioning is not None
        replace_after = spec.health.replace_after
        for node in nodes:
            record, server = node.record, node.server
            # 5. records that differ from the cloud (drift): repair the record
            if record is not None and (
                # what repair() looks at: it changes nothing when none of these holds
                record.service_id is None
                or (server.main_ip is not None and server.main_ip != record.ip_address)
                or (server.plan_rid is not None and node.plan != record.plan)
            ):
                self.repair(node)
            # 6. condemned nodes: failed builds, unhealthy past the grace period
            if server.status is ServerStatus.ERROR:
                node.condemned = (
                    "build failed (server in ERROR)"
                    if node.status is NodeStatus.PROVISIONING
                    else "server in ERROR state"
                )
            elif node.name in options.replace_unhealthy and not held_by_operator(record):
                node.condemned = "unhealthy past the grace period: replace it"
            elif (
                node.status is NodeStatus.UNHEALTHY
                and (halted := stopped(server)) is not None
                # a locked server cannot be terminated (Hostwinds refuses): never condemned
                and not server.locked
                and record is not None
                and record.status_changed_at is not None
                and self.now - record.status_changed_at >= replace_after
                and not held_by_operator(record)
            ):
                node.condemned = f"server {halted} for longer than health.replace_after: replace it"
            elif node.status is NodeStatus.PROVISIONING and deadlines:
                # (a provisioning deadline runs only then)
                if (failed := slot_failed(node, spec, self.now)) is not None:
                    out.warn("slot_failed", failed, hint=SLOT_HINT, subject=node.name)
                elif (late := provisioning_overdue(node, spec, self.now)) is not None:
                    node.condemned = late
            # 7. per region: victims of a scale-down, and missing nodes (below)
            by_region[node.region].append(node)
        pending_by_region: dict[str, list[PendingCreate]] = defaultdict(list)
        for item in inventory.pending:
            pending_by_region[item.region].append(item)
        renamed_by_region: dict[str, int] = defaultdict(int)
        for renamed in inventory.renamed:
            renamed_by_region[renamed.record.region] += 1
        regions = sorted(
            set(spec.regions) | set(by_region) | set(pending_by_region) | set(renamed_by_region)
        )
        missing: dict[str, int] = {}
        present_count: dict[str, int] = {}
        desired: dict[str, int] = {}
        for region in regions:
            wanted = desired_count(spec, region, options)
            desired[region] = wanted
            live = [n for n in by_region.get(region, ()) if n.condemned is None]
            waiting = pending_by_region.get(region, [])
            held = renamed_by_region.get(region, 0)
            present_count[region] = len(live) + len(waiting) + held
            # a server discovered unrecorded this run (no record, no intent of ours) is
            # adopted and never destroyed in the run that discovers it: it counts as present
            # (no create for it) but no surplus falls on it or because of it
            known = [n for n in live if not n.adopting]
            surplus = len(known) - wanted
            if len(known) < len(live) and len(live) - wanted > max(0, surplus):
                out.notes.append(
                    f"{region}: {len(live) - len(known)} unrecorded server(s) adopted this run; "
                    "any scale-down they cause waits for the next run"
                )
            if surplus > 0:
                candidates = sorted((n for n in known if not n.protected), key=self.victim_key)
                if self.spec.disruption.billing_aware:
                    self.billing_note(region, candidates, surplus)
                    candidates.sort(key=self.billing_victim_key)
                chosen = candidates[:surplus]
                for node in chosen:
                    node.victim = True
                if self.spec.disruption.billing_aware:
                    chosen = sorted((n for n in known if n.victim), key=self.victim_key)
                # the region's victims in scale-down order (victim_key; ties in node order)
                self.victims.extend(chosen)
                kept_protected = surplus - min(surplus, len(candidates))
                if kept_protected > 0:
                    out.warn(
                        "protected",
                        f"{region}: {kept_protected} protected node(s) kept although the spec "
                        f"wants {wanted} (protected nodes are never destroyed)",
                    )
            slots = max(0, wanted - len(live) - held)
            for index, item in enumerate(waiting):
                item.recreate = index < slots and region in spec.regions
            missing[region] = max(0, wanted - len(live) - len(waiting) - held)

        for item in inventory.pending:
            self.resolve_pending(item)
        for node in nodes:
            if node.adopting or node.intent_ids:
                self.adopt(node)

        # 8. removals: guards decide what happens this run
        self.removals(nodes, desired, present_count)

        # 9. nodes that stay: health, resize, the per-node pipeline (core.pipeline)
        self.keepers(nodes)

        # 10. creates
        self.creates(
            regions, missing, desired, present_count, nodes, inventory.max_seq, inventory.pending
        )

        # 11. intents a cut-short run left pending on nodes this plan does nothing else to
        self.interrupted()

        return self.finish(nodes, inventory.unmanaged)

    # --- steps ---------------------------------------------------------------------------

    def settle(self, settled: SettledCreate) -> None:
        node = settled.node
        self.out.add(
            Change(
                Action.RESOLVE,
                settled.name,
                settled.region,
                f"pending create intent: server {node.server.service_id} is "
                "already recorded; close the intent",
                after={
                    "found": "yes",
                    "recorded": "yes",
                    "intent_ids": ",".join(str(i) for i in settled.intent_ids),
                },
                service_id=node.server.service_id,
                plan=node.plan,
                location_id=node.server.location_id,
                intent_ids=settled.intent_ids,
                resolution=Resolution.RECORDED,
            )
        )

    def interrupted(self) -> None:
        """RESOLVE/INTERRUPTED: close the intents other than creates that a run killed between
        an intent's begin and its finish left pending, on each node this plan has no other
        change for. Such a pending intent is work left, never "no changes": what it began is
        settled now (the node is as the spec wants it, or gone), so closing it is all that is
        left. A node with other changes needs none: the engine closes its interrupted intents
        when it runs them (and redoes what its records say is not done). Pending creates are
        resolved by looking their name up (``resolve_pending``, design §3)."""
        planned = {c.address for c in self.out.changes}
        left: dict[str, list[RecordedIntent]] = defaultdict(list)
        for intent in self.recorded.pending_intents:
            if (
                intent.kind != "create"
                and intent.status is IntentStatus.PENDING
                and intent.target not in planned
            ):
                left[intent.target].append(intent)
        records = {n.name: n for n in self.recorded.nodes}
        for target in sorted(left):
            intents = sorted(left[target], key=lambda i: i.id)
            record = records.get(target)
            parsed = self.parse(target)
            region = (
                record.region
                if record is not None
                else intents[0].params.get("region") or (parsed[0] if parsed else "-")
            )
            kinds = ", ".join(sorted({i.kind for i in intents}))
            ids = ",".join(str(i.id) for i in intents)
            settled = (
                "the node needs nothing else"
                if record is not None
                else "the node has no open record and no server left"
            )
            self.out.add(
                Change(
                    Action.RESOLVE,
                    target,
                    region,
                    f"pending {kinds} intent(s) of a run cut short; {settled}: close them",
                    after={"interrupted": kinds, "intent_ids": ids},
                    service_id=record.service_id if record is not None else None,
                    intent_ids=tuple(i.id for i in intents),
                    resolution=Resolution.INTERRUPTED,
                )
            )

    def adopt(self, node: LiveNode) -> None:
        """ADOPT an unrecorded server, or RESOLVE the pending intent that named it.

        A server that this plan also destroys is adopted with ``after.status = "draining"``
        (recorded out of rotation, not brought up) even when an intent named it: the engine's
        ADOPT closes that intent as well.
        """
        server = node.server
        leaving = node.victim or node.condemned is not None or node.region not in self.spec.regions
        ids = ",".join(str(i) for i in node.intent_ids)
        if node.intent_ids and not leaving:
            self.out.add(
                Change(
                    Action.RESOLVE,
                    node.name,
                    node.region,
                    f"pending create intent: server {server.service_id} with this name is "
                    "observed; adopt it",
                    after={"found": "yes", "recorded": "no", "intent_ids": ids},
                    service_id=server.service_id,
                    plan=node.plan,
                    pool=node.pool,
                    location_id=server.location_id,
                    intent_ids=node.intent_ids,
                    resolution=Resolution.FOUND,
                    hostname=node_hostname(self.spec, node.name),
                )
            )
            return
        after = {"service_id": str(server.service_id), "plan": node.plan or "?"}
        reason = (
            f"server {server.service_id} carries the fleet's name but is not recorded "
            "(a crash between create and record?)"
        )
        if node.intent_ids:
            after["intent_ids"] = ids
            reason = (
                f"pending create intent: server {server.service_id} with this name is observed; "
                "adopt it out of rotation"
            )
        status: NodeStatus | None = None
        if leaving:
            # about to be destroyed: record it out of rotation, do not bring it up
            status = NodeStatus.DRAINING
            after["status"] = status.value
        self.out.add(
            Change(
                Action.ADOPT,
                node.name,
                node.region,
                reason,
                after=after,
                service_id=server.service_id,
                plan=node.plan,
                pool=node.pool,
                location_id=server.location_id,
                status=status,
                intent_ids=node.intent_ids,
                hostname=node_hostname(self.spec, node.name),
                ip=server.main_ip,
            )
        )

    def forget(self, record: RecordedNode, ours: bool) -> None:
        if record.service_id is None:
            reason = "record never got a server and no create is pending: close it"
            drift = False
        elif ours:
            reason = f"server {record.service_id} is gone after our destroy: close the record"
            drift = False
        else:
            reason = f"server {record.service_id} is gone (deleted behind our back)"
            drift = True
        self.out.add(
            Change(
                Action.FORGET,
                record.name,
                record.region,
                reason,
                before={"status": record.status.value},
                after={"status": NodeStatus.DECOMMISSIONED.value},
                service_id=record.service_id,
                plan=record.plan,
                pool=record.pool,
                drift=drift,
                status=NodeStatus.DECOMMISSIONED,
            )
        )

    def repair(self, node: LiveNode) -> None:
        record = node.record
        assert record is not None
        server = node.server
        before: dict[str, str] = {}
        after: dict[str, str] = {}
        drift = False
        if record.service_id is None:
            before["service_id"] = "-"
            after["service_id"] = str(server.service_id)
        pipeline_pending = record.status is NodeStatus.PROVISIONING and not record.rdns_done
        if server.main_ip is not None and server.main_ip != record.ip_address:
            if record.ip_address is not None:
                drift = True
                before["ip"] = record.ip_address
                after["ip"] = server.main_ip
            elif not pipeline_pending:
                before["ip"] = "-"
                after["ip"] = server.main_ip
        resizing = server.status in (ServerStatus.RESIZE, ServerStatus.RESIZED)
        if server.plan_rid is not None and not resizing and node.plan != record.plan:
            recorded_spec = self.spec.plans.get(record.plan)
            if recorded_spec is None or recorded_spec.rid != server.plan_rid:
                drift = True
                before["plan"] = record.plan
                after["plan"] = node.plan if node.plan is not None else f"rid {server.plan_rid}"
        if not after:
            return
        what = "resized or re-addressed behind our back" if drift else "incomplete"
        self.out.add(
            Change(
                Action.REPAIR,
                node.name,
                node.region,
                f"record differs from the cloud ({what}): correct the record",
                before=before,
                after=after,
                service_id=server.service_id,
                plan=node.plan,
                pool=node.pool,
                location_id=server.location_id,
                drift=drift,
                ip=server.main_ip,
            )
        )

    def victim_key(self, node: LiveNode) -> tuple[int, int, int, int, timedelta, int, str]:
        """Scale-down order: draining, unhealthy, paused, least warmed, highest sequence."""
        record = node.record
        started = record.warmup_started_at if record is not None else None
        # not warming yet (provisioning) first, then the latest warmup start
        warmed = timedelta(0) if started is None else self.now - started
        return (
            0 if node.status is NodeStatus.DRAINING else 1,
            0 if node.unhealthy else 1,
            0 if node.status is NodeStatus.PAUSED else 1,
            0 if started is None else 1,
            warmed,
            -node.seq,
            node.name,
        )

    def paid_left(self, node: LiveNode) -> timedelta:
        """How long the node's paid month still runs (unknown creation: as long as can be)."""
        created = node.record.created_at if node.record is not None else None
        if created is None:
            return timedelta.max
        return paid_until(created, self.now) - self.now

    def billing_victim_key(
        self, node: LiveNode
    ) -> tuple[int, int, int, int, timedelta, timedelta, int, str]:
        """``victim_key`` with, among nodes in the same state, health and warmup stage, the
        one whose paid month ends soonest first (``disruption.billing_aware``)."""
        draining, unhealthy, paused, provisioning, warmed, seq, name = self.victim_key(node)
        return (draining, unhealthy, paused, provisioning, self.paid_left(node), warmed, seq, name)

    def unused_paid(self, node: LiveNode) -> Decimal:
        created = node.record.created_at if node.record is not None else None
        if created is None:
            return Decimal(0)
        monthly = self.costs.node(node.plan, node.pool)[0]
        return unused_paid(created, self.now, monthly, self.spec.costs.hours_per_month)

    def billing_note(self, region: str, ranked: list[LiveNode], surplus: int) -> None:
        """Say which nodes the billing-aware order picks instead of the default one, and
        how much paid time that keeps from being thrown away."""
        default = ranked[:surplus]
        chosen = sorted(ranked, key=self.billing_victim_key)[:surplus]
        if {n.name for n in default} == {n.name for n in chosen}:
            return
        lost_default = sum((self.unused_paid(n) for n in default), Decimal(0))
        lost_chosen = sum((self.unused_paid(n) for n in chosen), Decimal(0))
        saving = cents(lost_default - lost_chosen)
        if saving <= 0:
            return

        def named(nodes: list[LiveNode]) -> str:
            parts = []
            for n in nodes:
                created = n.record.created_at if n.record is not None else None
                until = paid_until(created, self.now).date().isoformat() if created else "?"
                parts.append(f"{n.name} (paid until {until})")
            return ", ".join(parts)

        picked = [n for n in chosen if n not in default]
        spared = [n for n in default if n not in chosen]
        self.out.notes.append(
            f"{region}: billing-aware scale-down destroys {named(picked)} instead of "
            f"{named(spared)}: saves ${saving} of paid time "
            f"(${cents(lost_chosen)} unused instead of ${cents(lost_default)})"
        )

    def grace_expired(self, item: PendingCreate) -> bool:
        created = item.intent.created_at
        return created is None or self.now >= created + self.spec.reconcile.adoption_grace

    def resolve_pending(self, item: PendingCreate) -> None:
        intent = item.intent
        grace = self.spec.reconcile.adoption_grace
        created = intent.created_at
        expired = created is None or self.now >= created + grace
        ids = str(intent.id)
        resolution = Resolution.RECREATE if item.recreate else Resolution.ABANDON
        grace_until = created + grace if created is not None else None
        after = {
            "found": "no",
            "intent_ids": ids,
            "recreate": "yes" if item.recreate else "no",
        }
        attempt = create_attempt(intent.params)
        exhausted = item.recreate and attempt > max(0, self.options.create_retries)
        if not expired and created is not None:
            resolution = Resolution.WAIT
            after["grace_until"] = (created + grace).isoformat()
            reason = (
                "pending create intent: no server with this name yet; wait for it until "
                f"{(created + grace).isoformat()} (adoption grace)"
            )
        elif exhausted:
            resolution = Resolution.EXHAUSTED
            after["recreate"] = "no"
            after["attempts"] = str(attempt)
            reason = (
                f"create sent {attempt} time(s) and the server never appeared: the slot "
                "failed; it holds its place until an operator decides"
            )
            self.out.warn(
                "create_failed",
                f"{item.name}: create sent {attempt} time(s), the server never appeared "
                f"(reconcile.create_retries = {self.options.create_retries}): the slot "
                "failed and nothing more is bought for it",
                hint=f"check the Hostwinds account for a server of this name (orders, "
                f"invoices), then run `reconcile node retry {item.name}` to try again",
                subject=item.name,
            )
        elif item.recreate:
            reason = (
                "pending create intent: no server with this name after the adoption grace; "
                f"fail the intent and create it anew (attempt {attempt + 1} of "
                f"{1 + max(0, self.options.create_retries)})"
            )
        else:
            reason = (
                "pending create intent: no server with this name after the adoption grace; "
                "fail the intent (the spec no longer needs this node)"
            )
        plan_name = intent.params.get("plan")
        region_spec = self.spec.regions.get(item.region)
        if region_spec is not None and (plan_name is None or plan_name not in self.spec.plans):
            plan_name = region_spec.plan
        pool = intent.params.get("pool") or None
        location = region_spec.location_id if region_spec is not None else None
        # a create in flight (WAIT) is bought already: it counts in the cost before (finish);
        # a re-create buys anew
        delta = self.cost(plan_name, pool) if resolution is Resolution.RECREATE else Decimal(0)
        self.out.add(
            Change(
                Action.RESOLVE,
                item.name,
                item.region,
                reason,
                after=after,
                monthly_cost_delta=cents(delta),
                plan=plan_name,
                pool=pool,
                location_id=location,
                intent_ids=(intent.id,),
                resolution=resolution,
                grace_until=grace_until,
                rid=self.rid(plan_name),
                hostname=node_hostname(self.spec, item.name),
            )
        )

    def removals(
        self, nodes: list[LiveNode], desired: Mapping[str, int], present: Mapping[str, int]
    ) -> None:
        options, spec, out = self.options, self.spec, self.out
        disruption = spec.disruption
        # one pass: protection (never destroyed, whatever the reason), the condemned and the
        # victims, the fleet's size for the mass-delete guard, the nodes unavailable now
        condemned: list[LiveNode] = []
        victims = self.victims  # by region, then victim_key
        fleet_size = 0
        unavailable = 0
        for node in nodes:
            if node.condemned is not None:
                if node.protected:
                    out.warn(
                        "protected",
                        f"{node.name} is protected: not destroyed although {node.condemned}",
                    )
                elif node.adopting:
                    out.notes.append(
                        f"{node.name}: adopted this run although {node.condemned}; never "
                        "destroyed in the run that discovers it (the next run decides)"
                    )
                else:
                    condemned.append(node)
            if not _never_served(node):
                fleet_size += 1
            if (
                node.status in _OUT_OF_SERVICE
                or node.unhealthy
                or (node.status.in_rotation and node.server.status is not ServerStatus.ACTIVE)
            ):
                unavailable += 1
        condemned.sort(key=lambda n: (n.server.status is not ServerStatus.ERROR, n.region, n.name))

        # --- mass-delete guard: judged on everything the spec wants gone, not just this run
        # (a failed build, or a node that missed its provisioning deadline, never served:
        # replacing it is not a deletion of the fleet)
        removing = [n for n in victims] + [n for n in condemned if not _never_served(n)]
        emptied = sorted({n.region for n in victims if desired.get(n.region, 0) == 0})
        share = len(removing) / fleet_size if fleet_size else 0.0
        # at the threshold, not only above it (issue 9)
        over = share >= disruption.mass_delete_threshold
        # a scale-down is also judged against the fleet's recent size: a shrink in steps
        # inside the window is still a mass delete (issue 9: 10 -> 5 -> 3 passed)
        stepwise: tuple[int, int, float] | None = None
        shrinking = [n for n in victims if not _never_served(n)]
        if shrinking and not over and options.recent_fleet_size is not None:
            peak = options.recent_fleet_size()
            after = max(0, fleet_size - len(shrinking))
            if peak > fleet_size:
                lost = (peak - after) / peak
                if lost >= disruption.mass_delete_threshold:
                    stepwise = (peak, after, lost)
        if removing and (over or emptied or stepwise is not None):
            parts = []
            if over:
                parts.append(
                    f"removes {len(removing)} of {fleet_size} nodes ({share:.0%}, at or over the "
                    f"{disruption.mass_delete_threshold:.0%} threshold)"
                )
            if stepwise is not None:
                peak, after, lost = stepwise
                parts.append(
                    f"shrinks the fleet to {after} nodes from the {peak} it had within the last "
                    f"{format_duration(disruption.mass_delete_window)} ({lost:.0%} in steps, at "
                    f"or over the {disruption.mass_delete_threshold:.0%} threshold: "
                    "disruption.mass_delete_window)"
                )
            if emptied:
                parts.append("removes every node of " + ", ".join(emptied))
            message = "this plan " + " and ".join(parts)
            if options.allow_mass_destroy:
                out.warn("mass_delete", message + " (allowed by --allow-mass-destroy)")
            else:
                out.warn("mass_delete", message, blocking=True, hint=MASS_DESTROY_HINT)

        # --- unavailable right now (disruption budget)
        self.disruption_left = max(0, disruption.max_unavailable - unavailable)

        # --- what each removal needs this run
        destroys: list[tuple[LiveNode, str]] = []
        drains: list[LiveNode] = []
        for node in condemned:
            destroys.append((node, node.condemned or ""))
        for node in victims:
            if node.in_rotation:
                drains.append(node)
                continue
            reason = self.region_reason(node.region, present[node.region], desired[node.region])
            if node.status is NodeStatus.DRAINING:
                since = node.record.status_changed_at if node.record is not None else None
                timed_out = since is not None and self.now - since >= disruption.drain_timeout
                if not options.metrics_known or node.name in options.queue_empty:
                    drained = "drained" if options.metrics_known else "draining (no queue data)"
                    destroys.append((node, f"{reason}; {drained}"))
                elif timed_out:
                    destroys.append((node, f"{reason}; drain timeout reached"))
                else:
                    out.notes.append(f"{node.name}: draining, waiting for its queue to empty")
            else:
                destroys.append((node, reason))

        budget = disruption.max_destroys_per_run
        for node, reason in destroys[:budget]:
            self.destroy(node, reason)
        deferred = len(destroys) - budget
        destroys_left = max(0, -deferred)
        if deferred > 0:
            out.warn(
                "destroy_budget",
                f"{deferred} more destroy(s) wait for the next run "
                f"(disruption.max_destroys_per_run = {budget})",
            )

        started = 0
        for node in drains:
            if started >= self.disruption_left:
                break
            started += 1
            reason = self.region_reason(node.region, present[node.region], desired[node.region])
            out.add(
                node_change(
                    Action.DRAIN,
                    node,
                    f"{reason}; out of rotation before destroy",
                    before={"status": node.status.value},
                    after={"status": NodeStatus.DRAINING.value},
                    status=NodeStatus.DRAINING,
                )
            )
            # no queue figures (no heartbeats): a draining node counts as drained at once (as
            # above), so it goes in the same apply, right after its drain, within the budget
            if not options.metrics_known and destroys_left > 0:
                destroys_left -= 1
                self.destroy(node, f"{reason}; drained (no queue data)")
        self.disruption_left -= started
        if len(drains) > started:
            out.warn(
                "disruption_budget",
                f"{len(drains) - started} more drain(s) wait for the disruption budget "
                f"(disruption.max_unavailable = {disruption.max_unavailable})",
            )

    def destroy(self, node: LiveNode, reason: str) -> None:
        self.out.add(
            Change(
                Action.DESTROY,
                node.name,
                node.region,
                reason,
                before={"status": node.status.value, "server": node.server.status.value},
                monthly_cost_delta=cents(-self.cost(node.plan, node.pool)),
                service_id=node.server.service_id,
                plan=node.plan,
                pool=node.pool,
                location_id=node.server.location_id,
            )
        )

    def keepers(self, nodes: list[LiveNode]) -> None:
        options, out, spec = self.options, self.out, self.spec
        resizes: list[tuple[LiveNode, str]] = []
        shrinking: list[str] = []
        #: provisioning nodes whose pipeline waits with nothing to do in this plan
        stalled: list[str] = []
        #: unhealthy nodes a run without heartbeats (the CLI) cannot bring back
        unseen: list[str] = []
        pipeline = pipeline_for(self.spec)
        for node in nodes:
            if node.condemned is not None or node.victim:
                continue
            if node.adopting and node.region not in self.spec.regions:
                continue  # adopted out of rotation; the next run removes it
            server = node.server
            # an operator's hold (maintenance, quarantine: core.lifecycle) comes first
            operator_held = False
            if may_hold(node):
                operator = hold(
                    node,
                    self.steps,
                    queue_empty=options.queue_empty,
                    metrics_known=options.metrics_known,
                    reputation_paused=options.reputation_paused,
                )
                for change in operator.changes:
                    out.add(change)
                out.notes.extend(operator.notes)
                operator_held = operator.held
            # health (daemon): out of rotation at once; back when it recovers
            entering = node.brought_up and server.status is ServerStatus.ACTIVE
            halted = stopped(server)
            sick = node.name in options.unhealthy or halted is not None
            if halted is not None:
                since = node.record.status_changed_at if node.record is not None else None
                until = (
                    f"; replaced from {(since + spec.health.replace_after).isoformat()}"
                    if since is not None and node.status is NodeStatus.UNHEALTHY
                    else ""
                )
                bootable = (
                    server.status is ServerStatus.SHUTOFF
                    and not server.locked
                    and not server.suspended
                    and node.record is not None
                    and not node.adopting
                    and not held_by_operator(node.record)
                    and not operator_held
                )
                out.warn(
                    "stopped",
                    f"{node.name}: server {halted}: out of the sending rotation and counted "
                    f"unavailable{until}",
                    hint="the reconciler boots it, and replaces it if it stays stopped past "
                    "health.replace_after"
                    if bootable
                    else "boot or unlock it in the Hostwinds panel, or let the reconciler "
                    "replace it after health.replace_after",
                )
                if bootable:
                    # boot first (issue 9); still stopped after replace_after: replaced. A
                    # run without heartbeats (the CLI) has nothing else to bring the node
                    # back: the boot puts it back into rotation once ACTIVE; the daemon lets
                    # its heartbeats decide
                    record = node.record
                    back = (
                        rotation_status(node, self.steps)
                        if not options.metrics_known
                        and record is not None
                        and record.paused_by in (None, PausedBy.HEALTH)
                        and (node.status.in_rotation or node.status is NodeStatus.UNHEALTHY)
                        else None
                    )
                    out.add(
                        node_change(
                            Action.BOOT,
                            node,
                            "server SHUTOFF: boot it (it stays out of the sending rotation "
                            "until healthy; replaced if still stopped after "
                            f"health.replace_after, {format_duration(spec.health.replace_after)})",
                            before={"server": ServerStatus.SHUTOFF.value},
                            after={"server": ServerStatus.ACTIVE.value}
                            | ({"status": back.value} if back is not None else {}),
                            status=back,
                            hostname=node_hostname(self.spec, node.name),
                        )
                    )
            leaving = node.status is NodeStatus.DRAINING  # not a victim: would go back
            held = options.reputation_paused
            why_paused = held.get(node.name) if held is not None else None
            paused_by = node.record.paused_by if node.record is not None else None
            if operator_held:
                pass
            elif sick and (node.status.in_rotation or entering or leaving):
                out.add(
                    node_change(
                        Action.PAUSE,
                        node,
                        "unhealthy (missed heartbeats): out of the sending rotation"
                        if halted is None
                        else f"server {halted}: out of the sending rotation, counted "
                        "unavailable; replaced after health.replace_after "
                        f"({int(self.spec.health.replace_after.total_seconds())}s)",
                        before={"status": node.status.value},
                        after={"status": NodeStatus.UNHEALTHY.value},
                        status=NodeStatus.UNHEALTHY,
                        paused_by=PausedBy.HEALTH,
                    )
                )
            elif not sick and (
                (node.status is NodeStatus.UNHEALTHY and options.metrics_known) or leaving
            ):
                if why_paused is not None and not leaving:
                    # healthy again, but reputation keeps it out: the pause changes hands
                    out.add(
                        node_change(
                            Action.PAUSE,
                            node,
                            f"healthy again; reputation: {why_paused}: out of the sending rotation",
                            before={"status": node.status.value},
                            after={"status": NodeStatus.PAUSED.value},
                            status=NodeStatus.PAUSED,
                            paused_by=PausedBy.REPUTATION,
                        )
                    )
                else:
                    why = (
                        "healthy again: back into the sending rotation"
                        if node.status is NodeStatus.UNHEALTHY
                        else "no longer surplus: stop draining, back into rotation"
                    )
                    back = rotation_status(node, self.steps)
                    out.add(
                        node_change(
                            Action.RESUME,
                            node,
                            why,
                            before={"status": node.status.value},
                            after={"status": back.value},
                            status=back,
                            hostname=node_hostname(self.spec, node.name),
                        )
                    )
            elif held is not None and not sick and not leaving:
                if why_paused is not None and (node.status.in_rotation or entering):
                    out.add(
                        node_change(
                            Action.PAUSE,
                            node,
                            f"reputation: {why_paused}: out of the sending rotation",
                            before={"status": node.status.value},
                            after={"status": NodeStatus.PAUSED.value},
                            status=NodeStatus.PAUSED,
                            paused_by=PausedBy.REPUTATION,
                        )
                    )
                elif (
                    why_paused is None
                    and node.status is NodeStatus.PAUSED
                    and paused_by is PausedBy.REPUTATION
                ):
                    # only a pause reputation made ends with the reputation verdict
                    back = rotation_status(node, self.steps)
                    out.add(
                        node_change(
                            Action.RESUME,
                            node,
                            "reputation clear (delisted, or resumed by an operator): back into "
                            "the sending rotation",
                            before={"status": node.status.value},
                            after={"status": back.value},
                            status=back,
                            hostname=node_hostname(self.spec, node.name),
                        )
                    )
                elif why_paused is None and node.status is NodeStatus.PAUSED:
                    out.notes.append(
                        f"{node.name}: paused by {paused_by.value if paused_by else 'unknown'} "
                        "(not by reputation): reputation does not resume it"
                    )
            if (
                node.status is NodeStatus.UNHEALTHY
                and not sick
                and not options.metrics_known
                and not operator_held
                and node.record is not None
            ):
                unseen.append(node.name)
            # resize towards the spec's plan (the spec wins over drift)
            if node.region in spec.regions:
                target = self.target_plan(node)
                if server.plan_rid is None:
                    differs = node.plan != target
                else:
                    differs = server.plan_rid != spec.plans[target].rid
                if server.status in (ServerStatus.RESIZE, ServerStatus.RESIZED):
                    resizes.append((node, target))
                elif server.status is ServerStatus.ACTIVE and differs:
                    current = spec.plans.get(node.plan) if node.plan is not None else None
                    if current is not None and spec.plans[target].disk_gb < current.disk_gb:
                        shrinking.append(f"{node.name} ({node.plan} -> {target})")
                    else:
                        resizes.append((node, target))
            # the per-node pipeline: each node's next steps into service (core.pipeline)
            if operator_held:
                continue
            stepped = False
            if may_step(node):
                steps = next_changes(node, self.steps, pipeline)
                for change in steps.changes:
                    out.add(change)
                out.notes.extend(steps.notes)
                stepped = bool(steps.changes)
            if (
                node.status is NodeStatus.PROVISIONING
                and node.record is not None  # an unrecorded one is adopted: that is its work
                and node.condemned is None
                and not stepped
                and self.spec.provisioning is not None
            ):
                stalled.append(node.name)
        if unseen:
            shown = _first_five(unseen)
            out.warn(
                "unhealthy",
                f"{len(unseen)} node(s) out of the sending rotation as unhealthy (missed "
                f"heartbeats, or a server that was stopped): {shown}; a run without heartbeats "
                "cannot tell that they recovered",
                hint="the daemon (`reconcile daemon`) puts them back once their heartbeats are "
                "healthy, and replaces them after health.replace_after if they are not",
            )
        if stalled:
            shown = _first_five(stalled)
            out.warn(
                "provisioning",
                f"{len(stalled)} node(s) not in service yet, waiting on a pipeline step with "
                f"nothing to do in this run: {shown} (see the notes)",
                hint="a step out of attempts waits for the provisioning deadline (then the node "
                "is replaced) or `reconcile node retry NAME`; the first heartbeat comes from the "
                "node's agent",
            )
        if shrinking:
            shown = _first_five(shrinking)
            out.warn(
                "disk_downgrade",
                f"{len(shrinking)} node(s) cannot be resized to a plan with a smaller disk: "
                f"{shown}",
                hint="Hostwinds refuses disk downgrades: keep the larger plan, or replace the "
                "nodes (scale the region down and up again)",
            )
        self.resize(resizes)
        # nodes in service: rolling re-bootstrap of a changed bundle, drift checks
        if self.spec.provisioning is None:
            return  # no upkeep without a provisioning section
        kept = upkeep(
            [n for n in nodes if n.condemned is None and not n.victim],
            self.spec,
            self.steps,
            bundle_versions=options.bundle_versions,
            budget=self.disruption_left,
            busy=frozenset(c.address for c in out.changes),
            now=self.now,
        )
        self.disruption_left -= kept.disrupted
        for change in kept.changes:
            out.add(change)
        out.notes.extend(kept.notes)

    def resize(self, resizes: list[tuple[LiveNode, str]]) -> None:
        out = self.out
        deferred = 0
        for node, target in sorted(resizes, key=lambda item: (item[0].region, item[0].name)):
            server = node.server
            confirming = server.status in (ServerStatus.RESIZE, ServerStatus.RESIZED)
            if node.in_rotation and not confirming:
                if self.disruption_left <= 0:
                    deferred += 1
                    continue
                self.disruption_left -= 1
            current = node.plan if node.plan is not None else f"rid {server.plan_rid}"
            delta = self.cost(target, node.pool) - self.cost(node.plan, node.pool)
            reason = (
                f"resize in progress ({server.status.value}): finish and confirm it"
                if confirming
                else f"plan {current} differs from the spec's {target}"
            )
            out.add(
                Change(
                    Action.RESIZE,
                    node.name,
                    node.region,
                    reason,
                    before={"plan": current},
                    after={"plan": target},
                    monthly_cost_delta=cents(delta),
                    service_id=server.service_id,
                    plan=target,
                    pool=node.pool,
                    location_id=server.location_id,
                    rid=self.rid(target),
                )
            )
        if deferred:
            out.warn(
                "disruption_budget",
                f"{deferred} more resize(s) wait for the disruption budget "
                f"(disruption.max_unavailable = {self.spec.disruption.max_unavailable})",
            )

    def creates(
        self,
        regions: list[str],
        missing: Mapping[str, int],
        desired: Mapping[str, int],
        present: Mapping[str, int],
        nodes: list[LiveNode],
        max_seq: Mapping[str, int],
        pending: Sequence[PendingCreate],
    ) -> None:
        spec = self.spec
        ips = spec.costs.ips_per_node
        # pool occupancy after this plan: nodes that stay, counted in IPs, and the pending
        # creates that still hold their slot (sent and not seen yet, or created anew)
        pool_ips: dict[str, int] = defaultdict(int)
        # a replacement of a node that missed its provisioning deadline inherits its slot's
        # count of such failures (+1): bounded per slot by provisioning.replacements
        inherited: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for node in nodes:
            if node.condemned is None:
                if node.pool is not None and not node.victim:
                    pool_ips[node.pool] += ips
            elif node.record is not None and node.condemned.startswith(DEADLINE_REASON):
                inherited[node.region].append((node.record.slot_failures + 1, node.name))
        for item in pending:
            pool = item.intent.params.get("pool") or None
            if pool is not None and (item.recreate or not self.grace_expired(item)):
                pool_ips[pool] += ips
        for region in regions:
            count = missing.get(region, 0)
            if count <= 0:
                continue
            slots = sorted(inherited.get(region, ()), reverse=True)
            tripped = breaker_open(spec, region, self.options.provisioning_failures)
            if tripped is not None:
                self.out.warn("circuit_breaker", tripped, hint=BREAKER_HINT, subject=region)
                continue
            region_spec = spec.regions[region]
            reason = self.region_reason(region, present[region], desired[region])
            seq = max_seq.get(region, 0)
            for _ in range(count):
                seq += 1
                name = node_name(self.fleet, region, seq)
                pool = None
                for pool_name, pool_spec in spec.ip_pools.items():
                    if (
                        pool_spec.status is PoolStatus.ACTIVE
                        and region in pool_spec.regions
                        and pool_ips[pool_name] < pool_spec.size
                    ):
                        pool = pool_name
                        pool_ips[pool_name] += ips
                        break
                after = {"plan": region_spec.plan, "location_id": str(region_spec.location_id)}
                if pool is not None:
                    after["pool"] = pool
                failures, why = 0, reason
                if slots:
                    failures, predecessor = slots.pop(0)
                    limit = spec.provisioning.replacements if spec.provisioning else 0
                    why = (
                        f"replaces {predecessor} (missed its provisioning deadline; "
                        f"replacement {failures} of {limit} for this slot)"
                    )
                    after["slot_failures"] = str(failures)
                self.out.add(
                    Change(
                        Action.CREATE,
                        name,
                        region,
                        why,
                        after=after,
                        monthly_cost_delta=cents(self.cost(region_spec.plan, pool)),
                        plan=region_spec.plan,
                        pool=pool,
                        location_id=region_spec.location_id,
                        rid=self.rid(region_spec.plan),
                        hostname=node_hostname(spec, name),
                        slot_failures=failures,
                    )
                )

    def finish(self, nodes: list[LiveNode], unmanaged: list[UnmanagedServer]) -> Plan:
        out, spec = self.out, self.spec
        changes = sorted(out.changes, key=lambda c: (c.region, c.address, ACTION_ORDER[c.action]))
        # the cost before: every node of ours that exists, priced by (plan, pool); the sum of
        # per-node cents is exact in Decimal, so it is added up per (plan, pool)
        priced: dict[tuple[str | None, str | None], int] = defaultdict(int)
        for node in nodes:
            priced[(node.plan, node.pool)] += 1
        count_before = len(nodes)
        # duplicates and other ours-but-unrecorded servers are billed too
        seen = {n.server.service_id for n in nodes}
        for server in self.servers:
            if server.service_id in seen or server.status is ServerStatus.DELETED:
                continue
            if self.parse(server.name) is not None:
                priced[(match_plan(self.by_rid, server.plan_rid), None)] += 1
                count_before += 1
        before = Decimal(0)
        for (plan_name, pool), count in priced.items():
            before += self.cost(plan_name, pool) * count
        # creates sent and not seen yet are bought already: they count in the cost (and the
        # budget) and in the node count
        for change in changes:
            if change.action is Action.RESOLVE and change.resolution is Resolution.WAIT:
                before += self.cost(change.plan, change.pool)
                count_before += 1
        delta = sum((c.monthly_cost_delta for c in changes), Decimal(0))
        creates = sum(1 for c in changes if c.action is Action.CREATE)
        recreates = sum(
            1 for c in changes if c.action is Action.RESOLVE and c.resolution is Resolution.RECREATE
        )
        destroys = sum(1 for c in changes if c.action is Action.DESTROY)
        counts = {action.value: 0 for action in Action}
        for change in changes:
            counts[change.action.value] += 1
        if self.options.price_list is not None:
            self.out.warnings.extend(price_warnings(spec, self.options.price_list))
        before_c = cents(before)
        after_c = before_c + delta
        budget = spec.costs.monthly_budget
        if budget is not None and after_c > budget and delta > 0:
            self.out.warn(
                "budget",
                f"monthly cost after this plan ${after_c} exceeds the budget ${cents(budget)}",
                blocking=True,
                hint="raise costs.monthly_budget or lower the node counts",
            )
        summary = PlanSummary(
            counts=counts,
            monthly_cost_before=before_c,
            monthly_cost_after=after_c,
            constants=sort_constants(self.used_constants),
            node_count_before=count_before,
            node_count_after=count_before + creates + recreates - destroys,
            monthly_budget=budget,
        )
        return Plan(
            fleet=self.fleet,
            changes=tuple(changes),
            summary=summary,
            warnings=tuple(out.warnings),
            unmanaged=tuple(
                sorted(set(unmanaged), key=lambda u: (u.name, u.service_id, u.location_id))
            ),
            spec_hash=self.options.spec_hash,
            generated_at=self.now,
            notes=tuple(self.options.notes) + tuple(out.notes),
        )


def _first_five(names: list[str]) -> str:
    """Up to five names for a warning, and how many more."""
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more
