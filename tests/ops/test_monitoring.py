"""The Grafana dashboard and the Prometheus alert rules in examples/monitoring/.

- the rules pass ``promtool check rules`` and their unit tests (``promtool test rules``);
- every kind of condition the daemon alerts on has its rule, and the catch-all takes the rest;
- every metric a dashboard panel reads exists in the ``/metrics`` of a running daemon, every
  panel query is valid PromQL (checked by promtool), and the layout is sound.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from reconciler.core.fleet import NodeMetrics, NodeStatus, RecordedNode
from reconciler.core.health import alert_conditions, assess
from reconciler.daemon.alerts import (
    HEALTH_KINDS,
    KNOWN_KINDS,
    PROVISIONING_KINDS,
    VARIABLE_KINDS,
    Alerter,
    alert_kind,
)
from reconciler.daemon.http import create_app
from reconciler.daemon.metrics import DaemonMetrics
from specs.model import FleetSpec
from tests.daemon.serving import serve_in_thread
from tests.daemon.test_running import make_world
from tests.ops.tools import ROOT, require_tool

MONITORING = ROOT / "examples" / "monitoring"
RULES = MONITORING / "prometheus-rules.yaml"
RULE_TESTS = MONITORING / "prometheus-rules.test.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"
#: metrics a panel may read that the daemon does not export (Prometheus' own)
FOREIGN = {"up"}
_SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def _promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    tool = require_tool("promtool")
    return subprocess.run(
        [tool.path, *args], cwd=cwd, env=tool.env, capture_output=True, text=True, timeout=60
    )


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    checked = _promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout
    tested = _promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    """The check can fail: a rule with bad PromQL is refused."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "groups:\n- name: x\n  rules:\n  - alert: Broken\n"
        '    expr: max by (job) (reconciler_alert_conditions{kind="down"} > \n'
    )
    checked = _promtool("check", "rules", str(bad), cwd=tmp_path)
    assert checked.returncode != 0


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_kind_of_condition_the_daemon_alerts_on_has_a_rule() -> None:
    rules = _rules()
    for kind, severity in KNOWN_KINDS.items():
        matching = [r for r in rules if f'kind="{kind}"' in r["expr"]]
        assert len(matching) == 1, f"no single rule for alert kind {kind!r}"
        assert matching[0]["labels"]["severity"] == severity
    for kind in VARIABLE_KINDS:
        matching = [r for r in rules if f'kind="{kind}"' in r["expr"]]
        assert len(matching) == 1, f"no single rule for alert kind {kind!r}"
        assert matching[0]["labels"]["severity"] == "{{ $labels.severity }}"
    catch_all = [r for r in rules if "kind!~" in r["expr"]]
    assert len(catch_all) == 1
    excluded = re.search(r'kind!~"([^"]+)"', catch_all[0]["expr"])
    assert excluded is not None
    assert set(excluded.group(1).split("|")) == set(KNOWN_KINDS) | set(VARIABLE_KINDS)
    # every rule has a runbook anchor that exists in docs/production.md
    production = (ROOT / "docs" / "production.md").read_text()
    anchors = {_anchor(line) for line in production.splitlines() if line.startswith("#")}
    for rule in rules:
        runbook = rule["annotations"]["runbook"]
        assert runbook.startswith("docs/production.md#"), rule["alert"]
        assert runbook.partition("#")[2] in anchors, f"{rule['alert']}: {runbook} is no heading"


def _anchor(heading: str) -> str:
    text = heading.lstrip("#").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _node(name: str) -> RecordedNode:
    return RecordedNode(
        id=name,
        fleet="acme",
        name=name,
        region="dallas",
        plan="baseline",
        status=NodeStatus.ACTIVE,
    )


