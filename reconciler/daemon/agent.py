"""The node side: read the Postfix queue and system figures, post a signed heartbeat.

``reconcile agent --node NAME --url URL`` runs ``Agent.run``: every interval it reads

- the Postfix queue length from ``postqueue -j`` (one JSON object per queued message),
- recipients delivered, hard-bounced and soft-bounced since the last beat from the mail log
  (Postfix delivery lines ``status=sent`` / ``status=bounced`` or ``expired`` / ``status=deferred``
  appended since the last read, hand-offs to a loopback content filter excluded; default
  ``/var/log/mail.log``),
- CPU (``/proc/stat`` between two reads), memory (``/proc/meminfo``: 1 - available/total) and
  disk (``statvfs('/')``),

and posts them to ``URL/v1/heartbeats`` signed with the node's secret. When the daemon is
unreachable or refuses a beat, the agent logs it, keeps the counts it could not deliver and
adds them to the next beat (its ``interval_seconds`` covers the whole span), so nothing is lost
and nothing stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from reconciler.daemon.heartbeats import HEARTBEATS_PATH, signed_headers

log = logging.getLogger("reconciler.agent")

AGENT_VERSION = "fleet-reconciler-agent/1"


@dataclass(frozen=True, slots=True)
class Figures:
    cpu: float
    memory: float
    disk: float
    queue_length: int
    sent: int  # since the previous read
    bounces: int  # hard bounces
    complaints: int
    soft_bounces: int = 0


class FigureSource(Protocol):
    def read(self) -> Figures: ...


# --- the real figures --------------------------------------------------------------------


def count_postqueue_json(text: str) -> int:
    """``postqueue -j`` prints one JSON object per queued message, one per line."""
    count = 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            json.loads(line)
        except ValueError:
            continue
        count += 1
    return count


def parse_proc_stat(text: str) -> tuple[int, int]:
    """(busy, total) jiffies from the ``cpu`` line of /proc/stat."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            total = sum(values[:8])
            return total - idle, total
    return 0, 0


def parse_meminfo(text: str) -> float:
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0])
    total = fields.get("MemTotal", 0)
    available = fields.get("MemAvailable", fields.get("MemFree", 0))
    if total <= 0:
        return 0.0
    return min(1.0, max(0.0, 1.0 - available / total))


#: a Postfix delivery line: ``postfix/smtp[123]: QUEUEID: to=<...>, relay=..., dsn=5.1.1,
#: status=bounced (...)``. Hand-offs to a content filter on loopback are not deliveries.
_DELIVERY = re.compile(
    r"postfix(?:/[\w.-]+)*/(?:smtp|lmtp|local|virtual|pipe)\[\d+\]: [0-9A-Za-z]+: to=<[^>]*>,"
    r"(?P<rest>.*?)\bstatus=(?P<status>sent|bounced|deferred|expired)\b"
)
_LOOPBACK_RELAY = re.compile(r"relay=[^,]*\[(?:127\.\d+\.\d+\.\d+|::1)\]")


@dataclass(frozen=True, slots=True)
class MailCounts:
    sent: int = 0
    hard_bounces: int = 0  # status=bounced or expired (a permanent failure)
    soft_bounces: int = 0  # status=deferred (a temporary failure, retried)


def count_deliveries(lines: list[str]) -> MailCounts:
    """Delivered, hard-bounced and deferred recipients in Postfix log lines."""
    sent = hard = soft = 0
    for line in lines:
        match = _DELIVERY.search(line)
        if match is None or _LOOPBACK_RELAY.search(match.group("rest")):
            continue
        status = match.group("status")
        if status == "sent":
            sent += 1
        elif status == "deferred":
            soft += 1
        else:
            hard += 1
    return MailCounts(sent, hard, soft)


def count_mail_log(lines: list[str]) -> tuple[int, int]:
    """(delivered, hard-bounced): see ``count_deliveries``."""
    counts = count_deliveries(lines)
    return counts.sent, counts.hard_bounces


