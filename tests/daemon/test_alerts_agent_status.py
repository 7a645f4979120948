"""Alerts (dedupe, webhook), the agent (figures, signing, unreachable daemon), status output,
and the CLI commands node-token and status."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from reconciler.cli.main import main
from reconciler.core.fleet import NodeMetrics, NodeStatus, PausedBy, RecordedFleet, RecordedNode
from reconciler.core.health import AlertCondition, Severity
from reconciler.daemon.agent import (
    Agent,
    Figures,
    LogTail,
    count_mail_log,
    count_postqueue_json,
    parse_meminfo,
    parse_proc_stat,
)
from reconciler.daemon.alerts import Alerter
from reconciler.daemon.heartbeats import (
    MasterSecret,
    ReplayCache,
    Verifier,
    derive_node_secret,
)
from reconciler.daemon.metrics import DaemonMetrics
from reconciler.daemon.statusing import build_view, render_text
from specs.model import FleetSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_alerts_fire_once_while_the_condition_lasts_and_post_the_webhook() -> None:
    posted: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(204)

    metrics = DaemonMetrics()

    async def scenario() -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        alerter = Alerter(
            "acme",
            metrics,
            webhook="https://hooks.example/x",
            client=client,
            dedupe_window=timedelta(minutes=10),
        )
        down = AlertCondition("down:n1", Severity.HIGH, "n1", "n1: unhealthy")
        cpu = AlertCondition("cpu:n2", Severity.LOW, "n2", "n2: CPU 95% over 90%")
        assert await alerter.update([down, cpu], T0) == ["cpu:n2", "down:n1"]
        assert await alerter.update([down, cpu], T0 + timedelta(seconds=30)) == []
        assert await alerter.update([down], T0 + timedelta(minutes=1)) == []  # cpu cleared
        # cpu comes back within the window: not announced again (flapping)
        assert await alerter.update([down, cpu], T0 + timedelta(minutes=2)) == []
        await alerter.update([down], T0 + timedelta(minutes=3))
        # back after the window: announced
        assert await alerter.update([down, cpu], T0 + timedelta(minutes=20)) == ["cpu:n2"]
        await client.aclose()

    asyncio.run(scenario())
    # every start and end reaches the webhook: a flap is not a new alert, but the receiver
    # that heard "resolved" hears it firing again (reopened)
    assert [(p["key"], p["state"], p.get("reopened", False)) for p in posted] == [
        ("cpu:n2", "firing", False),
        ("down:n1", "firing", False),
        ("cpu:n2", "resolved", False),
        ("cpu:n2", "firing", True),
        ("cpu:n2", "resolved", False),
        ("cpu:n2", "firing", False),
    ]
    assert posted[1]["fleet"] == "acme"
    assert metrics.registry.get_sample_value("reconciler_alerts_total", {"severity": "high"}) == 1
    assert metrics.registry.get_sample_value("reconciler_alerts_total", {"severity": "low"}) == 2
    assert metrics.registry.get_sample_value("reconciler_alerts_active", {"severity": "high"}) == 1
    resolved = {"severity": "low"}
    assert metrics.registry.get_sample_value("reconciler_alerts_resolved_total", resolved) == 2


def test_a_reputation_condition_that_ends_sends_a_resolved_notice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A listing (or a bounce or complaint rate) that ends: logged, counted and posted as
    resolved, once; the next check without it sends nothing more."""
    posted: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(204)

    metrics = DaemonMetrics()
    listed = AlertCondition(
        "listed:n1:zen.spamhaus.org", Severity.HIGH, "n1", "n1 listed on zen.spamhaus.org"
    )
    bounce = AlertCondition("bounce:n2", Severity.MEDIUM, "n2", "n2: hard-bounce rate 6%")

    async def scenario() -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        alerter = Alerter("acme", metrics, webhook="https://hooks.example/x", client=client)
        await alerter.update([listed, bounce], T0)
        with caplog.at_level(logging.INFO, logger="reconciler.daemon.alerts"):
            await alerter.update([bounce], T0 + timedelta(hours=1))  # delisted
            await alerter.update([bounce], T0 + timedelta(hours=2))
            await alerter.update([], T0 + timedelta(hours=3))  # bounces back under the level
        await client.aclose()

    asyncio.run(scenario())
    ends = [(p["key"], p["severity"], p["node"]) for p in posted if p["state"] == "resolved"]
    assert ends == [
        ("listed:n1:zen.spamhaus.org", "high", "n1"),
        ("bounce:n2", "medium", "n2"),
    ]
    assert [
        r.getMessage() for r in caplog.records if getattr(r, "event", "") == "alert.resolved"
    ] == [
        "alert resolved (high): n1 listed on zen.spamhaus.org",
        "alert resolved (medium): n2: hard-bounce rate 6%",
    ]
    for severity in ("high", "medium"):
        labels = {"severity": severity}
        assert metrics.registry.get_sample_value("reconciler_alerts_resolved_total", labels) == 1
        assert metrics.registry.get_sample_value("reconciler_alerts_active", labels) == 0


