"""The ASGI app: ``POST /cloud/api.php`` (the simulated API) and ``/sim/*`` (admin).

The API route answers HTTP 200 with JSON whatever happens, as the real API does, unless a
fault is injected. The admin routes take and return plain JSON and need no key: the simulator
is meant for loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import ipaddress
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from providers.simulator import handling, rendering
from providers.simulator.faults import (
    FAULT_FIELDS,
    LIFECYCLE_FIELDS,
    FaultInjector,
    FaultSettings,
    LifecycleUpdate,
)
from providers.simulator.persisting import StateFile
from providers.simulator.world import SimError, World

API_PATH = "/cloud/api.php"
MAX_BODY = 1_000_000

PHP_WARNING = (
    '<br />\n<b>Warning</b>:  Undefined array key "serviceid" in '
    "<b>/var/www/cloud/api.php</b> on line <b>412</b><br />\n"
)


def _json(body: object, status: int = 200) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
    )


def _problem(message: str, status: int = 400) -> Response:
    return _json({"error": message}, status)


class SeedInstance(BaseModel):
    """``POST /sim/instances``: a server made outside our tool (portal, another team...)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    srvrname: str = Field(min_length=1, max_length=200)
    rid: int = 52
    location_id: int = 12
    status: str = "ACTIVE"
    template: str | None = None
    main_ip: str | None = None
    locked: bool = False


class PatchInstance(BaseModel):
    """``PATCH /sim/instances/{id}``: change a server behind our back."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    status: str | None = None
    srvrname: str | None = Field(default=None, min_length=1, max_length=200)
    locked: bool | None = None
    suspended: bool | None = None


_PATCH_STATES: dict[str, tuple[str, str | None, int]] = {
    "ACTIVE": ("active", None, 1),
    "SHUTOFF": ("stopped", None, 4),
    "ERROR": ("error", None, 0),
}


class Reprice(BaseModel):
    """``POST /sim/prices``: the provider changes a plan's price (or runs a promotion)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    rid: int
    monthly: Decimal = Field(ge=0, le=100_000, decimal_places=2)
    promo_percent: Decimal = Field(default=Decimal(0), ge=0, le=100, decimal_places=2)


