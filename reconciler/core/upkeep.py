"""Upkeep of nodes in service (pure): rolling re-bootstrap and scheduled drift checks.

- **Rolling re-bootstrap.** The bootstrap bundle is versioned by its content hash
  (``reconciler.node.bundle``); the engine passes each node's current version in
  ``PlanOptions.bundle_versions``. A node in rotation whose recorded ``bundle_version``
  differs is updated by a ``rebootstrap`` step: out of rotation (status ``maintenance``) while
  the new bundle runs, then back (``warming`` or ``active``). Nodes in rotation start an
  update only within the disruption budget (``disruption.max_unavailable``, shared with
  removals and resizes), region by region; the others wait, with a note. A node whose update
  was interrupted or failed (status ``maintenance`` with an unfinished ``rebootstrap`` step
  and no operator's hold) is updated again before any other, without taking more budget;
  the executor quarantines it when the attempts run out, so it never goes back unverified.
- **Drift checks** (every ``provisioning.drift_check``): a ``drift`` step on each node in
  rotation whose last check (the recorded ``drift`` step) is older than the interval: the
  host key (a different one quarantines the node), its DNS records and forward-confirmed
  reverse DNS (republished; still wrong: quarantined), and the bootstrap's own check on the
  node (files and services; run again; still wrong: quarantined).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.core.fleet import NodeStatus, ServerStatus, StepStatus
from reconciler.core.matching import LiveNode
from reconciler.core.pipeline import StepContext, node_change, rotation_status
from reconciler.core.plans import Action, Change
from specs.model import FleetSpec

__all__ = ["DRIFT", "REBOOTSTRAP", "Upkeep", "upkeep"]

REBOOTSTRAP = "rebootstrap"
DRIFT = "drift"


@dataclass(slots=True)
class Upkeep:
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: in-rotation nodes this upkeep takes out (counted against the disruption budget)
    disrupted: int = 0
    #: nodes whose update waits for the disruption budget
    deferred: int = 0


def _interrupted(node: LiveNode) -> bool:
    """Out of rotation by an unfinished re-bootstrap (not by an operator or another rule)."""
    record = node.record
    if record is None or node.status is not NodeStatus.MAINTENANCE:
        return False
    if record.maintenance is not None and record.maintenance.active:
        return False
    state = record.step(REBOOTSTRAP)
    return state is not None and state.status is StepStatus.FAILED


def _forgotten(node: LiveNode, outdated: bool) -> bool:
    """In maintenance that no operator's hold explains, on an outdated bundle, with no
    re-bootstrap recorded: an interrupted update whose failed step an operator's ``reconcile
    node retry`` forgot (else nothing would ever bring the node back)."""
    record = node.record
    if record is None or not outdated or node.status is not NodeStatus.MAINTENANCE:
        return False
    if record.maintenance is not None and record.maintenance.active:
        return False
    return record.paused_by is None and record.step(REBOOTSTRAP) is None


def _short(version: str | None) -> str:
    return (version or "none")[:12]


def upkeep(
    nodes: Sequence[LiveNode],
    spec: FleetSpec,
    ctx: StepContext,
    *,
    bundle_versions: Mapping[str, str] | None,
    budget: int,
    busy: frozenset[str],
    now: datetime,
) -> Upkeep:
    """The rebootstrap and drift changes of this plan. ``busy``: nodes another rule already
    changes in this plan (left alone); ``budget``: in-rotation nodes this plan may still take
    out of service."""
    result = Upkeep()
    settings = spec.provisioning
    if settings is None:
        return result
    candidates = sorted(
        (
            n
            for n in nodes
            if n.record is not None
            and n.condemned is None
            and not n.victim
            and n.name not in busy
            and n.name not in ctx.unhealthy
            and n.server.status is ServerStatus.ACTIVE
            and n.server.main_ip is not None
            and not n.record.quarantine
            and n.record.host_key is not None
        ),
        # interrupted updates first, then region by region
        key=lambda n: (not _interrupted(n), n.region, n.name),
    )
    for node in candidates:
        record = node.record
        assert record is not None
        wanted = bundle_versions.get(node.name) if bundle_versions is not None else None
        outdated = (
            wanted is not None
            and record.bundle_version is not None
            and record.bundle_version != wanted
        )
        interrupted = _interrupted(node) or _forgotten(node, outdated)
        if interrupted or (outdated and node.status.in_rotation):
            if not interrupted:
                if budget <= 0:
                    result.deferred += 1
                    continue
                budget -= 1
                result.disrupted += 1
            back = rotation_status(node, ctx)
            state = record.step(REBOOTSTRAP)
            why = (
                f"re-bootstrap interrupted or failed ({state.error if state else 'no detail'}):"
                f" again, still out of rotation (attempt {state.attempts + 1 if state else 1})"
                if interrupted
                else f"bundle changed ({_short(record.bundle_version)} -> {_short(wanted)}): "
                "rolling re-bootstrap, in maintenance while it is updated, then back"
            )
            result.changes.append(
                node_change(
                    Action.PROVISION,
                    node,
                    why,
                    before={"bundle": _short(record.bundle_version), "status": node.status.value},
                    after={"bundle": _short(wanted), "status": back.value},
                    status=back,
                    step=REBOOTSTRAP,
                    hostname=settings.hostname(node.name),
                    ip=node.server.main_ip,
                )
            )
            continue
        if not node.status.in_rotation or outdated:
            continue
        last = record.step(DRIFT)
        since = last.at if last is not None and last.at is not None else None
        if since is None:
            done = record.step("verify")
            since = done.at if done is not None else record.created_at
        if since is not None and now - since < settings.drift_check:
            continue
        minutes = int(settings.drift_check.total_seconds() // 60)
        result.changes.append(
            node_change(
                Action.PROVISION,
                node,
                f"scheduled drift check (every {minutes} min): host key, DNS and FCrDNS, "
                "the bootstrap's files and services",
                before={"checked": since.strftime("%Y-%m-%d %H:%M") if since else "never"},
                after={"checked": "now"},
                status=node.status,
                step=DRIFT,
                hostname=settings.hostname(node.name),
                ip=node.server.main_ip,
            )
        )
    if result.deferred:
        result.notes.append(
            f"{result.deferred} node(s) wait for the disruption budget to re-bootstrap their "
            f"changed bundle (disruption.max_unavailable = {spec.disruption.max_unavailable})"
        )
    return result
