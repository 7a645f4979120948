"""A plan is data: actions, typed changes, and a summary with the monthly cost.

Rendering (text, JSON, Markdown) lives in ``reconciler.views`` and reads these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from reconciler.core.fleet import NodeStatus, PausedBy


class Action(StrEnum):
    CREATE = "create"  # +  a new server (create protocol, design §3)
    ADOPT = "adopt"  # >  a prefixed server the store does not know
    RESIZE = "resize"  # ~  two-step Hostwinds upgrade
    SET_RDNS = "set_rdns"  # ~  pipeline step after ACTIVE
    ACTIVATE = "activate"  # ~  pipeline step: node enters rotation (warming/active)
    DRAIN = "drain"  # ~  out of rotation before destroy
    DESTROY = "destroy"  # -  terminate (only what our inventory owns)
    FORGET = "forget"  # -  record of a server deleted behind our back (drift)
    REPAIR = "repair"  # ~  record differs from the cloud (drift), correct the record
    RESOLVE = "resolve"  # ?  a pending intent: a create's name looked up first, or closed
    PAUSE = "pause"  # ~  out of rotation (unhealthy, blocklisted)
    RESUME = "resume"  # ~  back into rotation
    PROVISION = "provision"  # ~  a provisioning step (host key, DNS, bootstrap, verify)
    BOOT = "boot"  # ~  start a stopped (SHUTOFF) server; replaced if it stays stopped

    @property
    def marker(self) -> str:
        return _MARKERS[self]

    @property
    def mutates_cloud(self) -> bool:
        return self in (
            Action.CREATE,
            Action.RESIZE,
            Action.SET_RDNS,
            Action.DESTROY,
            Action.BOOT,
        )


_MARKERS: dict[Action, str] = {
    Action.CREATE: "+",
    Action.ADOPT: ">",
    Action.RESIZE: "~",
    Action.SET_RDNS: "~",
    Action.ACTIVATE: "~",
    Action.DRAIN: "~",
    Action.DESTROY: "-",
    Action.FORGET: "-",
    Action.REPAIR: "~",
    Action.RESOLVE: "?",
    Action.PAUSE: "~",
    Action.RESUME: "~",
    Action.PROVISION: "~",
    Action.BOOT: "~",
}


class Resolution(StrEnum):
    """What a ``RESOLVE`` does with a node's pending intents (decided by the planner)."""

    FOUND = "found"  # a server with the name is observed: record it, bring it up
    RECORDED = "recorded"  # the server is recorded already: close the intents
    WAIT = "wait"  # no server yet, inside the adoption grace: wait
    RECREATE = "recreate"  # no server after the grace, still needed: fail them, create anew
    ABANDON = "abandon"  # no server after the grace, no longer needed: fail them, close
    #: no server after the grace and the slot's create attempts are used up: the slot failed;
    #: the intent stays (it holds the slot), an operator decides (`reconcile node retry`)
    EXHAUSTED = "exhausted"
    #: intents other than creates that a cut-short run left pending (killed between an
    #: intent's begin and its finish) on a node this plan has nothing else to do for: what
    #: they began is settled (the node is as the spec wants it, or gone); close them
    INTERRUPTED = "interrupted"


