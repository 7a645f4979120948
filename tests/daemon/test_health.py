"""Health grading and missed beats (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from reconciler.core.fleet import NodeMetrics, NodeStatus, RecordedNode
from reconciler.core.health import (
    Grade,
    Severity,
    alert_conditions,
    assess,
    grade_beats,
    liveness,
)
from specs.model import HealthPolicy, ReputationPolicy, UnhealthyAction

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = HealthPolicy()


def beat(
    queue: int = 0, sent: int = 100, bounces: int = 0, cpu: float = 0.2, at: datetime = T0
) -> NodeMetrics:
    return NodeMetrics("n1", at, cpu, 0.3, 0.4, queue, sent, bounces, 0, 30.0)


def node(
    last: datetime | None, status: NodeStatus = NodeStatus.ACTIVE, name: str = "n1"
) -> RecordedNode:
    return RecordedNode(
        id=name,
        fleet="acme",
        name=name,
        region="dallas",
        plan="small",
        status=status,
        last_heartbeat=last,
    )


def test_queue_table() -> None:
    assert grade_beats([beat(queue=99, sent=100)], POLICY).queue is Grade.HEALTHY
    assert grade_beats([beat(queue=100, sent=100)], POLICY).queue is Grade.WARNING
    assert grade_beats([beat(queue=500, sent=100)], POLICY).queue is Grade.WARNING
    report = grade_beats([beat(queue=501, sent=100)], POLICY)
    assert report.queue is Grade.CRITICAL
    assert report.grade is Grade.CRITICAL
    assert "queue 501 (critical)" in report.reasons


def test_rate_table_only_with_mail_waiting() -> None:
    # 30 s beats: 50 sent = 100/min, 30 sent = 60/min, 20 sent = 40/min
    assert grade_beats([beat(queue=10, sent=50)], POLICY).rate is Grade.HEALTHY
    assert grade_beats([beat(queue=10, sent=30)], POLICY).rate is Grade.WARNING
    assert grade_beats([beat(queue=10, sent=20)], POLICY).rate is Grade.CRITICAL
    idle = grade_beats([beat(queue=0, sent=0)], POLICY)
    assert idle.rate is Grade.UNKNOWN
    assert idle.grade is Grade.HEALTHY


def test_bounce_table() -> None:
    assert grade_beats([beat(sent=1000, bounces=9)], POLICY).bounces is Grade.HEALTHY
    assert grade_beats([beat(sent=1000, bounces=20)], POLICY).bounces is Grade.WARNING
    assert grade_beats([beat(sent=1000, bounces=31)], POLICY).bounces is Grade.CRITICAL
    assert grade_beats([], POLICY).grade is Grade.UNKNOWN


def test_three_missed_beats_make_a_node_unhealthy() -> None:
    last = T0
    assert not liveness(node(last), T0 + timedelta(seconds=89), POLICY).unhealthy
    live = liveness(node(last), T0 + timedelta(seconds=90), POLICY)
    assert live.unhealthy
    assert live.missed == 3
    assert live.unhealthy_since == T0 + timedelta(seconds=90)
    assert not live.replace_due
    later = liveness(node(last), T0 + timedelta(seconds=90) + POLICY.replace_after, POLICY)
    assert later.replace_due


def test_assessment_feeds_plan_options() -> None:
    now = T0 + timedelta(minutes=20)
    nodes = [
        node(now - timedelta(seconds=10), name="alive"),
        node(now - timedelta(minutes=2), name="down"),
        node(now - timedelta(minutes=15), NodeStatus.UNHEALTHY, name="gone"),
        node(None, name="new"),
        node(now - timedelta(hours=1), NodeStatus.PROVISIONING, name="building"),
    ]
    result = assess(nodes, now, POLICY)
    assert result.unhealthy == {"down", "gone"}
    assert result.replace == {"gone"}
    assert result.silent == {"new"}
    # a node that comes back is no longer unhealthy (the planner resumes it)
    back = assess([node(now, NodeStatus.UNHEALTHY, name="gone")], now, POLICY)
    assert back.unhealthy == frozenset()


def test_alert_only_policy_never_takes_a_node_out() -> None:
    policy = HealthPolicy(on_unhealthy=UnhealthyAction.ALERT)
    now = T0 + timedelta(minutes=30)
    result = assess([node(T0)], now, policy)
    assert result.unhealthy == frozenset()
    assert result.replace == frozenset()
    assert result.details[0].unhealthy


def test_alert_severities() -> None:
    now = T0 + timedelta(minutes=5)
    nodes = [node(T0, name="n1"), node(now, name="n2")]
    recent = {
        "n2": [
            NodeMetrics("n2", now, 0.95, 0.3, 0.4, 0, 1000, 40, 0, 30.0),
        ]
    }
    conditions = alert_conditions(
        nodes, assess(nodes, now, POLICY), recent, POLICY, ReputationPolicy()
    )
    by_key = {c.key: c.severity for c in conditions}
    assert by_key == {
        "down:n1": Severity.HIGH,
        "bounce:n2": Severity.MEDIUM,
        "cpu:n2": Severity.LOW,
    }
