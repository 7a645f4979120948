"""The daemon's Prometheus metrics, in their own registry (never the global one)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST


class DaemonMetrics:
    """Every metric the daemon exports (listed in docs/daemon.md "Metrics")."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created noise
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.reconciles = Counter(
            "reconciler_reconciles", "Reconcile runs by outcome", ["outcome"], registry=r
        )
        self.reconcile_duration = Histogram(
            "reconciler_reconcile_duration_seconds",
            "Duration of reconcile runs",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.reconcile_errors = Counter(
            "reconciler_reconcile_errors",
            "Reconcile runs that failed, by error kind",
            ["kind"],
            registry=r,
        )
        self.api_calls = Counter(
            "reconciler_api_calls",
            "Cloud API calls made by reconciles, by action",
            ["action"],
            registry=r,
        )
        self.changes = Counter(
            "reconciler_changes",
            "Plan changes applied, by action and result",
            ["action", "result"],
            registry=r,
        )
        self.fleet_nodes = Gauge(
            "reconciler_fleet_nodes",
            "Recorded nodes by region and status",
            ["region", "status"],
            registry=r,
        )
        self.utilization = Gauge(
            "reconciler_utilization_ratio",
            "Throughput over capacity by region and pool (pool '' = no pool)",
            ["region", "pool"],
            registry=r,
        )
        self.capacity = Gauge(
            "reconciler_capacity_emails_per_day",
            "Sending capacity (min of CPU bound and warmup limit) by region and pool",
            ["region", "pool"],
            registry=r,
        )
        self.throughput = Gauge(
            "reconciler_throughput_emails_per_day",
            "Throughput reported by heartbeats, projected to a day, by region and pool",
            ["region", "pool"],
            registry=r,
        )
        self.desired_nodes = Gauge(
            "reconciler_desired_nodes",
            "Autoscaler's desired node count by region",
            ["region"],
            registry=r,
        )
        self.heartbeats_received = Counter(
            "reconciler_heartbeats_received", "Heartbeats accepted", registry=r
        )
        self.heartbeats_rejected = Counter(
            "reconciler_heartbeats_rejected",
            "Heartbeats refused, by reason",
            ["reason"],
            registry=r,
        )
        self.requests_rejected = Counter(
            "reconciler_http_requests_rejected",
            "Requests answered with an error by the HTTP guard (malformed, slow_client, "
            "error), any endpoint",
            ["reason"],
            registry=r,
        )
        self.heartbeats_quarantined = Counter(
            "reconciler_heartbeats_quarantined",
            "Authentic heartbeats refused for implausible figures (never counted)",
            registry=r,
        )
        self.heartbeats_written = Counter(
            "reconciler_heartbeats_written", "Heartbeats written to the store", registry=r
        )
        self.node_health = Gauge(
            "reconciler_node_health_grade",
            "Nodes by health grade (unknown, healthy, warning, critical) and region",
            ["region", "grade"],
            registry=r,
        )
        self.unhealthy_nodes = Gauge(
            "reconciler_unhealthy_nodes",
            "Nodes out of rotation for missed heartbeats",
            ["region"],
            registry=r,
        )
        self.job_overruns = Counter(
            "reconciler_job_overruns",
            "Scheduled runs skipped because the previous run of the job still ran (coalesced) "
            "or missed, by job and kind (skipped, missed)",
            ["job", "kind"],
            registry=r,
        )
        self.health_held = Gauge(
            "reconciler_health_decisions_held",
            "Nodes whose pause or replacement is held back: an observation gap (health waits a "
            "full detection window) or a zone disruption",
            registry=r,
        )
        self.disruptions = Gauge(
            "reconciler_zone_disruption",
            "1 while a large share of a region's (scope=region) or the fleet's (scope=fleet) "
            "nodes is silent at once: no replacement, pauses throttled",
            ["scope"],
            registry=r,
        )
        self.monthly_cost = Gauge(
            "reconciler_monthly_cost_usd",
            "Approximate monthly cost of the recorded fleet",
            registry=r,
        )
        self.alerts = Counter(
            "reconciler_alerts", "Alerts raised, by severity", ["severity"], registry=r
        )
        self.alerts_resolved = Counter(
            "reconciler_alerts_resolved",
            "Alert conditions that ended (a resolved notice was sent), by severity",
            ["severity"],
            registry=r,
        )
        self.ip_states = Gauge(
            "reconciler_ip_state_nodes",
            "Nodes by the reputation state of their IP (warming, warmed, degraded, listed, "
            "quarantined)",
            ["state"],
            registry=r,
        )
        self.out_of_rotation = Gauge(
            "reconciler_reputation_paused_nodes",
            "Nodes out of the sending rotation for reputation (listed or quarantined)",
            registry=r,
        )
        self.dnsbl_queries = Counter(
            "reconciler_dnsbl_queries",
            "DNSBL queries sent, by zone",
            ["zone"],
            registry=r,
        )
        self.alerts_active = Gauge(
            "reconciler_alerts_active",
            "Alert conditions currently holding, by severity",
            ["severity"],
            registry=r,
        )
        self.failed_slots = Gauge(
            "reconciler_failed_slots",
            "Node slots that failed and wait for an operator (`reconcile node retry NAME`): "
            "their re-creates or provisioning replacements are used up (the leader's last plan)",
            registry=r,
        )
        self.alert_conditions = Gauge(
            "reconciler_alert_conditions",
            "Alert conditions currently holding, by kind (the part of the alert key before "
            "':', e.g. down, bounce, cpu) and severity: what the Prometheus alert rules read",
            ["kind", "severity"],
            registry=r,
        )
        self.is_leader = Gauge(
            "reconciler_leader", "1 when this process holds leadership", registry=r
        )
        self.leadership_changes = Counter(
            "reconciler_leadership_changes", "Leadership taken or lost", ["event"], registry=r
        )
        self.scaling_decisions = Counter(
            "reconciler_scaling_decisions",
            "Autoscaler decisions that changed a count",
            ["region", "direction"],
            registry=r,
        )

        self.spec_revision = Gauge(
            "reconciler_spec_revision_info",
            "The spec revision running now (value 1): source files or git, and the revision "
            "(a commit, or files:<spec hash>)",
            ["source", "revision"],
            registry=r,
        )
        self.spec_refused = Gauge(
            "reconciler_spec_revision_refused",
            "1 while the last attempted spec revision was refused (invalid, unsigned, or its "
            "plan refused by a guard) and an older one keeps running",
            registry=r,
        )
        self.spec_fetches = Counter(
            "reconciler_spec_fetches",
            "Fetches of the git repository the daemon follows, by result (ok, failed)",
            ["result"],
            registry=r,
        )
        self.webhooks = Counter(
            "reconciler_git_webhooks",
            "Push notifications received on POST /v1/git/webhook, by result",
            ["result"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
