"""Monthly cost of nodes: VPS plan price plus dedicated IPs, from the cost constants.

Resolution order (most specific first; a finance-owned store override beats the spec):

* IP price (``ip_monthly_price``): store ``pool:<pool>`` > store ``contract:<pool's contract>``
  > store ``global`` > spec ``ip_pools.<pool>.ip_monthly_price`` > spec
  ``costs.contracts.<contract>.ip_monthly_price`` > spec ``costs.ip_monthly_price``.
* Plan price (``plan_monthly_price``): store ``plan:<plan>`` > spec
  ``costs.contracts.<pool's contract>.plan_prices.<plan>`` > spec ``plans.<plan>.monthly_price``.

A node costs ``plan price + costs.ips_per_node x IP price``. Every constant used is reported as
an :class:`AppliedConstant` naming its source.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal

from reconciler.core.fleet import CostConstant, NodeStatus, PricePlan, RecordedNode
from reconciler.core.plans import AppliedConstant, GuardWarning
from specs.model import FleetSpec

IP_KEY = "ip_monthly_price"
PLAN_KEY = "plan_monthly_price"
CENT = Decimal("0.01")


def cents(value: Decimal) -> Decimal:
    """Round money to cents (half up), the precision plans display."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _latest_overrides(overrides: Sequence[CostConstant]) -> dict[tuple[str, str], CostConstant]:
    """(key, scope) -> the most recently set override (ties: the larger value, deterministic)."""
    chosen: dict[tuple[str, str], CostConstant] = {}
    for item in overrides:
        slot = (item.key, item.scope)
        current = chosen.get(slot)
        if current is None or (item.set_at, item.value) > (current.set_at, current.value):
            chosen[slot] = item
    return chosen


def _store_source(item: CostConstant) -> str:
    return f"store:{item.scope} (set by {item.set_by} at {item.set_at.isoformat()})"


class CostResolver:
    """Resolves and caches node costs for one spec and one set of store overrides."""

    __slots__ = ("_cache", "_overrides", "_spec")

    def __init__(self, spec: FleetSpec, overrides: Sequence[CostConstant] = ()) -> None:
        self._spec = spec
        self._overrides = _latest_overrides(overrides)
        self._cache: dict[
            tuple[str | None, str | None], tuple[Decimal, tuple[AppliedConstant, ...]]
        ]
        self._cache = {}

    def _contract(self, pool: str | None) -> str | None:
        if pool is None:
            return None
        pool_spec = self._spec.ip_pools.get(pool)
        return pool_spec.contract if pool_spec is not None else None

    def ip_price(self, pool: str | None) -> AppliedConstant:
        spec = self._spec
        contract = self._contract(pool)
        scopes = []
        if pool is not None:
            scopes.append(f"pool:{pool}")
        if contract is not None:
            scopes.append(f"contract:{contract}")
        scopes.append("global")
        for scope in scopes:
            item = self._overrides.get((IP_KEY, scope))
            if item is not None:
                return AppliedConstant(IP_KEY, item.value, _store_source(item))
        pool_spec = spec.ip_pools.get(pool) if pool is not None else None
        if pool_spec is not None and pool_spec.ip_monthly_price is not None:
            return AppliedConstant(IP_KEY, pool_spec.ip_monthly_price, f"spec:pool:{pool}")
        contract_spec = spec.costs.contracts.get(contract) if contract is not None else None
        if contract_spec is not None and contract_spec.ip_monthly_price is not None:
            return AppliedConstant(
                IP_KEY, contract_spec.ip_monthly_price, f"spec:contract:{contract}"
            )
        return AppliedConstant(IP_KEY, spec.costs.ip_monthly_price, "spec")

    def plan_price(self, plan: str, pool: str | None) -> AppliedConstant | None:
        """``None`` when the plan is not in the spec and no store override prices it."""
        key = f"{PLAN_KEY}:{plan}"
        item = self._overrides.get((PLAN_KEY, f"plan:{plan}"))
        if item is not None:
            return AppliedConstant(key, item.value, _store_source(item))
        contract = self._contract(pool)
        contract_spec = self._spec.costs.contracts.get(contract) if contract is not None else None
        if contract_spec is not None and plan in contract_spec.plan_prices:
            return AppliedConstant(
                key, contract_spec.plan_prices[plan], f"spec:contract:{contract}"
            )
        plan_spec = self._spec.plans.get(plan)
        if plan_spec is None:
            return None
        return AppliedConstant(key, plan_spec.monthly_price, "spec")

    def node(
        self, plan: str | None, pool: str | None
    ) -> tuple[Decimal, tuple[AppliedConstant, ...]]:
        """Monthly cost of one node on ``plan`` in ``pool`` and the constants it used.

        An unknown plan (``None``, or a name neither the spec nor the store prices) costs only
        its IPs.
        """
        cached = self._cache.get((plan, pool))
        if cached is not None:
            return cached
        ip = self.ip_price(pool)
        ips = self._spec.costs.ips_per_node
        used: list[AppliedConstant] = []
        total = ip.value * ips
        if plan is not None:
            price = self.plan_price(plan, pool)
            if price is not None:
                total += price.value
                used.append(price)
        used.append(ip)
        if ips != 1:
            used.append(AppliedConstant("ips_per_node", Decimal(ips), "spec"))
        result = (total, tuple(used))
        self._cache[(plan, pool)] = result
        return result


