"""Alerts: log, metrics and an optional webhook, de-duplicated while a condition lasts.

A condition (``core.health.AlertCondition``) is announced once when it starts ("firing": log
at its severity's level, ``reconciler_alerts_total``, webhook) and once when it ends
("resolved": log, ``reconciler_alerts_resolved_total``, webhook with ``"state": "resolved"``).
While it lasts nothing more is sent. A condition that clears and comes back within
``alerts.dedupe_window`` is not a new alert (flap suppression: no new count, logged at info),
but the webhook hears it again (``"state": "firing", "reopened": true``), so a receiver that
was told it resolved does not believe it is over.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import httpx

from reconciler.core.health import AlertCondition, Severity
from reconciler.core.plans import Plan
from reconciler.daemon.metrics import DaemonMetrics

log = logging.getLogger("reconciler.daemon.alerts")

#: the kinds of condition ``core.health.alert_conditions`` raises (key prefix -> severity);
#: each kind of ``KNOWN_KINDS`` has a Prometheus alert rule in
#: examples/monitoring/prometheus-rules.yaml (a test checks it), and a kind not listed here
#: still reaches the catch-all rule
HEALTH_KINDS: dict[str, str] = {
    "down": Severity.HIGH.label,
    "bounce": Severity.MEDIUM.label,
    "cpu": Severity.LOW.label,
}
#: the provisioning conditions (``core.lifecycle``): a region's circuit breaker open
#: (``breaker_conditions``), a slot that used up its replacements
PROVISIONING_KINDS: dict[str, str] = {
    "circuit_breaker": Severity.HIGH.label,
    "slot_failed": Severity.HIGH.label,
}
KNOWN_KINDS: dict[str, str] = {**HEALTH_KINDS, **PROVISIONING_KINDS}


#: plan warnings that are high alerts while they last: a failed slot (its bounded re-creates
#: used up: ``create_failed``; or its provisioning replacements: ``slot_failed``). An open
#: circuit breaker is raised from the journal (``core.lifecycle.breaker_conditions``)
_PLAN_ALERTS = {
    "create_failed": "slot_failed",
    "slot_failed": "slot_failed",
}


def plan_conditions(plan: Plan) -> tuple[AlertCondition, ...]:
    """The high alerts a plan's warnings raise (each keyed by its node or region, so that it
    is announced once while it lasts and resolved when the warning goes)."""
    found: dict[str, AlertCondition] = {}
    for warning in plan.warnings:
        kind = _PLAN_ALERTS.get(warning.guard)
        if kind is None:
            continue
        subject = warning.subject or "fleet"
        node = warning.subject
        hint = f" ({warning.hint})" if warning.hint else ""
        key = f"{kind}:{subject}"
        found.setdefault(key, AlertCondition(key, Severity.HIGH, node, warning.message + hint))
    return tuple(found[k] for k in sorted(found))


#: kinds whose severity depends on the condition (``core.reputation``: a listing's severity is
#: its rule's); their rules take the severity from the metric's label
VARIABLE_KINDS = ("listed", "quarantined")


def alert_kind(key: str) -> str:
    """The kind of an alert key (``down:acme-dallas-001`` -> ``down``); bounded label values."""
    kind = key.partition(":")[0]
    return kind if kind.isidentifier() and len(kind) <= 32 else "other"


_LEVELS = {
    Severity.HIGH: logging.ERROR,
    Severity.MEDIUM: logging.WARNING,
    Severity.LOW: logging.INFO,
}


class Alerter:
    def __init__(
        self,
        fleet: str,
        metrics: DaemonMetrics,
        *,
        webhook: str | None = None,
        dedupe_window: timedelta = timedelta(hours=1),
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._fleet = fleet
        self._metrics = metrics
        self._webhook = webhook
        self._window = dedupe_window
        self._client = client
        self._own_client = client is None
        self._active: dict[str, AlertCondition] = {}
        self._cleared_at: dict[str, datetime] = {}
        self.sent: list[dict[str, object]] = []  # last webhook payloads (bounded), for status
        self._kinds_seen: set[tuple[str, str]] = set(KNOWN_KINDS.items())
        for kind, severity_label in KNOWN_KINDS.items():
            metrics.alert_conditions.labels(kind, severity_label).set(0)

    def configure(self, webhook: str | None, dedupe_window: timedelta) -> None:
        self._webhook = webhook
        self._window = dedupe_window

    @property
    def active(self) -> tuple[AlertCondition, ...]:
        return tuple(self._active[k] for k in sorted(self._active))

    async def update(self, conditions: Sequence[AlertCondition], now: datetime) -> list[str]:
        """Announce new conditions and clear those that ended. Returns the keys announced."""
        current = {c.key: c for c in conditions}
        announced: list[str] = []
        for key, condition in sorted(current.items()):
            if key in self._active:
                continue
            self._active[key] = condition
            cleared = self._cleared_at.pop(key, None)
            if cleared is not None and now - cleared < self._window:
                # came back within the window (flapping): not a new alert, but the receiver
                # heard it resolved, so it hears it firing again
                log.info(
                    f"alert again ({condition.severity.label}): {condition.message}",
                    extra={
                        "event": "alert.reopened",
                        "key": key,
                        "severity": condition.severity.label,
                        "node": condition.node,
                    },
                )
                await self._post(self._payload(condition, "firing", now, reopened=True))
                continue
            announced.append(key)
            await self._announce(condition, "firing", now)
        for key in sorted(set(self._active) - set(current)):
            condition = self._active.pop(key)
            self._cleared_at[key] = now
            self._metrics.alerts_resolved.labels(condition.severity.label).inc()
            log.info(
                f"alert resolved ({condition.severity.label}): {condition.message}",
                extra={
                    "event": "alert.resolved",
                    "key": key,
                    "severity": condition.severity.label,
                    "node": condition.node,
                },
            )
            await self._post(self._payload(condition, "resolved", now))
        horizon = now - self._window
        for key in [k for k, at in self._cleared_at.items() if at < horizon]:
            del self._cleared_at[key]
        for severity in Severity:
            self._metrics.alerts_active.labels(severity.label).set(
                sum(1 for c in self._active.values() if c.severity is severity)
            )
        # per kind: every kind ever seen stays exported (at 0 once it clears) so that
        # Prometheus sees a condition end instead of a series vanishing; the known kinds are
        # exported from the start so the alert rules always have a series to read
        kinds: dict[tuple[str, str], int] = dict.fromkeys(self._kinds_seen, 0)
        for condition in self._active.values():
            pair = (alert_kind(condition.key), condition.severity.label)
            kinds[pair] = kinds.get(pair, 0) + 1
        self._kinds_seen.update(kinds)
        for (kind, severity_label), count in kinds.items():
            self._metrics.alert_conditions.labels(kind, severity_label).set(count)
        return announced

    async def _announce(self, condition: AlertCondition, state: str, now: datetime) -> None:
        self._metrics.alerts.labels(condition.severity.label).inc()
        log.log(
            _LEVELS[condition.severity],
            f"alert ({condition.severity.label}): {condition.message}",
            extra={
                "event": "alert.firing",
                "key": condition.key,
                "severity": condition.severity.label,
                "node": condition.node,
            },
        )
        await self._post(self._payload(condition, state, now))

    def _payload(
        self, condition: AlertCondition, state: str, now: datetime, *, reopened: bool = False
    ) -> dict[str, object]:
        payload: dict[str, object] = {
            "fleet": self._fleet,
            "state": state,
            "severity": condition.severity.label,
            "key": condition.key,
            "node": condition.node,
            "message": condition.message,
            "at": now.isoformat(),
        }
        if reopened:
            payload["reopened"] = True
        return payload

    async def _post(self, payload: dict[str, object]) -> None:
        self.sent.append(payload)
        del self.sent[:-100]
        if not self._webhook:
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=5.0)
        try:
            response = await self._client.post(self._webhook, json=payload)
            if response.status_code >= 400:
                log.warning(
                    f"alert webhook answered HTTP {response.status_code}",
                    extra={"event": "alert.webhook_failed", "status": response.status_code},
                )
        except httpx.HTTPError as exc:
            log.warning(
                f"alert webhook failed: {type(exc).__name__}",
                extra={"event": "alert.webhook_failed"},
            )

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
        self._client = None
