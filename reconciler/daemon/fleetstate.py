"""The daemon's fleet in memory: kept up to date as beats are committed and records change,
instead of a reload of the whole fleet and every recent beat at each sweep (issue 14).

The store stays the truth. What this process knows comes from three sources:

- a **full load** (start, leadership gained, a store outage over, and every
  ``FULL_LOAD_EVERY`` as a safety net): the node marks first, then the fleet and its beats;
- the **committed beats** of this process's intake (``committed``, called by the heartbeat
  batcher on any thread once a batch is in the store): appended to an inbox, merged at the
  next ``sync``;
- a **light poll** at each ``sync`` (``StorePort.node_marks_since``: name, beat count, last
  beat and record version of each open node whose row changed since the previous poll began
  (on PostgreSQL; every open node on other stores), no figures): a record whose version
  changed is read again (``nodes_named``); a node whose beat count moved further than the
  beats merged here (another daemon ingested them, or a test wrote the store) has the beats
  recorded since read (``metrics_after``: the ring slots written since the count this state
  agreed with, not the node's whole window); closed nodes leave.

Beats are told apart by their time (``at``): a beat merged from the inbox and read from the
store is kept once. A count that disagrees (a beat committed while the poll ran) only costs
one more read of that node's beats at the next poll, never a wrong series.

Beats are held compact (``_compact``): ~100,000 of them at the production rate (10,000 nodes,
the figures horizon), so each is held as the store keeps it (no ``sent_at``, no soft bounces:
what a full reload would give), naming its node with the record's own string, and sharing each
figure's object with the previous beat of the node when the value is the same (bit for bit).
The figures read from them are the same numbers.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections import deque
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta

from reconciler.core.fleet import (
    CostConstant,
    MarksDelta,
    NodeMark,
    NodeMetrics,
    RecordedFleet,
    RecordedIntent,
    RecordedNode,
)
from reconciler.core.health import WATCHED, HealthAssessment, Liveness, liveness
from reconciler.core.ports import StorePort
from specs.model import HealthPolicy, UnhealthyAction

#: a full load at least this often, whatever the polls said (a safety net: the polls are exact
#: as long as every writer of a record advances its version)
FULL_LOAD_EVERY = timedelta(minutes=10)


@dataclasses.dataclass(frozen=True, slots=True)
class FullLoad:
    marks: dict[str, NodeMark]
    #: ``node_marks_since``'s cursor for the next poll
    cursor: object | None
    recorded: RecordedFleet
    recent: dict[str, list[NodeMetrics]]


@dataclasses.dataclass(frozen=True, slots=True)
class Changes:
    """What a poll found changed, and the store's records and beats for it."""

    marks: dict[str, NodeMark]
    costs: tuple[CostConstant, ...]
    nodes: list[RecordedNode]
    beats: dict[str, list[NodeMetrics]]
    #: nodes whose beats were read again (their series is replaced by the store's)
    reread: frozenset[str]
    #: nodes whose mark moved (the others are as this state knew them)
    moved: frozenset[str]


def read_full(store: StorePort, fleet: str, since: datetime) -> FullLoad:
    """The whole fleet (worker thread). The marks are read first: a beat recorded between
    the reads is in the series but not in the count, so the next poll reads that node again
    (the other order would lose it until the next full load)."""
    first = store.node_marks_since(fleet, None)
    recorded = store.load_fleet(fleet)
    recent = store.recent_metrics(fleet, since)
    return FullLoad(first.marks, first.cursor, recorded, recent)


def read_marks(
    store: StorePort, fleet: str, cursor: object | None
) -> tuple[MarksDelta, tuple[CostConstant, ...]]:
    """The light poll (worker thread): the marks changed since ``cursor``."""
    return store.node_marks_since(fleet, cursor), tuple(store.cost_constants())


def read_changed(
    store: StorePort,
    fleet: str,
    since: datetime,
    records: Collection[str],
    series: Mapping[str, int],
) -> tuple[list[RecordedNode], dict[str, list[NodeMetrics]]]:
    """The records a poll found changed, and the beats recorded since the count this state
    last agreed with for each node of ``series`` (``FleetState.read_from``; worker thread)."""
    nodes = store.nodes_named(fleet, records) if records else []
    beats = store.metrics_after(fleet, since, series) if series else {}
    return nodes, beats