def test_webhook_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async def scenario() -> None:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        alerter = Alerter(
            "acme", DaemonMetrics(), webhook="https://secret-token@hooks.example/x", client=client
        )
        await alerter.update([AlertCondition("down:n1", Severity.HIGH, "n1", "n1 down")], T0)
        await client.aclose()

    asyncio.run(scenario())
    assert "alert webhook failed: ConnectError" in caplog.text
    assert "secret-token" not in caplog.text


def test_figure_parsers(tmp_path: Path) -> None:
    queue = '{"queue_name":"deferred","queue_id":"A1"}\n{"queue_name":"active","queue_id":"B2"}\n\n'
    assert count_postqueue_json(queue) == 2
    assert count_postqueue_json("") == 0
    busy, total = parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n")
    assert (busy, total) == (150, 1000)
    assert parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\n") == 0.75
    lines = [
        "postfix/smtp[1]: A1: to=<a@x>, status=sent (250 ok)",
        "postfix/smtp[1]: B2: to=<b@x>, status=bounced (550 no)",
        "postfix/smtp[1]: C3: to=<c@x>, status=deferred",
    ]
    assert count_mail_log(lines) == (1, 1)
    log = tmp_path / "mail.log"
    log.write_text("old status=sent\n")
    tail = LogTail(log)
    assert tail.read_new() == []  # starts at the end
    with log.open("a") as handle:
        handle.write("new status=sent\npartial")
    assert tail.read_new() == ["new status=sent"]
    log.write_text("rotated status=sent\n")  # truncated/rotated: read from the start
    assert tail.read_new() == ["rotated status=sent"]


class Steady:
    def __init__(self, sent: int) -> None:
        self.sent = sent

    def read(self) -> Figures:
        return Figures(0.5, 0.5, 0.5, 3, self.sent, 1, 0)


def test_agent_signs_beats_and_keeps_counts_while_the_daemon_is_unreachable() -> None:
    master = MasterSecret("agent-test-master-secret")
    verifier = Verifier(master, replay=ReplayCache())
    received: list[dict[str, object]] = []
    up = False
    clock = [1000.0]

    def handler(request: httpx.Request) -> httpx.Response:
        if not up:
            raise httpx.ConnectError("connection refused")
        payload = verifier.verify(
            request.headers, request.method, request.url.path, request.content, 1_700_000_000
        )
        received.append(payload.model_dump())
        return httpx.Response(202)

    async def scenario() -> None:
        nonlocal up
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        agent = Agent(
            "acme-dallas-001",
            "http://127.0.0.1:9",
            derive_node_secret(b"agent-test-master-secret", "acme-dallas-001"),
            Steady(10),
            interval=30,
            client=client,
            wall_clock=lambda: 1_700_000_000,
            monotonic=lambda: clock[0],
        )
        clock[0] += 30
        assert not await agent.beat_once()
        clock[0] += 30
        assert not await agent.beat_once()
        up = True
        clock[0] += 30
        assert await agent.beat_once()
        await client.aclose()

    asyncio.run(scenario())
    assert len(received) == 1
    beat = received[0]
    assert beat["sent"] == 30  # three reads of 10, delivered together
    assert beat["bounces"] == 3
    assert beat["interval_seconds"] == 90.0
    assert beat["node"] == "acme-dallas-001"


