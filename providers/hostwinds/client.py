"""The Hostwinds Cloud API client: implements ``reconciler.core.ports.CloudPort``.

One endpoint, form-encoded POSTs, ``action=`` selects the call and ``API=`` carries the key
(hostwinds-api.md §1). The body is checked before the HTTP status: Hostwinds answers errors with
HTTP 200 and ``"result": "error"``. Reads (``get_*``, ``check_*``) are retried with exponential
backoff and full jitter; mutations are never repeated unless the request provably did not
reach the server (connect errors), so a failed mutation surfaces as ``TransientError`` and the
engine resolves it by observing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import re
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import MappingProxyType, TracebackType
from typing import Final, Self
from urllib.parse import urlsplit, urlunsplit

import httpx

from providers.hostwinds.errors import (
    MissingCredentialError,
    error_for_api_message,
    error_for_http_status,
    transport_error,
)
from providers.hostwinds.ratelimiting import TokenBucket
from providers.hostwinds.redacting import Secret, redact, redact_form, scrub_text
from providers.hostwinds.wire import (
    ApiFailure,
    ApiSuccess,
    InstanceIdWire,
    PriceEntryWire,
    entries,
    observed_from_entry,
    parse_ips,
    parse_locations,
    read_envelope,
)
from reconciler.core.errors import (
    NotFoundError,
    ProviderError,
    TerminalError,
    TransientError,
)
from reconciler.core.fencing import check_fence
from reconciler.core.fleet import CreateRequest, Location, ObservedServer, PricePlan
from reconciler.core.pacing import reads_deferrable

logger = logging.getLogger("providers.hostwinds")

DEFAULT_ENDPOINT: Final = "https://clients.hostwinds.com/cloud/api.php"
ENDPOINT_ENV: Final = "HOSTWINDS_API_URL"
USER_AGENT: Final = "fleet-reconciler (+hostwinds-client)"
READ_PREFIXES: Final = ("get_", "check_")
#: Page size asked of ``get_instance_ids`` and the most pages read for one name.
ID_PAGE_SIZE: Final = 100
MAX_ID_PAGES: Final = 50
#: Longest wait honoured from a ``Retry-After`` header.
MAX_RETRY_AFTER: Final = 60.0
#: Most characters of a redacted body written to the debug log.
MAX_LOGGED_BODY: Final = 2000
#: Whole-request deadline, as a multiple of ``timeout`` (httpx's timeouts are per phase, so a
#: server trickling bytes could otherwise hold a call for ever).
DEADLINE_FACTOR: Final = 2.0
_EMPTY_LIST_MESSAGE: Final = re.compile(r"\bno (instances?|servers?|results?|records?)\b", re.I)

FormValue = str | int | Sequence[str]


def is_read_action(action: str) -> bool:
    """Reads are safe to repeat; everything else is a mutation."""
    return action.startswith(READ_PREFIXES)


class _EmptyListError(Exception):
    """A list getter answered 'no instances' as an error: that is an empty list."""


class HostwindsClient:
    """Async client of the Hostwinds Cloud API (``CloudPort``).

    ``transport``, ``sleep``, ``monotonic`` and ``rng`` exist for tests (``httpx.MockTransport``
    and fake time). With no ``transport`` the client binds its sockets to ``local_address``
    (``"0.0.0.0"`` forces IPv4 egress: API keys are bound to an IPv4 allow-list).
    """

    def __init__(
        self,
        endpoint: str,
        api_key: str,
        *,
        rate_limit: float = 2.0,
        burst: int | None = None,
        timeout: float = 30.0,
        max_read_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        local_address: str | None = "0.0.0.0",  # noqa: S104 - a bind address, forces IPv4
        remember_listing: bool = True,
        defer_limit: float = 5.0,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if max_read_retries < 0:
            raise ValueError("max_read_retries must be >= 0")
        self._endpoint = endpoint
        self._key = Secret(api_key)
        self._bucket = TokenBucket(
            rate_limit,
            burst if burst is not None else max(1, math.ceil(rate_limit)),
            monotonic=monotonic,
            sleep=sleep,
            defer_limit=defer_limit,
        )
        self._timeout = float(timeout)
        self._max_read_retries = max_read_retries
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._monotonic = monotonic
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter only
        self._calls: Counter[str] = Counter()
        #: the last account listing parsed: (digest of its raw answer, its servers); not kept
        #: (nor the answer digested) by a client that lists once (``remember_listing``)
        self._listing: tuple[bytes, tuple[ObservedServer, ...]] | None = None
        self._remember_listing = remember_listing
        if transport is None:
            transport = httpx.AsyncHTTPTransport(
                verify=_tls_context_for(endpoint), local_address=local_address, retries=0
            )
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self._timeout),
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            follow_redirects=False,
            trust_env=False,
        )

    # --- housekeeping ----------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return _safe_url(self._endpoint)

    @property
    def rate_limit(self) -> float:
        return self._bucket.rate

    @property
    def calls(self) -> Mapping[str, int]:
        """HTTP requests sent per action (retries included), a live read-only view."""
        return MappingProxyType(self._calls)

    def __repr__(self) -> str:
        return f"HostwindsClient(endpoint={self.endpoint!r}, rate_limit={self._bucket.rate})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- CloudPort: reads ------------------------------------------------------------------

    async def list_servers(self) -> list[ObservedServer]:
        """The whole account in ONE ``get_instances`` call. An answer byte for byte the same
        as the last one parsed gives the same servers again without being parsed (a daemon's
        no-op reconcile lists an unchanged account every interval: issue 14); any other
        answer is parsed as ever."""
        last = self._listing
        digests: list[bytes] = []

        def unchanged(body: bytes) -> bool:
            digest = hashlib.blake2b(body, digest_size=32).digest()
            digests.append(digest)
            return last is not None and last[0] == digest

        data = await self._call(
            "get_instances",
            {},
            empty_list_ok=True,
            unchanged=unchanged if self._remember_listing else None,
        )
        if data is _UNCHANGED and last is not None:
            return list(last[1])
        servers: list[ObservedServer] = []
        for entry in entries(data):
            servers.append(_observed("get_instances", entry))
        if not self._remember_listing:
            return servers
        # the answer just parsed is the last one digested (a retry digests its own answer)
        self._listing = (digests[-1], tuple(servers)) if digests else None
        return servers

    async def get_server(self, service_id: int) -> ObservedServer:
        data = await self._call("get_instance", {"serviceid": service_id})
        if not isinstance(data, Mapping):
            raise TransientError("get_instance failed: the answer carried no instance object")
        return _observed("get_instance", data, fallback_id=service_id)

    async def find_servers_by_name(self, name: str) -> list[ObservedServer]:
        """``get_instance_ids`` with ``search=name``, exact ``srvrname`` match, then
        ``get_instance`` for each exact match (typically one)."""
        seen: set[int] = set()
        candidates: list[int] = []
        for page in range(1, MAX_ID_PAGES + 1):
            data = await self._call(
                "get_instance_ids",
                {"search": name, "page": page, "limit": ID_PAGE_SIZE},
                empty_list_ok=True,
            )
            items = entries(data)
            fresh = 0
            for item in items:
                light = InstanceIdWire.model_validate(item)
                service_id = light.service_id
                if service_id is None or service_id in seen:
                    continue
                seen.add(service_id)
                fresh += 1
                if light.srvrname is None or light.srvrname == name:
                    candidates.append(service_id)
            if len(items) < ID_PAGE_SIZE or fresh == 0:
                break
        found: list[ObservedServer] = []
        for service_id in candidates:
            try:
                server = await self.get_server(service_id)
            except NotFoundError:
                continue  # terminated between the two calls
            if server.name == name:
                found.append(server)
        return found

    async def list_ips(self, service_id: int) -> list[str]:
        data = await self._call("get_instance_ips", {"serviceid": service_id})
        return parse_ips(data)

    async def price_list(self) -> list[PricePlan]:
        data = await self._call("get_price_list", {})
        pairs: list[tuple[object, object]]
        if isinstance(data, Mapping):
            pairs = list(data.items())
        elif isinstance(data, list):
            pairs = [(None, item) for item in data]
        else:
            pairs = []
        plans: dict[int, PricePlan] = {}
        for key, item in pairs:
            if not isinstance(item, Mapping):
                continue
            plan = PriceEntryWire.model_validate(item).to_plan(key)
            if plan is None:
                logger.warning("get_price_list: skipped an entry without rid or monthly price")
                continue
            plans.setdefault(plan.rid, plan)
        return sorted(plans.values(), key=lambda p: p.rid)

    async def locations(self) -> list[Location]:
        return parse_locations(await self._call("get_locations", {}))

    # --- CloudPort: mutations (never repeated once they may have reached the server) --------

    async def create_server(self, request: CreateRequest) -> None:
        """``add_instance``: charges at once, answers no serviceid (find it by name)."""
        params: dict[str, FormValue] = {
            "template": request.template,
            "rid": request.rid,
            "location_id": request.location_id,
            "qty": 1,
            "srvrname": request.name,
            "billingcycle": request.billing_cycle,
        }
        if request.ssh_keys:
            params["keys[]"] = list(request.ssh_keys)
        await self._call("add_instance", params)

    async def terminate(self, service_id: int) -> None:
        await self._call("terminate", {"serviceid": service_id})

    async def upgrade_instance(self, service_id: int, rid: int) -> None:
        await self._call("upgrade_instance", {"serviceid": service_id, "rid": rid})

    async def upgrade_server(self, service_id: int) -> None:
        await self._call("upgrade_server", {"serviceid": service_id})

    async def confirm_upgrade(self, service_id: int) -> None:
        await self._call("confirm_upgrade", {"serviceid": service_id})

    async def revert_upgrade(self, service_id: int) -> None:
        await self._call("revert_upgrade", {"serviceid": service_id})

    async def boot_server(self, service_id: int) -> None:
        """``boot`` ([DOC S1]: "Instance Server#<id> has been started!"); poll for ACTIVE."""
        await self._call("boot", {"serviceid": service_id})

    async def set_rdns(self, service_id: int, ip: str, hostname: str) -> None:
        await self._call("set_rdns", {"serviceid": service_id, "ip": ip, "rdns": hostname})

    # --- the one request path --------------------------------------------------------------

    async def _call(
        self,
        action: str,
        params: Mapping[str, FormValue],
        *,
        empty_list_ok: bool = False,
        unchanged: Callable[[bytes], bool] | None = None,
    ) -> object:
        """Send ``action``; return ``body["success"]`` (getters) or the result list (commands).
        ``unchanged``: asked with the raw body of a 200 answer; True returns ``_UNCHANGED``
        without parsing it (the caller knows what it holds).

        Raises only ``reconciler.core.errors`` types.
        """
        read = is_read_action(action)
        form: dict[str, str | list[str]] = {"action": action}
        for name, value in params.items():
            form[name] = [str(v) for v in value] if isinstance(value, list | tuple) else str(value)
        form["API"] = self._key.reveal()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("hostwinds %s request %s", action, self._redacted(redact_form(form)))
        # a poll (the engine's watcher) lets queued mutations go first, for a bounded time
        deferrable = read and reads_deferrable()
        attempt = 0
        while True:
            await self._bucket.acquire(deferrable=deferrable)
            if not read:
                # the writer's fence, after the token and right before the request
                # (design §3c): a lost leadership raises LeadershipLostError, nothing is sent
                check_fence()
            self._calls[action] += 1
            started = self._monotonic()
            retry_after: float | None = None
            cause: BaseException | None = None
            error: ProviderError
            try:
                async with asyncio.timeout(self._timeout * DEADLINE_FACTOR):
                    response = await self._http.post(self._endpoint, data=form)
            except TimeoutError as exc:  # the overall deadline (a trickling answer)
                error = transport_error(
                    action,
                    f"timed out (overall deadline) at {self.endpoint}",
                    mutation=not read,
                    reached=True,
                )
                retryable = read
                cause = exc
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                error = transport_error(
                    action, f"{_describe(exc)} to {self.endpoint}", mutation=not read, reached=False
                )
                retryable = True
                cause = exc
            except httpx.TimeoutException as exc:
                error = transport_error(
                    action,
                    f"{_describe(exc)} from {self.endpoint}",
                    mutation=not read,
                    reached=True,
                )
                retryable = read
                cause = exc
            except httpx.HTTPError as exc:
                error = transport_error(
                    action, f"{_describe(exc)} ({self.endpoint})", mutation=not read, reached=True
                )
                retryable = read
                cause = exc
            else:
                if (
                    unchanged is not None
                    and response.status_code == 200
                    and unchanged(response.content)
                ):
                    self._log(action, "ok (unchanged)", started, attempt, response.status_code)
                    self._bucket.recover()
                    return _UNCHANGED
                try:
                    data = self._interpret(action, response, read=read)
                except _EmptyListError:
                    if empty_list_ok:
                        self._log(action, "empty", started, attempt, response.status_code)
                        return []
                    raise TerminalError(
                        f"{action} failed: unexpected 'no results' answer"
                    ) from None
                except TransientError as exc:
                    error = exc
                    retryable = read
                    if response.status_code == 429:
                        retry_after = _retry_after(response.headers.get("Retry-After"))
                        # honour the provider's limit: slower from now on, and no request
                        # before Retry-After (design §3c)
                        self._bucket.slow_down(retry_after)
                except ProviderError as exc:
                    self._log(action, type(exc).__name__, started, attempt, response.status_code)
                    raise
                else:
                    self._log(action, "ok", started, attempt, response.status_code)
                    self._bucket.recover()
                    return data
            outcome = type(error).__name__
            if retryable and attempt < self._max_read_retries:
                delay = self._backoff(attempt)
                if retry_after is not None:
                    delay = max(delay, retry_after)
                self._log(action, f"{outcome}, retrying in {delay:.2f}s", started, attempt, None)
                await self._sleep(delay)
                attempt += 1
                continue
            self._log(action, outcome, started, attempt, None)
            if cause is not None:
                raise error from cause
            raise error

    def _interpret(self, action: str, response: httpx.Response, *, read: bool) -> object:
        status = response.status_code
        try:
            body: object = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            if status >= 400:  # a 4xx refuses the request; a 5xx leaves it unknown
                raise error_for_http_status(action, status, mutation=not read) from None
            raise transport_error(
                action,
                f"the answer is not JSON (HTTP {status}, {len(response.content)} bytes)",
                mutation=not read,
                reached=True,
            ) from None
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("hostwinds %s answer %s", action, self._redacted(redact(body)))
        envelope = read_envelope(body, getter=read)
        if isinstance(envelope, ApiFailure):
            if _EMPTY_LIST_MESSAGE.search(envelope.message):
                raise _EmptyListError
            code = self._scrub(envelope.code) if envelope.code else None
            raise error_for_api_message(action, self._scrub(envelope.message), code)
        if status == 429 or status >= 400:
            raise error_for_http_status(action, status, mutation=not read)
        if not isinstance(envelope, ApiSuccess):
            raise transport_error(
                action,
                f"the answer is JSON but neither Hostwinds envelope (HTTP {status})",
                mutation=not read,
                reached=True,
            )
        if not read and isinstance(envelope.data, list):
            # add_instance answers several entries; an error in any of them counts.
            for entry in envelope.data[1:]:
                if isinstance(entry, Mapping) and str(entry.get("result", "")).lower() == "error":
                    message = str(entry.get("message") or "")
                    code = entry.get("ERROR")
                    raise error_for_api_message(
                        action, self._scrub(message), self._scrub(str(code)) if code else None
                    )
        return envelope.data

    # --- helpers ---------------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
        ceiling = min(self._backoff_cap, self._backoff_base * (2**attempt))
        return self._rng.uniform(0.0, ceiling)

    def _scrub(self, text: str) -> str:
        return scrub_text(text, (self._key.reveal(),))

    def _redacted(self, value: object) -> str:
        text = json.dumps(redact(value, (self._key.reveal(),)), default=str, sort_keys=True)
        text = self._scrub(text)
        if len(text) > MAX_LOGGED_BODY:
            text = text[:MAX_LOGGED_BODY] + "...(truncated)"
        return text

    def _log(
        self, action: str, outcome: str, started: float, attempt: int, status: int | None
    ) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "hostwinds %s %s in %.3fs (attempt %d%s)",
                action,
                outcome,
                max(0.0, self._monotonic() - started),
                attempt + 1,
                f", HTTP {status}" if status is not None else "",
            )


def client_from_settings(
    *,
    endpoint: str,
    api_key_env: str,
    environ: Mapping[str, str],
    rate_limit: float,
    timeout: float,
    burst: int | None = None,
    max_read_retries: int = 4,
    local_address: str | None = "0.0.0.0",  # noqa: S104 - a bind address, forces IPv4
    remember_listing: bool = True,
) -> HostwindsClient:
    """Build the client from the spec's provider settings and the environment.

    ``HOSTWINDS_API_URL`` overrides ``endpoint`` (to point at the simulator). The key is read
    from the variable named ``api_key_env``; missing or empty raises
    :class:`MissingCredentialError` (a ``UserError``) naming the variable, never a value.
    """
    chosen = (environ.get(ENDPOINT_ENV) or "").strip() or endpoint
    if not chosen.startswith(("https://", "http://")):
        raise MissingCredentialError(
            f"the Hostwinds endpoint {_safe_url(chosen)!r} is not an http(s) URL",
            hint=f"fix provider.endpoint in the spec or the {ENDPOINT_ENV} variable",
        )
    key = (environ.get(api_key_env) or "").strip()
    if not key:
        raise MissingCredentialError(
            f"no Hostwinds API key: the environment variable {api_key_env} is not set or empty",
            hint=(
                f"export {api_key_env}=<key> (keys are made at "
                "https://clients.hostwinds.com/cloud/api_keys.php); the operator names another "
                "variable with RECONCILER_API_KEY_ENV"
            ),
        )
    return HostwindsClient(
        chosen,
        key,
        rate_limit=rate_limit,
        burst=burst,
        timeout=timeout,
        max_read_retries=max_read_retries,
        local_address=local_address,
        remember_listing=remember_listing,
    )


# --- module helpers ---------------------------------------------------------------------------

#: what ``_call`` returns for an answer its ``unchanged`` check recognised
_UNCHANGED: Final = object()


def _observed(
    action: str, entry: Mapping[str, object], fallback_id: int | None = None
) -> ObservedServer:
    try:
        server = observed_from_entry(entry, fallback_id)
    except (ValueError, TypeError):
        # never include the payload: it carries the root password
        raise TransientError(f"{action} failed: an instance object did not parse") from None
    if server is None:
        raise TerminalError(f"{action} failed: an instance object carries no serviceid")
    return server


def _tls_context_for(endpoint: str) -> ssl.SSLContext | bool:
    """``True`` (httpx's verified default context) for any endpoint but a plain ``http://``
    one, which never speaks TLS (one endpoint, no redirects followed, no proxies): there a
    context that trusts no certificate at all, so that the client does not load the CA bundle
    (~20 ms of CPU at every CLI start against the embedded simulator: issue 14) and any TLS
    it were ever made to speak would fail verification."""
    try:
        scheme = urlsplit(endpoint).scheme.lower()
    except ValueError:
        return True
    if scheme != "http":
        return True
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # hostname checked, certificate required


def _describe(exc: httpx.HTTPError) -> str:
    kind = {
        httpx.ConnectTimeout: "connect timed out",
        httpx.ReadTimeout: "timed out waiting for the answer",
        httpx.WriteTimeout: "timed out sending the request",
        httpx.PoolTimeout: "timed out waiting for a connection",
        httpx.ConnectError: "could not connect",
        httpx.RemoteProtocolError: "the connection broke",
        httpx.ReadError: "the connection broke while reading",
        httpx.WriteError: "the connection broke while sending",
    }
    for cls, text in kind.items():
        if isinstance(exc, cls):
            return text
    return f"transport error ({type(exc).__name__})"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(seconds):
        return None
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def _safe_url(url: str) -> str:
    """The URL without user info or query (never show credentials someone put there)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
