"""The apply's journal: every store write of an apply, fenced and hooked (design §3, §5).

- Every write carries the writer's ``epoch`` (the store refuses a stale one with
  ``LeadershipLostError``) and is preceded by the ``before_mutation`` hook (the test kill hook,
  the fence check).
- ``begin``/``finish`` write an intent row before and after each mutating cloud call; a node
  record written with it goes in the same transaction.
- The journal keeps the run's view of the node records (``nodes``), so that the later changes
  of a node see what the earlier ones wrote.
- ``hold`` puts a record in that view without a write of its own: the node's next write (an
  intent begun on it, an upsert) carries it in the same transaction, and ``flush`` writes what
  is still held (the step executors flush when a step run ends). Only for a step whose record,
  lost in a crash, makes the rerun repeat something harmless (a host key scanned again on first
  contact, a test mail found at the sink again).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime

from reconciler.core.fleet import (
    IntentStatus,
    NodeStatus,
    RecordedFleet,
    RecordedIntent,
    RecordedNode,
)
from reconciler.core.ports import Clock, StorePort


class Journal:
    def __init__(
        self,
        store: StorePort,
        fleet: str,
        clock: Clock,
        recorded: RecordedFleet,
        *,
        epoch: int | None = None,
        before_mutation: Callable[[], None] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        #: added to every intent's params: who acted and the spec revision (an action's own
        #: params win on a clash)
        self.tags = dict(tags or {})
        self.fleet = fleet
        self.clock = clock
        self.recorded = recorded
        self.epoch = epoch
        self._before = before_mutation
        self.nodes: dict[str, RecordedNode] = {n.name: n for n in recorded.nodes}
        self._closed_intents: set[int] = set()
        #: records in ``nodes`` not written yet (``hold``), by node name
        self._held: dict[str, RecordedNode] = {}

    def now(self) -> datetime:
        return self.clock.now()

    def mutating(self) -> None:
        """Called right before every mutating step (store write or cloud mutation)."""
        if self._before is not None:
            self._before()

    def node(self, name: str) -> RecordedNode | None:
        return self.nodes.get(name)

    # --- intents -------------------------------------------------------------------------

    def begin(
        self,
        kind: str,
        target: str,
        params: Mapping[str, str],
        node: RecordedNode | None = None,
        *,
        done: bool = False,
    ) -> RecordedIntent:
        self.mutating()
        if node is None:
            node = self._held.get(target)  # a held record goes with the node's next write
        intent = self.store.begin_intent(
            self.fleet,
            kind,
            target,
            {**self.tags, **params},
            epoch=self.epoch,
            node=node,
            done=done,
        )
        if node is not None:
            self.nodes[node.name] = node
            self._held.pop(node.name, None)
        return intent

    def finish(
        self,
        intent: RecordedIntent,
        status: IntentStatus,
        *,
        error: str | None = None,
        node: RecordedNode | None = None,
    ) -> None:
        self.mutating()
        self.store.finish_intent(intent.id, status, error=error, node=node, epoch=self.epoch)
        self._closed_intents.add(intent.id)
        if node is not None:
            self.nodes[node.name] = node
            self._held.pop(node.name, None)

    def finish_once(self, intent: RecordedIntent, status: IntentStatus, error: str) -> None:
        """Close ``intent`` unless this run closed it already."""
        if intent.id in self._closed_intents:
            return
        self.finish(intent, status, error=error)

    def pending(self, kind: str, target: str) -> list[RecordedIntent]:
        """The pending intents of ``kind`` on ``target`` the run started with."""
        return [i for i in self.recorded.pending_intents if i.kind == kind and i.target == target]

    def supersede(self, kind: str, target: str) -> None:
        """Close older pending intents of ``kind`` on ``target`` (an interrupted attempt)."""
        for intent in self.pending(kind, target):
            self.finish_once(
                intent, IntentStatus.FAILED, "interrupted; superseded by a new attempt"
            )

    # --- node records --------------------------------------------------------------------

    def upsert(self, node: RecordedNode) -> None:
        self.mutating()
        self.store.upsert_node(node, epoch=self.epoch)
        self.nodes[node.name] = node
        self._held.pop(node.name, None)

    def hold(self, node: RecordedNode) -> None:
        """``node`` into the run's view, written with the node's next write or by ``flush``
        (see the module's docstring for when that is allowed)."""
        self.nodes[node.name] = node
        self._held[node.name] = node

    def flush(self, name: str | None = None) -> None:
        """Write the held record of node ``name`` (every held record when None), if any."""
        names = [name] if name is not None else sorted(self._held)
        for held in names:
            node = self._held.get(held)
            if node is not None:
                self.upsert(node)

    def close(self, name: str) -> None:
        self.mutating()
        self.store.close_node(self.fleet, name, self.now(), epoch=self.epoch)
        self.nodes.pop(name, None)
        self._held.pop(name, None)

    def status_change(self, kind: str, before: RecordedNode, after: RecordedNode, why: str) -> None:
        """Write ``after`` with a journal entry (``drain``, ``pause``, ``resume``,
        ``activate``): from which status to which, and why (the plan's reason), so
        ``reconcile history`` shows every move in or out of the rotation. Nothing is
        written when the status does not change (a no-op reconcile writes nothing)."""
        if before.status is after.status:
            if before != after:
                self.upsert(after)
            return
        params = {"from": before.status.value, "to": after.status.value, "why": why[:500]}
        # one write (as the record's upsert alone was): the entry done, with the node
        self.begin(kind, after.name, params, node=after, done=True)

    def with_status(self, node: RecordedNode, status: NodeStatus) -> RecordedNode:
        """``node`` with ``status`` (and the time it changed), unchanged if it has it."""
        if node.status is status:
            return node
        # back in rotation: nobody holds it out any more (core.fleet.PausedBy)
        paused_by = None if status.in_rotation else node.paused_by
        return replace(node, status=status, status_changed_at=self.now(), paused_by=paused_by)
