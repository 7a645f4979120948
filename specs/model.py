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
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from specs.blocklists import (
    DEFAULT_ERRORS,
    DEFAULT_LISTINGS,
    KNOWN_ZONES,
    MAX_PATTERN_LENGTH,
    KnownZone,
    ListingAction,
    Severity,
    check_zone_name,
    dead_zone,
    parse_code_pattern,
    parse_resolver,
)
from specs.durations import Duration, format_duration, within
from specs.provisioning import ProvisioningSpec

API_VERSION: Literal["fleet-reconciler/v1"] = "fleet-reconciler/v1"

#: Names we generate server names from: lower-case, DNS-label friendly.
NAME_PATTERN = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"

Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=32)]
Money = Annotated[Decimal, Field(ge=0, max_digits=12, decimal_places=4)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]

_S = timedelta(seconds=1)
_M = timedelta(minutes=1)
_H = timedelta(hours=1)
_D = timedelta(days=1)
_ZERO = timedelta(0)


#: Bounded durations, by what they mean.
RequestTimeout = Annotated[Duration, within(_S, 5 * _M)]
ShortWait = Annotated[Duration, within(_ZERO, _D)]
Interval = Annotated[Duration, within(_S, _D)]
LongWait = Annotated[Duration, within(_ZERO, 7 * _D)]
Deadline = Annotated[Duration, within(_M, _D)]


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
        defer_build=True,
    )


# --- metadata and provider ---------------------------------------------------------------


class Metadata(_Model):
    """Who the fleet is."""

    name: Annotated[
        str, Field(pattern=NAME_PATTERN, min_length=1, max_length=20)
    ]  # prefix of every server name we create: <name>-<region>-<seq>
    """The fleet's name: prefix of every server we create (<name>-<region>-<n>). Servers
    without it are never touched."""
    description: str | None = None
    """Free text."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Free-form string labels."""


class ProviderType(StrEnum):
    HOSTWINDS = "hostwinds"
    SIMULATOR = "simulator"


DEFAULT_ENDPOINT = "https://clients.hostwinds.com/cloud/api.php"