def test_the_conditions_the_core_raises_are_known_kinds_and_reach_the_metric() -> None:
    """Drive the real health code into every condition it has: each is a known kind, and the
    Alerter exports it as reconciler_alert_conditions{kind, severity}."""
    spec = FleetSpec.model_validate(
        {
            "apiVersion": "fleet-reconciler/v1",
            "kind": "Fleet",
            "metadata": {"name": "acme"},
            "plans": {
                "baseline": {
                    "rid": 52,
                    "vcpu": 1,
                    "ram_gb": 2,
                    "disk_gb": 50,
                    "monthly_price": "9.99",
                }
            },
            "regions": {"dallas": {"location_id": 13, "plan": "baseline", "nodes": 3}},
        }
    )
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 3, 1, tzinfo=UTC)
    silent = RecordedNode(
        id="1",
        fleet="acme",
        name="acme-dallas-001",
        region="dallas",
        plan="baseline",
        status=NodeStatus.ACTIVE,
        last_heartbeat=now - timedelta(minutes=10),
    )
    bouncy, hot = _node("acme-dallas-002"), _node("acme-dallas-003")
    recent = {
        bouncy.name: [NodeMetrics(bouncy.name, now, 0.2, 0.2, 0.2, 0, 100, 50, 0, 30.0)],
        hot.name: [NodeMetrics(hot.name, now, 0.99, 0.2, 0.2, 0, 10, 0, 0, 30.0)],
    }
    nodes = [silent, bouncy, hot]
    assessment = assess(nodes, now, spec.health)
    conditions = alert_conditions(nodes, assessment, recent, spec.health, spec.reputation)
    kinds = {alert_kind(c.key) for c in conditions}
    assert kinds == set(HEALTH_KINDS)
    for condition in conditions:
        assert KNOWN_KINDS[alert_kind(condition.key)] == condition.severity.label

    metrics = DaemonMetrics()
    alerter = Alerter("acme", metrics)
    asyncio.run(alerter.update(conditions, now))
    for kind, severity in HEALTH_KINDS.items():
        value = metrics.registry.get_sample_value(
            "reconciler_alert_conditions", {"kind": kind, "severity": severity}
        )
        assert value == 1.0
    # the conditions end: the series stay, at 0 (Prometheus sees the end)
    asyncio.run(alerter.update([], now + timedelta(minutes=1)))
    assert (
        metrics.registry.get_sample_value(
            "reconciler_alert_conditions", {"kind": "down", "severity": "high"}
        )
        == 0.0
    )


def test_alert_kinds_are_bounded_label_values() -> None:
    assert alert_kind("down:acme-dallas-001") == "down"
    assert alert_kind("blocklisted:acme-x:zen.spamhaus.org") == "blocklisted"
    assert alert_kind("weird kind:x") == "other"
    assert alert_kind("x" * 100 + ":n") == "other"


# --- the dashboard ---------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def _panels(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in document["panels"] if p["type"] != "row"]


def _exported_metrics(tmp_path: Path) -> set[str]:
    """The metric families a running daemon's GET /metrics declares (# TYPE lines)."""
    world = make_world(tmp_path)
    daemon = world.daemon

    async def populate() -> None:
        await daemon.guard.tick()
        await daemon.reconcile_now()
        await daemon._job_sweep()
        await daemon._job_autoscale()

    asyncio.run(populate())
    app = create_app(daemon, daemon.metrics, daemon.verifier, daemon.batcher)
    with serve_in_thread(app) as url:
        text = httpx.get(url + "/metrics", timeout=10).text
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            names.add(name)
            if kind == "counter":
                names.add(name + "_total")
    return names


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(reconciler_[a-z0-9_]+)", expr))
    names.update(n for n in re.findall(r"\b([a-z_]+)\{", expr) if n in FOREIGN)
    return names


