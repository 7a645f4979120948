"""Signed heartbeats: node secrets, signing, verification, replay cache, batched ingestion.

Protocol (docs/daemon.md "Heartbeat signing"):

- a node's secret is ``hex(HMAC-SHA256(master_secret, node_name))`` (UTF-8 both); the daemon
  derives it on demand from the master secret in ``RECONCILER_NODE_MASTER_SECRET``, so no node
  secret is ever stored;
- a request carries ``X-Reconciler-Node``, ``X-Reconciler-Timestamp`` (integer Unix seconds) and
  ``X-Reconciler-Signature: v1=<hex>`` where ``<hex>`` is
  ``HMAC-SHA256(key = secret as ASCII, msg = timestamp "\\n" METHOD "\\n" path "\\n" body)``;
- the daemon refuses a timestamp more than 300 s from its clock, a signature seen before within
  the window (replay), a body whose ``node`` differs from the header, and compares signatures in
  constant time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconciler.core.errors import StoreError, UserError
from reconciler.core.fleet import NodeMetrics
from reconciler.core.ports import StorePort
from reconciler.core.scaling import PLAUSIBLE_CAPACITY_FACTOR

log = logging.getLogger("reconciler.daemon.heartbeats")

MASTER_SECRET_ENV = "RECONCILER_NODE_MASTER_SECRET"  # noqa: S105 (a variable name)
NODE_HEADER = "X-Reconciler-Node"
TIMESTAMP_HEADER = "X-Reconciler-Timestamp"
SIGNATURE_HEADER = "X-Reconciler-Signature"
SIGNATURE_VERSION = "v1"
HEARTBEATS_PATH = "/v1/heartbeats"
WINDOW_SECONDS = 300
MAX_BODY_BYTES = 16_384
MIN_MASTER_SECRET_BYTES = 16
#: the intake's loop ticks at least every ``flush_interval`` (0.2 s); no tick for this long
#: (and at least five intervals): the intake is stalled (its loop frozen, its task or thread
#: dead), it receives no beat, and the daemon cannot observe (``Daemon._observing_since``)
INTAKE_STALL_SECONDS = 5.0


class MasterSecret:
    """The master secret. Its repr and str never show the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if len(value.encode()) < MIN_MASTER_SECRET_BYTES:
            raise UserError(
                f"{MASTER_SECRET_ENV} is too short (at least {MIN_MASTER_SECRET_BYTES} bytes)",
                hint="generate one with: python -c 'import secrets; print(secrets.token_hex(32))'",
            )
        self._value = value.encode()

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, name: str = MASTER_SECRET_ENV
    ) -> MasterSecret:
        env = os.environ if environ is None else environ
        value = env.get(name, "")
        if not value:
            raise UserError(
                f"the node master secret is not set: environment variable {name} is empty",
                hint=f"export {name}=<a long random string> (the same value on every daemon)",
            )
        return cls(value)

    def node_secret(self, node: str) -> str:
        return derive_node_secret(self._value, node)

    @property
    def raw(self) -> bytes:
        """The secret itself, for other derivations (the platform token)."""
        return self._value

    def __repr__(self) -> str:
        return "MasterSecret(<redacted>)"

    __str__ = __repr__


def derive_node_secret(master: bytes, node: str) -> str:
    """``hex(HMAC-SHA256(master, node))``: the token given to the node at provisioning."""
    return hmac.new(master, node.encode(), hashlib.sha256).hexdigest()


def canonical_message(timestamp: str, method: str, path: str, body: bytes) -> bytes:
    return f"{timestamp}\n{method.upper()}\n{path}\n".encode() + body


def sign(secret: str, timestamp: str, method: str, path: str, body: bytes) -> str:
    digest = hmac.new(
        secret.encode(), canonical_message(timestamp, method, path, body), hashlib.sha256
    ).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signed_headers(
    node: str, secret: str, method: str, path: str, body: bytes, timestamp: int
) -> dict[str, str]:
    """The three headers a node sends (and Content-Type)."""
    ts = str(timestamp)
    return {
        NODE_HEADER: node,
        TIMESTAMP_HEADER: ts,
        SIGNATURE_HEADER: sign(secret, ts, method, path, body),
        "Content-Type": "application/json",
    }


