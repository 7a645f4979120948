"""Ports: the small protocols the core owns; adapters in providers/ and state/ implement them.

Only the composition root (reconciler.cli / reconciler.daemon) builds concrete adapters.
Adapters raise only errors from ``reconciler.core.errors``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from reconciler.core.dnsrecords import RecordSet
from reconciler.core.fleet import (
    CostConstant,
    CreateRequest,
    HostKey,
    IntentStatus,
    Location,
    Maintenance,
    MarksDelta,
    NodeMark,
    NodeMetrics,
    ObservedServer,
    PricePlan,
    RecordedFleet,
    RecordedIntent,
    RecordedNode,
)

# only in annotations: the reputation model is imported by what uses it (a dry-run does not:
# ~20 ms of dataclasses and tables at every CLI start, issue 14)
if TYPE_CHECKING:
    from reconciler.core.reputation import (
        ListingEvent,
        ReputationRecord,
        ReputationSnapshot,
        SendCounts,
    )


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware UTC now."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class CloudPort(Protocol):
    """What the engine needs of a cloud. Every method may raise TransientError,
    TerminalError (NotFoundError, ConflictError, AuthError)."""

    async def list_servers(self) -> list[ObservedServer]:
        """The whole account in list calls (paginated if needed), never one read per node."""
        ...

    async def get_server(self, service_id: int) -> ObservedServer: ...

    async def find_servers_by_name(self, name: str) -> list[ObservedServer]:
        """Servers whose srvrname equals ``name`` exactly (may be 0, 1 or more)."""
        ...

    async def create_server(self, request: CreateRequest) -> None:
        """``add_instance``. Charges money; returns no id. Never retried blindly."""
        ...

    async def terminate(self, service_id: int) -> None: ...

    async def upgrade_instance(self, service_id: int, rid: int) -> None:
        """Step 1 of a resize: order the new plan."""
        ...

    async def upgrade_server(self, service_id: int) -> None:
        """Step 2 of a resize: apply it (async; the status becomes RESIZED)."""
        ...

    async def confirm_upgrade(self, service_id: int) -> None: ...

    async def revert_upgrade(self, service_id: int) -> None: ...

    async def boot_server(self, service_id: int) -> None:
        """Start a stopped (``SHUTOFF``) server: ``boot`` (ACTIVE shortly after; poll)."""
        ...

    async def set_rdns(self, service_id: int, ip: str, hostname: str) -> None: ...

    async def list_ips(self, service_id: int) -> list[str]: ...

    async def price_list(self) -> list[PricePlan]: ...

    async def locations(self) -> list[Location]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Lease:
    """A held writer lock. ``epoch`` is the fencing token carried by every mutation."""

    name: str
    owner: str
    epoch: int
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds a writer lock (``reconcile unlock`` shows it before breaking it)."""

    name: str
    #: the holder as it named itself: ``host:pid`` for the CLI
    owner: str
    epoch: int
    acquired_at: datetime | None = None
    expires_at: datetime | None = None
    #: True: the holder is known to be alive (its PostgreSQL session holds the epoch's
    #: advisory lock, or its process runs on this host); False: known to be gone (taken over
    #: at once by the next run); None: cannot tell (another host, SQLite)
    alive: bool | None = None

    @property
    def host(self) -> str:
        return self.owner.rpartition(":")[0] or self.owner

    @property
    def pid(self) -> int | None:
        text = self.owner.rpartition(":")[2]
        return int(text) if text.isdigit() else None


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One reconcile run, for the store's run history."""

    fleet: str
    started_at: datetime
    spec_hash: str
    mode: str  # "dry-run", "apply", "daemon"
    summary: Mapping[str, str]
    outcome: str = "running"  # "running", "ok", "partial", "failed", "refused"
    finished_at: datetime | None = None
    error: str | None = None


