"""DNSBL checks: the blocklist adapter (``reconciler.core.ports.BlocklistPort``).

- Queries go through **one named resolver** (the spec's ``reputation.resolver``, the
  operator's setting (``reconciler.wiring``) / ``--resolver``, else the system's), never a
  public one (Spamhaus answers those with error codes and they would see every IP we check).
- Each zone is **probed** with its RFC 5782 test entries before its answers are trusted.
- **Per zone**: a concurrency limit, a circuit breaker (after ``breaker_threshold``
  consecutive failures the zone is not asked for ``breaker_cooldown`` seconds, then one query
  tries it again), and a daily query budget (UTC day). So one black-holed zone costs one
  timeout for the first queries in flight and never slows the other zones.
- Answers are **cached for their TTL** (negative answers for the SOA's negative TTL), at most
  ``max_ttl``; failures are never cached.
- **Spamhaus DQS**: with a key, zones under ``dq.spamhaus.net`` are queried as
  ``<reversed ip>.<key>.<zone>``. The key is a secret inside a DNS name: it is sent only through
  a resolver the operator chose (never one named by the spec alone), only to ``dq.spamhaus.net``
  zones, and it never appears in an answer, an error, a log line or ``repr``.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from providers.dnsbl.querying import (
    Answer,
    QueryFailedError,
    Slots,
    StubResolver,
    checked,
    encode_name,
)
from reconciler.core.reputation import (
    TEST_LISTED,
    TEST_NOT_LISTED,
    AnswerKind,
    IpVerdict,
    ZoneAnswer,
    ZoneProbe,
    ZoneRules,
    combine,
    judge_probe,
    read_answer,
)
from specs.blocklists import PUBLIC_RESOLVERS, ResolverAddress, is_dqs_zone

_REDACTED = "<dqs-key>"


class DqsKey:
    """A Spamhaus DQS key. ``repr``/``str`` never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        value = value.strip()
        if not (8 <= len(value) <= 64) or not value.isalnum() or not value.isascii():
            raise ValueError("not a DQS key (8-64 letters and digits, as Spamhaus issues)")
        self._value = value.lower()

    @property
    def label(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        return text.replace(self._value, _REDACTED).replace(self._value.upper(), _REDACTED)

    def __repr__(self) -> str:
        return "DqsKey(<redacted>)"

    __str__ = __repr__


def reversed_name(ip: str) -> str:
    """RFC 5782 §2.1/2.4: reversed octets (IPv4) or nibbles (IPv6)."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv4Address):
        return ".".join(reversed(str(address).split(".")))
    return ".".join(reversed(address.exploded.replace(":", "")))


def system_resolver(resolv_conf: Path = Path("/etc/resolv.conf")) -> ResolverAddress | None:
    """The first ``nameserver`` of resolv.conf (None when there is none)."""
    try:
        text = resolv_conf.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                return ResolverAddress(str(ipaddress.ip_address(parts[1].split("%")[0])), 53)
            except ValueError:
                continue
    return None


class CircuitBreaker:
    """Closed -> open after ``threshold`` consecutive failures -> after ``cooldown`` one
    trial query (half-open) -> closed on success, open again on failure."""

    def __init__(self, threshold: int, cooldown: float, monotonic: Callable[[], float]) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._monotonic = monotonic
        self.failures = 0
        self.open_until: float | None = None
        self._trial = False
        self.opened = 0

    def allow(self) -> bool:
        if self.open_until is None:
            return True
        if self._monotonic() < self.open_until or self._trial:
            return False
        self._trial = True  # half-open: one query tries the zone again
        return True

    @property
    def is_open(self) -> bool:
        return self.open_until is not None

    def success(self) -> None:
        self.failures = 0
        self.open_until = None
        self._trial = False

    def failure(self) -> None:
        self.failures += 1
        if self._trial or self.failures >= self.threshold:
            if self.open_until is None or self._trial:
                self.opened += 1
            self.open_until = self._monotonic() + self.cooldown
            self._trial = False


@dataclass
class DailyBudget:
    """Queries a zone may receive per UTC day (None: no cap). ``used`` may be seeded from the
    store so that a restart does not forget what was spent."""

    limit: int | None
    day: date | None = None
    used: int = 0

    def take(self, today: date) -> bool:
        if self.day != today:
            self.day, self.used = today, 0
        if self.limit is not None and self.used >= self.limit:
            return False
        self.used += 1
        return True


@dataclass
class ZoneStats:
    queries: int = 0
    cache_hits: int = 0
    failures: int = 0
    refused_by_breaker: int = 0
    refused_by_budget: int = 0


@dataclass
class _Zone:
    rules: ZoneRules
    semaphore: Slots
    breaker: CircuitBreaker
    budget: DailyBudget
    stats: ZoneStats = field(default_factory=ZoneStats)
    probe: ZoneProbe | None = None
    probed_at: float | None = None
    dqs: bool = False


class DnsblChecker:
    """Look-ups of (IP, zone) pairs through one resolver; see the module docstring."""

    def __init__(
        self,
        rules: Mapping[str, ZoneRules],
        resolver: ResolverAddress | None,
        *,
        timeout: float = 2.0,
        concurrency: int = 64,
        max_in_flight: int = 256,
        dqs_key: DqsKey | None = None,
        dqs_allowed: bool = False,
        breaker_threshold: int = 5,
        breaker_cooldown: float = 60.0,
        probe_ttl: float = 3600.0,
        max_ttl: float = 3600.0,
        max_cache: int = 200_000,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        dqs_setting: str = "the operator's DQS key",
        resolver_setting: str = "the operator's resolver",
    ) -> None:
        """``dqs_setting`` / ``resolver_setting``: where the operator sets the DQS key and
        the resolver (the operator's settings live in ``reconciler.wiring``), for messages."""
        self.resolver = resolver
        self._dqs_setting = dqs_setting
        self._resolver_setting = resolver_setting
        self._monotonic = monotonic
        self._wall = wall
        self._dqs_key = dqs_key
        self._dqs_allowed = dqs_allowed
        self._probe_ttl = probe_ttl
        self._max_ttl = max_ttl
        self._max_cache = max_cache
        self._day: tuple[float, date] | None = None
        self._cache: OrderedDict[tuple[str, str], tuple[float, ZoneAnswer]] = OrderedDict()
        self._zones = {
            zone: _Zone(
                zone_rules,
                Slots(concurrency),
                CircuitBreaker(breaker_threshold, breaker_cooldown, monotonic),
                DailyBudget(zone_rules.daily_budget),
                dqs=is_dqs_zone(zone),
            )
            for zone, zone_rules in rules.items()
        }
        self._zone_wires: dict[str, bytes] = {}
        self._label_wires: dict[str, bytes] = {}
        self._max_in_flight = max_in_flight
        self._concurrency = concurrency
        self._blocked: str | None = None
        if resolver is None:
            self._blocked = (
                f"no resolver: set reputation.resolver (or {resolver_setting}); "
                "/etc/resolv.conf names none"
            )
        elif resolver.host in PUBLIC_RESOLVERS:
            self._blocked = (
                f"the resolver {resolver.host} is a public resolver: blocklists refuse it "
                "(Spamhaus answers 127.255.255.254); name your own in reputation.resolver"
            )
        self._stub = (
            StubResolver(resolver.host, resolver.port, timeout=timeout, max_in_flight=max_in_flight)
            if resolver is not None
            else None
        )

    def __repr__(self) -> str:
        return f"DnsblChecker(resolver={self.resolver}, zones={sorted(self._zones)})"

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(sorted(self._zones))

    def stats(self) -> dict[str, ZoneStats]:
        return {zone: state.stats for zone, state in sorted(self._zones.items())}

    def budgets(self) -> dict[str, DailyBudget]:
        return {zone: state.budget for zone, state in sorted(self._zones.items())}

    def breaker_open(self, zone: str) -> bool:
        return self._zones[zone].breaker.is_open

    def seed_budget(self, zone: str, day: date, used: int) -> None:
        """Queries already spent today on ``zone`` (from the store, after a restart)."""
        state = self._zones.get(zone)
        if state is not None:
            state.budget.day, state.budget.used = day, max(0, used)

    def _today(self, now: float) -> date:
        """The UTC day for the budgets, read from the wall clock at most once a second."""
        if self._day is None or now - self._day[0] >= 1.0:
            self._day = (now, self._wall().date())
        return self._day[1]

    def redact(self, text: str) -> str:
        return self._dqs_key.redact(text) if self._dqs_key is not None else text

    # --- one query ---------------------------------------------------------------------

    def _qname(self, ip: str, zone: str, labels: str | None = None) -> tuple[str | None, str]:
        # (ASCII, at most 253 characters: an IPv6 name under a long zone may not fit)
        """(the query name, "") or (None, why it cannot be asked)."""
        labels = labels or reversed_name(ip)
        if self._zones[zone].dqs:
            if self._dqs_key is None:
                return None, f"no DQS key: set {self._dqs_setting} to query {zone}"
            if not self._dqs_allowed:
                return None, (
                    f"the DQS key is sent only through a resolver the operator names "
                    f"({self._resolver_setting}), not one from the spec alone"
                )
            labels = f"{labels}.{self._dqs_key.label}"
        return f"{labels}.{zone}", ""

    def _prepare(
        self, ip: str, zone: str, state: _Zone, now: float, labels: str | None, use_cache: bool
    ) -> ZoneAnswer | tuple[str, bytes, bool]:
        """Before a query: the answer when none is needed (blocked, cached, no name, open
        breaker), else (query name, its wire form, whether it is the breaker's trial)."""
        if self._blocked is not None:
            return ZoneAnswer(zone, ip, AnswerKind.FAILED, detail=self._blocked)
        if use_cache:
            key = (zone, ip)
            hit = self._cache.get(key)
            if hit is not None:
                if hit[0] > now:
                    state.stats.cache_hits += 1
                    self._cache.move_to_end(key)
                    return _cached(hit[1])
                del self._cache[key]
        qname, why = self._qname(ip, zone, labels)
        if qname is None:
            return ZoneAnswer(zone, ip, AnswerKind.FAILED, detail=why)
        try:
            wire = self._wire(qname, labels, zone, state)
        except ValueError:
            return ZoneAnswer(zone, ip, AnswerKind.FAILED, detail="the query name is too long")
        breaker = state.breaker
        if not breaker.allow():
            state.stats.refused_by_breaker += 1
            return ZoneAnswer(
                zone,
                ip,
                AnswerKind.CIRCUIT_OPEN,
                detail=f"{breaker.failures} consecutive failures: not asked for "
                f"{breaker.cooldown:g}s",
            )
        return qname, wire, breaker.is_open  # open: the one query that tries the zone again

    def _spend(
        self, ip: str, zone: str, state: _Zone, now: float, trial: bool
    ) -> ZoneAnswer | None:
        """Take one query from the zone's daily budget (None: taken)."""
        if not state.budget.take(self._today(now)):
            state.stats.refused_by_budget += 1
            if trial:
                state.breaker.failure()  # not tried: stays open, another query tries later
            return ZoneAnswer(
                zone,
                ip,
                AnswerKind.BUDGET,
                detail=f"daily budget of {state.budget.limit:,} queries spent",
            )
        state.stats.queries += 1
        return None

    def _failed(self, ip: str, zone: str, state: _Zone, exc: QueryFailedError) -> ZoneAnswer:
        state.stats.failures += 1
        state.breaker.failure()
        return ZoneAnswer(zone, ip, AnswerKind(exc.kind), detail=self.redact(exc.detail))

    def _answered(self, ip: str, zone: str, state: _Zone, raw: Answer) -> ZoneAnswer:
        state.breaker.success()
        if raw.addresses:
            answer = ZoneAnswer(zone, ip, AnswerKind.ADDRESSES, raw.addresses, raw.ttl)
        else:
            kind = AnswerKind.NXDOMAIN if raw.rcode == 3 else AnswerKind.NODATA
            answer = ZoneAnswer(zone, ip, kind, (), raw.ttl)
        ttl = min(float(raw.ttl), self._max_ttl)
        if ttl > 0:
            self._cache[(zone, ip)] = (self._monotonic() + ttl, answer)
            if len(self._cache) > self._max_cache:
                self._cache.popitem(last=False)
        return answer

    async def _ask(
        self, ip: str, zone: str, *, use_cache: bool = True, labels: str | None = None
    ) -> ZoneAnswer:
        state = self._zones[zone]
        now = self._monotonic()
        prepared = self._prepare(ip, zone, state, now, labels, use_cache)
        if isinstance(prepared, ZoneAnswer):
            return prepared
        qname, wire, trial = prepared
        breaker = state.breaker
        assert self._stub is not None
        async with state.semaphore:
            if breaker.is_open and not trial:
                # it opened while this query waited for a slot
                state.stats.refused_by_breaker += 1
                return ZoneAnswer(zone, ip, AnswerKind.CIRCUIT_OPEN, detail="circuit open")
            refused = self._spend(ip, zone, state, now, trial)
            if refused is not None:
                return refused
            try:
                raw = await self._stub.query_a(qname, wire)
            except QueryFailedError as exc:
                return self._failed(ip, zone, state, exc)
            except asyncio.CancelledError:
                if trial:
                    breaker.failure()  # never leave the breaker waiting for a lost trial
                raise
        return self._answered(ip, zone, state, raw)

    async def _sweep_zone(
        self,
        zone: str,
        ips: Sequence[str],
        names: Mapping[str, str],
        window: int,
        results: dict[tuple[str, str], ZoneAnswer],
    ) -> None:
        """Every IP on one zone with at most ``window`` queries in flight, driven by the
        answers' callbacks (``StubResolver.submit``): no coroutine or future per look-up.
        The same rules as ``_ask``: cache, breaker (its trial), budget, failures."""
        state = self._zones[zone]
        stub = self._stub
        assert stub is not None
        channel = await stub.channel()
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()
        pending = iter(ips)
        in_flight = 0
        issuing = False

        def finish(error: BaseException | None = None) -> None:
            if finished.done():
                return
            if error is not None:
                finished.set_exception(error)
            else:
                finished.set_result(None)

        def issue() -> None:
            nonlocal in_flight, issuing
            if issuing:
                return  # an answer arrived while issuing: the loop below goes on
            issuing = True
            try:
                while in_flight < window:
                    ip = next(pending, None)
                    if ip is None:
                        break
                    now = self._monotonic()
                    prepared = self._prepare(ip, zone, state, now, names[ip], True)
                    if isinstance(prepared, ZoneAnswer):
                        results[(zone, ip)] = prepared
                        continue
                    qname, wire, trial = prepared
                    refused = self._spend(ip, zone, state, now, trial)
                    if refused is not None:
                        results[(zone, ip)] = refused
                        continue
                    in_flight += 1
                    stub.submit(channel, wire, functools.partial(done, ip, qname))
            except Exception as exc:  # a bug must not hang the check
                finish(exc)
            finally:
                issuing = False
            if in_flight == 0:
                finish()

        def settle(ip: str, answer: ZoneAnswer) -> None:
            nonlocal in_flight
            results[(zone, ip)] = answer
            in_flight -= 1
            issue()

        def done(ip: str, qname: str, outcome: tuple[bool, Answer] | QueryFailedError) -> None:
            try:
                if isinstance(outcome, QueryFailedError):
                    settle(ip, self._failed(ip, zone, state, stub.timeout_error(outcome)))
                    return
                truncated, raw = outcome
                if truncated:  # rare: ask again over TCP, then settle
                    task = loop.create_task(self._over_tcp(ip, zone, state, qname))
                    task.add_done_callback(lambda t: _settled_task(t, ip, settle, finish))
                    return
                try:
                    answer = self._answered(ip, zone, state, checked(raw))
                except QueryFailedError as exc:
                    answer = self._failed(ip, zone, state, exc)
                settle(ip, answer)
            except Exception as exc:  # a bug must not hang the check
                finish(exc)

        issue()
        await finished

    async def _over_tcp(self, ip: str, zone: str, state: _Zone, qname: str) -> ZoneAnswer:
        assert self._stub is not None
        try:
            raw = checked(await self._stub.tcp(qname))
        except QueryFailedError as exc:
            return self._failed(ip, zone, state, exc)
        return self._answered(ip, zone, state, raw)

    def _wire(self, qname: str, labels: str | None, zone: str, state: _Zone) -> bytes:
        """The query name's wire form, from cached pieces (labels of the IP, the zone)."""
        if labels is None or state.dqs:
            return encode_name(qname)
        zone_wire = self._zone_wires.get(zone)
        if zone_wire is None:
            zone_wire = self._zone_wires[zone] = encode_name(zone)
        label_wire = self._label_wires.get(labels)
        if label_wire is None:
            label_wire = encode_name(labels)[:-1]
            if len(self._label_wires) > 100_000:
                self._label_wires.clear()
            self._label_wires[labels] = label_wire
        if len(label_wire) + len(zone_wire) > 255:
            raise ValueError("name too long")
        return label_wire + zone_wire

    # --- probes and look-ups -----------------------------------------------------------

    async def probe(
        self, zones: Iterable[str] | None = None, *, force: bool = False
    ) -> dict[str, ZoneProbe]:
        """RFC 5782 test entries of each zone (cached for ``probe_ttl``)."""
        chosen = self._chosen(zones)
        now = self._monotonic()

        async def one(zone: str) -> tuple[str, ZoneProbe]:
            state = self._zones[zone]
            if (
                not force
                and state.probe is not None
                and state.probed_at is not None
                and now - state.probed_at < self._probe_ttl
            ):
                return zone, state.probe
            listed, clean = await asyncio.gather(
                self._ask(TEST_LISTED, zone, use_cache=False),
                self._ask(TEST_NOT_LISTED, zone, use_cache=False),
            )
            result = judge_probe(state.rules, listed, clean)
            if result.reason:
                result = ZoneProbe(result.zone, result.health, self.redact(result.reason))
            state.probe, state.probed_at = result, self._monotonic()
            return zone, result

        return dict(await asyncio.gather(*(one(zone) for zone in chosen)))

    def _chosen(self, zones: Iterable[str] | None) -> list[str]:
        if zones is None:
            return sorted(self._zones)
        chosen = sorted(set(zones))
        unknown = [z for z in chosen if z not in self._zones]
        if unknown:
            raise KeyError(f"zones not configured: {', '.join(unknown)}")
        return chosen

    async def lookup(
        self, ips: Sequence[str], zones: Iterable[str] | None = None
    ) -> list[ZoneAnswer]:
        """Answers of every (ip, zone); zones whose last probe failed are not asked."""
        chosen = self._chosen(zones)
        usable: list[str] = []
        answers: list[ZoneAnswer] = []
        for zone in chosen:
            probe = self._zones[zone].probe
            if probe is not None and not probe.usable:
                answers.extend(
                    ZoneAnswer(zone, ip, AnswerKind.UNUSABLE, detail=f"{zone} {probe.reason}")
                    for ip in ips
                )
            else:
                usable.append(zone)
        names = {ip: reversed_name(ip) for ip in ips}
        # per zone a window of queries in flight, driven by the answers (no coroutine or
        # future per look-up): the zone's concurrency, shared fairly within the resolver's
        # in-flight limit
        workers = max(1, min(self._concurrency, self._max_in_flight // max(1, len(usable))))
        results: dict[tuple[str, str], ZoneAnswer] = {}
        if self._blocked is not None or self._stub is None:
            for zone in usable:
                for ip in ips:
                    results[(zone, ip)] = await self._ask(ip, zone, labels=names[ip])
        elif ips:
            try:
                await self._stub.channel()
            except QueryFailedError as exc:
                for zone in usable:
                    state = self._zones[zone]
                    for ip in ips:
                        results[(zone, ip)] = self._failed(ip, zone, state, exc)
            else:
                await asyncio.gather(
                    *(self._sweep_zone(zone, ips, names, workers, results) for zone in usable)
                )
        answers.extend(results[(zone, ip)] for zone in usable for ip in ips)
        return answers

    async def check(
        self, ips: Sequence[str], zones: Iterable[str] | None = None
    ) -> tuple[dict[str, ZoneProbe], list[IpVerdict]]:
        """Probe the zones (unless probed recently), look every IP up, read the answers."""
        chosen = self._chosen(zones)
        probes = await self.probe(chosen)
        answers = await self.lookup(ips, chosen)
        by_ip: dict[str, list[ZoneAnswer]] = {ip: [] for ip in ips}
        for answer in answers:
            by_ip.setdefault(answer.ip, []).append(answer)
        verdicts = [
            combine(ip, (read_answer(self._zones[a.zone].rules, a) for a in by_ip[ip]))
            for ip in ips
        ]
        return probes, verdicts

    async def aclose(self) -> None:
        if self._stub is not None:
            await self._stub.aclose()


def _cached(answer: ZoneAnswer) -> ZoneAnswer:
    return ZoneAnswer(
        answer.zone, answer.ip, answer.kind, answer.addresses, answer.ttl, answer.detail, True
    )


def _settled_task(
    task: asyncio.Task[ZoneAnswer],
    ip: str,
    settle: Callable[[str, ZoneAnswer], None],
    finish: Callable[[BaseException | None], None],
) -> None:
    if task.cancelled():
        finish(asyncio.CancelledError())
    elif task.exception() is not None:
        finish(task.exception())
    else:
        settle(ip, task.result())