class FleetState:
    """The recorded fleet and each node's recent beats, as this process knows them."""

    def __init__(self, fleet: str, *, window: int = 20) -> None:
        self.fleet = fleet
        #: at most this many beats per node, the newest (the store's ring keeps as many)
        self._window = max(1, window)
        self.loaded_at: datetime | None = None
        self._nodes: dict[str, RecordedNode] = {}
        #: per node: the store's mark this state agrees with (beat count, record version)
        self._marks: dict[str, NodeMark] = {}
        #: where the next poll of the marks starts (``StorePort.node_marks_since``); None: a
        #: complete read. Reset by every full load.
        self.marks_cursor: object | None = None
        #: per node: beats merged from the inbox since its mark
        self._local: dict[str, int] = {}
        #: per node, its beats oldest first: tuples, never changed in place (readers on other
        #: threads hold a snapshot of the mapping, see ``recent``)
        self._beats: dict[str, tuple[NodeMetrics, ...]] = {}
        self._inbox: deque[NodeMetrics] = deque()
        self._intents: tuple[RecordedIntent, ...] = ()
        self._costs: tuple[CostConstant, ...] = ()
        self._recorded: RecordedFleet | None = None
        #: advances whenever a record (not a beat) changes
        self.records_version = 0
        #: advances whenever a series of beats changes
        self.beats_version = 0

    # --- what the jobs read ---------------------------------------------------------------

    @property
    def recorded(self) -> RecordedFleet:
        if self._recorded is None:
            nodes = tuple(self._nodes[name] for name in sorted(self._nodes))
            self._recorded = RecordedFleet(
                fleet=self.fleet,
                nodes=nodes,
                pending_intents=self._intents,
                cost_overrides=self._costs,
                protected_names=frozenset(n.name for n in nodes if n.protected),
            )
        return self._recorded

    def recent(self) -> Mapping[str, Sequence[NodeMetrics]]:
        """Each node's beats inside the span of the last ``trim``, oldest first: a snapshot
        (a shallow copy; the series are immutable), safe to read on another thread."""
        return dict(self._beats)

    # --- the intake's hook ----------------------------------------------------------------

    def committed(self, beats: Iterable[NodeMetrics]) -> None:
        """Beats the store recorded (any thread): merged at the next ``drain``."""
        self._inbox.extend(beats)

    def drain(self) -> int:
        """Merge the committed beats waiting in the inbox; returns how many were new."""
        merged = 0
        touched: dict[str, datetime] = {}
        inbox = self._inbox
        while inbox:
            beat = inbox.popleft()
            node = self._nodes.get(beat.node)
            if node is None:
                continue  # not (or no longer) an open node here; a poll settles it
            name = node.name
            if self._merge(name, beat):
                self._local[name] = self._local.get(name, 0) + 1
                merged += 1
                last = touched.get(name)
                if last is None or beat.at > last:
                    touched[name] = beat.at
        if merged:
            self.beats_version += 1
        for name, at in touched.items():
            node = self._nodes[name]
            if node.last_heartbeat is None or at > node.last_heartbeat:
                self._set_node(dataclasses.replace(node, last_heartbeat=at))
        return merged

    def _merge(self, name: str, beat: NodeMetrics) -> bool:
        series = self._beats.get(name)
        if series is None:
            self._beats[name] = (_compact(beat, name, None),)
            return True
        if beat.at > series[-1].at:
            merged = (*series, _compact(beat, name, series[-1]))
        else:
            index = bisect.bisect_left(series, beat.at, key=_at)
            if index < len(series) and series[index].at == beat.at:
                return False
            held = _compact(beat, name, series[index - 1] if index else None)
            merged = (*series[:index], held, *series[index:])
        self._beats[name] = merged[-self._window :]
        return True

    # --- loading from the store -----------------------------------------------------------

    def apply_full(self, full: FullLoad, now: datetime) -> None:
        """Everything as the store says; beats committed here meanwhile are merged again.
        A record or a series equal to the one held is kept as the same object, so what is
        cached on it (figures, liveness) stays valid: a full load of an unchanged fleet (a
        leadership regained) recomputes nothing downstream."""
        held_nodes = self._nodes
        nodes: dict[str, RecordedNode] = {}
        changed = len(full.recorded.nodes) != len(held_nodes)
        for node in full.recorded.nodes:
            held = held_nodes.get(node.name)
            if held is not None and held == node:
                nodes[node.name] = held
            else:
                nodes[node.name] = node
                changed = True
        held_beats = self._beats
        beats: dict[str, tuple[NodeMetrics, ...]] = {}
        for name, series in full.recent.items():
            if not series:
                continue
            fresh = tuple(series)[-self._window :]
            held_series = held_beats.get(name)
            if held_series is not None and _same_beats(held_series, fresh):
                fresh = held_series
            else:
                record = nodes.get(name)
                fresh = _compact_series(fresh, record.name if record is not None else name)
            beats[name] = fresh
        self._nodes = nodes
        self._marks = {name: mark for name, mark in full.marks.items() if name in nodes}
        self.marks_cursor = full.cursor
        self._local = {}
        if beats.keys() != held_beats.keys() or any(
            beats[name] is not held_beats[name] for name in beats
        ):
            self.beats_version += 1
        self._beats = beats
        if (
            changed
            or full.recorded.pending_intents != self._intents
            or full.recorded.cost_overrides != self._costs
        ):
            self._intents = full.recorded.pending_intents
            self._costs = full.recorded.cost_overrides
            self._recorded = None
            self.records_version += 1
        self.loaded_at = now
        self.drain()

    def changed(
        self, delta: MarksDelta | Mapping[str, NodeMark]
    ) -> tuple[dict[str, NodeMark], frozenset[str], frozenset[str], frozenset[str], frozenset[str]]:
        """(the marks to apply, records to read again, beat series to read again, nodes
        closed, nodes whose mark moved) after a poll (a bare mapping: every open node's mark).
        Call ``drain`` first: the beats merged here count towards what the store holds. A
        complete poll of a fleet at rest costs one comparison per node; an incremental one, a
        comparison per node whose row changed since the previous poll. A node with beats
        merged here and no changed row (their commit was seen by an earlier poll) is checked
        against the mark held: its series is read again if the counts disagree."""
        if not isinstance(delta, MarksDelta):
            delta = MarksDelta(dict(delta), complete=True)
        marks = delta.marks
        records: set[str] = set()
        series: set[str] = set()
        moved: set[str] = set()
        known = self._marks
        local = self._local
        if not delta.complete:
            marks = dict(marks)
            for name in local:
                if name not in marks and name in known and name not in delta.closed:
                    marks[name] = known[name]
        for name, mark in marks.items():
            seen = known.get(name)
            if seen == mark and name not in local:
                continue
            moved.add(name)
            if seen is None or seen.version != mark.version:
                records.add(name)
            if seen is None:
                if mark.heartbeat_seq:
                    series.add(name)
            elif mark.heartbeat_seq != seen.heartbeat_seq + local.get(name, 0):
                series.add(name)
        if not delta.complete:
            closed = frozenset(
                name for name in delta.closed if name in self._nodes and name not in marks
            )
        elif len(marks) != len(self._nodes) or records:
            closed = frozenset(name for name in self._nodes if name not in marks)
        else:
            closed = frozenset()
        return marks, frozenset(records), frozenset(series), closed, frozenset(moved)

    def read_from(self, series: Collection[str], records: Collection[str]) -> dict[str, int]:
        """For each node of ``series`` (``changed``), the beat count from which the store's
        beats are to be read: the count of the mark this state agrees with (the beats merged
        here since are read again, and kept once), so a poll reads the beats recorded since
        (by another daemon, mostly), not each node's whole window again. A node new here, or
        whose record changed (it may be another record under the name), is read whole."""
        marks = self._marks
        return {
            name: -1 if name in records or (mark := marks.get(name)) is None else mark.heartbeat_seq
            for name in series
        }

    def apply_changes(self, changes: Changes, closed: Collection[str]) -> None:
        for name in closed:
            self._nodes.pop(name, None)
            self._beats.pop(name, None)
            self._marks.pop(name, None)
            self._local.pop(name, None)
        if closed:
            self._recorded = None
            self.records_version += 1
        for fresh_node in changes.nodes:
            previous = self._nodes.get(fresh_node.name)
            if previous is not None and previous.id != fresh_node.id:
                self._beats.pop(fresh_node.name, None)  # another record under that name
            self._set_node(fresh_node)
            self.records_version += 1
        if changes.reread or closed:
            self.beats_version += 1
        for name in changes.reread:
            if name not in self._nodes:
                continue
            fresh = changes.beats.get(name, ())
            mine = self._beats.get(name, ())
            merged = {b.at: b for b in mine}
            merged.update((b.at, b) for b in fresh)
            if merged:
                self._beats[name] = _compact_series(
                    tuple(merged[at] for at in sorted(merged))[-self._window :],
                    self._nodes[name].name,
                )
            else:
                self._beats.pop(name, None)
        for name in changes.moved:
            mark = changes.marks[name]
            known = self._nodes.get(name)
            if known is None:
                continue
            node = known
            self._marks[name] = mark
            self._local.pop(name, None)
            last = mark.last_heartbeat
            if last is not None and (node.last_heartbeat is None or last > node.last_heartbeat):
                # in UTC, as the store's records (a driver may give the session's zone)
                self._set_node(dataclasses.replace(node, last_heartbeat=last.astimezone(UTC)))
        if changes.costs != self._costs:
            self._costs = changes.costs
            self._recorded = None

    def _set_node(self, node: RecordedNode) -> None:
        self._nodes[node.name] = node
        self._recorded = None

    def trim(self, since: datetime) -> None:
        """Forget beats older than ``since``."""
        cut: dict[str, tuple[NodeMetrics, ...]] = {}
        for name, series in self._beats.items():
            if series[0].at >= since:
                continue
            cut[name] = series[bisect.bisect_left(series, since, key=_at) :]
        if cut:
            self.beats_version += 1
        for name, series in cut.items():
            if series:
                self._beats[name] = series
            else:
                del self._beats[name]


