"""Value types for what is observed (the cloud) and what is recorded (the store).

Frozen dataclasses and enums only: the planning core reads these, adapters build them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum


class ServerStatus(StrEnum):
    """Hostwinds instance status, normalised to upper case."""

    BUILD = "BUILD"
    ACTIVE = "ACTIVE"
    ERROR = "ERROR"
    RESIZE = "RESIZE"
    RESIZED = "RESIZED"
    SHUTOFF = "SHUTOFF"
    REBOOT = "REBOOT"
    RESCUE = "RESCUE"
    DELETED = "DELETED"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, raw: object) -> ServerStatus:
        """Case-insensitive; anything unknown is ``UNKNOWN`` (treated as transitional)."""
        text = str(raw or "").strip().upper()
        try:
            return cls(text)
        except ValueError:
            return cls.UNKNOWN

    @property
    def is_ready(self) -> bool:
        return self is ServerStatus.ACTIVE

    @property
    def is_failed(self) -> bool:
        return self is ServerStatus.ERROR

    @property
    def is_transitional(self) -> bool:
        return not (self.is_ready or self.is_failed)


@dataclass(frozen=True, slots=True)
class ObservedServer:
    """One instance as the cloud reports it. Secrets (password, configkey) never get here."""

    service_id: int
    name: str  # srvrname, the label we set
    location_id: int
    status: ServerStatus
    main_ip: str | None = None
    ips: tuple[str, ...] = ()
    plan_rid: int | None = None  # Hostwinds product/plan id
    plan_name: str | None = None
    vcpu: int | None = None
    ram_mb: int | None = None
    disk_gb: int | None = None
    locked: bool = False
    suspended: bool = False
    hostname: str | None = None
    display_status: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PricePlan:
    """One entry of ``get_price_list``."""

    rid: int
    name: str
    vcpu: int
    ram_gb: Decimal
    disk_gb: int
    bandwidth: str
    monthly: Decimal
    #: the API's ``promo`` flag and ``percent`` (a promotion on the first payment)
    promo: bool = False
    promo_percent: Decimal = Decimal(0)
    #: the API's ``firsts``: what the first payment costs (promotions), when it says
    first_payment: Decimal | None = None
    #: billing cycles the plan is sold in (``cycles``), as the API names them
    cycles: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Location:
    location_id: int
    name: str


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """Everything ``add_instance`` needs. ``name`` is our unique srvrname."""

    name: str
    location_id: int
    rid: int
    template: str
    ssh_keys: tuple[str, ...] = ()
    billing_cycle: str = "monthly"


class NodeStatus(StrEnum):
    """Life-cycle status of a sending node as recorded (seeds' sending_nodes.status)."""

    PROVISIONING = "provisioning"
    WARMING = "warming"
    ACTIVE = "active"
    PAUSED = "paused"
    MAINTENANCE = "maintenance"
    DRAINING = "draining"
    DECOMMISSIONED = "decommissioned"
    UNHEALTHY = "unhealthy"

    @property
    def in_rotation(self) -> bool:
        return self in _IN_ROTATION


#: a set, not a tuple of members: a member looked up on its class is slow (per node, per sweep)
_IN_ROTATION = frozenset({NodeStatus.WARMING, NodeStatus.ACTIVE})


class PausedBy(StrEnum):
    """Who took a node out of the sending rotation (recorded with the status), so that each
    rule brings back only what it took out: a delisting never resumes a node an operator or
    the health rule took out, and the reverse."""

    REPUTATION = "reputation"  # a blocklist listing with a pause action, bounces, complaints
    HEALTH = "health"  # missed heartbeats (status ``unhealthy``)
    OPERATOR = "operator"  # ``reconcile node maintenance`` (status ``maintenance``)
    QUARANTINE = "quarantine"  # a changed SSH host key (until ``reconcile node release``)


class IpStatus(StrEnum):
    AVAILABLE = "available"
    ASSIGNED = "assigned"
    WARMING = "warming"
    WARMED = "warmed"
    DEGRADED = "degraded"
    BURNED = "burned"
    QUARANTINED = "quarantined"


class IntentStatus(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class StepStatus(StrEnum):
    """The recorded state of one step of a node's pipeline (``reconciler.core.pipeline``)."""

    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StepState:
    """One pipeline step of one node as the store records it."""

    name: str  # the step's name, e.g. "rdns"
    status: StepStatus
    attempts: int = 1
    at: datetime | None = None  # when the step last finished (or failed)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class HostKey:
    """An SSH host key as pinned on first contact: its OpenSSH public form and SHA-256
    fingerprint (``SHA256:...``). Public data, not a secret."""

    algorithm: str
    public: str
    fingerprint: str


class HoldKind(StrEnum):
    """What an operator's hold on a node does (``reconcile node maintenance|cordon|drain``).

    - ``maintenance``: out of the sending rotation until ``resume`` (its queue drains).
    - ``cordon``: out of the sending rotation (no new mail) and left alone by the health rule
      (not paused or replaced as unhealthy) until ``uncordon``, like ``kubectl cordon``.
    - ``drain``: a cordon that first waits for the node's queue to empty (status
      ``draining``), then holds the node out (status ``maintenance``), like ``kubectl drain``.
    """

    MAINTENANCE = "maintenance"
    CORDON = "cordon"
    DRAIN = "drain"


@dataclass(frozen=True, slots=True)
class Maintenance:
    """An operator's hold on a node (``reconcile node maintenance|cordon|drain``): who, why,
    since when and what kind; kept in the store, so it survives spec changes and restarts."""

    reason: str
    by: str
    since: datetime
    #: set by ``reconcile node resume|uncordon`` (kept for the record): the next reconcile
    #: puts the node back into rotation
    ended_at: datetime | None = None
    kind: HoldKind = HoldKind.MAINTENANCE

    @property
    def active(self) -> bool:
        return self.ended_at is None

    def verb(self, status: NodeStatus | None = None) -> str:
        """``in maintenance``, ``cordoned``, ``draining`` (until the node's status is
        ``maintenance``) or ``drained``; ``(ended)`` once lifted (plans, status, pages)."""
        if not self.active:
            return f"{_HOLD_VERBS[self.kind]} (ended)"
        drained = (NodeStatus.MAINTENANCE, NodeStatus.PROVISIONING)
        if self.kind is HoldKind.DRAIN and status not in drained:
            return "draining"
        return _HOLD_VERBS[self.kind]

    def describe(self, status: NodeStatus | None = None) -> str:
        """One line: ``cordoned by alice since 2026-12-01 06:00 UTC: disk check``."""
        since = self.since.strftime("%Y-%m-%d %H:%M UTC")
        return f"{self.verb(status)} by {self.by} since {since}: {self.reason}"


_HOLD_VERBS = {
    HoldKind.MAINTENANCE: "in maintenance",
    HoldKind.CORDON: "cordoned",
    HoldKind.DRAIN: "drained",
}


@dataclass(frozen=True, slots=True)
class RecordedNode:
    """A sending node as the store knows it. ``name`` is unique per fleet."""

    id: str  # UUID as text
    fleet: str
    name: str
    region: str
    plan: str  # our plan name from the spec
    status: NodeStatus
    service_id: int | None = None
    ip_address: str | None = None
    hostname: str | None = None
    pool: str | None = None
    protected: bool = False
    reputation_score: int = 100
    current_load: Decimal = Decimal(0)
    created_at: datetime | None = None
    last_heartbeat: datetime | None = None
    rdns_done: bool = False
    warmup_started_at: datetime | None = None
    approximate_cost: Decimal | None = None  # monthly USD: plan + IPs
    observed_generation: str | None = None  # spec hash last reconciled against
    status_changed_at: datetime | None = None
    #: monthly USD of the node's dedicated IP, included in ``approximate_cost`` (the store
    #: splits the total into its VPS and IP rows; None: the store's cost constant applies)
    ip_cost: Decimal | None = None
    #: recorded state of the node's pipeline steps (design §3b), sorted by step name
    steps: tuple[StepState, ...] = ()
    #: the SSH host key pinned on first contact (docs/provisioning.md)
    host_key: HostKey | None = None
    #: the bootstrap bundle version (content hash) the node finished
    bundle_version: str | None = None
    #: the heartbeat URL that bundle gave the node's agent (None: not recorded, or the agent
    #: was installed without one); a run that knows no URL renders the node's bundle with it
    agent_url: str | None = None
    #: why the node is quarantined (a changed host key, drift): never back into rotation
    #: until an operator acts
    quarantine: str | None = None
    #: set by ``reconcile node maintenance``, cleared by ``reconcile node resume``; the
    #: engine never writes it (it survives spec changes, restarts and record rewrites)
    maintenance: Maintenance | None = None
    #: who took the node out of rotation (None while in rotation, or never paused)
    paused_by: PausedBy | None = None
    #: how many nodes of this node's slot missed their provisioning deadline before it (a
    #: replacement carries its predecessor's count + 1; bounded by
    #: ``provisioning.replacements``, then the slot fails); an operator's release resets it
    slot_failures: int = 0

    def step(self, name: str) -> StepState | None:
        """The recorded state of pipeline step ``name``, if any."""
        for state in self.steps:
            if state.name == name:
                return state
        return None

    def step_done(self, name: str) -> bool:
        state = self.step(name)
        return state is not None and state.status is StepStatus.DONE


@dataclass(frozen=True, slots=True)
class RecordedIntent:
    """A journal row written before a mutating call."""

    id: int
    fleet: str
    kind: str  # e.g. "create", "destroy", "resize", "set_rdns"
    target: str  # node name
    params: dict[str, str] = field(default_factory=dict)  # never secrets
    status: IntentStatus = IntentStatus.PENDING
    attempts: int = 1
    created_at: datetime | None = None
    updated_at: datetime | None = None
    error: str | None = None
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class CostConstant:
    """A finance-owned cost value; ``scope`` is 'global', 'pool:<name>', 'plan:<name>' or
    'contract:<name>'. ``key`` is e.g. 'ip_monthly_price' or 'plan_monthly_price'."""

    key: str
    scope: str
    value: Decimal
    set_by: str
    set_at: datetime


@dataclass(frozen=True, slots=True)
class RecordedFleet:
    """Everything the store knows about one fleet, loaded in a few queries."""

    fleet: str
    nodes: tuple[RecordedNode, ...] = ()
    pending_intents: tuple[RecordedIntent, ...] = ()
    cost_overrides: tuple[CostConstant, ...] = ()
    #: names of nodes protected in the store (survives removal from the spec)
    protected_names: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Observed:
    """What one observation of the cloud returned."""

    servers: tuple[ObservedServer, ...]
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class NodeMetrics:
    """One heartbeat's figures."""

    node: str
    at: datetime
    cpu: float
    memory: float
    disk: float
    queue_length: int
    sent: int  # emails sent since the previous beat
    bounces: int  # hard bounces (permanent failures, Postfix status=bounced)
    complaints: int
    interval_seconds: float = 30.0
    #: soft bounces (temporary failures, Postfix status=deferred); not kept in the metrics ring
    soft_bounces: int = 0
    #: the node's own signed timestamp (Unix seconds): the store records a beat only if it is
    #: newer than the node's newest recorded one (replay refused across daemons and restarts)
    sent_at: int | None = None


def peak_count(spans: Iterable[tuple[datetime, datetime | None]], since: datetime) -> int:
    """The most spans open at once from ``since`` on: each span is a node record's
    ``(created_at, closed_at)`` (``None``: still open). A node closed at the instant another
    opens is not counted twice."""
    events: list[tuple[datetime, int]] = []
    for opened, closed in spans:
        if closed is not None and closed < since:
            continue
        events.append((max(opened, since), 1))
        if closed is not None:
            events.append((closed, -1))
    events.sort(key=lambda e: (e[0], e[1]))  # closings first at the same instant
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


@dataclass(frozen=True, slots=True)
class NodeMark:
    """What a cheap poll of the store says of one open node: enough for a daemon that keeps
    the fleet in memory to tell what changed since it last looked (``StorePort.node_marks``).

    ``heartbeat_seq`` counts the node's recorded beats (every recorded beat advances it by
    one, whichever daemon recorded it); ``version`` changes whenever the record changes other
    than by a heartbeat (an opaque token, compared for equality only)."""

    name: str
    heartbeat_seq: int
    last_heartbeat: datetime | None
    version: object


@dataclass(frozen=True, slots=True)
class MarksDelta:
    """What ``StorePort.node_marks_since`` answers: the marks of every open node
    (``complete``), or only of the nodes whose row changed since the ``cursor`` passed in
    (a beat, a record write, a close), with the names whose open record closed meanwhile.

    ``cursor`` goes into the next call (None: the store can only answer complete reads). A
    name in ``closed`` may also be in ``marks`` (closed and opened again): ``marks`` wins."""

    marks: dict[str, NodeMark]
    complete: bool
    cursor: object | None = None
    closed: frozenset[str] = frozenset()