class ClockAdvance(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    seconds: float = Field(ge=0, le=10 * 365 * 86_400)


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests: Counter[str] = Counter()
        self.total = 0
        self.mutations = 0
        self.errors = 0
        self.faults: Counter[str] = Counter()
        #: servers made by add_instance, by srvrname (a lost response included)
        self.created: Counter[str] = Counter()
        self.since = datetime.now(UTC).isoformat(timespec="seconds")


class SimulatorApp:
    """The simulator as an ASGI application (call it, or serve it with uvicorn)."""

    def __init__(
        self,
        world: World,
        *,
        api_key: str = "simulator",
        allow_ips: Sequence[str] | None = None,
        state: StateFile | None = None,
        faults: FaultInjector | None = None,
        persist_interval: float = 0.2,
    ) -> None:
        self.world = world
        self.persist_interval = persist_interval
        self._last_save = float("-inf")
        self._dirty = False
        self._flush_pending = False
        self._api_key = api_key.encode()
        self.allow_ips = (
            None
            if allow_ips is None
            else frozenset(str(ipaddress.IPv4Address(a)) for a in allow_ips)
        )
        self.state = state
        self.faults = faults or FaultInjector()
        self.stats = Stats()
        self.lock = threading.RLock()
        self.closing = threading.Event()
        self._initial_lifecycle = dataclasses.replace(world.settings)
        self._initial_catalogue = world.catalogue
        self._starlette = Starlette(
            routes=[
                Route(API_PATH, self.api, methods=["POST", "GET"]),
                Route("/sim/health", self.health, methods=["GET"]),
                Route("/sim/reset", self.reset_endpoint, methods=["POST"]),
                Route("/sim/faults", self.faults_endpoint, methods=["GET", "POST", "DELETE"]),
                Route("/sim/stats", self.stats_endpoint, methods=["GET", "DELETE"]),
                Route("/sim/stats/reset", self.stats_reset, methods=["POST"]),
                Route("/sim/clock", self.clock_endpoint, methods=["GET"]),
                Route("/sim/clock/advance", self.clock_advance, methods=["POST"]),
                Route("/sim/instances", self.instances_endpoint, methods=["GET", "POST"]),
                Route("/sim/prices", self.prices_endpoint, methods=["GET", "POST"]),
                Route(
                    "/sim/instances/{serviceid:int}",
                    self.instance_endpoint,
                    methods=["GET", "PATCH", "DELETE"],
                ),
            ],
        )

    def __repr__(self) -> str:
        return f"SimulatorApp(instances={len(self.world.instances)}, key=<redacted>)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._starlette(scope, receive, send)

    # ---- the API --------------------------------------------------------------------------

    def _authorised(self, key: str, client_host: str | None) -> bool:
        if not hmac.compare_digest(key.encode(), self._api_key):
            return False
        if self.allow_ips is None:
            return True
        try:
            address = ipaddress.ip_address(client_host or "")
        except ValueError:
            return False
        return address.version == 4 and str(address) in self.allow_ips

    def _save(self) -> None:
        """Persist after a mutation: at once, or at most every ``persist_interval`` seconds
        (a trailing write on the event loop catches the last change; ``flush`` at stop)."""
        if self.state is None:
            return
        self._dirty = True
        now = time.monotonic()
        wait = self.persist_interval - (now - self._last_save)
        if wait <= 0:
            self.flush()
            return
        self._dirty = True
        if self._flush_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_pending = True
        loop.call_later(wait, self._trailing_flush)

    def _trailing_flush(self) -> None:
        self._flush_pending = False
        if self._dirty:
            self.flush()

    def flush_changes(self) -> None:
        """Write the state file if a mutation has not been written yet, or if there is no file
        yet. A session that only read (a dry-run of a 10,000-server account) leaves the file
        as it was instead of rewriting megabytes. Transitions that fell due meanwhile need no
        write: the file keeps their due times and a reload completes them alike."""
        if self.state is None:
            return
        if self._dirty or not self.state.path.exists():
            self.flush()

    def flush(self) -> None:
        """Write the state file now (when there is one)."""
        if self.state is None:
            return
        with self.lock:
            self.state.save(self.world)
            self._dirty = False
            self._last_save = time.monotonic()

    async def api(self, request: Request) -> Response:
        raw = await request.body()
        if request.method != "POST":
            raw = b""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        is_json = content_type == "application/json" or raw.lstrip()[:1] in (b"{", b"[")
        form: handling.Form = {}
        if not is_json and len(raw) <= MAX_BODY:
            with contextlib.suppress(UnicodeDecodeError):
                form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
        action = (form.get("action") or [""])[-1].strip()[:64]
        with self.lock:
            self.stats.requests[action or "<none>"] += 1
            self.stats.total += 1
        decision = self.faults.decide(action)
        if decision.rate_limited:
            self._count_fault("rate_limited")
            return Response("Too Many Requests", 429, headers={"Retry-After": "1"})
        if decision.delay:
            await self._wait(decision.delay, request)
        if decision.hang:
            self._count_fault("hang")
            await self._wait(decision.hang, request)
            return Response("<html><body><h1>504 Gateway Time-out</h1></body></html>", 504)
        if decision.http_5xx is not None:
            self._count_fault("http_5xx")
            return Response(
                f"<html><body><h1>{decision.http_5xx} Server Error</h1></body></html>",
                decision.http_5xx,
                media_type="text/html",
            )
        if decision.error_in_200:
            self._count_fault("error_in_200")
            return _json(rendering.error(action or None, "An unexpected error occurred."))
        key = (form.get("API") or [""])[-1]
        client = request.client.host if request.client else None
        if is_json or not self._authorised(key, client):
            body: handling.Body = rendering.NOT_AUTHORIZED
            mutated = False
        else:
            with self.lock:
                outcome = handling.handle(self.world, action, form)
                body, mutated = outcome.body, outcome.mutated
                if mutated:
                    self.stats.mutations += 1
                    if action == "add_instance":
                        qty = (form.get("qty") or ["1"])[-1].strip()
                        name = (form.get("srvrname") or [""])[-1].strip() or "<unnamed>"
                        self.stats.created[name] += int(qty) if qty.isdigit() else 1
                    self._save()
        if isinstance(body, list) and body and body[0].get("result") == "error":
            with self.lock:
                self.stats.errors += 1
        if decision.lost_response:
            self._count_fault("lost_response")
            return Response("<html><body><h1>502 Bad Gateway</h1></body></html>", 502)
        if decision.malformed_json:
            self._count_fault("malformed_json")
            text = PHP_WARNING + json.dumps(body, separators=(",", ":"))
            return Response(text.encode(), 200, media_type="text/html")
        return _json(body)

    def _count_fault(self, name: str) -> None:
        with self.lock:
            self.stats.faults[name] += 1

    async def _wait(self, seconds: float, request: Request) -> None:
        """Sleep, but stop early if the client goes away or the server is closing."""
        deadline = time.monotonic() + seconds
        disconnect = asyncio.ensure_future(request.receive())
        try:
            while not self.closing.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                done, _ = await asyncio.wait({disconnect}, timeout=min(0.05, remaining))
                if done:
                    return
        finally:
            if not disconnect.done():
                disconnect.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await disconnect

    # ---- admin ----------------------------------------------------------------------------

    async def _admin_json(self, request: Request) -> dict[str, Any] | Response:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            return _problem("body is not valid JSON")
        if not isinstance(data, dict):
            return _problem("body must be a JSON object")
        return data

    def _faults_view(self) -> dict[str, Any]:
        settings = self.world.settings
        return {
            **self.faults.settings.model_dump(),
            "build_seconds": settings.build_seconds,
            "build_failure_rate": settings.build_failure_rate,
            "resize_seconds": settings.resize_seconds,
            "resize_failure_rate": settings.resize_failure_rate,
            "reboot_seconds": settings.reboot_seconds,
        }

    async def health(self, request: Request) -> Response:
        return _json({"ok": True})

    def reset(self) -> None:
        """Empty account, no faults, start-up lifecycle settings, zeroed stats and clock offset."""
        with self.lock:
            self.world.reset()
            self.world.catalogue = self._initial_catalogue
            self.world.settings = dataclasses.replace(self._initial_lifecycle)
            self.faults.configure(FaultSettings())
            self.stats.reset()
            self.flush()

    async def reset_endpoint(self, request: Request) -> Response:
        self.reset()
        return _json(self.stats_view())

    async def faults_endpoint(self, request: Request) -> Response:
        if request.method == "DELETE":
            with self.lock:
                self.faults.configure(FaultSettings())
                self.world.settings = dataclasses.replace(self._initial_lifecycle)
                return _json(self._faults_view())
        if request.method == "GET":
            with self.lock:
                return _json(self._faults_view())
        data = await self._admin_json(request)
        if isinstance(data, Response):
            return data
        unknown = sorted(set(data) - FAULT_FIELDS - LIFECYCLE_FIELDS)
        if unknown:
            return _problem(f"unknown fault field(s): {', '.join(unknown)}")
        try:
            with self.lock:
                merged = {
                    **self.faults.settings.model_dump(),
                    **{k: v for k, v in data.items() if k in FAULT_FIELDS},
                }
                faults = FaultSettings.model_validate(merged)
                lifecycle = LifecycleUpdate.model_validate(
                    {k: v for k, v in data.items() if k in LIFECYCLE_FIELDS}
                )
                self.faults.configure(faults)
                changes = lifecycle.model_dump(exclude_none=True)
                self.world.settings = dataclasses.replace(self.world.settings, **changes)
                return _json(self._faults_view())
        except ValidationError as exc:
            return _problem(_validation_message(exc))

    def stats_view(self) -> dict[str, Any]:
        with self.lock:
            self.world.settle()
            return {
                "requests": dict(self.stats.requests),
                "total": self.stats.total,
                "mutations": self.stats.mutations,
                "errors": self.stats.errors,
                "faults": dict(self.stats.faults),
                "instances": len(self.world.instances),
                "instances_by_status": self.world.counts_by_status(),
                "created": dict(self.stats.created),
                "since": self.stats.since,
            }

    async def stats_endpoint(self, request: Request) -> Response:
        if request.method == "DELETE":
            return await self.stats_reset(request)
        return _json(self.stats_view())

    async def stats_reset(self, request: Request) -> Response:
        with self.lock:
            self.stats.reset()
        return _json(self.stats_view())

    def _clock_view(self) -> dict[str, Any]:
        now = self.world.clock.now()
        return {
            "now": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            "epoch": now,
            "offset_seconds": self.world.clock.offset,
        }

    async def clock_endpoint(self, request: Request) -> Response:
        return _json(self._clock_view())

    async def clock_advance(self, request: Request) -> Response:
        data = await self._admin_json(request)
        if isinstance(data, Response):
            return data
        try:
            advance = ClockAdvance.model_validate(data)
        except ValidationError as exc:
            return _problem(_validation_message(exc))
        with self.lock:
            self.world.clock.advance(advance.seconds)
            self.world.settle()
            self._save()
            return _json(self._clock_view())

    async def prices_endpoint(self, request: Request) -> Response:
        """``GET /sim/prices``: the price list; ``POST``: change one plan's price (kept until
        ``/sim/reset``)."""
        if request.method == "GET":
            return _json(self.world.catalogue.price_list())
        data = await self._admin_json(request)
        if isinstance(data, Response):
            return data
        try:
            change = Reprice.model_validate(data)
        except ValidationError as exc:
            return _problem(_validation_message(exc))
        with self.lock:
            if self.world.catalogue.plan(change.rid) is None:
                return _problem(f"no plan with rid {change.rid}", 404)
            self.world.catalogue = self.world.catalogue.repriced(
                change.rid, change.monthly, change.promo_percent
            )
            return _json(self.world.catalogue.price_list()[str(change.rid)])

    async def instances_endpoint(self, request: Request) -> Response:
        if request.method == "GET":
            with self.lock:
                self.world.settle()
                return _json(
                    [rendering.instance(i, self.world.catalogue) for i in self.world.listing()]
                )
        data = await self._admin_json(request)
        if isinstance(data, Response):
            return data
        try:
            seed = SeedInstance.model_validate(data)
        except ValidationError as exc:
            return _problem(_validation_message(exc))
        with self.lock:
            try:
                inst = self.world.seed_instance(**seed.model_dump())
            except SimError as exc:
                return _problem(exc.message)
            self._save()
            return _json(rendering.instance(inst, self.world.catalogue), 201)

    async def instance_endpoint(self, request: Request) -> Response:
        serviceid: int = request.path_params["serviceid"]
        with self.lock:
            self.world.settle()
            inst = self.world.instances.get(serviceid)
        if inst is None:
            return _problem(f"no instance {serviceid}", 404)
        if request.method == "GET":
            with self.lock:
                return _json(rendering.instance(inst, self.world.catalogue))
        if request.method == "DELETE":
            with self.lock:
                self.world.remove(serviceid)
                self._save()
            return Response(status_code=204)
        data = await self._admin_json(request)
        if isinstance(data, Response):
            return data
        try:
            patch = PatchInstance.model_validate(data)
        except ValidationError as exc:
            return _problem(_validation_message(exc))
        with self.lock:
            if patch.status is not None:
                status = patch.status.upper()
                if status not in _PATCH_STATES:
                    return _problem(f"status must be one of {', '.join(_PATCH_STATES)}")
                vm_state, task_state, power = _PATCH_STATES[status]
                inst.set_state(status, vm_state, task_state, power)
                inst.due_at = None
                inst.generation += 1
            if patch.srvrname is not None:
                inst.srvrname = patch.srvrname
            if patch.locked is not None:
                inst.locked = patch.locked
            if patch.suspended is not None:
                inst.suspended = patch.suspended
            inst.updated_at = self.world.clock.now()
            self._save()
            return _json(rendering.instance(inst, self.world.catalogue))


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