def _same_beats(held: Sequence[NodeMetrics], fresh: Sequence[NodeMetrics]) -> bool:
    """The same beats (told apart by time: the store keeps neither ``sent_at`` nor soft
    bounces, so a beat merged here and the store's copy differ in those)."""
    return len(held) == len(fresh) and all(
        a.at == b.at and a.sent == b.sent and a.queue_length == b.queue_length
        for a, b in zip(held, fresh, strict=True)
    )


def _compact(beat: NodeMetrics, name: str, previous: NodeMetrics | None) -> NodeMetrics:
    """``beat`` as held (see the module's doc): the figures the store keeps, ``name`` (the
    record's string) for its node, and the previous beat's objects for equal figures."""
    if previous is None:
        return NodeMetrics(
            name,
            beat.at,
            beat.cpu,
            beat.memory,
            beat.disk,
            beat.queue_length,
            beat.sent,
            beat.bounces,
            beat.complaints,
            beat.interval_seconds,
        )
    return NodeMetrics(
        name,
        beat.at,
        _same_float(previous.cpu, beat.cpu),
        _same_float(previous.memory, beat.memory),
        _same_float(previous.disk, beat.disk),
        _same_int(previous.queue_length, beat.queue_length),
        _same_int(previous.sent, beat.sent),
        _same_int(previous.bounces, beat.bounces),
        _same_int(previous.complaints, beat.complaints),
        _same_float(previous.interval_seconds, beat.interval_seconds),
    )