# --- wire payload ------------------------------------------------------------------------

Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=1_000_000_000)]
#: physical bounds of a beat (docs/daemon.md "Plausibility"): a beat outside them is refused
MIN_INTERVAL_SECONDS = 1.0
MAX_INTERVAL_SECONDS = 3600.0
MAX_QUEUE_LENGTH = 5_000_000


class HeartbeatPayload(BaseModel):
    """The JSON body of ``POST /v1/heartbeats``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: Annotated[str, Field(min_length=1, max_length=64)]
    cpu: Fraction  # share of CPU busy over the interval
    memory: Fraction  # share of memory used
    disk: Fraction  # share of disk used
    queue_length: Annotated[int, Field(ge=0, le=MAX_QUEUE_LENGTH)]  # Postfix queue entries
    sent: Count  # emails delivered since the previous beat
    bounces: Count = 0  # hard bounces
    soft_bounces: Count = 0  # deferrals (temporary failures)
    complaints: Count = 0
    interval_seconds: Annotated[
        float, Field(ge=MIN_INTERVAL_SECONDS, le=MAX_INTERVAL_SECONDS, allow_inf_nan=False)
    ] = 30.0
    agent: Annotated[str, Field(max_length=64)] | None = None

    def implausible(self, per_minute_capacity: float | None) -> str | None:
        """Why these figures cannot be true for a node of that capacity (emails/minute), or
        None. Messages carry figures, never request text."""
        rate = (self.sent + self.bounces + self.soft_bounces) * 60.0 / self.interval_seconds
        if per_minute_capacity is not None and per_minute_capacity > 0:
            bound = PLAUSIBLE_CAPACITY_FACTOR * per_minute_capacity
            if rate > bound:
                return f"{rate:.0f} emails/min reported, at most {bound:.0f} possible"
        if self.complaints > self.sent + self.bounces + self.soft_bounces + 1000:
            return f"{self.complaints} complaints for {self.sent} emails sent"
        return None

    def metrics(self, at: datetime, sent_at: int | None = None) -> NodeMetrics:
        return NodeMetrics(
            node=self.node,
            at=at,
            cpu=self.cpu,
            memory=self.memory,
            disk=self.disk,
            queue_length=self.queue_length,
            sent=self.sent,
            bounces=self.bounces,
            complaints=self.complaints,
            interval_seconds=self.interval_seconds,
            soft_bounces=self.soft_bounces,
            sent_at=sent_at,
        )


# --- verification ------------------------------------------------------------------------


class Rejection(StrEnum):
    """Why a heartbeat was refused (a metrics label; never echoes request data)."""

    MISSING_HEADERS = "missing_headers"
    BAD_TIMESTAMP = "bad_timestamp"
    STALE = "stale"
    FUTURE = "future"
    BAD_SIGNATURE = "bad_signature"
    REPLAYED = "replayed"
    UNKNOWN_NODE = "unknown_node"
    NODE_MISMATCH = "node_mismatch"
    BAD_BODY = "bad_body"
    TOO_LARGE = "too_large"
    OVERLOADED = "overloaded"
    IMPLAUSIBLE = "implausible"
    MALFORMED = "malformed"
    SLOW_CLIENT = "slow_client"
    STORE_UNAVAILABLE = "store_unavailable"
    #: the same beat again while the first copy still waits for its commit (a client that
    #: timed out and resent): 503, never 409, which the agent takes for "recorded"
    IN_FLIGHT = "in_flight"


class HeartbeatRejected(Exception):  # noqa: N818 (a verdict, not a failure of ours)
    def __init__(self, reason: Rejection, status: int = 401, *, detail: str = "") -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.status = status
        self.detail = detail  # for the log (figures only, never request text)


class ReplayCache:
    """Signatures seen within the window. Bounded: the oldest entries go first.

    An entry can be forgotten once its timestamp is more than ``window`` old: a replay of it
    would be refused as stale anyway. Keys are the first 16 bytes of the signature (a
    collision would only refuse one genuine beat), so 10,000 nodes beating every 30 s cost a
    few MB."""

    def __init__(self, window_seconds: float = WINDOW_SECONDS, max_entries: int = 500_000) -> None:
        self._window = window_seconds
        self._max = max_entries
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        #: seen, but not yet recorded or refused by the store (its request still waits)
        self._in_flight: set[bytes] = set()

    @staticmethod
    def key(signature: str) -> bytes:
        digest = signature.partition("=")[2]
        try:
            return bytes.fromhex(digest[:32])
        except ValueError:
            return digest.encode()

    def check_and_add(self, key: bytes, timestamp: float, now: float) -> bool:
        """True if new (and now remembered, in flight until ``settled``), False if seen
        before (``in_flight`` says whether that copy is still waiting for the store)."""
        self._expire(now)
        if key in self._seen:
            return False
        self._seen[key] = timestamp
        self._in_flight.add(key)
        while len(self._seen) > self._max:
            self._in_flight.discard(self._seen.popitem(last=False)[0])
        return True

    def in_flight(self, key: bytes) -> bool:
        return key in self._in_flight

    def settled(self, key: bytes) -> None:
        """The store recorded the beat (or holds one at least as new): a copy is a replay."""
        self._in_flight.discard(key)

    def forget(self, key: bytes) -> None:
        self._seen.pop(key, None)
        self._in_flight.discard(key)

    def _expire(self, now: float) -> None:
        # entries are nearly in timestamp order; stop at the first one still inside the window
        horizon = now - self._window
        while self._seen:
            key, ts = next(iter(self._seen.items()))
            if ts >= horizon:
                break
            del self._seen[key]
            self._in_flight.discard(key)

    def __len__(self) -> int:
        return len(self._seen)


class Verifier:
    """Checks a request's headers and body. ``known_node`` says if a name is in the fleet."""

    def __init__(
        self,
        master: MasterSecret,
        *,
        known_node: Callable[[str], bool] | None = None,
        window_seconds: int = WINDOW_SECONDS,
        replay: ReplayCache | None = None,
        capacity_per_minute: Callable[[str], float | None] | None = None,
    ) -> None:
        self._master = master
        self._known = known_node
        self._capacity = capacity_per_minute
        self._window = window_seconds
        self._replay = replay or ReplayCache(window_seconds)
        #: node -> its secret as the HMAC key (bytes), derived once
        self._keys: OrderedDict[str, bytes] = OrderedDict()

    def _key(self, node: str) -> bytes:
        key = self._keys.get(node)
        if key is None:
            key = self._master.node_secret(node).encode()
            self._keys[node] = key
            if len(self._keys) > 50_000:
                self._keys.popitem(last=False)
        return key

    def verify(
        self,
        headers: Mapping[str, str],
        method: str,
        path: str,
        body: bytes,
        now: float,
    ) -> HeartbeatPayload:
        return self.verify_beat(headers, method, path, body, now).payload

    def verify_beat(
        self,
        headers: Mapping[str, str],
        method: str,
        path: str,
        body: bytes,
        now: float,
    ) -> VerifiedBeat:
        """Check a request; raise ``HeartbeatRejected`` (never anything else) when refused.

        Header values arrive decoded as Latin-1: only ASCII is accepted in them (``isdigit``
        alone would let Unicode digits such as ``"\u0661"`` or ``"\u00b2"`` through)."""
        node = headers.get(NODE_HEADER.lower()) or headers.get(NODE_HEADER)
        ts_text = headers.get(TIMESTAMP_HEADER.lower()) or headers.get(TIMESTAMP_HEADER)
        signature = headers.get(SIGNATURE_HEADER.lower()) or headers.get(SIGNATURE_HEADER)
        if not node or not ts_text or not signature:
            raise HeartbeatRejected(Rejection.MISSING_HEADERS)
        if len(body) > MAX_BODY_BYTES:
            raise HeartbeatRejected(Rejection.TOO_LARGE, 413)
        if not (ts_text.isascii() and ts_text.isdigit()) or len(ts_text) > 12:
            raise HeartbeatRejected(Rejection.BAD_TIMESTAMP)
        timestamp = int(ts_text)
        if timestamp < now - self._window:
            raise HeartbeatRejected(Rejection.STALE)
        if timestamp > now + self._window:
            raise HeartbeatRejected(Rejection.FUTURE)
        if len(node) > 64 or not node.isascii() or not node.isprintable():
            raise HeartbeatRejected(Rejection.UNKNOWN_NODE)
        if len(signature) > 128 or not signature.isascii():
            raise HeartbeatRejected(Rejection.BAD_SIGNATURE)
        # what ``sign`` computes, with the one-shot ``hmac.digest`` (no HMAC object per beat)
        digest = hmac.digest(
            self._key(node), canonical_message(ts_text, method, path, body), "sha256"
        )
        expected = f"{SIGNATURE_VERSION}={digest.hex()}"
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise HeartbeatRejected(Rejection.BAD_SIGNATURE)
        # only an authentic request reaches here: now the fleet and the body
        if self._known is not None and not self._known(node):
            raise HeartbeatRejected(Rejection.UNKNOWN_NODE, 404)
        try:
            payload = HeartbeatPayload.model_validate_json(body)
        except ValidationError as exc:
            raise HeartbeatRejected(Rejection.BAD_BODY, 422) from exc
        if payload.node != node:
            raise HeartbeatRejected(Rejection.NODE_MISMATCH, 401)
        why = payload.implausible(self._capacity(node) if self._capacity is not None else None)
        if why is not None:
            raise HeartbeatRejected(Rejection.IMPLAUSIBLE, 422, detail=why)
        key = ReplayCache.key(signature)
        if not self._replay.check_and_add(key, timestamp, now):
            if self._replay.in_flight(key):
                # the first copy may still fail: "replayed" (409) would lose its counts
                raise HeartbeatRejected(Rejection.IN_FLIGHT, 503)
            raise HeartbeatRejected(Rejection.REPLAYED, 409)
        return VerifiedBeat(payload, timestamp, key)

    def settled(self, beat: VerifiedBeat) -> None:
        """The store recorded the beat, or refused it as a replay: a copy is a replay too."""
        self._replay.settled(beat.replay_key)

    def forget(self, beat: VerifiedBeat) -> None:
        """The beat was not recorded (store unavailable): the node may send it again."""
        self._replay.forget(beat.replay_key)