class Provider(_Model):
    """Where servers come from: the Hostwinds API or the embedded simulator."""

    type: ProviderType = ProviderType.SIMULATOR
    """hostwinds, or simulator (the embedded default; no account needed)."""
    endpoint: str = DEFAULT_ENDPOINT
    """The Hostwinds API endpoint (http or https URL)."""
    api_key_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*$")] = "HOSTWINDS_API_KEY"
    """The NAME of the environment variable holding the API key, never the key itself."""
    template: str = "ubuntu-22.04"  # image UUID (Hostwinds) or name
    """OS image UUID (Hostwinds) or name."""
    ssh_keys: list[str] = Field(default_factory=list)
    """SSH key names known to Hostwinds, installed on new servers."""
    billing_cycle: Literal[
        "hourly", "monthly", "quarterly", "semiannually", "annually", "biennially", "triennially"
    ] = "monthly"
    """Billing cycle of new servers."""
    rate_limit: Annotated[float, Field(ge=0.1, le=100)] = 2.0  # requests per second
    """Client-side rate limit, requests per second (0.1-100)."""
    timeout: RequestTimeout = timedelta(seconds=30)
    """Timeout of one API request (1s-5m)."""
    build_time: Annotated[Duration, within(_ZERO, _H)] = timedelta(seconds=2)
    """Simulator only: how long a build takes."""
    build_failure_rate: Rate = 0.0
    """Simulator only: share of builds that fail (0-1)."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("expected an http(s) URL")
        return value


# --- plans, regions, pools ---------------------------------------------------------------


class PlanSpec(_Model):
    """A VPS plan under our own name."""

    rid: Annotated[int, Field(ge=1, le=1_000_000_000)]  # Hostwinds plan id from get_price_list
    """Hostwinds plan id (rid) from get_price_list."""
    vcpu: Annotated[int, Field(ge=1, le=64)]
    """Virtual CPUs."""
    ram_gb: Annotated[Decimal, Field(gt=0, le=512)]
    """RAM in GB."""
    disk_gb: Annotated[int, Field(ge=1, le=10000)]
    """Disk in GB."""
    transfer_tb: Annotated[Decimal, Field(ge=0, le=100)] = Decimal(1)
    """Monthly transfer in TB (checked against the price list by validate --remote)."""
    monthly_price: Money
    """Price in USD per month."""
    production_ready: bool = True
    """false for a tier judged too small for production (the 4.99 tier): a region using it gets
    a warning."""
    description: str | None = None
    """Free text."""


class NodeRange(_Model):
    """An autoscaled node count."""

    min: Annotated[int, Field(ge=0, le=100_000)]
    """Fewest nodes."""
    max: Annotated[int, Field(ge=0, le=100_000)]
    """Most nodes."""

    @model_validator(mode="after")
    def _min_le_max(self) -> NodeRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class RegionSpec(_Model):
    """Nodes in one Hostwinds location."""

    location_id: Annotated[int, Field(ge=1, le=1_000_000_000)]
    """Hostwinds location id (12 = Seattle is the only attested id)."""
    location: str | None = None  # display name: Seattle, Dallas, Amsterdam
    """A name for people reading the spec (Seattle, Dallas, Amsterdam); nothing reads it."""
    plan: str
    """A plan name from plans."""
    nodes: Annotated[int, Field(ge=0, le=100_000)] | NodeRange
    """A fixed node count, or {min, max} for autoscaling."""
    vertical_plans: list[str] = Field(default_factory=list)
    """Plans this region may be resized up to, smallest first (empty: no vertical scaling)."""
    protected: list[str] = Field(default_factory=list)
    """Node names never destroyed (they start with the fleet name)."""
    allow_small_plans: bool = False
    """Silence the warning about a plan marked production_ready: false."""

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
    """A named pool of sending IPs."""

    size: Annotated[int, Field(ge=0, le=100000)]  # target number of sending IPs
    """Target number of sending IPs (one per node)."""
    regions: Annotated[list[str], Field(min_length=1)]
    """Regions the pool draws its IPs from."""
    warmup: str = "standard"  # a preset or a schedule under warmup.schedules
    """Warmup schedule: a preset (standard, aggressive, conservative) or a name under
    warmup.schedules."""
    status: PoolStatus = PoolStatus.ACTIVE
    """active, or draining (being emptied)."""
    ip_monthly_price: Money | None = None  # overrides costs.ip_monthly_price
    """USD per IP per month for this pool (overrides costs.ip_monthly_price)."""
    contract: str | None = None  # names a costs.contracts entry
    """A contract name under costs.contracts."""
    kind: Literal["shared", "dedicated", "warmup"] = "shared"
    """Not yet supported: refused when written (a pool's kind changes nothing yet)."""
    description: str | None = None
    """Free text."""


# --- costs -------------------------------------------------------------------------------


class ContractSpec(_Model):
    """Special prices from a contract."""

    ip_monthly_price: Money | None = None
    """USD per IP per month under this contract."""
    plan_prices: dict[str, Money] = Field(default_factory=dict)
    """Plan name -> USD per month under this contract."""
    description: str | None = None
    """Free text."""


class CostsSpec(_Model):
    """Cost constants (USD)."""

    currency: Literal["USD"] = "USD"
    """Always USD."""
    ip_monthly_price: Money = Decimal("4.99")
    """USD per dedicated IP per month."""
    ips_per_node: Annotated[int, Field(ge=1, le=64)] = 1
    """Dedicated IPs carried by each node: only 1 is supported (extra IPs are never ordered)."""
    hours_per_month: Annotated[Decimal, Field(gt=0, le=744)] = Decimal(730)
    """Not yet supported: refused when written (nothing prices hourly billing yet)."""
    monthly_budget: Money | None = None
    """Optional monthly budget in USD; the declared minimum fleet must fit in it."""
    contracts: dict[str, ContractSpec] = Field(default_factory=dict)
    """Named special prices."""


# --- warmup ------------------------------------------------------------------------------


class WarmupPhase(_Model):
    """One phase of a warmup ramp."""

    days: Annotated[str, Field(pattern=r"^\s*\d{1,4}\s*-\s*\d{1,4}\s*$")]
    """Inclusive 1-based day range, e.g. 1-14."""
    start: Annotated[int, Field(ge=0, le=10_000_000)]  # emails/day on the first day
    """Emails per day on the first day of the phase."""
    end: Annotated[int, Field(ge=0, le=10_000_000)]  # emails/day on the last day
    """Emails per day on the last day of the phase."""

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
    """Safety rules applied while warming up."""

    max_bounce_rate: Rate = 0.05
    """Bounce rate (0-1) above which the warmup pauses."""
    max_complaint_rate: Rate = 0.001
    """Complaint rate (0-1) above which the warmup pauses."""
    max_daily_increase: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    """Largest increase of the daily limit from one day to the next (emails/day)."""
    pause_on_blocklist: bool = True
    """Pause the warmup when an IP is blocklisted."""


class WarmupSchedule(_Model):
    """A custom warmup schedule: phases contiguous from day 1."""

    phases: Annotated[list[WarmupPhase], Field(min_length=1)]
    """Phases in order, contiguous from day 1."""
    safety: WarmupSafety = Field(default_factory=WarmupSafety)
    """Safety rules."""
    description: str | None = None
    """Free text."""

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
    """Custom warmup schedules (presets standard, aggressive, conservative are built in)."""

    schedules: dict[str, WarmupSchedule] = Field(default_factory=dict)
    """Custom schedules by name."""

    def schedule(self, name: str) -> WarmupSchedule | None:
        return self.schedules.get(name) or WARMUP_PRESETS.get(name)


# --- policies ----------------------------------------------------------------------------


class VerticalScaling(_Model):
    """Resizing nodes to bigger plans."""

    enabled: bool = False
    """Allow vertical scaling along regions.*.vertical_plans."""
    queue_threshold: Annotated[int, Field(ge=1, le=10_000_000)] = 500
    """Queue depth that asks for a bigger plan."""
    window: Annotated[Duration, within(_S, _D)] = timedelta(minutes=15)
    """How long the queue must stay above the threshold."""


class ScalingPolicy(_Model):
    """Horizontal autoscaling, like a careful HPA."""

    enabled: bool = True
    """Autoscale regions declared with {min, max}."""
    target_utilization: Annotated[float, Field(gt=0.0, le=1.0)] = 0.80
    """Scale out when throughput reaches this share of capacity (0-1)."""
    tolerance: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.10
    """Dead band around the target (0-1)."""
    scale_up_stabilization: ShortWait = timedelta(0)
    """Wait before scaling up."""
    scale_down_stabilization: ShortWait = timedelta(seconds=300)
    """Wait before scaling down."""
    max_step: Annotated[int, Field(ge=1, le=1000)] = 2
    """Most nodes added or removed in one step."""
    per_core_rate: Annotated[int, Field(ge=1, le=1_000_000)] = 1000  # emails/minute per vCPU
    """Emails per minute one vCPU can send."""
    evaluation_interval: Annotated[Duration, within(_S, _H)] = timedelta(seconds=15)
    """How often utilization is evaluated."""
    vertical: VerticalScaling = Field(default_factory=VerticalScaling)
    """Vertical scaling."""


class UnhealthyAction(StrEnum):
    REPLACE = "replace"  # out of rotation, replaced after the grace period
    PAUSE = "pause"  # out of rotation, kept until someone acts
    ALERT = "alert"  # only alert


class HealthPolicy(_Model):
    """Node health from heartbeats and metrics."""

    heartbeat_interval: Annotated[Duration, within(_S, _H)] = timedelta(seconds=30)
    """Expected interval between heartbeats."""
    missed_beats: Annotated[int, Field(ge=1, le=100)] = 3
    """Missed heartbeats before a node is unhealthy."""
    on_unhealthy: UnhealthyAction = UnhealthyAction.REPLACE
    """replace, pause or alert."""
    replace_after: LongWait = timedelta(minutes=10)
    """Grace period before an unhealthy node is replaced."""
    queue_warning: Annotated[int, Field(ge=0, le=10_000_000)] = 100
    """Postfix queue length that is a warning."""
    queue_critical: Annotated[int, Field(ge=0, le=10_000_000)] = 500
    """Postfix queue length that is critical."""
    rate_warning: Annotated[int, Field(ge=0, le=10_000_000)] = 100  # emails/min below this: warning
    """Emails per minute below which a node is a warning."""
    rate_critical: Annotated[int, Field(ge=0, le=10_000_000)] = 50
    """Emails per minute below which a node is critical."""
    bounce_warning: Rate = 0.01
    """Bounce rate (0-1) that is a warning."""
    bounce_critical: Rate = 0.03
    """Bounce rate (0-1) that is critical."""
    cpu_alert: Rate = 0.90
    """CPU use (0-1) that raises an alert."""
    disruption_share: Annotated[float, Field(ge=0.1, le=1.0)] = 0.55
    """Share (0.1-1) of a region's (or the fleet's) beating nodes silent at once that makes it a
    zone disruption: no replacement there, pauses throttled, one alert (the Kubernetes
    node-lifecycle controller's unhealthyZoneThreshold)."""
    disruption_min_silent: Annotated[int, Field(ge=1, le=100_000)] = 3
    """Silent nodes a zone disruption needs at least (two silent nodes of three are no
    outage)."""

    @model_validator(mode="after")
    def _ordered(self) -> HealthPolicy:
        if self.queue_warning > self.queue_critical:
            raise ValueError("queue_warning must not exceed queue_critical")
        if self.rate_critical > self.rate_warning:
            raise ValueError("rate_critical must not exceed rate_warning")
        if self.bounce_warning > self.bounce_critical:
            raise ValueError("bounce_warning must not exceed bounce_critical")
        return self


#: kept for readers of the old name: the action of a severity
SeverityAction = ListingAction


def _code_pattern(text: str) -> str:
    return parse_code_pattern(text).text


#: a DNSBL answer-code pattern in postscreen's syntax: ``127.0.0.[2..11]``
CodePatternText = Annotated[
    str, Field(min_length=1, max_length=MAX_PATTERN_LENGTH), AfterValidator(_code_pattern)
]


def _live_zone(zone: str) -> str:
    name = check_zone_name(zone)
    dead = dead_zone(name)
    if dead is not None:
        raise ValueError(f"{zone!r}: {dead.why}; remove it")
    return name


#: a DNS blocklist zone (one that still answers)
BlocklistZone = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_live_zone)]