def _compact_series(series: Sequence[NodeMetrics], name: str) -> tuple[NodeMetrics, ...]:
    held: list[NodeMetrics] = []
    previous: NodeMetrics | None = None
    for beat in series:
        previous = _compact(beat, name, previous)
        held.append(previous)
    return tuple(held)


def _same_float(held: float, value: float) -> float:
    """``held`` when it is ``value`` bit for bit (0.0 and -0.0 differ; NaN never shares)."""
    if (
        held == value
        and type(held) is type(value)
        and math.copysign(1.0, held) == math.copysign(1.0, value)
    ):
        return held
    return value


def _same_int(held: int, value: int) -> int:
    return held if held == value and type(held) is type(value) else value


def _at(beat: NodeMetrics) -> datetime:
    return beat.at


class LivenessCache:
    """``core.health.assess`` for a daemon's repeated sweeps: each node's ``Liveness`` is
    kept until its record changes or the moment its missed-beat count (or its replacement
    being due) next changes, so a sweep of a fleet at rest computes almost nothing again.
    The result equals ``assess(nodes, now, policy)``."""

    def __init__(self) -> None:
        #: name -> (record, computed at, valid until (None: while the record stays), liveness)
        self._entries: dict[str, tuple[RecordedNode, datetime, datetime | None, Liveness]] = {}
        self._policy: HealthPolicy | None = None

    def assess(
        self, nodes: Sequence[RecordedNode], now: datetime, policy: HealthPolicy
    ) -> HealthAssessment:
        if policy is not self._policy:
            self._entries = {}
            self._policy = policy
        unhealthy: set[str] = set()
        replace: set[str] = set()
        silent: set[str] = set()
        details: list[Liveness] = []
        alert_only = policy.on_unhealthy is UnhealthyAction.ALERT
        entries = self._entries
        for node in sorted(nodes, key=_name):
            if node.status not in WATCHED:
                continue
            entry = entries.get(node.name)
            if (
                entry is not None
                and entry[0] is node
                and entry[1] <= now
                and (entry[2] is None or now < entry[2])
            ):
                live = entry[3]
            else:
                live = liveness(node, now, policy)
                entries[node.name] = (node, now, _valid_until(node, live, policy), live)
            details.append(live)
            if live.never_beaten:
                silent.add(node.name)
            if live.unhealthy and not alert_only:
                unhealthy.add(node.name)
            if live.replace_due:
                replace.add(node.name)
        return HealthAssessment(
            frozenset(unhealthy), frozenset(replace), frozenset(silent), tuple(details)
        )

    def forget_except(self, names: Collection[str]) -> None:
        for name in list(self._entries):
            if name not in names:
                self._entries.pop(name, None)


def _valid_until(node: RecordedNode, live: Liveness, policy: HealthPolicy) -> datetime | None:
    """Until when ``live`` stays what ``liveness`` says for ``node`` (None: for as long as the
    record does not change)."""
    last = node.last_heartbeat
    if last is None:
        return None
    until = last + policy.heartbeat_interval * (live.missed + 1)
    since = live.unhealthy_since
    if since is not None and not live.replace_due:
        until = min(until, since + policy.replace_after)
    return until


def _name(node: RecordedNode) -> str:
    return node.name