@dataclass(frozen=True, slots=True)
class Change:
    """One change to one node.

    ``before``/``after`` are small str->str maps **for display only**. What the engine
    executes is in the typed fields below them: the engine never parses a display map and
    never re-decides what the planner decided.
    """

    action: Action
    address: str  # node name, e.g. "acme-dallas-003"
    region: str
    reason: str
    before: dict[str, str] | None = None
    after: dict[str, str] | None = None
    monthly_cost_delta: Decimal = Decimal("0.00")
    service_id: int | None = None
    plan: str | None = None  # our plan name (target plan for create/resize)
    pool: str | None = None
    location_id: int | None = None
    drift: bool = False  # the cloud changed behind our back
    # --- typed control data (what the engine executes) -----------------------------------
    #: the node's recorded status after this change (adopt, activate, resume, pause, drain)
    status: NodeStatus | None = None
    #: the pending intents this change settles (resolve; adopt of an intent's server)
    intent_ids: tuple[int, ...] = ()
    #: what a RESOLVE does
    resolution: Resolution | None = None
    #: RESOLVE/WAIT: when the adoption grace of the intent ends
    grace_until: datetime | None = None
    #: the Hostwinds plan id (rid) of ``plan`` (create, resize, re-create)
    rid: int | None = None
    #: the node pipeline step this change runs (``reconciler.core.pipeline``), if any
    step: str | None = None
    #: reverse-DNS name the node gets (set_rdns, and the steps that bring a node up)
    hostname: str | None = None
    #: the observed main IP the record takes (repair, set_rdns)
    ip: str | None = None
    #: PAUSE: who takes the node out of rotation (recorded with the status)
    paused_by: PausedBy | None = None
    #: CREATE replacing a node that missed its provisioning deadline: the slot's count of
    #: such failures the new node's record carries (``RecordedNode.slot_failures``)
    slot_failures: int = 0


@dataclass(frozen=True, slots=True)
class GuardWarning:
    """A guard's verdict: ``blocking`` warnings stop the apply unless overridden."""

    guard: str  # e.g. "mass_delete", "destroy_budget", "disruption_budget", "protected", "budget"
    message: str
    blocking: bool = False
    hint: str | None = None
    #: what it is about, when one thing (typed, for the daemon's alerts): the node of a
    #: failed slot (``create_failed``, ``slot_failed``), the region of a ``circuit_breaker``
    subject: str | None = None


#: warnings that mean the fleet is not what the spec says yet, though nothing is to be done now
UNSETTLED = frozenset(
    {
        "stopped",
        "create_failed",
        "slot_failed",
        "circuit_breaker",
        "destroy_budget",
        "disruption_budget",
        "renamed",
        # out of rotation as unhealthy in a run that cannot see heartbeats (the CLI)
        "unhealthy",
        # provisioning nodes waiting on a pipeline step (out of attempts, first heartbeat)
        "provisioning",
    }
)
#: of those, the ones that no amount of waiting clears: an operator has to act
#: (``reconcile node retry``, the circuit breaker's reset, a rename decided)
#: ("unhealthy": a run without heartbeats cannot see a recovery; the daemon or an operator can)
NEEDS_OPERATOR = frozenset(
    {"create_failed", "slot_failed", "circuit_breaker", "renamed", "unhealthy"}
)


@dataclass(frozen=True, slots=True)
class AppliedConstant:
    """Which cost constant the summary used, and where it came from."""

    key: str  # "ip_monthly_price", "plan_monthly_price:baseline"
    value: Decimal
    source: str  # "spec", "spec:pool:<name>", "store:<scope> (set by X at T)"


@dataclass(frozen=True, slots=True)
class UnmanagedServer:
    service_id: int
    name: str
    location_id: int


@dataclass(frozen=True, slots=True)
class PlanSummary:
    counts: dict[str, int]  # action value -> count
    monthly_cost_before: Decimal
    monthly_cost_after: Decimal
    constants: tuple[AppliedConstant, ...] = ()
    node_count_before: int = 0
    node_count_after: int = 0
    monthly_budget: Decimal | None = None

    @property
    def monthly_cost_delta(self) -> Decimal:
        return self.monthly_cost_after - self.monthly_cost_before


@dataclass(frozen=True, slots=True)
class Plan:
    fleet: str
    changes: tuple[Change, ...]
    summary: PlanSummary
    warnings: tuple[GuardWarning, ...] = ()
    unmanaged: tuple[UnmanagedServer, ...] = ()
    spec_hash: str = ""
    generated_at: datetime | None = None
    #: free-form decisions recorded with their inputs (autoscaler etc.)
    notes: tuple[str, ...] = field(default=())

    @property
    def is_empty(self) -> bool:
        return not self.changes

    @property
    def blocked(self) -> bool:
        return any(w.blocking for w in self.warnings)

    @property
    def unsettled(self) -> tuple[GuardWarning, ...]:
        """The warnings saying the fleet does not match the spec yet (``UNSETTLED``)."""
        return tuple(w for w in self.warnings if w.guard in UNSETTLED)
