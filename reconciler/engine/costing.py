"""Recorded monthly costs kept in line with the cost constants (issue 16: one number
everywhere).

Every apply (even one with nothing to change) and every change of a cost constant ends with
``refresh_recorded_costs``: each open node's ``approximate_cost`` (and its VPS / IP split) is
what ``core.costs`` gives today, in cents. Plans, ``reconcile status``, the metrics,
``/v1/fleet`` and the status page all sum those per-node figures.
"""

from __future__ import annotations

from collections.abc import Callable

from reconciler.core.costs import recorded_costs
from reconciler.core.ports import StorePort
from specs.model import FleetSpec


def refresh_recorded_costs(
    spec: FleetSpec,
    store: StorePort,
    *,
    epoch: int | None = None,
    before_mutation: Callable[[], None] | None = None,
) -> list[str]:
    """Write the costs the constants give today to the open nodes whose record differs.
    Returns the names of the nodes changed (sorted)."""
    recorded = store.load_fleet(spec.name)
    wanted = recorded_costs(spec, recorded.nodes, recorded.cost_overrides)
    if not wanted:
        return []
    stale = any(n.approximate_cost != wanted[n.name][0] for n in recorded.nodes if n.name in wanted)
    if stale and before_mutation is not None:
        before_mutation()  # the daemon's live leadership check (the epoch fences the write)
    return store.refresh_costs(spec.name, wanted, epoch=epoch)