SPEC = {
    "metadata": {"name": "acme"},
    "plans": {
        "baseline": {"rid": 52, "vcpu": 1, "ram_gb": 2, "disk_gb": 50, "monthly_price": "9.99"}
    },
    "regions": {"dallas": {"location_id": 13, "plan": "baseline", "nodes": 2}},
    "ip_pools": {"shared": {"size": 2, "regions": ["dallas"], "warmup": "standard"}},
}


def test_status_view_and_text() -> None:
    spec = FleetSpec.model_validate(SPEC)
    now = T0 + timedelta(days=14, minutes=1)
    nodes = (
        RecordedNode(
            id="1",
            fleet="acme",
            name="acme-dallas-001",
            region="dallas",
            plan="baseline",
            status=NodeStatus.WARMING,
            pool="shared",
            ip_address="198.51.100.2",
            warmup_started_at=T0,
            last_heartbeat=now - timedelta(seconds=10),
        ),
        RecordedNode(
            id="2",
            fleet="acme",
            name="acme-dallas-002",
            region="dallas",
            plan="baseline",
            status=NodeStatus.ACTIVE,
            ip_address="198.51.100.3",
            last_heartbeat=now - timedelta(minutes=5),
        ),
    )
    recent = {
        "acme-dallas-001": [
            NodeMetrics(
                "acme-dallas-001", now - timedelta(seconds=10), 0.2, 0.3, 0.4, 5, 1, 0, 0, 30.0
            )
        ],
    }
    view = build_view(spec, RecordedFleet("acme", nodes), recent, now)
    document = view.to_json()
    first, second = document["nodes"]
    assert first["warmup_day"] == 15
    assert first["daily_limit"] == 100  # standard preset: day 15 starts the 100 -> 300 phase
    assert first["utilization"] == round(2880 / 100, 4)
    assert second["unhealthy"] is True
    assert second["health"] == "critical"
    assert second["daily_limit"] is None  # not warming: CPU capacity
    assert document["monthly_cost"] == "29.96"
    text = render_text(document)
    assert (
        "acme-dallas-001  dallas  shared  warming  198.51.100.2  -         baseline  day 15" in text
    )
    assert "fleet acme: 2 nodes, monthly cost $29.96" in text
    assert "REGION" in text
    assert "IP STATE" in text


def test_status_shows_the_ip_state_and_who_paused_a_node() -> None:
    """The IP life cycle (from the reputation assessment) and the owner of a pause are in the
    fleet view's JSON and in its text."""
    spec = FleetSpec.model_validate(SPEC)
    now = T0 + timedelta(days=14, minutes=1)
    nodes = (
        RecordedNode(
            id="1",
            fleet="acme",
            name="acme-dallas-001",
            region="dallas",
            plan="baseline",
            status=NodeStatus.PAUSED,
            pool="shared",
            ip_address="198.51.100.2",
            warmup_started_at=T0,
            paused_by=PausedBy.REPUTATION,
        ),
        RecordedNode(
            id="2",
            fleet="acme",
            name="acme-dallas-002",
            region="dallas",
            plan="baseline",
            status=NodeStatus.ACTIVE,
            ip_address="198.51.100.3",
        ),
    )
    states = {"acme-dallas-001": "listed", "acme-dallas-002": "warmed"}
    document = build_view(spec, RecordedFleet("acme", nodes), {}, now, ip_states=states).to_json()
    first, second = document["nodes"]
    assert (first["status"], first["paused_by"], first["ip_state"]) == (
        "paused",
        "reputation",
        "listed",
    )
    assert (second["paused_by"], second["ip_state"]) == (None, "warmed")
    text = render_text(document)
    assert "paused (reputation)  198.51.100.2  listed" in text
    assert "active               198.51.100.3  warmed" in text
    unassessed = build_view(spec, RecordedFleet("acme", nodes), {}, now).to_json()
    assert [n["ip_state"] for n in unassessed["nodes"]] == [None, None]