def test_every_dashboard_metric_exists_in_the_daemons_metrics(tmp_path: Path) -> None:
    exported = _exported_metrics(tmp_path)
    used: set[str] = set()
    for panel in _panels(_dashboard()):
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            used.update(_metric_names(target["expr"]))
    missing = set()
    for name in used - FOREIGN:
        family = name
        for suffix in _SUFFIXES:
            if name.endswith(suffix) and name not in exported:
                family = name[: -len(suffix)]
        if name not in exported and family not in exported:
            missing.add(name)
    assert not missing, f"dashboard panels read metrics the daemon does not export: {missing}"
    # and the dashboard shows most of what the daemon exports
    assert len(used) >= 15


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, as a recording rule that promtool
    parses: a typo in PromQL fails here, not on an operator's screen."""
    rules = []
    for panel in _panels(_dashboard()):
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "5m").replace("$job", ".*")
            rules.append(
                {"record": f"dashboard:panel{panel['id']}:{target['refId']}", "expr": expr}
            )
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = _promtool("check", "rules", str(path), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_layout_is_sound() -> None:
    document = _dashboard()
    assert document["uid"] == "fleet-reconciler"
    names = {v["name"] for v in document["templating"]["list"]}
    assert {"datasource", "job"} <= names
    ids = [p["id"] for p in document["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for panel in document["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["title"]
            for target in panel["targets"]:
                assert "$job" in target["expr"], f"{panel['title']}: not filtered by $job"


@pytest.mark.parametrize("panel_title", ["Utilization by region and pool (target 0.80)"])
def test_the_utilization_panel_draws_the_80_percent_line(panel_title: str) -> None:
    panel = next(p for p in _panels(_dashboard()) if p["title"] == panel_title)
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert any(step["value"] == 0.8 for step in steps)


def test_an_open_circuit_breaker_is_a_known_high_condition_per_region() -> None:
    """core.lifecycle.breaker_conditions: one high condition per region whose breaker is open,
    exported as reconciler_alert_conditions{kind="circuit_breaker"} (ReconcilerCircuitBreakerOpen),
    and resolved when the window holds fewer failures."""
    from datetime import UTC, datetime, timedelta

    from reconciler.core.lifecycle import breaker_conditions

    spec = FleetSpec.model_validate(
        {
            "apiVersion": "fleet-reconciler/v1",
            "kind": "Fleet",
            "metadata": {"name": "acme"},
            "plans": {
                "baseline": {
                    "rid": 52,
                    "vcpu": 1,
                    "ram_gb": 2,
                    "disk_gb": 50,
                    "monthly_price": "9.99",
                }
            },
            "regions": {
                "dallas": {"location_id": 13, "plan": "baseline", "nodes": 3},
                "seattle": {"location_id": 12, "plan": "baseline", "nodes": 3},
            },
            "provisioning": {
                "domain": "mail.example.com",
                "sink": "probe@sink.example.com",
                "circuit_breaker": {"failures": 3, "window": "1h"},
            },
        }
    )
    assert breaker_conditions(spec, {"dallas": 2, "seattle": 1}) == ()
    conditions = breaker_conditions(spec, {"dallas": 3, "seattle": 1})
    assert [c.key for c in conditions] == ["circuit_breaker:dallas"]
    (condition,) = conditions
    assert condition.severity.label == PROVISIONING_KINDS["circuit_breaker"] == "high"
    assert condition.message.startswith("circuit breaker open in dallas: 3 node(s)")
    assert alert_kind(condition.key) in KNOWN_KINDS

    now = datetime(2026, 3, 1, tzinfo=UTC)
    metrics = DaemonMetrics()
    alerter = Alerter("acme", metrics)
    sample = {"kind": "circuit_breaker", "severity": "high"}
    # exported at 0 from the start, so the rule always has a series to read
    assert metrics.registry.get_sample_value("reconciler_alert_conditions", sample) == 0.0
    announced = asyncio.run(alerter.update(conditions, now))
    assert announced == ["circuit_breaker:dallas"]
    assert metrics.registry.get_sample_value("reconciler_alert_conditions", sample) == 1.0
    asyncio.run(alerter.update([], now + timedelta(minutes=5)))
    assert metrics.registry.get_sample_value("reconciler_alert_conditions", sample) == 0.0


def test_a_plan_s_failed_slots_are_high_alerts_of_a_known_kind() -> None:
    """Issue 9: the leader's plan raises one ``slot_failed:<node>`` condition per failed slot
    (its re-creates used up: ``create_failed``; its provisioning replacements:
    ``slot_failed``); other warnings raise none here (the breaker comes from the journal)."""
    from decimal import Decimal

    from reconciler.core.plans import GuardWarning, Plan, PlanSummary
    from reconciler.daemon.alerts import plan_conditions

    plan = Plan(
        "acme",
        (),
        PlanSummary({}, Decimal(0), Decimal(0)),
        warnings=(
            GuardWarning("create_failed", "slot failed", hint="retry", subject="acme-dallas-004"),
            GuardWarning("slot_failed", "HIGH: slot failed", subject="acme-dallas-005"),
            GuardWarning("circuit_breaker", "breaker open", subject="dallas"),
            GuardWarning("stopped", "a stopped server"),
        ),
    )
    conditions = plan_conditions(plan)
    assert [(c.key, c.node) for c in conditions] == [
        ("slot_failed:acme-dallas-004", "acme-dallas-004"),
        ("slot_failed:acme-dallas-005", "acme-dallas-005"),
    ]
    assert conditions[0].message == "slot failed (retry)"
    for condition in conditions:
        assert KNOWN_KINDS[alert_kind(condition.key)] == condition.severity.label == "high"
