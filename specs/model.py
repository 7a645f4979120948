"""The fleet spec: Pydantic models of the YAML people write.

Every model forbids unknown fields. Money is ``Decimal`` (never float in cost arithmetic);
durations are ``Duration`` (``30s``, ``5m``, ``6w``). Cross-references (a region naming an
unknown plan...) are checked in ``specs.validating`` so that all problems are reported at once
with their file:line:column; the models here check types, ranges and local consistency.
"""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from specs.durations import Duration

API_VERSION: Literal["fleet-reconciler/v1"] = "fleet-reconciler/v1"

#: Names we generate server names from: lower-case, DNS-label friendly.
NAME_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"

Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=32)]
Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=4)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# --- metadata and provider ---------------------------------------------------------------


class Metadata(_Model):
    name: Annotated[
        str, Field(pattern=NAME_PATTERN, min_length=1, max_length=20)
    ]  # prefix of every server name we create: <name>-<region>-<seq>
    description: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)


class ProviderType(StrEnum):
    HOSTWINDS = "hostwinds"
    SIMULATOR = "simulator"


DEFAULT_ENDPOINT = "https://clients.hostwinds.com/cloud/api.php"


class Provider(_Model):
    type: ProviderType = ProviderType.SIMULATOR
    endpoint: str = DEFAULT_ENDPOINT
    #: the NAME of the environment variable holding the key, never the key itself
    api_key_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] = "HOSTWINDS_API_KEY"
    template: str = "ubuntu-22.04"  # image UUID (Hostwinds) or name
    ssh_keys: list[str] = Field(default_factory=list)
    billing_cycle: Literal[
        "hourly", "monthly", "quarterly", "semiannually", "annually", "biennially", "triennially"
    ] = "monthly"
    rate_limit: Annotated[float, Field(gt=0, le=100)] = 2.0  # requests per second
    timeout: Duration = timedelta(seconds=30)
    #: simulator only: seconds a build takes, share of builds that fail
    build_time: Duration = timedelta(seconds=2)
    build_failure_rate: Rate = 0.0

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("expected an http(s) URL")
        return value


# --- plans, regions, pools ---------------------------------------------------------------


class PlanSpec(_Model):
    rid: Annotated[int, Field(ge=1)]  # Hostwinds plan id from get_price_list
    vcpu: Annotated[int, Field(ge=1, le=64)]
    ram_gb: Annotated[Decimal, Field(gt=0, le=512)]
    disk_gb: Annotated[int, Field(ge=1, le=10000)]
    transfer_tb: Annotated[Decimal, Field(ge=0, le=100)] = Decimal(1)
    monthly_price: Money
    #: a tier judged too small for production (the $4.99 tier) may be declared but a region
    #: using it gets a warning unless allow_small_plans is set
    production_ready: bool = True
    description: str | None = None


class NodeRange(_Model):
    min: Annotated[int, Field(ge=0, le=10000)]
    max: Annotated[int, Field(ge=0, le=10000)]

    @model_validator(mode="after")
    def _min_le_max(self) -> NodeRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class RegionSpec(_Model):
    location_id: Annotated[int, Field(ge=1)]
    location: str | None = None  # display name: Seattle, Dallas, Amsterdam
    plan: str
    #: a fixed count, or {min, max} for autoscaling
    nodes: Annotated[int, Field(ge=0, le=10000)] | NodeRange
    #: plans this region may be vertically scaled up to, in order (empty: no vertical scaling)
    vertical_plans: list[str] = Field(default_factory=list)
    protected: list[str] = Field(default_factory=list)
    #: silence the warning about a plan marked production_ready: false
    allow_small_plans: bool = False

    @property
    def min_nodes(self) -> int:
        return self.nodes if isinstance(self.nodes, int) else self.nodes.min

    @property
    def max_nodes(self) -> int:
        return self.nodes if isinstance(self.nodes, int) else self.nodes.max

    @property
    def autoscaled(self) -> bool:
        return isinstance(self.nodes, NodeRange)


