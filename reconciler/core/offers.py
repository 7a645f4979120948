"""What the provider offers: plan ids (``rid``) and locations the spec uses, checked against the
account's price list and locations before anything is created (pure; the engine fetches).

``reconcile validate --remote`` checks every plan and region of the spec; every plan that
creates or resizes checks the plans and regions its changes use, so a typo in ``rid`` or
``location_id`` is an error before the first ``add_instance``, not a failure mid-apply.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from reconciler.core.errors import UserError
from reconciler.core.fleet import Location, PricePlan
from reconciler.core.plans import Action, Plan
from specs.model import FleetSpec

__all__ = ["OfferError", "OfferProblem", "offer_problems", "plan_mismatches", "plan_uses"]


@dataclass(frozen=True, slots=True)
class OfferProblem:
    """One value of the spec the provider does not offer: where (a field path) and why."""

    path: tuple[str, ...]
    message: str
    hint: str


class OfferError(UserError):
    """The spec names plans or locations the provider does not offer."""

    def __init__(self, problems: Sequence[OfferProblem], where: Sequence[str] = ()) -> None:
        places = [*where, *[""] * (len(problems) - len(where))]
        lines = [
            (f"{at}: " if at else "") + f"{'.'.join(p.path)}: {p.message} ({p.hint})"
            for p, at in zip(problems, places, strict=False)
        ]
        super().__init__(
            "the provider does not offer what the spec asks for; nothing was created:\n  "
            + "\n  ".join(lines),
            hint="fix the spec from `reconcile validate --remote`",
        )
        self.problems = tuple(problems)


def plan_uses(plan: Plan) -> tuple[set[str], set[str]]:
    """(plan names, region names) that the plan's creates and resizes need."""
    plans: set[str] = set()
    regions: set[str] = set()
    for change in plan.changes:
        if change.action in (Action.CREATE, Action.RESIZE) and change.plan is not None:
            plans.add(change.plan)
        if change.action is Action.CREATE:
            regions.add(change.region)
    return plans, regions


def _near(value: int, offered: Iterable[int]) -> str:
    texts = [str(v) for v in sorted(offered)]
    close = difflib.get_close_matches(str(value), texts, n=3, cutoff=0.5)
    shown = close or texts[:12]
    return ", ".join(shown) + (" ..." if not close and len(texts) > 12 else "")


def plan_mismatches(spec: FleetSpec, prices: Sequence[PricePlan]) -> list[OfferProblem]:
    """A plan whose declared size (vcpu, ram_gb, disk_gb, transfer_tb) is not the size of
    the provider's plan with its ``rid``: the capacity and cost figures would be wrong."""
    by_rid = {p.rid: p for p in prices}
    found: list[OfferProblem] = []
    for name in sorted(spec.plans):
        plan = spec.plans[name]
        offered = by_rid.get(plan.rid)
        if offered is None:
            continue
        declared: list[tuple[str, object, object]] = [
            ("vcpu", plan.vcpu, offered.vcpu),
            ("ram_gb", plan.ram_gb, offered.ram_gb),
            ("disk_gb", plan.disk_gb, offered.disk_gb),
        ]
        bandwidth = offered.bandwidth.strip()
        if bandwidth.isdigit() and "transfer_tb" in plan.model_fields_set:  # GB per month
            declared.append(("transfer_tb", plan.transfer_tb, Decimal(bandwidth) / 1000))
        for field, mine, theirs in declared:
            if Decimal(str(mine)) != Decimal(str(theirs)):
                found.append(
                    OfferProblem(
                        ("plans", name, field),
                        f"{field} is {mine}, but the provider's plan rid {plan.rid} "
                        f"({offered.name}) has {theirs}",
                        "copy the size from the price list",
                    )
                )
    return found


def offer_problems(
    spec: FleetSpec,
    prices: Sequence[PricePlan],
    locations: Sequence[Location],
    *,
    plans: Iterable[str] | None = None,
    regions: Iterable[str] | None = None,
) -> list[OfferProblem]:
    """Plans whose ``rid`` is not in ``prices`` and regions whose ``location_id`` is not in
    ``locations`` (all of the spec's, or only ``plans``/``regions``)."""
    rids = {p.rid for p in prices}
    location_ids = {loc.location_id for loc in locations}
    problems: list[OfferProblem] = []
    for name in sorted(spec.plans if plans is None else plans):
        plan = spec.plans.get(name)
        if plan is not None and plan.rid not in rids:
            problems.append(
                OfferProblem(
                    ("plans", name, "rid"),
                    f"the provider offers no plan with rid {plan.rid}",
                    f"rids in the account's price list: {_near(plan.rid, rids)}",
                )
            )
    for name in sorted(spec.regions if regions is None else regions):
        region = spec.regions.get(name)
        if region is not None and region.location_id not in location_ids:
            offered = ", ".join(
                f"{loc.location_id} ({loc.name})"
                for loc in sorted(locations, key=lambda x: x.location_id)
            )
            problems.append(
                OfferProblem(
                    ("regions", name, "location_id"),
                    f"the provider has no location {region.location_id}",
                    f"locations: {offered or 'none'}",
                )
            )
    return problems