class StorePort(Protocol):
    """What the engine needs of the state store. Raises StoreError / StoreUnavailableError,
    LeadershipLostError when ``epoch`` is stale (fencing)."""

    # --- reading -------------------------------------------------------------------------
    def load_fleet(self, fleet: str) -> RecordedFleet:
        """Nodes (not decommissioned), pending intents and cost overrides in a few queries."""
        ...

    def peak_fleet_size(self, fleet: str, since: datetime) -> int:
        """The most node records the fleet had open at once from ``since`` to now (its node
        history: each record from its creation to its closing; ``core.fleet.peak_count``)."""
        ...

    def pending_intents(self, fleet: str) -> tuple[RecordedIntent, ...]:
        """The fleet's pending intents, oldest first (as in ``load_fleet``), alone."""
        ...

    def journal(self, fleet: str, limit: int = 100) -> list[RecordedIntent]:
        """Most recent intents first."""
        ...

    # --- the create protocol and the journal ---------------------------------------------
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
        """Write a pending intent (and, if given, upsert ``node``) in one transaction,
        *before* the mutating call. ``done``: a journal entry of an act already complete (a
        change of status), written done with its node in the same transaction."""
        ...

    def finish_intent(
        self,
        intent_id: int,
        status: IntentStatus,
        *,
        error: str | None = None,
        node: RecordedNode | None = None,
        epoch: int | None = None,
    ) -> None:
        """Mark the intent done/failed and (if given) upsert ``node`` in one transaction."""
        ...

    def retry_intent(self, intent_id: int, *, epoch: int | None = None) -> RecordedIntent:
        """Count one more attempt of a still-pending intent."""
        ...

    # --- nodes ---------------------------------------------------------------------------
    def upsert_node(self, node: RecordedNode, *, epoch: int | None = None) -> None:
        """Insert or update by (fleet, name); ``service_id`` is unique when set."""
        ...

    def upsert_nodes(self, nodes: Sequence[RecordedNode], *, epoch: int | None = None) -> None:
        """Batch form of upsert_node, one transaction."""
        ...

    def refresh_costs(
        self,
        fleet: str,
        costs: Mapping[str, tuple[Decimal, Decimal]],
        *,
        epoch: int | None = None,
    ) -> list[str]:
        """Set open nodes' recorded monthly cost (name -> (total, IP part)); only differing
        rows are written. Returns the names changed, sorted."""
        ...

    def close_node(self, fleet: str, name: str, at: datetime, *, epoch: int | None = None) -> None:
        """Decommission: the record is closed (kept for audit), the name may not be reused
        while a server with it exists."""
        ...

    def set_protected(self, fleet: str, name: str, protected: bool) -> None: ...

    def set_maintenance(
        self, fleet: str, name: str, maintenance: Maintenance | None
    ) -> RecordedNode:
        """Record (or clear, with None) an operator's maintenance of a node; returns the
        node. Raises StoreError naming the node when it is not recorded."""
        ...

    def retry_steps(self, fleet: str, name: str) -> tuple[RecordedNode, tuple[str, ...]]:
        """Forget the node's failed pipeline steps (and their attempts) so the next reconcile
        tries them again; returns the node and the names of the steps forgotten."""
        ...

    def clear_quarantine(self, fleet: str, name: str, *, repin: bool = False) -> RecordedNode:
        """An operator released a quarantined node; ``repin`` also forgets its host key so
        the next contact pins the key it presents now."""
        ...

    # --- runs ----------------------------------------------------------------------------
    def start_run(self, run: RunRecord) -> int: ...

    def finish_run(
        self, run_id: int, outcome: str, finished_at: datetime, error: str | None = None
    ) -> None: ...

    # --- one writer ----------------------------------------------------------------------
    def acquire_lock(self, name: str, owner: str, ttl_seconds: float, now: datetime) -> Lease:
        """Take the named writer lock or raise LockHeldError naming the holder."""
        ...

    def release_lock(self, lease: Lease) -> None: ...

    def lock_holder(self, name: str, now: datetime) -> LockHolder | None:
        """Who holds the writer lock ``name`` (None: free or expired)."""
        ...

    def break_lock(self, name: str, epoch: int) -> bool:
        """Break the writer lock ``name`` if it is still held with ``epoch`` (what the operator
        was shown): the holder is fenced (its next renewal or write is refused) and the next
        run takes the lock. False: the lock changed meanwhile (nothing done)."""
        ...

    # --- costs ---------------------------------------------------------------------------
    def set_cost_constant(
        self, key: str, scope: str, value: Decimal, set_by: str, at: datetime
    ) -> None:
        """Finance sets a value; the old value goes to the history table."""
        ...

    def cost_history(self, key: str | None = None) -> list[dict[str, str]]: ...

    def cost_constants(self) -> list[CostConstant]:
        """Every value finance has set (key, scope), sorted by key then scope."""
        ...

    # --- heartbeats ----------------------------------------------------------------------
    def record_heartbeats(self, fleet: str, beats: Sequence[NodeMetrics]) -> int:
        """Batched: update last_heartbeat and append to a bounded window. Returns rows
        written; unknown nodes are skipped."""
        ...

    def record_beats(self, fleet: str, beats: Sequence[NodeMetrics]) -> list[bool]:
        """As ``record_heartbeats``, one atomic transaction, saying for each beat whether it
        was recorded: False for an unknown or closed node and for a replay (a beat with
        ``sent_at`` not newer than the node's newest recorded ``sent_at``). Callers pass at
        most one beat with ``sent_at`` per node per call."""
        ...

    def recent_metrics(
        self, fleet: str, since: datetime, nodes: Collection[str] | None = None
    ) -> dict[str, list[NodeMetrics]]:
        """Per node name, the beats since ``since`` (oldest first); only of ``nodes`` when
        given (names of open nodes; others are ignored)."""
        ...

    def metrics_after(
        self, fleet: str, since: datetime, starts: Mapping[str, int]
    ) -> dict[str, list[NodeMetrics]]:
        """Per open node named in ``starts``, the beats since ``since`` (oldest first) that it
        recorded after its first ``start`` ones (``NodeMark.heartbeat_seq`` counts them): what
        another daemon recorded since a poll saw the node's mark at ``start``, without reading
        its whole window again. A node whose count moved by the store's window or more, went
        back, or with a negative ``start`` gets all its beats since ``since``."""
        ...

    def node_marks(self, fleet: str) -> dict[str, NodeMark]:
        """Per open node's name: its beat count, last beat and record version, in one light
        query (what changed since a daemon last looked, without loading the fleet)."""
        ...

    def node_marks_since(self, fleet: str, cursor: object | None) -> MarksDelta:
        """The marks of the open nodes whose row changed since ``cursor`` (a beat recorded by
        any process, a record written, a record closed), or of every open node when the store
        cannot tell (``complete``; always so with ``cursor=None``). The answer's cursor goes
        into the next call; the rows read are then those changed since this one's start."""
        ...

    def nodes_named(self, fleet: str, names: Collection[str]) -> list[RecordedNode]:
        """The open nodes among ``names`` (the others are ignored), by name."""
        ...

    def prune_metrics(self, older_than: datetime) -> int: ...

    def close(self) -> None: ...