class ListingRule(_Model):
    """Answer codes of a zone that mean "listed", with a severity and an action."""

    codes: CodePatternText
    """Answer codes in postscreen's syntax: 127.0.0.2, 127.0.0.[2..3;9], 127.0.0.[10..11]."""
    name: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    """What a listing with these codes is (SBL, XBL, PBL...), shown in events and alerts."""
    severity: Severity = Severity.HIGH
    """high, medium or low."""
    action: ListingAction | None = None
    """pause, alert, report or ignore; unset: the action of its severity (reputation.high,
    medium, low)."""


def _string_or_object(schema: dict[str, Any]) -> None:
    """JSON Schema of a model that also accepts a plain string (``zone`` or ``zone=codes``)."""
    as_object = dict(schema)
    schema.clear()
    schema["anyOf"] = [
        {"type": "string", "description": "zone, or zone=codes (postscreen style)"},
        as_object,
    ]


class BlocklistSpec(_Model):
    """One DNSBL zone and how to read its answers. A plain string is the zone alone (a known
    zone keeps its documented codes), or ``zone=codes`` in postscreen's style."""

    model_config = ConfigDict(json_schema_extra=_string_or_object)

    zone: BlocklistZone
    """The zone queried, e.g. zen.spamhaus.org (zones that shut down are refused)."""
    listings: Annotated[list[ListingRule], Field(min_length=1, max_length=32)] | None = None
    """Answer codes that are listings, first match wins; unset: the zone's documented codes
    (known zones) or 127.0.0.[2..255]."""
    errors: Annotated[list[CodePatternText], Field(max_length=32)] | None = None
    """Answer codes that are errors, never listings (Spamhaus: 127.255.255.252/.254/.255);
    unset: the zone's documented error codes, or 127.255.255.[0..255]."""
    unmapped: Severity = Severity.MEDIUM
    """Severity of a 127.0.0.0/8 answer that no listing rule matches."""
    daily_budget: Annotated[int, Field(ge=1, le=100_000_000)] | None = None
    """Queries per day this zone may receive from us (Spamhaus' free tier: 300,000); unset:
    the zone's documented allowance, if any. The check interval stretches to stay under it."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        if isinstance(value, str):
            zone, sep, codes = value.partition("=")
            if not sep:
                return {"zone": zone}
            return {"zone": zone, "listings": [{"codes": codes}]}
        return value

    @model_validator(mode="after")
    def _errors_never_listings(self) -> BlocklistSpec:
        rules = self.listing_rules()
        for error in self.error_codes():
            pattern = parse_code_pattern(error)
            for rule in rules:
                if parse_code_pattern(rule.codes).overlaps(pattern):
                    raise ValueError(
                        f"listing codes {rule.codes!r} overlap the error codes {error!r}: an "
                        "error answer is never a listing"
                    )
        return self

    @property
    def known(self) -> KnownZone | None:
        return KNOWN_ZONES.get(self.zone)

    def listing_rules(self) -> tuple[ListingRule, ...]:
        if self.listings is not None:
            return tuple(self.listings)
        source = self.known.listings if self.known is not None else DEFAULT_LISTINGS
        return tuple(
            ListingRule(codes=k.codes, name=k.name, severity=k.severity, action=k.action)
            for k in source
        )

    def error_codes(self) -> tuple[str, ...]:
        if self.errors is not None:
            return tuple(self.errors)
        return self.known.errors if self.known is not None else DEFAULT_ERRORS

    def budget(self) -> int | None:
        if self.daily_budget is not None:
            return self.daily_budget
        return self.known.daily_budget if self.known is not None else None


def _resolver(text: str) -> str:
    return str(parse_resolver(text))


#: ``HOST:PORT`` of a recursive resolver (an IP address; never a public resolver)
ResolverText = Annotated[str, Field(min_length=1, max_length=60), AfterValidator(_resolver)]


class ReputationPolicy(_Model):
    """Sender reputation: blocklists, bounce and complaint thresholds, and what they do."""

    blocklists: Annotated[list[BlocklistSpec], Field(max_length=50)] = Field(
        default_factory=lambda: [
            BlocklistSpec(zone="zen.spamhaus.org"),
            BlocklistSpec(zone="b.barracudacentral.org"),
        ]
    )
    """DNS blocklist zones to check: a zone name, ``zone=codes``, or {zone, listings, errors,
    unmapped, daily_budget}. Zones that shut down (SORBS, NiX Spam...) are refused."""
    resolver: ResolverText | None = None
    """The recursive resolver the checks go through (HOST:PORT, an IP address); unset: the
    system's. Public resolvers are refused (Spamhaus answers them with errors)."""
    timeout: Duration = timedelta(seconds=2)
    """How long one DNSBL query may take."""
    concurrency: Annotated[int, Field(ge=1, le=512)] = 64
    """DNSBL queries in flight at once, per zone."""
    delist_after: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive clean checks after a listing before the IP counts as delisted (and a
    node paused for it returns to the rotation)."""
    bounce_alert: Rate = 0.03
    """Hard-bounce rate (0-1) that raises an alert."""
    bounce_pause: Rate = 0.05
    """Hard-bounce rate (0-1) that pauses sending (quarantine until resumed)."""
    complaint_alert: Rate = 0.001
    """Complaint rate (0-1) that raises an alert."""
    complaint_pause: Rate = 0.005
    """Complaint rate (0-1) that pauses sending (quarantine until resumed)."""
    window: Duration = timedelta(hours=24)
    """Rates are computed over this window of recent sending..."""
    max_window: Duration = timedelta(days=7)
    """...stretched up to this when the window holds fewer than min_volume messages."""
    min_volume: Annotated[int, Field(ge=1, le=100_000_000)] = 500
    """Fewest messages a rate is judged on (no verdict on 20 mails)."""
    rewarm_after: Duration = timedelta(days=30)
    """A node paused longer than this starts its warmup again when it returns."""
    check_interval: Duration = timedelta(hours=1)
    """How often blocklists are checked (stretched when a zone's daily budget needs it)."""
    high: SeverityAction = SeverityAction.PAUSE  # blocklisted (e.g. Spamhaus)
    """Action on high severity (e.g. listed on Spamhaus SBL/XBL/CSS)."""
    medium: SeverityAction = SeverityAction.ALERT  # bounce rate over threshold
    """Action on medium severity (e.g. bounce rate over bounce_alert)."""
    low: SeverityAction = SeverityAction.ALERT  # high CPU
    """Action on low severity (e.g. high CPU, PBL listing)."""

    @model_validator(mode="after")
    def _ordered(self) -> ReputationPolicy:
        if self.bounce_alert > self.bounce_pause:
            raise ValueError("bounce_alert must not exceed bounce_pause")
        if self.complaint_alert > self.complaint_pause:
            raise ValueError("complaint_alert must not exceed complaint_pause")
        if self.window > self.max_window:
            raise ValueError("window must not exceed max_window")
        for name, low, high in (
            ("timeout", timedelta(milliseconds=100), timedelta(seconds=30)),
            ("check_interval", timedelta(seconds=10), timedelta(days=7)),
            ("window", timedelta(hours=1), timedelta(days=30)),
            ("max_window", timedelta(hours=1), timedelta(days=30)),
            ("rewarm_after", timedelta(days=1), timedelta(days=365)),
        ):
            value: timedelta = getattr(self, name)
            if not low <= value <= high:
                raise ValueError(
                    f"{name} must be within {format_duration(low)}..{format_duration(high)}"
                )
        zones = [b.zone for b in self.blocklists]
        twice = sorted({z for z in zones if zones.count(z) > 1})
        if twice:
            raise ValueError(f"zone {twice[0]!r} is listed twice")
        return self

    def action_for(self, severity: Severity) -> ListingAction:
        return {Severity.HIGH: self.high, Severity.MEDIUM: self.medium, Severity.LOW: self.low}[
            severity
        ]


class DisruptionPolicy(_Model):
    """Limits on how much the reconciler may disrupt at once."""

    max_unavailable: Annotated[int, Field(ge=1, le=10000)] = 1
    """Most nodes out of service at once."""
    max_destroys_per_run: Annotated[int, Field(ge=0, le=10000)] = 5
    """Most servers destroyed in one run."""
    mass_delete_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    """A plan destroying more than this share of the fleet (or all of a region) is refused
    unless allowed on the command line."""
    mass_delete_window: LongWait = timedelta(hours=24)
    """The mass-delete guard also judges a scale-down against the most nodes the fleet had at
    once within this window (from the store's node history), so that a shrink in steps
    (10 -> 5 -> 3 within a day) is still a mass delete. ``0s``: the current size only."""
    protected: list[str] = Field(default_factory=list)  # node names never destroyed
    """Node names never destroyed (they start with the fleet name)."""
    drain_timeout: ShortWait = timedelta(minutes=30)
    """Longest wait for a node's queue to empty before it is destroyed."""
    billing_aware: bool = False
    """Scale-down picks, among equally good victims (same state, health and warmup stage),
    the node whose paid month ends soonest (a month is paid ahead from the day the server was
    created); the plan says how much paid time that keeps from being thrown away."""


class AlertsSpec(_Model):
    """Where alerts go."""

    webhook: str | None = None
    """http(s) URL receiving alerts."""
    dedupe_window: LongWait = timedelta(hours=1)
    """Identical alerts within this window are sent once."""


class ReconcileSettings(_Model):
    """The reconcile loop."""

    interval: Interval = timedelta(seconds=60)
    """Time between reconciles in the daemon."""
    create_timeout: Deadline = timedelta(minutes=30)
    """Longest wait for a new server to become active."""
    resize_timeout: Deadline = timedelta(minutes=30)
    """Longest wait for a resize."""
    concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    """Actions applied in parallel."""
    adoption_grace: ShortWait = timedelta(minutes=5)
    """How long a pending create waits before it may be retried."""


# --- the fleet ---------------------------------------------------------------------------


class FleetSpec(_Model):
    """A fleet of email-sending servers, as declared in YAML."""

    apiVersion: Literal["fleet-reconciler/v1"] = API_VERSION  # noqa: N815 (YAML field name)
    """Format version: fleet-reconciler/v1."""
    kind: Literal["Fleet"] = "Fleet"
    """Always Fleet."""
    metadata: Metadata
    """The fleet's name and labels."""
    provider: Provider = Field(default_factory=Provider)
    """Hostwinds or the simulator."""
    plans: dict[Name, PlanSpec]
    """VPS plans by our own name."""
    regions: dict[Name, RegionSpec] = Field(default_factory=dict)
    """Nodes per Hostwinds location."""
    ip_pools: dict[Name, PoolSpec] = Field(default_factory=dict)
    """Pools of sending IPs."""
    costs: CostsSpec = Field(default_factory=CostsSpec)
    """Cost constants and budget."""
    warmup: WarmupSpec = Field(default_factory=WarmupSpec)
    """Custom warmup schedules."""
    scaling: ScalingPolicy = Field(default_factory=ScalingPolicy)
    """Autoscaling policy."""
    health: HealthPolicy = Field(default_factory=HealthPolicy)
    """Health policy."""
    reputation: ReputationPolicy = Field(default_factory=ReputationPolicy)
    """Reputation policy."""
    disruption: DisruptionPolicy = Field(default_factory=DisruptionPolicy)
    """Disruption limits."""
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    """Alerting."""
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    """The reconcile loop."""
    provisioning: ProvisioningSpec | None = None
    """From a bare VPS to a verified sending node (DNS, SSH bootstrap, test mail); without
    it a node's pipeline stops after reverse DNS."""

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
