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
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reconciler.core.errors import StoreError, UserError
from reconciler.core.fleet import NodeMetrics
from reconciler.core.ports import StorePort

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

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[int, Field(ge=0, le=1_000_000_000)]


class HeartbeatPayload(BaseModel):
    """The JSON body of ``POST /v1/heartbeats``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: Annotated[str, Field(min_length=1, max_length=64)]
    cpu: Fraction  # share of CPU busy over the interval
    memory: Fraction  # share of memory used
    disk: Fraction  # share of disk used
    queue_length: Count  # Postfix queue (postqueue -j entries)
    sent: Count  # emails delivered since the previous beat
    bounces: Count = 0  # hard bounces
    soft_bounces: Count = 0  # deferrals (temporary failures)
    complaints: Count = 0
    interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    agent: Annotated[str, Field(max_length=64)] | None = None

    def metrics(self, at: datetime) -> NodeMetrics:
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


class HeartbeatRejected(Exception):  # noqa: N818 (a verdict, not a failure of ours)
    def __init__(self, reason: Rejection, status: int = 401) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.status = status


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

    @staticmethod
    def key(signature: str) -> bytes:
        digest = signature.partition("=")[2]
        try:
            return bytes.fromhex(digest[:32])
        except ValueError:
            return digest.encode()

    def check_and_add(self, key: bytes, timestamp: float, now: float) -> bool:
        """True if new (and now remembered), False if seen before."""
        self._expire(now)
        if key in self._seen:
            return False
        self._seen[key] = timestamp
        while len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return True

    def _expire(self, now: float) -> None:
        # entries are nearly in timestamp order; stop at the first one still inside the window
        horizon = now - self._window
        while self._seen:
            key, ts = next(iter(self._seen.items()))
            if ts >= horizon:
                break
            del self._seen[key]

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
    ) -> None:
        self._master = master
        self._known = known_node
        self._window = window_seconds
        self._replay = replay or ReplayCache(window_seconds)
        self._secrets: OrderedDict[str, str] = OrderedDict()

    def _secret(self, node: str) -> str:
        secret = self._secrets.get(node)
        if secret is None:
            secret = self._master.node_secret(node)
            self._secrets[node] = secret
            if len(self._secrets) > 50_000:
                self._secrets.popitem(last=False)
        return secret

    def verify(
        self,
        headers: Mapping[str, str],
        method: str,
        path: str,
        body: bytes,
        now: float,
    ) -> HeartbeatPayload:
        node = headers.get(NODE_HEADER.lower()) or headers.get(NODE_HEADER)
        ts_text = headers.get(TIMESTAMP_HEADER.lower()) or headers.get(TIMESTAMP_HEADER)
        signature = headers.get(SIGNATURE_HEADER.lower()) or headers.get(SIGNATURE_HEADER)
        if not node or not ts_text or not signature:
            raise HeartbeatRejected(Rejection.MISSING_HEADERS)
        if len(body) > MAX_BODY_BYTES:
            raise HeartbeatRejected(Rejection.TOO_LARGE, 413)
        if not ts_text.isdigit() or len(ts_text) > 12:
            raise HeartbeatRejected(Rejection.BAD_TIMESTAMP)
        timestamp = int(ts_text)
        if timestamp < now - self._window:
            raise HeartbeatRejected(Rejection.STALE)
        if timestamp > now + self._window:
            raise HeartbeatRejected(Rejection.FUTURE)
        if len(node) > 64:
            raise HeartbeatRejected(Rejection.UNKNOWN_NODE)
        expected = sign(self._secret(node), ts_text, method, path, body)
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
        if not self._replay.check_and_add(ReplayCache.key(signature), timestamp, now):
            raise HeartbeatRejected(Rejection.REPLAYED, 409)
        return payload


# --- batched ingestion -------------------------------------------------------------------


@dataclass
class IngestStats:
    accepted: int = 0
    written: int = 0
    batches: int = 0
    failed_batches: int = 0
    dropped: int = 0


class HeartbeatBatcher:
    """Queues accepted beats and writes them with ``store.record_heartbeats`` in batches, in a
    worker thread, so the event loop never waits on the database.

    Flushes when ``max_batch`` beats are waiting or every ``flush_interval`` seconds. Beats are
    dropped (and counted) when the queue is full: a heartbeat is a sample, the next one follows.
    ``on_written`` receives each written batch (for the daemon's in-memory view).
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
    ) -> None:
        self._store = store
        self._fleet = fleet
        self._max_batch = max_batch
        self._interval = flush_interval
        self._max_queue = max_queue
        self._pending: list[NodeMetrics] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._on_written = on_written
        self.stats = IngestStats()

    def offer(self, beat: NodeMetrics) -> bool:
        if len(self._pending) >= self._max_queue:
            self.stats.dropped += 1
            return False
        self._pending.append(beat)
        self.stats.accepted += 1
        if len(self._pending) >= self._max_batch:
            self._wake.set()
        return True

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="heartbeats")

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                written = await asyncio.to_thread(self._store.record_heartbeats, self._fleet, batch)
            except StoreError as exc:
                self.stats.failed_batches += 1
                self.stats.dropped += len(batch)
                log.warning(
                    "heartbeat batch not written",
                    extra={
                        "event": "heartbeats.write_failed",
                        "beats": len(batch),
                        "error": str(exc),
                    },
                )
                return
            self.stats.batches += 1
            self.stats.written += written
            if self._on_written is not None:
                self._on_written(batch)

    async def aclose(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


def utc_from_timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
