"""``GET /status``: the status page of the daemon (rendered by ``reconciler.views.pages``).

Read-only. Who may read it:

- the daemon listens on a loopback address: anyone who can reach it (the host's users);
- it listens beyond loopback: only with the status token (``RECONCILER_STATUS_TOKEN``), given as
  ``Authorization: Bearer <token>`` or ``?token=<token>``; without a configured token the page
  is refused (403) rather than open to the network.

Costs (the monthly cost section and column) are shown only to readers allowed to see costs: with
the cost token (``RECONCILER_COST_TOKEN``), or on loopback when no cost token is configured.
Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reconciler.core.warmup import daily_limit
from reconciler.views.pages import StatusHeader, StatusInputs, render_status_page
from specs.model import FleetSpec

STATUS_TOKEN_ENV = "RECONCILER_STATUS_TOKEN"  # noqa: S105 (a variable name)
COST_TOKEN_ENV = "RECONCILER_COST_TOKEN"  # noqa: S105 (a variable name)
#: Content-Security-Policy of the page: no script, no outside resource
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
_MAX_CURVE_DAYS = 120
_EVENTS = 200


@dataclass(frozen=True)
class StatusTokens:
    status: str | None = field(default=None, repr=False)
    costs: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StatusTokens:
        def token(name: str) -> str | None:
            value = (environ.get(name) or "").strip()
            return value or None

        return cls(token(STATUS_TOKEN_ENV), token(COST_TOKEN_ENV))


@dataclass(frozen=True)
class Verdict:
    status: int  # 200, 401, 403
    show_costs: bool = False
    reason: str = ""


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _matches(given: str | None, expected: str | None) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def presented_token(authorization: str | None, query_token: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return query_token or None


def may_see_costs(listen_host: str, tokens: StatusTokens, presented: str | None) -> bool:
    """Cost figures are for finance (and admins): the cost token, or loopback when no cost
    token is configured (the same rule as the status page's cost section)."""
    return _matches(presented, tokens.costs) or (is_loopback(listen_host) and tokens.costs is None)


def authorize(listen_host: str, tokens: StatusTokens, presented: str | None) -> Verdict:
    """Who may read the page, and whether they see costs."""
    loopback = is_loopback(listen_host)
    is_cost = _matches(presented, tokens.costs)
    is_status = _matches(presented, tokens.status) or is_cost
    if not loopback:
        if tokens.status is None and tokens.costs is None:
            return Verdict(
                403,
                reason=f"the status page is off: the daemon listens beyond loopback and "
                f"{STATUS_TOKEN_ENV} is not set",
            )
        if not is_status:
            return Verdict(401, reason="a status token is required (Authorization: Bearer ...)")
    elif presented and not is_status and (tokens.status or tokens.costs):
        return Verdict(401, reason="wrong token")
    show_costs = is_cost or (loopback and tokens.costs is None)
    return Verdict(200, show_costs=show_costs)


class EventLog(logging.Handler):
    """The daemon's recent events for the page: log records that carry an ``event`` field,
    INFO and above, newest first, bounded."""

    def __init__(self, size: int = _EVENTS) -> None:
        super().__init__(logging.INFO)
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "event", None)
        if not event:
            return
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        self._records.appendleft(
            {
                "at": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="seconds"),
                "level": record.levelname.lower(),
                "event": str(event),
                "message": message[:500],
            }
        )

    def recent(self) -> list[dict[str, Any]]:
        return list(self._records)

    def attach(self, logger: str = "reconciler") -> None:
        logging.getLogger(logger).addHandler(self)

    def detach(self, logger: str = "reconciler") -> None:
        logging.getLogger(logger).removeHandler(self)


def warmup_curves(spec: FleetSpec) -> tuple[dict[str, list[int]], dict[str, str]]:
    """(schedule name -> daily limit per IP for day 1..N, pool -> schedule name) for the
    schedules the pools use (the standard preset for nodes without a pool)."""
    pools = {name: pool.warmup for name, pool in spec.ip_pools.items()}
    names = set(pools.values()) or {"standard"}
    curves: dict[str, list[int]] = {}
    for name in sorted(names):
        schedule = spec.warmup.schedule(name)
        if schedule is None:
            continue
        days = min(schedule.days + 7, _MAX_CURVE_DAYS)
        curves[name] = [daily_limit(schedule, day) for day in range(1, days + 1)]
    return curves, pools


def with_reputation(fleet_document: Mapping[str, Any]) -> dict[str, Any]:
    """Each node of the fleet document with its reputation figures (``reputation.nodes``,
    issue 13's assessment) where the page shows them: ``blocklist`` (the zones listing it),
    ``ip_state`` and ``reputation_reasons``."""
    document = dict(fleet_document)
    reputation = document.get("reputation")
    if not isinstance(reputation, Mapping) or not reputation.get("enabled"):
        return document
    figures = reputation.get("nodes")
    if not isinstance(figures, Mapping):
        return document
    nodes = []
    for node in document.get("nodes") or []:
        found = figures.get(node.get("name"))
        if isinstance(found, Mapping):
            reasons = [str(r) for r in (found.get("reasons") or [])]
            holds = [str(r) for r in (found.get("hold_reasons") or [])]
            listed = sorted(
                {
                    r.removeprefix("listed on ")
                    for r in (*reasons, *holds)
                    if r.startswith("listed on ")
                }
            )
            node = {
                **node,
                "blocklist": listed,
                "ip_state": found.get("ip_state"),
                "reputation_reasons": reasons + holds,
            }
        nodes.append(node)
    document["nodes"] = nodes
    return document


def render(
    *,
    spec: FleetSpec,
    fleet_document: Mapping[str, Any],
    now: datetime,
    show_costs: bool,
    leader: bool | None,
    epoch: int | None,
    last_reconcile: tuple[datetime, str] | None,
    source: Mapping[str, Any],
    stale: str | None,
    events: Sequence[Mapping[str, Any]],
    waiting: Sequence[str] = (),
    version: str | None = None,
) -> str:
    curves, pools = warmup_curves(spec)
    header = StatusHeader(
        fleet=spec.name,
        generated_at=now,
        leader=leader,
        epoch=epoch,
        last_reconcile_at=last_reconcile[0] if last_reconcile else None,
        last_reconcile_outcome=last_reconcile[1] if last_reconcile else None,
        source=source,
        stale=stale,
        target_utilization=spec.scaling.target_utilization,
        version=version,
    )
    document = with_reputation(fleet_document)
    if not show_costs:
        document.pop("monthly_cost", None)
    return render_status_page(
        StatusInputs(
            header=header,
            fleet=document,
            show_costs=show_costs,
            curves=curves,
            pool_schedules=pools,
            events=events,
            waiting=waiting,
            ips_per_node=spec.costs.ips_per_node,
        )
    )
