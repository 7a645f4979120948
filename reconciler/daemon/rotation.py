"""The sending platform's side of the daemon: ``GET /v1/rotation`` and ``POST /v1/complaints``.

Both take ``Authorization: Bearer <token>`` where the token is
``hex(HMAC-SHA256(master_secret, "platform:<fleet>"))`` (``reconcile platform-token``), compared
in constant time. A node's heartbeat token cannot read the rotation, and the platform token
cannot sign heartbeats (different derivations).

- ``GET /v1/rotation``: the nodes and IPs that may send now and each one's remaining allowance
  for today (``core.reputation.rotation``). Not in this list = out of rotation.
- ``POST /v1/complaints``: complaint events, JSON ``{"complaints": [{"node": NAME} or
  {"ip": IP}, "count": N, "at": ISO-8601, "id": EVENT-ID}]}`` (at most 1,000 items), or one
  feedback-loop report (ARF, RFC 5965: ``Content-Type: multipart/report`` or
  ``message/feedback-report``) whose ``Source-IP`` names the sending IP. Events with an ``id``
  (or a report's Message-ID) already seen by this daemon are not counted twice.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import hashlib
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from reconciler.core.errors import StoreError

MAX_COMPLAINT_BODY = 256 * 1024
MAX_EVENTS = 1000
MAX_COUNT = 1_000_000


def platform_token(master: bytes, fleet: str) -> str:
    return hmac.new(master, f"platform:{fleet}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Complaint:
    node: str
    count: int
    at: datetime
    #: the platform's event id (ARF: the report's Message-ID): counted once by all daemons
    event_id: str | None = None


class PlatformState(Protocol):
    def rotation_document(self) -> dict[str, Any]: ...

    def node_for(self, name: str | None, ip: str | None) -> str | None: ...

    async def record_complaints(self, complaints: list[Complaint]) -> tuple[int, int]:
        """Count them (an event id seen before, by any daemon, once): (recorded, duplicates)."""
        ...

    @property
    def complaint_window(self) -> timedelta: ...


def _authorized(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("latin-1", "replace"), token.encode()
    )


def _refuse(status: int, error: str) -> Response:
    return JSONResponse({"error": error}, status_code=status)


def _parse_at(value: object, now: datetime, window: timedelta) -> datetime | None:
    if value is None:
        return now
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    at = at.astimezone(UTC)
    if at > now + timedelta(minutes=5) or at < now - window:
        return None
    return at


def _arf_events(body: bytes) -> list[dict[str, Any]]:
    """The Source-IP of a feedback-loop report (RFC 5965)."""
    message = email.message_from_bytes(body, policy=email.policy.compat32)
    for part in message.walk():
        if part.get_content_type() == "message/feedback-report":
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                first = payload[0]
                text = first.as_string() if isinstance(first, email.message.Message) else str(first)
            else:
                text = str(payload or "")
            fields = {}
            for line in text.splitlines():
                name, sep, value = line.partition(":")
                if sep:
                    fields[name.strip().lower()] = value.strip()
            source = fields.get("source-ip")
            if source:
                event_id = message.get("Message-ID") or fields.get("original-envelope-id")
                return [{"ip": source, "count": 1, "id": event_id}]
    raise ValueError("no message/feedback-report part with a Source-IP")


def create_handlers(
    state: PlatformState, token: str, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> tuple[Callable[[Request], Awaitable[Response]], Callable[[Request], Awaitable[Response]]]:
    async def rotation(request: Request) -> Response:
        if not _authorized(request, token):
            return _refuse(401, "unauthorized")
        return JSONResponse(state.rotation_document())

    async def complaints(request: Request) -> Response:
        if not _authorized(request, token):
            return _refuse(401, "unauthorized")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_COMPLAINT_BODY:
                return _refuse(413, "too_large")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if kind in ("multipart/report", "message/feedback-report", "message/rfc822"):
                events = _arf_events(body)
            else:
                document = json.loads(body)
                if not isinstance(document, dict) or not isinstance(
                    document.get("complaints"), list
                ):
                    raise ValueError('expected {"complaints": [...]}')
                events = document["complaints"]
        except (ValueError, UnicodeDecodeError, TypeError):
            return _refuse(422, "bad_body")
        if len(events) > MAX_EVENTS:
            return _refuse(413, "too_many_events")
        current = now()
        accepted: list[Complaint] = []
        refused: list[dict[str, Any]] = []
        for index, event in enumerate(events):
            reason = None
            if not isinstance(event, Mapping):
                refused.append({"index": index, "reason": "not an object"})
                continue
            count = event.get("count", 1)
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
                reason = f"count must be an integer within 1..{MAX_COUNT}"
            at = _parse_at(event.get("at"), current, state.complaint_window)
            if at is None and reason is None:
                reason = "at must be an ISO-8601 time with a zone, within the rate window"
            name = event.get("node")
            ip = event.get("ip")
            if ip is not None:
                try:
                    ip = str(ipaddress.ip_address(str(ip)))
                except ValueError:
                    reason = reason or "ip is not an IP address"
            node = None
            if reason is None:
                node = state.node_for(name if isinstance(name, str) else None, ip)
                if node is None:
                    reason = "no node of this fleet has this name or IP"
            if reason is not None or node is None or at is None:
                refused.append({"index": index, "reason": reason or "unknown node"})
                continue
            event_id = event.get("id")
            accepted.append(
                Complaint(
                    node,
                    int(count),
                    at,
                    event_id[:200] if isinstance(event_id, str) and event_id else None,
                )
            )
        try:
            recorded, duplicates = await state.record_complaints(accepted) if accepted else (0, 0)
        except StoreError:
            # nothing was counted (one transaction): the platform sends them again
            return _refuse(503, "store_unavailable")
        status = 202 if accepted or duplicates else (422 if refused else 202)
        return JSONResponse(
            {
                "accepted": sum(c.count for c in accepted),
                "recorded": recorded,
                "duplicates": duplicates,
                "refused": refused[:50],
            },
            status_code=status,
        )

    return rotation, complaints