class PoolStatus(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"


class PoolSpec(_Model):
    size: Annotated[int, Field(ge=0, le=100000)]  # target number of sending IPs
    regions: Annotated[list[str], Field(min_length=1)]
    warmup: str = "standard"  # a preset or a schedule under warmup.schedules
    status: PoolStatus = PoolStatus.ACTIVE
    ip_monthly_price: Money | None = None  # overrides costs.ip_monthly_price
    contract: str | None = None  # names a costs.contracts entry
    kind: Literal["shared", "dedicated", "warmup"] = "shared"
    description: str | None = None


# --- costs -------------------------------------------------------------------------------


class ContractSpec(_Model):
    ip_monthly_price: Money | None = None
    plan_prices: dict[str, Money] = Field(default_factory=dict)
    description: str | None = None


class CostsSpec(_Model):
    currency: Literal["USD"] = "USD"
    ip_monthly_price: Money = Decimal("4.99")
    ips_per_node: Annotated[int, Field(ge=1, le=64)] = 1
    hours_per_month: Annotated[Decimal, Field(gt=0, le=744)] = Decimal(730)
    monthly_budget: Money | None = None
    contracts: dict[str, ContractSpec] = Field(default_factory=dict)


# --- warmup ------------------------------------------------------------------------------


class WarmupPhase(_Model):
    #: inclusive day range, 1-based: "1-14"
    days: Annotated[str, Field(pattern=r"^\s*\d+\s*-\s*\d+\s*$")]
    start: Annotated[int, Field(ge=0, le=10_000_000)]  # emails/day on the first day
    end: Annotated[int, Field(ge=0, le=10_000_000)]  # emails/day on the last day

    @property
    def first_day(self) -> int:
        return int(self.days.split("-")[0])

    @property
    def last_day(self) -> int:
        return int(self.days.split("-")[1])

    @model_validator(mode="after")
    def _ordered(self) -> WarmupPhase:
        if self.first_day < 1:
            raise ValueError("days start at 1")
        if self.first_day > self.last_day:
            raise ValueError(f"day range {self.days!r} ends before it starts")
        return self


class WarmupSafety(_Model):
    max_bounce_rate: Rate = 0.05
    max_complaint_rate: Rate = 0.001
    max_daily_increase: Annotated[int, Field(ge=1)] | None = None
    pause_on_blocklist: bool = True


class WarmupSchedule(_Model):
    phases: Annotated[list[WarmupPhase], Field(min_length=1)]
    safety: WarmupSafety = Field(default_factory=WarmupSafety)
    description: str | None = None

    @model_validator(mode="after")
    def _contiguous(self) -> WarmupSchedule:
        expected = 1
        for phase in self.phases:
            if phase.first_day != expected:
                raise ValueError(
                    f"phases must be contiguous from day 1: phase {phase.days!r} should start "
                    f"on day {expected}"
                )
            expected = phase.last_day + 1
        return self

    @property
    def days(self) -> int:
        return self.phases[-1].last_day

    @property
    def final_limit(self) -> int:
        return self.phases[-1].end


def _ramp(days: int, start: int, end: int) -> list[WarmupPhase]:
    return [WarmupPhase(days=f"1-{days}", start=start, end=end)]


#: presets from the seeds (domain.md "Warmup")
WARMUP_PRESETS: dict[str, WarmupSchedule] = {
    "standard": WarmupSchedule(
        phases=[
            WarmupPhase(days="1-14", start=10, end=100),
            WarmupPhase(days="15-28", start=100, end=300),
            WarmupPhase(days="29-42", start=300, end=500),
        ],
        description="6 weeks, 10 -> 500 emails/day",
    ),
    "aggressive": WarmupSchedule(
        phases=_ramp(28, 20, 1000), description="4 weeks, 20 -> 1,000 emails/day"
    ),
    "conservative": WarmupSchedule(
        phases=_ramp(56, 5, 300), description="8 weeks, 5 -> 300 emails/day"
    ),
}


class WarmupSpec(_Model):
    schedules: dict[str, WarmupSchedule] = Field(default_factory=dict)

    def schedule(self, name: str) -> WarmupSchedule | None:
        return self.schedules.get(name) or WARMUP_PRESETS.get(name)


# --- policies ----------------------------------------------------------------------------


class VerticalScaling(_Model):
    enabled: bool = False
    queue_threshold: Annotated[int, Field(ge=1)] = 500
    window: Duration = timedelta(minutes=15)


class ScalingPolicy(_Model):
    enabled: bool = True
    target_utilization: Annotated[float, Field(gt=0.0, le=1.0)] = 0.80
    tolerance: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.10
    scale_up_stabilization: Duration = timedelta(0)
    scale_down_stabilization: Duration = timedelta(seconds=300)
    max_step: Annotated[int, Field(ge=1, le=1000)] = 2
    per_core_rate: Annotated[int, Field(ge=1)] = 1000  # emails/minute per vCPU
    evaluation_interval: Duration = timedelta(seconds=15)
    vertical: VerticalScaling = Field(default_factory=VerticalScaling)


class UnhealthyAction(StrEnum):
    REPLACE = "replace"  # out of rotation, replaced after the grace period
    PAUSE = "pause"  # out of rotation, kept until someone acts
    ALERT = "alert"  # only alert


class HealthPolicy(_Model):
    heartbeat_interval: Duration = timedelta(seconds=30)
    missed_beats: Annotated[int, Field(ge=1, le=100)] = 3
    on_unhealthy: UnhealthyAction = UnhealthyAction.REPLACE
    replace_after: Duration = timedelta(minutes=10)
    queue_warning: Annotated[int, Field(ge=0)] = 100
    queue_critical: Annotated[int, Field(ge=0)] = 500
    rate_warning: Annotated[int, Field(ge=0)] = 100  # emails/min below this: warning
    rate_critical: Annotated[int, Field(ge=0)] = 50
    bounce_warning: Rate = 0.01
    bounce_critical: Rate = 0.03
    cpu_alert: Rate = 0.90

    @model_validator(mode="after")
    def _ordered(self) -> HealthPolicy:
        if self.queue_warning > self.queue_critical:
            raise ValueError("queue_warning must not exceed queue_critical")
        if self.rate_critical > self.rate_warning:
            raise ValueError("rate_critical must not exceed rate_warning")
        if self.bounce_warning > self.bounce_critical:
            raise ValueError("bounce_warning must not exceed bounce_critical")
        return self


class SeverityAction(StrEnum):
    PAUSE = "pause"
    ALERT = "alert"
    IGNORE = "ignore"


#: SORBS shut down in 2024: its zones are refused by validation
DEAD_BLOCKLISTS: frozenset[str] = frozenset(
    {"dnsbl.sorbs.net", "spam.dnsbl.sorbs.net", "sorbs.net"}
)


def _live_zone(zone: str) -> str:
    if zone.lower().rstrip(".").endswith("sorbs.net"):
        raise ValueError(f"{zone!r}: SORBS shut down in 2024; remove it")
    return zone


#: a DNS blocklist zone (one that still answers)
BlocklistZone = Annotated[str, Field(min_length=1), AfterValidator(_live_zone)]


class ReputationPolicy(_Model):
    blocklists: list[BlocklistZone] = Field(
        default_factory=lambda: ["zen.spamhaus.org", "b.barracudacentral.org"]
    )
    bounce_alert: Rate = 0.03
    bounce_pause: Rate = 0.05
    complaint_alert: Rate = 0.001
    complaint_pause: Rate = 0.005
    check_interval: Duration = timedelta(hours=1)
    high: SeverityAction = SeverityAction.PAUSE  # blocklisted (e.g. Spamhaus)
    medium: SeverityAction = SeverityAction.ALERT  # bounce rate over threshold
    low: SeverityAction = SeverityAction.ALERT  # high CPU

    @model_validator(mode="after")
    def _ordered(self) -> ReputationPolicy:
        if self.bounce_alert > self.bounce_pause:
            raise ValueError("bounce_alert must not exceed bounce_pause")
        if self.complaint_alert > self.complaint_pause:
            raise ValueError("complaint_alert must not exceed complaint_pause")
        return self


class DisruptionPolicy(_Model):
    max_unavailable: Annotated[int, Field(ge=1)] = 1
    max_destroys_per_run: Annotated[int, Field(ge=0)] = 5
    #: a plan destroying more than this share of the fleet (or all of a region) is refused
    #: unless --allow-mass-destroy is given
    mass_delete_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    protected: list[str] = Field(default_factory=list)  # node names never destroyed
    drain_timeout: Duration = timedelta(minutes=30)


class AlertsSpec(_Model):
    webhook: str | None = None
    dedupe_window: Duration = timedelta(hours=1)


class ReconcileSettings(_Model):
    interval: Duration = timedelta(seconds=60)
    create_timeout: Duration = timedelta(minutes=30)
    resize_timeout: Duration = timedelta(minutes=30)
    concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    adoption_grace: Duration = timedelta(minutes=5)


# --- the fleet ---------------------------------------------------------------------------


class FleetSpec(_Model):
    apiVersion: Literal["fleet-reconciler/v1"] = API_VERSION  # noqa: N815 (YAML field name)
    kind: Literal["Fleet"] = "Fleet"
    metadata: Metadata
    provider: Provider = Field(default_factory=Provider)
    plans: dict[Name, PlanSpec]
    regions: dict[Name, RegionSpec] = Field(default_factory=dict)
    ip_pools: dict[Name, PoolSpec] = Field(default_factory=dict)
    costs: CostsSpec = Field(default_factory=CostsSpec)
    warmup: WarmupSpec = Field(default_factory=WarmupSpec)
    scaling: ScalingPolicy = Field(default_factory=ScalingPolicy)
    health: HealthPolicy = Field(default_factory=HealthPolicy)
    reputation: ReputationPolicy = Field(default_factory=ReputationPolicy)
    disruption: DisruptionPolicy = Field(default_factory=DisruptionPolicy)
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)

    @property
    def name(self) -> str:
        return self.metadata.name

    def plan_for(self, region: str) -> PlanSpec:
        return self.plans[self.regions[region].plan]

    def node_capacity_per_minute(self, plan: str) -> int:
        return self.plans[plan].vcpu * self.scaling.per_core_rate

    def min_monthly_cost(self) -> Decimal:
        """The cost of the declared minimum fleet (plan prices + dedicated IPs)."""
        total = Decimal(0)
        for region in self.regions.values():
            per_node = self.plans[region.plan].monthly_price + (
                self.costs.ip_monthly_price * self.costs.ips_per_node
            )
            total += per_node * region.min_nodes
        return total


def ceil_div(a: float, b: float) -> int:
    return math.ceil(a / b)