class LogTail:
    """New lines of a growing log since the last read (restarts on truncation/rotation)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset: int | None = None
        self._inode: int | None = None

    def read_new(self) -> list[str]:
        try:
            stat = self._path.stat()
        except OSError:
            return []
        if self._offset is None:
            # start at the end: what was sent before the agent started is not ours to report
            self._offset, self._inode = stat.st_size, stat.st_ino
            return []
        if stat.st_ino != self._inode or stat.st_size < self._offset:
            self._offset, self._inode = 0, stat.st_ino
        try:
            with self._path.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read(16 * 1024 * 1024)
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        return data[: end + 1].decode("utf-8", "replace").splitlines()


class SystemFigures:
    """Figures from this machine: /proc, statvfs, ``postqueue -j`` and the mail log."""

    def __init__(
        self,
        *,
        mail_log: Path = Path("/var/log/mail.log"),
        postqueue: str = "postqueue",
        proc: Path = Path("/proc"),
    ) -> None:
        self._tail = LogTail(mail_log)
        self._postqueue = postqueue
        self._proc = proc
        self._cpu_last: tuple[int, int] | None = None
        self._warned: set[str] = set()
        self._tail.read_new()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, extra={"event": "agent.figures"})

    def queue_length(self) -> int:
        binary = shutil.which(self._postqueue)
        if binary is None:
            self._warn_once("postqueue", f"{self._postqueue} not found: queue reported as 0")
            return 0
        try:
            done = subprocess.run(  # noqa: S603 (fixed argv, no shell)
                [binary, "-j"], capture_output=True, timeout=20, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._warn_once("postqueue-run", f"postqueue -j failed: {type(exc).__name__}")
            return 0
        return count_postqueue_json(done.stdout.decode("utf-8", "replace"))

    def cpu(self) -> float:
        try:
            busy, total = parse_proc_stat((self._proc / "stat").read_text())
        except OSError:
            return 0.0
        last, self._cpu_last = self._cpu_last, (busy, total)
        if last is None or total <= last[1]:
            return 0.0
        return min(1.0, max(0.0, (busy - last[0]) / (total - last[1])))

    def memory(self) -> float:
        try:
            return parse_meminfo((self._proc / "meminfo").read_text())
        except OSError:
            return 0.0

    @staticmethod
    def disk() -> float:
        try:
            stat = os.statvfs("/")
        except OSError:
            return 0.0
        if stat.f_blocks <= 0:
            return 0.0
        return min(1.0, max(0.0, 1.0 - stat.f_bavail / stat.f_blocks))

    def read(self) -> Figures:
        counts = count_deliveries(self._tail.read_new())
        return Figures(
            cpu=self.cpu(),
            memory=self.memory(),
            disk=self.disk(),
            queue_length=self.queue_length(),
            sent=counts.sent,
            bounces=counts.hard_bounces,
            complaints=0,  # complaints arrive at the daemon (POST /v1/complaints)
            soft_bounces=counts.soft_bounces,
        )


# --- the loop ----------------------------------------------------------------------------


@dataclass
class AgentStats:
    sent_ok: int = 0
    failed: int = 0
    last_status: int | None = None


#: a beat not acknowledged within this time is folded into a fresh one (the daemon refuses
#: timestamps more than 300 s old)
PENDING_MAX_AGE = 240


@dataclass(frozen=True, slots=True)
class _Beat:
    """A signed beat waiting for a definite answer, with the counts it carries."""

    body: bytes
    timestamp: int
    sent: int
    bounces: int
    complaints: int
    soft: int
    span: float


class Agent:
    def __init__(
        self,
        node: str,
        url: str,
        secret: str,
        source: FigureSource,
        *,
        interval: float = 30.0,
        client: httpx.AsyncClient | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node = node
        self._endpoint = url.rstrip("/") + HEARTBEATS_PATH
        self._secret = secret
        self._source = source
        self.interval = interval
        self._client = client
        self._own_client = client is None
        self._wall = wall_clock
        self._monotonic = monotonic
        self._carry_sent = 0
        self._carry_bounces = 0
        self._carry_complaints = 0
        self._carry_soft = 0
        self._since = monotonic()
        self._pending: _Beat | None = None
        self._last_timestamp = 0
        self.stats = AgentStats()

    def __repr__(self) -> str:
        return f"Agent(node={self.node!r}, url={self._endpoint!r}, secret=<redacted>)"

    async def beat_once(self) -> bool:
        """Read figures and post one beat. True when the daemon recorded it.

        A beat whose outcome is unknown (no answer, 5xx, 408, 429) is sent again *unchanged*
        (same timestamp, body and signature) until the daemon answers: 2xx (recorded) or 409
        (a replay: it was recorded before, e.g. the answer was lost) end it, and its counts are
        never sent twice; figures read meanwhile wait for the next beat. A refused connection
        certainly recorded nothing: its counts go into a fresh beat. A pending beat that
        would become stale is folded into a fresh one. A definite refusal (401, 404, 422) is
        not sent again: its counts are carried over to the next beat, except after 422 (the
        figures were refused as implausible: carrying them would repeat the refusal)."""
        figures = await asyncio.to_thread(self._source.read)
        self._carry_sent += figures.sent
        self._carry_bounces += figures.bounces
        self._carry_complaints += figures.complaints
        self._carry_soft += figures.soft_bounces
        now = self._monotonic()
        pending = self._pending
        if pending is not None and self._wall() - pending.timestamp > PENDING_MAX_AGE:
            self._unsend(pending)
            pending = self._pending = None
        if pending is None:
            pending = self._pending = self._new_beat(figures, now)
        headers = signed_headers(
            self.node, self._secret, "POST", HEARTBEATS_PATH, pending.body, pending.timestamp
        )
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0)
        try:
            response = await self._client.post(
                self._endpoint, content=pending.body, headers=headers
            )
            status: int | None = response.status_code
        except httpx.ConnectError as exc:  # never reached the daemon: certainly not recorded
            self._pending = None
            self._unsend(pending)
            self.stats.failed += 1
            self.stats.last_status = None
            log.warning(
                f"heartbeat not delivered ({type(exc).__name__}); figures kept for the next one",
                extra={"event": "agent.unreachable", "node": self.node},
            )
            return False
        except httpx.HTTPError as exc:
            status = None
            log.warning(
                f"heartbeat outcome unknown ({type(exc).__name__}); it will be sent again",
                extra={"event": "agent.unreachable", "node": self.node},
            )
        self.stats.last_status = status
        if status is not None and (200 <= status < 300 or status == 409):
            self._pending = None
            self.stats.sent_ok += 1
            return True
        self.stats.failed += 1
        if status is not None:
            log.warning(
                f"heartbeat refused: HTTP {status}",
                extra={"event": "agent.refused", "node": self.node, "status": status},
            )
        if status is None or status >= 500 or status in (408, 429):
            return False  # outcome unknown or the daemon asks to come back: send it again
        self._pending = None
        if status != 422:
            self._unsend(pending)
        return False

    def _new_beat(self, figures: Figures, now: float) -> _Beat:
        sent, bounces = self._carry_sent, self._carry_bounces
        complaints, soft = self._carry_complaints, self._carry_soft
        self._carry_sent = self._carry_bounces = self._carry_complaints = 0
        self._carry_soft = 0
        span = max(1.0, now - self._since)
        if span > 3600.0:  # a beat may cover an hour at most: drop rather than send a bad figure
            sent = bounces = complaints = soft = 0
            span = min(span, 3600.0)
        self._since = now
        timestamp = max(int(self._wall()), self._last_timestamp + 1)
        self._last_timestamp = timestamp
        body = json.dumps(
            {
                "node": self.node,
                "cpu": round(figures.cpu, 4),
                "memory": round(figures.memory, 4),
                "disk": round(figures.disk, 4),
                "queue_length": figures.queue_length,
                "sent": sent,
                "bounces": bounces,
                "soft_bounces": soft,
                "complaints": complaints,
                "interval_seconds": round(span, 3),
                "agent": AGENT_VERSION,
            },
            separators=(",", ":"),
        ).encode()
        return _Beat(body, timestamp, sent, bounces, complaints, soft, span)

    def _unsend(self, beat: _Beat) -> None:
        """Put a beat's counts back (it was not recorded) for the next beat to carry."""
        self._carry_sent += beat.sent
        self._carry_bounces += beat.bounces
        self._carry_complaints += beat.complaints
        self._carry_soft += beat.soft
        self._since -= beat.span

    async def run(self, stop: asyncio.Event) -> None:
        log.info(
            f"agent for {self.node} posting to {self._endpoint} every {self.interval:g}s",
            extra={"event": "agent.started", "node": self.node},
        )
        try:
            while not stop.is_set():
                started = self._monotonic()
                await self.beat_once()
                delay = max(0.0, self.interval - (self._monotonic() - started))
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    continue
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
        self._client = None