class ReputationStorePort(Protocol):
    """What the reputation check reads and writes (``state.reputation``). Writes carry the
    leader's epoch (fencing) like every other daemon write."""

    def reputation_snapshot(
        self, fleet: str, since: datetime, today: datetime
    ) -> ReputationSnapshot:
        """Records, open listings, hourly counts since ``since``, what each node sent since
        ``today`` (the start of the UTC day) and today's DNSBL queries per zone."""
        ...

    def reputation_snapshot_since(
        self,
        fleet: str,
        since: datetime,
        today: datetime,
        held: ReputationSnapshot | None,
        cursor: object | None,
    ) -> tuple[ReputationSnapshot, object | None]:
        """``reputation_snapshot``, and the cursor for the next call. Given the previous
        call's snapshot and cursor, a store that can tell what changed reads only that and
        merges it into ``held`` (the answer equals a whole read); others read it whole."""
        ...

    def save_reputation(
        self,
        fleet: str,
        records: Sequence[ReputationRecord],
        events: Sequence[ListingEvent],
        queries: Mapping[str, int],
        at: datetime,
        *,
        epoch: int | None = None,
    ) -> None:
        """In one transaction: node states, listing events (opened / changed / delisted) and
        the DNSBL queries spent (added to today's counts)."""
        ...

    def add_send_counts(
        self, fleet: str, counts: Sequence[tuple[str, datetime, SendCounts]]
    ) -> int:
        """Add (node, hour, counts) to the hourly counts; unknown nodes are skipped."""
        ...

    def add_complaints(
        self,
        fleet: str,
        complaints: Sequence[tuple[str, datetime, int, str | None]],
        seen_at: datetime,
    ) -> tuple[int, int]:
        """Add complaints (node, at, count, event id) to the hourly counts in one transaction;
        an event id counted before (by any daemon of this store) is skipped. Returns
        (complaints recorded, duplicates)."""
        ...

    def resume_reputation(self, fleet: str, node: str, at: datetime) -> bool:
        """An operator's resume: clear the quarantine and the pause, count rates from ``at``.
        False when the node has no reputation record to clear."""
        ...