def node_cost_split(
    resolver: CostResolver, spec: FleetSpec, plan: str | None, pool: str | None
) -> tuple[Decimal, Decimal]:
    """A node's recorded monthly cost in cents and the part of it its dedicated IPs make up
    (``vps_instances`` gets the difference, ``smtp_ip_addresses`` the IP part)."""
    total = cents(resolver.node(plan, pool)[0])
    ips = cents(resolver.ip_price(pool).value * spec.costs.ips_per_node)
    return total, min(ips, total)


def recorded_costs(
    spec: FleetSpec, nodes: Iterable[RecordedNode], overrides: Sequence[CostConstant] = ()
) -> dict[str, tuple[Decimal, Decimal]]:
    """Per open node, the monthly cost to record today and its IP part, in cents: what a
    refresh writes (``StorePort.refresh_costs``).

    One number everywhere: every view (plan, status, metrics, ``/v1/fleet``, the status page)
    sums these per-node figures, so they agree to the cent once they are recorded.
    """
    resolver = CostResolver(spec, overrides)
    return {
        node.name: node_cost_split(resolver, spec, node.plan, node.pool)
        for node in nodes
        if node.status is not NodeStatus.DECOMMISSIONED
    }


PRICES_GUARD = "prices"


def _usd(value: Decimal) -> str:
    exact = value.quantize(CENT)
    return f"${exact}" if exact == value else f"${format(value.normalize(), 'f')}"


def price_warnings(spec: FleetSpec, price_list: Sequence[PricePlan]) -> list[GuardWarning]:
    """A warning (never blocking) for each spec plan whose ``monthly_price`` is not what the
    provider's price list charges for its ``rid``, with both figures; and for each spec plan
    whose ``rid`` the price list does not carry. Promotions and billing cycles are quoted as
    the API reports them: the comparison is on the regular monthly price."""
    by_rid = {p.rid: p for p in price_list}
    warnings: list[GuardWarning] = []
    for name in sorted(spec.plans):
        plan = spec.plans[name]
        offer = by_rid.get(plan.rid)
        if offer is None:
            warnings.append(
                GuardWarning(
                    PRICES_GUARD,
                    f"plan {name} (rid {plan.rid}): not in the provider's price list; "
                    f"the spec's {_usd(plan.monthly_price)}/month cannot be checked",
                    hint="check the rid against `get_price_list`",
                )
            )
            continue
        if offer.monthly == plan.monthly_price:
            continue
        extra = []
        if offer.promo or offer.promo_percent:
            promo = f"promotion {format(offer.promo_percent.normalize(), 'f')} %"
            if offer.first_payment is not None and offer.first_payment != offer.monthly:
                promo += f", first payment {_usd(offer.first_payment)}"
            extra.append(promo)
        if offer.cycles:
            extra.append("cycles " + ", ".join(offer.cycles))
        detail = f" ({'; '.join(extra)})" if extra else ""
        warnings.append(
            GuardWarning(
                PRICES_GUARD,
                f"plan {name} (rid {plan.rid}): the spec says {_usd(plan.monthly_price)}/month, "
                f"the provider's price list {_usd(offer.monthly)}/month for "
                f"{offer.name!r}{detail}",
                hint=f"set plans.{name}.monthly_price to {offer.monthly} (or ask finance for "
                f"`reconcile costs set plan_monthly_price {offer.monthly} --scope plan:{name}`)",
            )
        )
    return warnings


def node_monthly_cost(
    spec: FleetSpec,
    plan_name: str | None,
    pool: str | None,
    overrides: Sequence[CostConstant] = (),
) -> tuple[Decimal, tuple[AppliedConstant, ...]]:
    """Monthly cost of one node (plan + ``ips_per_node`` IPs) and the constants applied."""
    return CostResolver(spec, overrides).node(plan_name, pool)


def fleet_monthly_cost(
    spec: FleetSpec,
    nodes: Iterable[tuple[str | None, str | None]],
    overrides: Sequence[CostConstant] = (),
) -> tuple[Decimal, tuple[AppliedConstant, ...]]:
    """Monthly cost of nodes given as ``(plan, pool)`` pairs, and every constant applied
    (deduplicated, sorted by key then source)."""
    resolver = CostResolver(spec, overrides)
    total = Decimal(0)
    used: set[AppliedConstant] = set()
    for plan, pool in nodes:
        cost, constants = resolver.node(plan, pool)
        total += cost
        used.update(constants)
    return total, sort_constants(used)


def sort_constants(constants: Iterable[AppliedConstant]) -> tuple[AppliedConstant, ...]:
    return tuple(sorted(set(constants), key=lambda c: (c.key, c.source, c.value)))
