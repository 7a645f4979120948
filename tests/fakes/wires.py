"""``ScriptedApi``: a scripted Hostwinds endpoint behind ``httpx.MockTransport``.

Queue answers per action (or for any action) and read back what the client sent, parsed as
the server would (form fields, repeated ``keys[]``). No sockets, no time: pair it with
``FakeClock`` for retry and rate-limit tests.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import httpx

ANY = "*"


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted answer: a JSON body, raw bytes, or a transport exception to raise."""

    body: object = None
    status: int = 200
    raw: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    error: type[httpx.TransportError] | None = None


@dataclass(frozen=True, slots=True)
class SentRequest:
    method: str
    url: str
    content_type: str
    form: dict[str, list[str]]

    @property
    def action(self) -> str:
        return self.form.get("action", [""])[-1]

    def field(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[-1] if values else None


class ScriptedApi:
    """Answers queued replies in order: first those queued for the request's action, then
    those queued for any action, then ``fallback`` (if set); otherwise the test fails."""

    def __init__(self, fallback: Callable[[SentRequest], Reply] | None = None) -> None:
        self.requests: list[SentRequest] = []
        self._queues: dict[str, deque[Reply]] = {}
        self.fallback = fallback

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    @property
    def actions(self) -> list[str]:
        return [r.action for r in self.requests]

    def queue(self, action: str, reply: Reply, times: int = 1) -> None:
        queue = self._queues.setdefault(action, deque())
        for _ in range(times):
            queue.append(reply)

    def json(self, action: str, body: object, *, status: int = 200, times: int = 1) -> None:
        self.queue(action, Reply(body=body, status=status), times)

    def raw(
        self,
        action: str,
        raw: bytes,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
    ) -> None:
        self.queue(action, Reply(raw=raw, status=status, headers=dict(headers or {})), times)

    def fail(self, action: str, error: type[httpx.TransportError], *, times: int = 1) -> None:
        self.queue(action, Reply(error=error), times)

    def handle(self, request: httpx.Request) -> httpx.Response:
        content_type = request.headers.get("content-type", "")
        form = parse_qs(request.content.decode("utf-8"), keep_blank_values=True)
        sent = SentRequest(request.method, str(request.url), content_type, form)
        self.requests.append(sent)
        reply = self._next(sent)
        if reply.error is not None:
            raise reply.error("scripted transport failure", request=request)
        if reply.raw is not None:
            return httpx.Response(reply.status, content=reply.raw, headers=dict(reply.headers))
        return httpx.Response(
            reply.status,
            content=json.dumps(reply.body).encode(),
            headers={"content-type": "application/json", **reply.headers},
        )

    def _next(self, sent: SentRequest) -> Reply:
        for key in (sent.action, ANY):
            queue = self._queues.get(key)
            if queue:
                return queue.popleft()
        if self.fallback is not None:
            return self.fallback(sent)
        raise AssertionError(f"no scripted reply for action {sent.action!r}")


def command_ok(action: str = "Done", message: str = "ok") -> list[dict[str, str]]:
    return [{"result": "success", "action": action, "message": message}]


def api_error(message: str, action: str | None = None, code: str | None = None) -> list[object]:
    body: dict[str, str] = {"result": "error", "message": message}
    if action:
        body["action"] = action
    if code:
        body["ERROR"] = code
    return [body]
