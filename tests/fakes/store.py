"""An in-memory ``StorePort``: small, but faithful to the store contract.

- nodes are keyed by (fleet, name); ``service_id`` is unique among open nodes; closing a node
  keeps it (status ``decommissioned``) and ``load_fleet`` leaves it out;
- intents get increasing ids and ``created_at`` from the injected clock;
- fencing (as the SQL store): a write for a fleet carrying an ``epoch`` older than the newest
  epoch granted by ``acquire_lock`` under the fleet's name is refused (``LeadershipLostError``);
- locks: one holder per name until it expires or is released; a new holder gets a new epoch,
  the same holder renewing keeps its epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from reconciler.core.errors import LeadershipLostError, LockHeldError, StoreError
from reconciler.core.fleet import (
    CostConstant,
    IntentStatus,
    Maintenance,
    MarksDelta,
    NodeMark,
    NodeMetrics,
    NodeStatus,
    RecordedFleet,
    RecordedIntent,
    RecordedNode,
    StepStatus,
    peak_count,
)
from reconciler.core.ports import Lease, LockHolder, RunRecord


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class InMemoryStore:
    def __init__(self, now: Callable[[], datetime] = _wall_clock) -> None:
        self._now = now
        self.nodes: dict[tuple[str, str], RecordedNode] = {}
        self.intents: dict[int, RecordedIntent] = {}
        self.runs: dict[int, RunRecord] = {}
        self.locks: dict[str, Lease] = {}
        self.protected: dict[str, set[str]] = {}
        self.costs: dict[tuple[str, str], CostConstant] = {}
        self.cost_log: list[CostConstant] = []
        self.metrics: dict[tuple[str, str], list[NodeMetrics]] = {}
        self.epochs: dict[str, int] = {}
        self._closed = False
        #: the node history: [fleet, name, created_at, closed_at or None] per record
        self.spans: list[list[Any]] = []
        #: every write, in order: (operation, target) — lets tests count journal writes
        self.writes: list[tuple[str, str]] = []
        #: per (fleet, node): the newest recorded beat's signed timestamp (replays refused)
        self.beat_sent_at: dict[tuple[str, str], int] = {}
        #: per (fleet, node): how many beats were recorded (SqlStore's heartbeat_seq)
        self.beat_seq: dict[tuple[str, str], int] = {}
        #: set to a StoreError to make heartbeat writes fail (a store outage)
        self.fail_heartbeats: StoreError | None = None

    # --- plumbing ------------------------------------------------------------------------

    def _check(self, epoch: int | None, fleet: str | None = None) -> None:
        if self._closed:
            raise StoreError("the store is closed")
        current = self.epochs.get(fleet, 0) if fleet is not None else 0
        if epoch is not None and epoch < current:
            raise LeadershipLostError(
                f"fenced: epoch {epoch} is older than epoch {current} of fleet {fleet!r}"
            )

    def _put_node(self, node: RecordedNode) -> None:
        if node.service_id is not None:
            for key, other in self.nodes.items():
                if (
                    other.service_id == node.service_id
                    and key != (node.fleet, node.name)
                    and other.status is not NodeStatus.DECOMMISSIONED
                ):
                    raise StoreError(
                        f"service id {node.service_id} already belongs to node {other.name}"
                    )
        old = self.nodes.get((node.fleet, node.name))
        if not node.steps and old is not None and old.status is not NodeStatus.DECOMMISSIONED:
            node = replace(node, steps=old.steps)  # as SqlStore: no step state keeps the old
        if old is not None and old.status is not NodeStatus.DECOMMISSIONED:
            # as SqlStore: provisioning facts written as None keep the recorded ones, and
            # maintenance is never written by an upsert
            node = replace(
                node,
                host_key=node.host_key or old.host_key,
                bundle_version=node.bundle_version or old.bundle_version,
                agent_url=node.agent_url or old.agent_url,
                quarantine=node.quarantine or old.quarantine,
                maintenance=old.maintenance,
                slot_failures=old.slot_failures,
            )
        else:
            node = replace(node, maintenance=None)
            # a new record (as SqlStore: a new row): its span in the node history opens
            self.spans.append([node.fleet, node.name, node.created_at or self._now(), None])
        self.nodes[(node.fleet, node.name)] = node

    # --- reading -------------------------------------------------------------------------

    def load_fleet(self, fleet: str) -> RecordedFleet:
        self._check(None)
        nodes = tuple(
            sorted(
                (
                    n
                    for (f, _), n in self.nodes.items()
                    if f == fleet and n.status is not NodeStatus.DECOMMISSIONED
                ),
                key=lambda n: n.name,
            )
        )
        pending = tuple(
            i
            for i in sorted(self.intents.values(), key=lambda i: i.id)
            if i.fleet == fleet and i.status is IntentStatus.PENDING
        )
        protected = set(self.protected.get(fleet, set()))
        protected.update(n.name for n in nodes if n.protected)
        return RecordedFleet(
            fleet=fleet,
            nodes=nodes,
            pending_intents=pending,
            cost_overrides=tuple(self.costs[k] for k in sorted(self.costs)),
            protected_names=frozenset(protected),
        )

    def pending_intents(self, fleet: str) -> tuple[RecordedIntent, ...]:
        self._check(None)
        return tuple(
            i
            for i in sorted(self.intents.values(), key=lambda i: i.id)
            if i.fleet == fleet and i.status is IntentStatus.PENDING
        )

    def peak_fleet_size(self, fleet: str, since: datetime) -> int:
        self._check(None)
        return peak_count(((s[2], s[3]) for s in self.spans if s[0] == fleet), since)

    def journal(self, fleet: str, limit: int = 100) -> list[RecordedIntent]:
        rows = [i for i in self.intents.values() if i.fleet == fleet]
        return sorted(rows, key=lambda i: i.id, reverse=True)[:limit]

    # --- the journal ---------------------------------------------------------------------

    def begin_intent(
        self,
        fleet: str,
        kind: str,
        target: str,
        params: Mapping[str, str],
        *,
        epoch: int | None = None,
        node: RecordedNode | None = None,
        done: bool = False,
    ) -> RecordedIntent:
        self._check(epoch, fleet)
        now = self._now()
        intent = RecordedIntent(
            id=len(self.intents) + 1,
            fleet=fleet,
            kind=kind,
            target=target,
            params=dict(params),
            created_at=now,
            updated_at=now,
            epoch=epoch,
            status=IntentStatus.DONE if done else IntentStatus.PENDING,
        )
        if node is not None:
            self._put_node(node)
        self.intents[intent.id] = intent
        self.writes.append(("begin_intent", f"{kind}:{target}"))
        return intent

    def finish_intent(
        self,
        intent_id: int,
        status: IntentStatus,
        *,
        error: str | None = None,
        node: RecordedNode | None = None,
        epoch: int | None = None,
    ) -> None:
        intent = self.intents.get(intent_id)
        if intent is None:
            raise StoreError(f"no intent {intent_id}")
        self._check(epoch, intent.fleet)
        if node is not None:
            self._put_node(node)
        self.intents[intent_id] = replace(
            intent, status=status, error=error, updated_at=self._now(), epoch=epoch
        )
        self.writes.append(("finish_intent", f"{intent.kind}:{intent.target}"))

    def retry_intent(self, intent_id: int, *, epoch: int | None = None) -> RecordedIntent:
        intent = self.intents.get(intent_id)
        if intent is None or intent.status is not IntentStatus.PENDING:
            raise StoreError(f"no pending intent {intent_id}")
        self._check(epoch, intent.fleet)
        updated = replace(intent, attempts=intent.attempts + 1, updated_at=self._now())
        self.intents[intent_id] = updated
        self.writes.append(("retry_intent", intent.target))
        return updated

    # --- nodes ---------------------------------------------------------------------------

    def upsert_node(self, node: RecordedNode, *, epoch: int | None = None) -> None:
        self._check(epoch, node.fleet)
        self._put_node(node)
        self.writes.append(("upsert_node", node.name))

    def upsert_nodes(self, nodes: Sequence[RecordedNode], *, epoch: int | None = None) -> None:
        for fleet in {n.fleet for n in nodes}:
            self._check(epoch, fleet)
        saved = dict(self.nodes)
        try:
            for node in nodes:
                self._put_node(node)
        except StoreError:
            self.nodes = saved
            raise
        self.writes.append(("upsert_nodes", str(len(nodes))))

    def refresh_costs(
        self,
        fleet: str,
        costs: Mapping[str, tuple[Decimal, Decimal]],
        *,
        epoch: int | None = None,
    ) -> list[str]:
        self._check(epoch, fleet)
        changed: list[str] = []
        for (f, name), node in list(self.nodes.items()):
            target = costs.get(name)
            if f != fleet or target is None or node.status is NodeStatus.DECOMMISSIONED:
                continue
            total, ip = target
            if node.approximate_cost != total or node.ip_cost != ip:
                self.nodes[(f, name)] = replace(node, approximate_cost=total, ip_cost=ip)
                changed.append(name)
        self.writes.append(("refresh_costs", str(len(changed))))
        return sorted(changed)

    def close_node(self, fleet: str, name: str, at: datetime, *, epoch: int | None = None) -> None:
        self._check(epoch, fleet)
        node = self.nodes.get((fleet, name))
        if node is None:
            return
        if node.status is not NodeStatus.DECOMMISSIONED:
            for span in self.spans:
                if span[0] == fleet and span[1] == name and span[3] is None:
                    span[3] = at
        self.nodes[(fleet, name)] = replace(
            node, status=NodeStatus.DECOMMISSIONED, status_changed_at=at
        )
        self.writes.append(("close_node", name))

    def set_protected(self, fleet: str, name: str, protected: bool) -> None:
        self._check(None)
        names = self.protected.setdefault(fleet, set())
        if protected:
            names.add(name)
        else:
            names.discard(name)
        node = self.nodes.get((fleet, name))
        if node is not None:
            self.nodes[(fleet, name)] = replace(node, protected=protected)

    def set_maintenance(
        self, fleet: str, name: str, maintenance: Maintenance | None
    ) -> RecordedNode:
        return self._update(fleet, name, maintenance=maintenance)

    def retry_steps(self, fleet: str, name: str) -> tuple[RecordedNode, tuple[str, ...]]:
        node = self.nodes.get((fleet, name))
        if node is None or node.status is NodeStatus.DECOMMISSIONED:
            raise StoreError(f"no recorded node {name!r} in fleet {fleet!r}")
        failed = tuple(s.name for s in node.steps if s.status is not StepStatus.DONE)
        kept = tuple(s for s in node.steps if s.status is StepStatus.DONE)
        return self._update(fleet, name, steps=kept), failed

    def clear_quarantine(self, fleet: str, name: str, *, repin: bool = False) -> RecordedNode:
        if repin:
            return self._update(fleet, name, quarantine=None, host_key=None, slot_failures=0)
        return self._update(fleet, name, quarantine=None, slot_failures=0)

    def _update(self, fleet: str, name: str, **values: object) -> RecordedNode:
        self._check(None)
        node = self.nodes.get((fleet, name))
        if node is None or node.status is NodeStatus.DECOMMISSIONED:
            raise StoreError(f"no recorded node {name!r} in fleet {fleet!r}")
        node = replace(node, **values)  # type: ignore[arg-type]
        self.nodes[(fleet, name)] = node
        return node

    # --- runs ----------------------------------------------------------------------------

    def start_run(self, run: RunRecord) -> int:
        self._check(None)
        run_id = len(self.runs) + 1
        self.runs[run_id] = run
        return run_id

    def finish_run(
        self, run_id: int, outcome: str, finished_at: datetime, error: str | None = None
    ) -> None:
        self._check(None)
        run = self.runs.get(run_id)
        if run is None:
            raise StoreError(f"no run {run_id}")
        self.runs[run_id] = replace(run, outcome=outcome, finished_at=finished_at, error=error)

    # --- one writer ----------------------------------------------------------------------

    def acquire_lock(self, name: str, owner: str, ttl_seconds: float, now: datetime) -> Lease:
        self._check(None)
        held = self.locks.get(name)
        if (
            held is not None
            and held.owner != owner
            and (held.expires_at is None or held.expires_at > now)
        ):
            raise LockHeldError(
                f"{name} is held by {held.owner}",
                hint="wait for the other run to finish, or check that it is still alive",
            )
        # as SqlStore: the same owner keeps its epoch (even renewing late) while no other
        # writer was granted a newer one
        still_mine = (
            held is not None and held.owner == owner and held.epoch == self.epochs.get(name, 0)
        )
        if not still_mine:
            self.epochs[name] = self.epochs.get(name, 0) + 1
        lease = Lease(
            name=name,
            owner=owner,
            epoch=self.epochs[name],
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
        self.locks[name] = lease
        return lease

    def lock_holder(self, name: str, now: datetime) -> LockHolder | None:
        self._check(None)
        held = self.locks.get(name)
        if held is None or (held.expires_at is not None and held.expires_at <= now):
            return None
        return LockHolder(name, held.owner, held.epoch, expires_at=held.expires_at)

    def break_lock(self, name: str, epoch: int) -> bool:
        self._check(None)
        held = self.locks.get(name)
        if held is None or held.epoch != epoch:
            return False
        del self.locks[name]
        if self.epochs.get(name, 0) == epoch:
            self.epochs[name] = epoch + 1  # the holder is fenced
        return True

    def release_lock(self, lease: Lease) -> None:
        held = self.locks.get(lease.name)
        if held is not None and held.owner == lease.owner and held.epoch == lease.epoch:
            del self.locks[lease.name]

    # --- costs ---------------------------------------------------------------------------

    def set_cost_constant(
        self, key: str, scope: str, value: Decimal, set_by: str, at: datetime
    ) -> None:
        self._check(None)
        constant = CostConstant(key=key, scope=scope, value=value, set_by=set_by, set_at=at)
        self.costs[(key, scope)] = constant
        self.cost_log.append(constant)

    def cost_constants(self) -> list[CostConstant]:
        return [self.costs[k] for k in sorted(self.costs)]

    def cost_history(self, key: str | None = None) -> list[dict[str, str]]:
        return [
            {
                "key": c.key,
                "scope": c.scope,
                "value": str(c.value),
                "set_by": c.set_by,
                "set_at": c.set_at.isoformat(),
            }
            for c in reversed(self.cost_log)
            if key is None or c.key == key
        ]

    # --- heartbeats ----------------------------------------------------------------------

    def record_heartbeats(self, fleet: str, beats: Sequence[NodeMetrics]) -> int:
        return sum(self.record_beats(fleet, beats))

    def record_beats(self, fleet: str, beats: Sequence[NodeMetrics]) -> list[bool]:
        self._check(None)
        if self.fail_heartbeats is not None:
            raise self.fail_heartbeats
        outcome: list[bool] = []
        for beat in beats:
            node = self.nodes.get((fleet, beat.node))
            if node is None or node.status is NodeStatus.DECOMMISSIONED:
                outcome.append(False)
                continue
            newest = self.beat_sent_at.get((fleet, beat.node))
            if beat.sent_at is not None and newest is not None and beat.sent_at <= newest:
                outcome.append(False)  # a replay
                continue
            if beat.sent_at is not None:
                self.beat_sent_at[(fleet, beat.node)] = beat.sent_at
            self.nodes[(fleet, beat.node)] = replace(node, last_heartbeat=beat.at)
            self.metrics.setdefault((fleet, beat.node), []).append(beat)
            self.beat_seq[(fleet, beat.node)] = self.beat_seq.get((fleet, beat.node), 0) + 1
            outcome.append(True)
        return outcome

    def recent_metrics(
        self, fleet: str, since: datetime, nodes: Collection[str] | None = None
    ) -> dict[str, list[NodeMetrics]]:
        self._check(None)
        result: dict[str, list[NodeMetrics]] = {}
        for (f, name), beats in self.metrics.items():
            if f != fleet or (nodes is not None and name not in nodes):
                continue
            node = self.nodes.get((f, name))
            if node is None or node.status is NodeStatus.DECOMMISSIONED:
                continue
            recent = sorted((b for b in beats if b.at >= since), key=lambda b: b.at)
            if recent:
                result[name] = recent
        return result

    def metrics_after(
        self, fleet: str, since: datetime, starts: Mapping[str, int]
    ) -> dict[str, list[NodeMetrics]]:
        """As SqlStore: the node's beats after its first ``start`` (all of them kept here, in
        the order recorded; no window)."""
        self._check(None)
        result: dict[str, list[NodeMetrics]] = {}
        for name, start in starts.items():
            node = self.nodes.get((fleet, name))
            if node is None or node.status is NodeStatus.DECOMMISSIONED:
                continue
            beats = self.metrics.get((fleet, name), [])
            count = self.beat_seq.get((fleet, name), 0)
            newer = (
                beats
                if start < 0 or count < start
                else beats[max(0, len(beats) - (count - start)) :]
            )
            recent = sorted((b for b in newer if b.at >= since), key=lambda b: b.at)
            if recent:
                result[name] = recent
        return result

    def node_marks(self, fleet: str) -> dict[str, NodeMark]:
        """As SqlStore; the version is the record itself without its last beat (so a test
        that replaces a record in ``nodes`` is seen too)."""
        self._check(None)
        return {
            name: NodeMark(
                name,
                self.beat_seq.get((f, name), 0),
                node.last_heartbeat,
                repr(replace(node, last_heartbeat=None)),
            )
            for (f, name), node in self.nodes.items()
            if f == fleet and node.status is not NodeStatus.DECOMMISSIONED
        }

    def node_marks_since(self, fleet: str, cursor: object | None) -> MarksDelta:
        """Every mark each time (as SqlStore on SQLite)."""
        return MarksDelta(self.node_marks(fleet), complete=True)

    def nodes_named(self, fleet: str, names: Collection[str]) -> list[RecordedNode]:
        self._check(None)
        return sorted(
            (
                node
                for name in set(names)
                if (node := self.nodes.get((fleet, name))) is not None
                and node.status is not NodeStatus.DECOMMISSIONED
            ),
            key=lambda n: n.name,
        )

    def prune_metrics(self, older_than: datetime) -> int:
        removed = 0
        for key, beats in self.metrics.items():
            kept = [b for b in beats if b.at >= older_than]
            removed += len(beats) - len(kept)
            self.metrics[key] = kept
        return removed

    def close(self) -> None:
        self._closed = True