class LeadershipPort(Protocol):
    """Daemon leadership (design §5): PostgreSQL advisory lock on a dedicated connection,
    or a file lock with SQLite."""

    def try_acquire(self) -> int | None:
        """Return the new epoch if leadership was taken, else None."""
        ...

    def check(self) -> bool:
        """Still the leader? (``SELECT 1`` on the lock connection). False stops mutations."""
        ...

    def release(self) -> None: ...


# --- provisioning: DNS, remote execution, mail (design §3b) -------------------------------


class DnsPort(Protocol):
    """Publishing records in the fleet's zone (first adapter: RFC 2136 dynamic update with
    TSIG). Raises TransientError (timeout, SERVFAIL), AuthError (TSIG refused, NOTAUTH,
    REFUSED), TerminalError (anything else the server refused)."""

    async def replace(self, record: RecordSet) -> None:
        """Make ``record`` the whole RRset of its name and type (idempotent)."""
        ...

    async def delete(self, name: str, rtype: str) -> None:
        """Remove the RRset (idempotent: absent is fine)."""
        ...

    async def published(self, name: str, rtype: str) -> tuple[str, ...]:
        """What the zone's primary serves for the RRset now (TXT values joined)."""
        ...

    async def update(
        self, replace: Sequence[RecordSet] = (), delete: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Several replacements and deletions (name, type) in one atomic update."""
        ...


class ResolverPort(Protocol):
    """Real DNS queries (FCrDNS, DKIM keys). An absent name or type is ``()``; a resolver
    that cannot answer raises TransientError."""

    async def lookup(self, name: str, rtype: str) -> tuple[str, ...]: ...

    async def reverse(self, ip: str) -> tuple[str, ...]:
        """PTR names of ``ip`` (without the trailing dot)."""
        ...


@dataclass(frozen=True, slots=True)
class RemoteTarget:
    """Where a node's commands run. ``host_key`` None only on first contact (pinning)."""

    host: str
    port: int
    username: str
    host_key: HostKey | None


@dataclass(frozen=True, slots=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str


class RemoteExecPort(Protocol):
    """Commands on a node over SSH, key authentication only.

    A host key other than ``target.host_key`` raises HostKeyMismatchError (never accepted);
    an unreachable node or a timeout raises TransientError; a refused login AuthError."""

    async def scan_host_key(self, host: str, port: int, *, username: str | None = None) -> HostKey:
        """The key the node presents now (first contact, before pinning). With ``username``
        the adapter may log in on that same first connection and keep it for the commands
        that follow over the key it returned (one key exchange per node instead of two)."""
        ...

    async def run(
        self,
        target: RemoteTarget,
        command: str,
        *,
        time_limit: float,
        stdin: bytes | None = None,
    ) -> CommandResult:
        """Run ``command`` (a POSIX shell command line on the node); the exit status is
        returned, not raised."""
        ...


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """A message as the sink received it (raw bytes, as delivered)."""

    probe: str
    raw: bytes
    peer: str


class MailSinkPort(Protocol):
    """The internal sink test mails are sent to: which probes have arrived."""

    @property
    def address(self) -> str:
        """The mailbox nodes send test mail to (``probe@sink.example``)."""
        ...

    async def received(self, probe: str) -> ReceivedMail | None:
        """The message carrying header ``X-Reconciler-Probe: <probe>``, if it arrived."""
        ...

    async def wait(self, probe: str, within: float) -> ReceivedMail | None:
        """The message carrying ``probe``, waiting up to ``within`` seconds for it to
        arrive (None when it did not): a sink in this process wakes the waiter when it
        stores the message, one in another process is looked at every few tens of ms."""
        ...


@dataclass(frozen=True, slots=True)
class DkimVerdict:
    ok: bool
    domain: str | None
    selector: str | None
    reason: str


class DkimVerifierPort(Protocol):
    """Verifies a message's DKIM signature against the key published in DNS."""

    async def verify(self, raw: bytes) -> DkimVerdict: ...
