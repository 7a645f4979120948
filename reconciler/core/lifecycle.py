"""An operator's hold on a node (pure): maintenance and quarantine.

- **Maintenance** (``reconcile node maintenance NAME --reason``, recorded with who, why and
  since when; it survives spec changes and restarts because it lives in the store, and the
  engine never writes it): a node in rotation goes out (status ``maintenance``: no new mail,
  its queue drains), and it stays out, with a note in every plan, until ``reconcile node
  resume NAME`` clears it; then it goes back into rotation (``warming`` or ``active``, by its
  warmup). A provisioning node in maintenance stops at its current step.
- **Quarantine** (a changed SSH host key, recorded by the bootstrap): the node is out of
  rotation and never worked on until an operator releases it (``reconcile node release``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.core.fleet import NodeStatus
from reconciler.core.matching import LiveNode
from reconciler.core.pipeline import StepContext, node_change, rotation_status
from reconciler.core.plans import Action, Change

__all__ = ["Hold", "hold"]


@dataclass(slots=True)
class Hold:
    """What the operator's hold on a node means for this plan."""

    held: bool = False  # the health rule and the pipeline leave the node alone
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def hold(node: LiveNode, ctx: StepContext) -> Hold:
    record = node.record
    result = Hold()
    if record is None:
        return result
    maintenance = record.maintenance
    if maintenance is not None:
        result.held = True
        since = maintenance.since.strftime("%Y-%m-%d %H:%M UTC")
        result.notes.append(
            f"{node.name}: in maintenance (by {maintenance.by} since {since}): "
            f"{maintenance.reason}; `reconcile node resume {node.name}` ends it"
        )
        if node.status not in (NodeStatus.MAINTENANCE, NodeStatus.PROVISIONING):
            result.changes.append(
                node_change(
                    Action.PAUSE,
                    node,
                    f"maintenance by {maintenance.by}: {maintenance.reason} "
                    "(out of the sending rotation; its queue drains)",
                    before={"status": node.status.value},
                    after={"status": NodeStatus.MAINTENANCE.value},
                    status=NodeStatus.MAINTENANCE,
                )
            )
        return result
    if record.quarantine:
        result.held = True
        result.notes.append(
            f"{node.name}: quarantined ({record.quarantine}); `reconcile node release "
            f"{node.name}` after checking it"
        )
        if node.status.in_rotation:
            result.changes.append(
                node_change(
                    Action.PAUSE,
                    node,
                    f"quarantined: {record.quarantine}",
                    before={"status": node.status.value},
                    after={"status": NodeStatus.PAUSED.value},
                    status=NodeStatus.PAUSED,
                )
            )
        return result
    if node.status is NodeStatus.MAINTENANCE:
        back = rotation_status(node, ctx)
        result.held = True
        result.changes.append(
            node_change(
                Action.RESUME,
                node,
                "maintenance over: back into the sending rotation",
                before={"status": NodeStatus.MAINTENANCE.value},
                after={"status": back.value},
                status=back,
            )
        )
    return result