@dataclass(frozen=True, slots=True)
class VerifiedBeat:
    payload: HeartbeatPayload
    timestamp: int  # the node's signed timestamp
    replay_key: bytes


# --- batched ingestion -------------------------------------------------------------------


@dataclass
class IngestStats:
    accepted: int = 0
    written: int = 0
    batches: int = 0
    failed_batches: int = 0
    dropped: int = 0
    replays: int = 0
    #: beats answered 503 because their batch did not commit in time (a frozen store)
    timeouts: int = 0


class Outcome(StrEnum):
    """What became of one offered beat."""

    RECORDED = "recorded"  # in the store (committed)
    REPLAYED = "replayed"  # the store holds a beat of that node at least as new
    UNAVAILABLE = "unavailable"  # the store could not take it: not recorded


@dataclass(eq=False, slots=True)
class _Entry:
    beat: NodeMetrics
    future: asyncio.Future[Outcome]
    #: loop time after which the beat is answered UNAVAILABLE if not yet committed
    expires: float


class HeartbeatBatcher:
    """Writes accepted beats to the store in batches (group commit), in a worker thread, so
    the event loop never waits on the database and a beat is answered only once it is
    committed (``offer`` returns a future of its ``Outcome``).

    A writer takes everything waiting (up to ``max_batch`` beats, at most one beat per node:
    a second one waits for the next batch, so the store's replay check is exact), writes it in
    one transaction, and starts again at once while beats wait; up to ``writers`` batches are
    written at once (a node never in two of them), so batches fill with the requests that
    arrived during the previous writes and a commit's latency does not cap the intake.
    ``offer`` refuses (None) when ``max_queue`` beats already wait. A beat not committed
    within the ``write_deadline`` given to ``offer`` is settled UNAVAILABLE (and counted in
    ``stats.timeouts``): one timer per batch being written, and the queue's expired beats are
    dropped (never written) whenever the writer looks at it, so a request costs no timer of
    its own. A batch whose write outlives its deadline may still commit: its beats were
    answered 503 and are resent, and the store refuses them as replays (the agent treats that
    409 as recorded). ``on_written`` receives each batch's recorded beats.
    """

    def __init__(
        self,
        store: StorePort,
        fleet: str,
        *,
        max_batch: int = 1000,
        flush_interval: float = 0.2,
        max_queue: int = 100_000,
        on_written: Callable[[Sequence[NodeMetrics]], None] | None = None,
        writers: int = 4,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._monotonic = monotonic
        self._writers = max(1, writers)
        #: nodes with a beat in a batch being written
        self._writing: set[str] = set()
        self._fleet = fleet
        self._max_batch = max_batch
        self._interval = flush_interval
        self._max_queue = max_queue
        self._pending: list[_Entry] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._on_written = on_written
        self.stats = IngestStats()
        #: monotonic time of the first failed write of a failure still going on, None once a
        #: write succeeded again
        self.failing_since: float | None = None
        #: (first failed write, next successful write) of the last failure that ended,
        #: monotonic: the daemon's observation gap when it lasted (core.health)
        self.last_failure: tuple[float, float] | None = None
        #: monotonic time of the intake loop's last tick (None: not started); written on the
        #: intake's loop, read by the health sweep and /healthz, /readyz on other threads
        self.last_tick: float | None = None
        #: (last tick before, first tick after) of the last stall of the intake that ended
        self.last_stall: tuple[float, float] | None = None
        self.stall_after = max(INTAKE_STALL_SECONDS, 5 * flush_interval)

    def tick(self) -> None:
        """The intake's loop is alive (its writer calls this at every wake, at least every
        ``flush_interval``); a tick after a silence longer than ``stall_after`` records it."""
        now = self._monotonic()
        last = self.last_tick
        if last is not None and now - last > self.stall_after:
            self.last_stall = (last, now)  # before ``last_tick``: see Daemon._observing_since
        self.last_tick = now

    def stalled(self) -> bool:
        """The intake started and its loop has not ticked for longer than ``stall_after``."""
        last = self.last_tick
        return last is not None and self._monotonic() - last > self.stall_after

    def offer(
        self, beat: NodeMetrics, write_deadline: float = 5.0
    ) -> asyncio.Future[Outcome] | None:
        """Queue ``beat``; its future settles once its batch committed (or could not be), at
        the latest ``write_deadline`` seconds from now. None: the queue is full."""
        if len(self._pending) >= self._max_queue:
            self.stats.dropped += 1
            return None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        if self._task is None and not self._stopping:
            self.start()  # the writer runs whenever a beat waits
        self._pending.append(_Entry(beat, future, loop.time() + write_deadline))
        self.stats.accepted += 1
        if not self._wake.is_set():
            self._wake.set()
        return future

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self.tick()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="heartbeats")

    async def _run(self) -> None:
        """Up to ``writers`` batches in flight at once (each its own transaction and
        connection): a commit's latency does not cap the intake. A node with a beat in a
        running batch waits for it (never two concurrent writes to one node's row)."""
        running: set[asyncio.Task[bool]] = set()
        while not self._stopping:
            self.tick()
            while len(running) < self._writers:
                batch = self._take()
                if not batch:
                    break
                task = asyncio.get_running_loop().create_task(self._write(batch))
                running.add(task)
                task.add_done_callback(running.discard)
            if self._pending and self._pending[0].expires <= asyncio.get_running_loop().time():
                self._drop_expired()  # every writer busy (a frozen store): answer the queue
            self._wake.clear()
            waiters: set[asyncio.Future[Any]] = {*running}
            wake = asyncio.ensure_future(self._wake.wait())
            waiters.add(wake)
            await asyncio.wait(waiters, timeout=self._interval, return_when=asyncio.FIRST_COMPLETED)
            wake.cancel()
        if running:
            await asyncio.wait(running)

    def _take(self) -> list[_Entry]:
        batch: list[_Entry] = []
        rest: list[_Entry] = []
        nodes: set[str] = set()
        busy = self._writing
        now = asyncio.get_running_loop().time()
        for entry in self._pending:
            if entry.future.done():
                continue  # settled already (the caller went away)
            if entry.expires <= now:
                self.stats.timeouts += 1  # waited too long for a batch: never written
                _settle(entry.future, Outcome.UNAVAILABLE)
                continue
            node = entry.beat.node
            if len(batch) >= self._max_batch or node in nodes or node in busy:
                rest.append(entry)
                continue
            nodes.add(node)
            batch.append(entry)
        self._pending = rest
        return batch

    async def flush(self) -> None:
        """Write what waits now (the requests arriving meanwhile wait for the next batch)."""
        rounds = 0
        while self._pending and rounds < 1000:
            rounds += 1
            batch = self._take()
            if not batch:
                return
            if not await self._write(batch):
                return

    def _drop_expired(self) -> None:
        now = asyncio.get_running_loop().time()
        kept: list[_Entry] = []
        for entry in self._pending:
            if entry.future.done():
                continue
            if entry.expires <= now:
                self.stats.timeouts += 1
                entry.future.set_result(Outcome.UNAVAILABLE)
            else:
                kept.append(entry)
        self._pending = kept

    def _expire(self, batch: list[_Entry]) -> None:
        """The batch's deadline passed before its write returned (a frozen store)."""
        for entry in batch:
            if not entry.future.done():
                self.stats.timeouts += 1
                entry.future.set_result(Outcome.UNAVAILABLE)

    async def _write(self, batch: list[_Entry]) -> bool:
        """One transaction; settles every beat's future. False when the store failed."""
        beats = [entry.beat for entry in batch]
        names = {beat.node for beat in beats}
        self._writing |= names
        loop = asyncio.get_running_loop()
        timer = loop.call_at(min(entry.expires for entry in batch), self._expire, batch)
        try:
            outcome = await asyncio.to_thread(self._store.record_beats, self._fleet, beats)
        except Exception as exc:  # the writer must outlive any store failure
            # a StoreError as a rule; anything else is a bug of ours, but the intake must not
            # die of it: the beats are answered 503 and resent, and the next batch tries again
            self.stats.failed_batches += 1
            if not isinstance(exc, StoreError):
                log.error(
                    f"heartbeat batch failed unexpectedly ({type(exc).__name__}): answered 503",
                    exc_info=True,
                    extra={"event": "heartbeats.write_bug"},
                )
            if self.failing_since is None:
                self.failing_since = self._monotonic()
                log.warning(
                    "heartbeats cannot be written: answered 503 until the store is back",
                    extra={
                        "event": "heartbeats.write_failed",
                        "beats": len(batch),
                        "error": str(exc),
                    },
                )
            for entry in batch:
                _settle(entry.future, Outcome.UNAVAILABLE)
            return False
        finally:
            timer.cancel()
            self._writing -= names
            self._wake.set()  # nodes freed: their waiting beats may go
        if self.failing_since is not None:
            self.last_failure = (self.failing_since, self._monotonic())
            self.failing_since = None
            log.info("heartbeats written again", extra={"event": "heartbeats.write_recovered"})
        self.stats.batches += 1
        written = [entry.beat for entry, ok in zip(batch, outcome, strict=True) if ok]
        self.stats.written += len(written)
        self.stats.replays += len(batch) - len(written)
        for entry, ok in zip(batch, outcome, strict=True):
            _settle(entry.future, Outcome.RECORDED if ok else Outcome.REPLAYED)
        if self._on_written is not None and written:
            self._on_written(written)
        return True

    async def aclose(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        for entry in self._pending:
            _settle(entry.future, Outcome.UNAVAILABLE)
        self._pending = []


def _settle(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)


def utc_from_timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
