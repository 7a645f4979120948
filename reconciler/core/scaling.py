"""The autoscaler's maths: capacity, utilization and HPA-style recommendations. Pure.

Units (docs/daemon.md "Autoscaling maths"): every figure here is **emails per day**, because
warmup limits are daily figures. A node's CPU-bound capacity is ``vcpu x per_core_rate x 1440``
(the per-core rate is per minute); its warmup capacity is today's warmup limit x its dedicated
IPs; its capacity is the smaller of the two. Throughput from heartbeats (``sent`` over the
beat's interval) is projected to a day the same way, so utilization is unit-free and the same
whichever unit one would pick.

The horizontal recommendation follows the Kubernetes HPA: ``desired = ceil(current x
utilization / target)``, no change while ``|utilization / target - 1| <= tolerance``, scale-up
at once (or after ``scale_up_stabilization``), scale-down only to the highest recommendation
seen within ``scale_down_stabilization``, at most ``max_step`` nodes per evaluation, within the
region's min/max and the monthly budget. The autoscaler's memory (the recommendation window)
is a value passed in and returned: nothing here keeps state or reads a clock.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from specs.model import FleetSpec, ScalingPolicy

MINUTES_PER_DAY = 1440
SECONDS_PER_DAY = 86400
#: a node may report at most this multiple of its CPU-bound capacity: figures above it are
#: implausible (refused at intake, and clamped to it wherever throughput is computed)
PLAUSIBLE_CAPACITY_FACTOR = 3.0
#: a node's utilization counts at most this multiple of the median of its group's other
#: reporting nodes (at least 1: its full capacity), see ``utilization``
OUTLIER_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class NodeLoad:
    """One node as the autoscaler sees it.

    ``daily_limit`` is today's warmup limit per IP (None: not warming, no warmup cap).
    ``sent_per_day`` is its measured throughput projected to a day (None: no recent beat).
    ``counted``: the node is part of the region's current size (not draining, not closed).
    ``serving``: its figures count towards utilization (in rotation and healthy).
    """

    name: str
    region: str
    pool: str | None
    vcpu: int
    daily_limit: int | None
    sent_per_day: float | None
    counted: bool = True
    serving: bool = True
    ips: int = 1


def cpu_capacity_per_day(vcpu: int, per_core_rate: int) -> int:
    """CPU-bound capacity: ``vcpu x per_core_rate (emails/min) x 1440``."""
    return vcpu * per_core_rate * MINUTES_PER_DAY


def node_capacity_per_day(
    vcpu: int, per_core_rate: int, daily_limit: int | None, ips: int = 1
) -> int:
    """min(CPU-bound capacity, today's warmup limit x IPs), emails/day."""
    cpu = cpu_capacity_per_day(vcpu, per_core_rate)
    if daily_limit is None:
        return cpu
    return min(cpu, daily_limit * ips)


def throughput_per_day(sent: int, interval_seconds: float) -> float:
    """Emails sent over ``interval_seconds`` projected to a day."""
    if interval_seconds <= 0:
        return 0.0
    return sent * SECONDS_PER_DAY / interval_seconds


@dataclass(frozen=True, slots=True)
class Utilization:
    """Throughput and capacity of a group of nodes (a region, a pool, a region x pool)."""

    throughput: float  # emails/day
    capacity: int  # emails/day
    reporting: int  # serving nodes with figures
    missing: int  # serving nodes without figures
    missing_capacity: int

    @property
    def ratio(self) -> float | None:
        if self.capacity <= 0 or self.reporting == 0:
            return None
        return self.throughput / self.capacity


def utilization(nodes: Sequence[NodeLoad], per_core_rate: int) -> Utilization:
    """Utilization over the serving nodes that reported figures (see ``NodeLoad``).

    One node's throughput counts at most ``OUTLIER_FACTOR`` times the median utilization of
    the group's other reporting nodes (and never less than its full capacity): a single node,
    whatever it reports (a stream of inflated beats, each plausible on its own), cannot make
    its group look busy while the others are not. Nodes that all report the same load, or a
    group of one node, are counted as reported. A non-finite figure counts as no figure."""
    capacity = 0
    missing = 0
    missing_capacity = 0
    figures: list[tuple[float, int]] = []
    for node in nodes:
        if not (node.counted and node.serving):
            continue
        cap = node_capacity_per_day(node.vcpu, per_core_rate, node.daily_limit, node.ips)
        sent = node.sent_per_day
        if sent is None or not math.isfinite(sent) or sent < 0:
            missing += 1
            missing_capacity += cap
            continue
        capacity += cap
        figures.append((sent, cap))
    ratios = sorted(sent / cap for sent, cap in figures if cap > 0)
    throughput = 0.0
    for sent, cap in figures:
        if cap > 0 and len(ratios) > 1:
            others = _median_without(ratios, sent / cap)
            sent = min(sent, max(1.0, OUTLIER_FACTOR * others) * cap)
        throughput += sent
    return Utilization(throughput, capacity, len(figures), missing, missing_capacity)


def _median_without(ordered: Sequence[float], value: float) -> float:
    """The median of ``ordered`` (sorted, holding ``value``) with one ``value`` left out."""
    index = bisect.bisect_left(ordered, value)
    size = len(ordered) - 1

    def at(i: int) -> float:
        return ordered[i] if i < index else ordered[i + 1]

    middle = size // 2
    return at(middle) if size % 2 else (at(middle - 1) + at(middle)) / 2


def utilization_by(
    nodes: Sequence[NodeLoad], per_core_rate: int
) -> dict[tuple[str, str], Utilization]:
    """Per (region, pool) ('' for nodes without a pool)."""
    groups: dict[tuple[str, str], list[NodeLoad]] = {}
    for node in nodes:
        groups.setdefault((node.region, node.pool or ""), []).append(node)
    return {key: utilization(group, per_core_rate) for key, group in sorted(groups.items())}


# --- horizontal --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recommendation:
    at: datetime
    replicas: int


@dataclass(frozen=True, slots=True)
class ScalerState:
    """The autoscaler's memory between evaluations: the recent recommendations per region."""

    recommendations: Mapping[str, tuple[Recommendation, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    """One region's decision with its inputs and reason, for the log, the plan and metrics."""

    region: str
    current: int
    desired: int
    utilization: float | None
    target: float
    throughput: float
    capacity: int
    reason: str
    minimum: int
    maximum: int

    @property
    def changed(self) -> bool:
        return self.desired != self.current


@dataclass(frozen=True, slots=True)
class RegionBounds:
    minimum: int
    maximum: int
    node_monthly_cost: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class ScalingResult:
    decisions: tuple[ScalingDecision, ...]
    state: ScalerState

    @property
    def desired_counts(self) -> dict[str, int]:
        return {d.region: d.desired for d in self.decisions}

    @property
    def notes(self) -> tuple[str, ...]:
        return tuple(d.reason for d in self.decisions)


def raw_recommendation(
    current: int, load: Utilization, policy: ScalingPolicy
) -> tuple[int, float | None, str]:
    """The HPA formula with its dead band and missing-figure handling.

    Returns (replicas, utilization used, why). Serving nodes without figures count as idle
    when the figures say scale up and as fully busy when they say scale down (as the HPA
    treats pods without metrics), so a node still starting never causes a second scale-up.
    """
    target = policy.target_utilization
    measured = load.ratio
    if measured is None:
        return current, None, "no heartbeat figures"
    ratio = measured / target
    if abs(ratio - 1.0) <= policy.tolerance:
        return current, measured, "within tolerance"
    used = measured
    if load.missing:
        total_capacity = load.capacity + load.missing_capacity
        if ratio > 1.0:
            used = load.throughput / total_capacity
        else:
            used = (load.throughput + load.missing_capacity) / total_capacity
        adjusted = used / target
        if abs(adjusted - 1.0) <= policy.tolerance or (adjusted > 1.0) != (ratio > 1.0):
            return current, used, "within tolerance once silent nodes are counted"
    desired = math.ceil(round(current * used / target, 9))
    if current == 0:
        desired = max(desired, 1) if load.throughput > 0 else 0
    return desired, used, "utilization"


def stabilize(
    current: int,
    recommendation: int,
    history: Sequence[Recommendation],
    now: datetime,
    policy: ScalingPolicy,
) -> tuple[int, tuple[Recommendation, ...]]:
    """Kubernetes' stabilizeRecommendationWithBehaviors: up to the lowest recommendation of
    the scale-up window, down only to the highest of the scale-down window. Returns the
    stabilized value and the trimmed window including this recommendation."""
    up_cutoff = now - policy.scale_up_stabilization
    down_cutoff = now - policy.scale_down_stabilization
    keep_from = now - max(policy.scale_up_stabilization, policy.scale_down_stabilization)
    kept = [r for r in history if keep_from < r.at <= now]
    window = (*kept, Recommendation(now, recommendation))
    up = recommendation
    down = recommendation
    for rec in kept:
        if rec.at > up_cutoff:
            up = min(up, rec.replicas)
        if rec.at > down_cutoff:
            down = max(down, rec.replicas)
    result = current
    if result < up:
        result = up
    if result > down:
        result = down
    return result, window


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def evaluate_region(
    region: str,
    current: int,
    load: Utilization,
    bounds: RegionBounds,
    policy: ScalingPolicy,
    history: Sequence[Recommendation],
    now: datetime,
    budget_room: int | None = None,
) -> tuple[ScalingDecision, tuple[Recommendation, ...]]:
    """One region's decision. ``budget_room``: how many more nodes the budget allows."""
    unclamped, used, why = raw_recommendation(current, load, policy)
    raw = min(max(unclamped, bounds.minimum), bounds.maximum)
    stabilized, window = stabilize(current, raw, history, now, policy)
    desired = stabilized
    limit_note = ""
    if desired > current + policy.max_step:
        desired = current + policy.max_step
        limit_note = f", capped at +{policy.max_step} per step"
    elif desired < current - policy.max_step:
        desired = current - policy.max_step
        limit_note = f", capped at -{policy.max_step} per step"
    clamped = min(max(desired, bounds.minimum), bounds.maximum)
    if clamped != desired or (raw != unclamped and clamped == raw):
        limit_note += f", held within {bounds.minimum}..{bounds.maximum}"
        desired = clamped
    if budget_room is not None and desired > current and desired - current > budget_room:
        allowed = current + max(budget_room, 0)
        limit_note += f", limited to {allowed} by the monthly budget"
        desired = max(allowed, min(current, desired))
    target = policy.target_utilization
    util_text = _fmt(used)
    if desired > current:
        reason = (
            f"{region}: {current} -> {desired} nodes, utilization {util_text} >= {target:.2f}"
            f"{limit_note}"
        )
    elif desired < current:
        reason = (
            f"{region}: {current} -> {desired} nodes, utilization {util_text} < {target:.2f} "
            f"for {_window_text(policy.scale_down_stabilization)}{limit_note}"
        )
    elif why == "no heartbeat figures":
        reason = f"{region}: stays at {_nodes(current)}, no heartbeat figures"
    elif unclamped > current and current >= bounds.maximum:
        reason = (
            f"{region}: stays at {_nodes(current)} (its maximum), utilization {util_text} "
            f">= {target:.2f}"
        )
    elif unclamped < current and current <= bounds.minimum:
        reason = (
            f"{region}: stays at {_nodes(current)} (its minimum), utilization {util_text} "
            f"< {target:.2f}"
        )
    elif raw > current:
        reason = (
            f"{region}: stays at {_nodes(current)}, utilization {util_text} >= {target:.2f}"
            f"{limit_note}"
        )
    elif raw < current:
        reason = (
            f"{region}: stays at {_nodes(current)}, utilization {util_text} < {target:.2f} but "
            f"the last {_window_text(policy.scale_down_stabilization)} recommended up to "
            f"{stabilized}{limit_note}"
        )
    else:
        reason = (
            f"{region}: stays at {_nodes(current)}, utilization {util_text} within "
            f"{target:.2f} +/- {policy.tolerance:.0%}"
        )
    decision = ScalingDecision(
        region=region,
        current=current,
        desired=desired,
        utilization=used,
        target=target,
        throughput=load.throughput,
        capacity=load.capacity,
        reason=reason,
        minimum=bounds.minimum,
        maximum=bounds.maximum,
    )
    return decision, window


def _nodes(count: int) -> str:
    return f"{count} node" if count == 1 else f"{count} nodes"


def _window_text(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def evaluate(
    nodes: Sequence[NodeLoad],
    current_counts: Mapping[str, int],
    bounds: Mapping[str, RegionBounds],
    policy: ScalingPolicy,
    state: ScalerState,
    now: datetime,
    *,
    monthly_budget: Decimal | None = None,
    monthly_cost: Decimal = Decimal(0),
) -> ScalingResult:
    """Evaluate every autoscaled region (those in ``bounds``), in name order.

    ``current_counts``: each region's current size (the last desired count, or the number of
    counted nodes). The budget is shared: regions earlier in name order get the room first.
    """
    by_region: dict[str, list[NodeLoad]] = {}
    for node in nodes:
        by_region.setdefault(node.region, []).append(node)
    decisions: list[ScalingDecision] = []
    windows: dict[str, tuple[Recommendation, ...]] = {}
    spent = monthly_cost
    for region in sorted(bounds):
        region_bounds = bounds[region]
        load = utilization(by_region.get(region, []), policy.per_core_rate)
        current = current_counts.get(region, 0)
        room: int | None = None
        if monthly_budget is not None and region_bounds.node_monthly_cost > 0:
            room = int((monthly_budget - spent) // region_bounds.node_monthly_cost)
        decision, window = evaluate_region(
            region,
            current,
            load,
            region_bounds,
            policy,
            state.recommendations.get(region, ()),
            now,
            budget_room=room,
        )
        spent += region_bounds.node_monthly_cost * (decision.desired - decision.current)
        decisions.append(decision)
        windows[region] = window
    return ScalingResult(tuple(decisions), ScalerState(recommendations=windows))


def region_bounds(
    spec: FleetSpec, monthly_ip_price: Decimal | None = None
) -> dict[str, RegionBounds]:
    """Bounds of the autoscaled regions (``nodes: {min, max}``) with a node's monthly cost."""
    ip_price = spec.costs.ip_monthly_price if monthly_ip_price is None else monthly_ip_price
    result: dict[str, RegionBounds] = {}
    for name, region in sorted(spec.regions.items()):
        if not region.autoscaled:
            continue
        per_node = spec.plans[region.plan].monthly_price + ip_price * spec.costs.ips_per_node
        result[name] = RegionBounds(region.min_nodes, region.max_nodes, per_node)
    return result


# --- vertical ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueSample:
    at: datetime
    queue_length: int


@dataclass(frozen=True, slots=True)
class VerticalDecision:
    node: str
    region: str
    from_plan: str
    to_plan: str
    reason: str


def next_plan(region_plan: str, vertical_plans: Sequence[str], current: str) -> str | None:
    """The next plan up: after the region's plan comes vertical_plans[0], and so on."""
    ladder = [region_plan, *[p for p in vertical_plans if p != region_plan]]
    if current not in ladder:
        return None
    index = ladder.index(current)
    return ladder[index + 1] if index + 1 < len(ladder) else None


def queue_stayed_high(
    samples: Sequence[QueueSample],
    threshold: int,
    window: timedelta,
    now: datetime,
    beat_interval: timedelta,
) -> bool:
    """True when the queue was above ``threshold`` in every sample of the last ``window`` and
    the samples cover the window (the first one no later than one beat after its start)."""
    start = now - window
    inside = [s for s in samples if start <= s.at <= now]
    if not inside:
        return False
    earliest = min(s.at for s in inside)
    if earliest > start + beat_interval:
        return False
    latest = max(s.at for s in inside)
    if latest < now - 2 * beat_interval:
        return False
    return all(s.queue_length > threshold for s in inside)


def vertical_decisions(
    spec: FleetSpec,
    nodes: Sequence[tuple[str, str, str]],
    queues: Mapping[str, Sequence[QueueSample]],
    now: datetime,
) -> tuple[VerticalDecision, ...]:
    """Nodes (name, region, plan) to resize one plan up, when vertical scaling is enabled."""
    vertical = spec.scaling.vertical
    if not (spec.scaling.enabled and vertical.enabled):
        return ()
    result: list[VerticalDecision] = []
    for name, region_name, plan in sorted(nodes):
        region = spec.regions.get(region_name)
        if region is None or not region.vertical_plans:
            continue
        target = next_plan(region.plan, region.vertical_plans, plan)
        if target is None:
            continue
        samples = queues.get(name, ())
        if not queue_stayed_high(
            samples, vertical.queue_threshold, vertical.window, now, spec.health.heartbeat_interval
        ):
            continue
        result.append(
            VerticalDecision(
                node=name,
                region=region_name,
                from_plan=plan,
                to_plan=target,
                reason=(
                    f"{name}: {plan} -> {target}, queue above {vertical.queue_threshold} for "
                    f"{_window_text(vertical.window)}"
                ),
            )
        )
    return tuple(result)