def test_node_token_command(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RECONCILER_NODE_MASTER_SECRET", "cli-test-master-secret-value")
    assert main(["node-token", "acme-dallas-001"]) == 0
    token = capsys.readouterr().out.strip()
    assert token == derive_node_secret(b"cli-test-master-secret-value", "acme-dallas-001")
    spec = tmp_path / "fleet.yaml"
    spec.write_text(json.dumps(SPEC))
    assert main(["node-token", "other-dallas-001", "-f", str(spec)]) == 1
    assert "is not a node of fleet 'acme'" in capsys.readouterr().err
    monkeypatch.delenv("RECONCILER_NODE_MASTER_SECRET")
    assert main(["node-token", "acme-dallas-001"]) == 1
    err = capsys.readouterr().err
    assert "RECONCILER_NODE_MASTER_SECRET" in err
    assert "Traceback" not in err


def test_status_command_reads_the_store(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = tmp_path / "fleet.yaml"
    spec.write_text(json.dumps(SPEC))
    monkeypatch.setenv("RECONCILER_DATABASE_URL", f"sqlite:///{tmp_path}/state.db")
    monkeypatch.chdir(tmp_path)
    assert main(["status", "-f", str(spec)]) == 0
    assert "no nodes recorded" in capsys.readouterr().out
    assert main(["status", "-f", str(spec), "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["fleet"] == "acme"
    assert document["format_version"] == 1
    assert os.environ["RECONCILER_DATABASE_URL"].startswith("sqlite")
    assert main(["status", "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot reach the daemon" in capsys.readouterr().err


def test_postfix_log_hard_and_soft_bounces() -> None:
    from reconciler.daemon.agent import MailCounts, count_deliveries

    lines = [
        "Nov 23 10:00:01 n1 postfix/smtp[11]: 4F1: to=<a@example.com>, relay=mx.example.com"
        "[192.0.2.1]:25, delay=1, dsn=2.0.0, status=sent (250 2.0.0 OK)",
        "Nov 23 10:00:02 n1 postfix/smtp[11]: 4F2: to=<b@example.com>, relay=mx.example.com"
        "[192.0.2.1]:25, dsn=5.1.1, status=bounced (550 5.1.1 no such user)",
        "Nov 23 10:00:03 n1 postfix/smtp[12]: 4F3: to=<c@example.net>, relay=none, delay=30, "
        "dsn=4.4.1, status=deferred (connect to mx.example.net: Connection timed out)",
        "Nov 23 10:00:04 n1 postfix/qmgr[9]: 4F4: from=<x@y>, status=expired, returned to sender",
        "Nov 23 10:00:04 n1 postfix/smtp[13]: 4F5: to=<d@example.org>, relay=none, dsn=4.4.7, "
        "status=expired, returned to sender",
        # a hand-off to a content filter on loopback is not a delivery
        "Nov 23 10:00:05 n1 postfix/smtp[14]: 4F6: to=<e@example.com>, relay=127.0.0.1"
        "[127.0.0.1]:10024, dsn=2.0.0, status=sent (250 queued as 4F7)",
        # text from a message is not a log status
        "Nov 23 10:00:06 n1 postfix/cleanup[15]: 4F8: warning: header Subject: status=sent",
        "Nov 23 10:00:07 n1 postfix/submission/smtp[16]: 4F9: to=<f@example.com>, "
        "relay=mx[198.51.100.2]:25, dsn=2.0.0, status=sent (250 ok)",
    ]
    assert count_deliveries(lines) == MailCounts(sent=2, hard_bounces=2, soft_bounces=1)
