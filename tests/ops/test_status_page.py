"""The status page in a real headless Chromium: 1,000 nodes, its numbers against /v1/fleet,
who may read it (tokens, costs), escaping, and the hostile paths."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from reconciler.daemon.heartbeats import MasterSecret
from reconciler.daemon.http import create_app
from reconciler.daemon.running import Daemon, DaemonSettings
from reconciler.daemon.statuspage import StatusTokens, authorize
from specs.loading import load_spec
from tests.daemon.serving import serve_in_thread
from tests.fakes.clocks import FakeClock
from tests.fakes.cloud import FakeCloud
from tests.fakes.store import InMemoryStore
from tests.ops.browser import Page, dump_dom
from tests.ops.demofleet import populate, spec_text

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class _Leadership:
    def try_acquire(self) -> int | None:
        return 3

    def check(self) -> bool:
        return True

    def release(self) -> None:
        return None


def make_daemon(
    tmp_path: Path, nodes: int, *, listen: str = "127.0.0.1", tokens: StatusTokens | None = None
) -> Daemon:
    tmp_path.mkdir(parents=True, exist_ok=True)
    spec_path = tmp_path / "fleet.yaml"
    spec_path.write_text(spec_text("acme", nodes))
    clock = FakeClock(NOW)
    store = InMemoryStore(now=clock.now)
    populate(store, "acme", nodes, NOW)
    daemon = Daemon(
        DaemonSettings(
            paths=(str(spec_path),),
            listen=(listen, 0),
            status_tokens=tokens or StatusTokens(),
        ),
        load_spec([spec_path]),
        store,
        FakeCloud(clock=clock),
        _Leadership(),
        MasterSecret("a-master-secret-for-tests"),
        clock=clock,
        monotonic=clock.monotonic,
    )

    async def prepare() -> None:
        await daemon.guard.tick()
        await daemon._refresh(initial=True)
        await daemon._job_sweep()
        await daemon._job_autoscale()

    asyncio.run(prepare())
    return daemon


@pytest.fixture(scope="module")
def thousand(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str]]:
    daemon = make_daemon(tmp_path_factory.mktemp("status"), 1000)
    app = create_app(daemon, daemon.metrics, daemon.verifier, daemon.batcher)
    with serve_in_thread(app) as url:
        yield daemon, url


def test_the_page_renders_1000_nodes_in_chromium_and_matches_the_fleet_api(
    thousand: tuple[Daemon, str],
) -> None:
    daemon, url = thousand
    fleet = httpx.get(url + "/v1/fleet", timeout=30).json()
    page = Page(dump_dom(url + "/status"))
    assert page.scripts == 0
    nodes = fleet["nodes"]
    assert len(nodes) == 1000
    # header and counts
    assert page.by_id["fleet-name"] == "acme"
    assert page.by_id["node-total"] == "1000"
    phases: dict[str, int] = {}
    grades: dict[str, int] = {}
    for n in nodes:
        phases[n["status"]] = phases.get(n["status"], 0) + 1
        grades[n["health"]] = grades.get(n["health"], 0) + 1
    for phase, count in phases.items():
        assert page.by_id[f"phase-{phase}"] == f"{count} {phase}"
    for grade, count in grades.items():
        assert page.by_id[f"grade-{grade}"] == f"{count} {grade}"
    # the node table: one row per node, in the same order, with the same figures
    header = page.tables["node-table"][0]
    rows = [
        row
        for ident in sorted(
            (t for t in page.tables if t.startswith("node-table-")),
            key=lambda t: int(t.rsplit("-", 1)[1]),
        )
        for row in page.tables[ident]
    ]
    assert len(rows) == 1000
    column = {name: i for i, name in enumerate(header)}
    for row, node in zip(rows, nodes, strict=True):
        assert row[column["node"]] == node["name"]
        hold = node["hold"]
        if hold is not None and hold["kind"] != "maintenance":
            # what the hold is: cordoned, draining, drained (who and why in the title)
            assert row[column["status"]] == hold["state"]
        else:
            assert row[column["status"]] == node["status"]
        assert row[column["queue"]] == (
            "-" if node["queue_length"] is None else str(node["queue_length"])
        )
        expected_rate = "-" if node["bounce_rate"] is None else f"{node['bounce_rate']:.2%}"
        assert row[column["bounce"]] == expected_rate
        limit = node["daily_limit"]
        assert row[column["limit/day"]] == ("-" if limit is None else str(limit))
        assert row[column["health"]] == node["health"]
        assert row[column["cost/mo"]] == f"${node['monthly_cost']}"  # loopback, no cost token
    # groups against the API's groups
    groups = page.tables["groups"][1:]
    assert len(groups) == len(fleet["groups"])
    for row, group in zip(groups, fleet["groups"], strict=True):
        assert row[0] == group["region"]
        assert row[2] == str(group["nodes"])
        assert row[4] == f"{group['capacity_per_day']:,}"
    assert page.by_id["monthly-cost"] == f"${fleet['monthly_cost']}"
    # needs attention: every unhealthy node is listed
    unhealthy = [n["name"] for n in nodes if n["unhealthy"]]
    assert unhealthy
    held = [n["name"] for n in nodes if n["hold"]]
    assert held
    assert int(page.by_id["attention-count"]) >= len(unhealthy) + len(held)
    attention = dump_dom(url + "/status").split('id="attention"', 1)[1].split("</section>")[0]
    for name in held[:20]:
        assert f"<b>{name}</b>: " in attention
    assert "cordoned by cli ops@host since" in attention
    assert "(reconcile node uncordon " in attention
    # warmup curves and utilization against the target line are drawn
    assert "warmup" in page.by_id
    assert daemon.is_leader
    assert "epoch 3" in dump_dom(url + "/status")


def test_the_page_serves_with_a_policy_that_allows_no_script(thousand: tuple[Daemon, str]) -> None:
    _, url = thousand
    response = httpx.get(url + "/status", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src" not in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert "<script" not in response.text
    assert response.headers["cache-control"] == "no-store"
    assert httpx.post(url + "/status", timeout=10).status_code == 405  # read-only


def test_tokens_beyond_loopback_and_who_sees_costs(tmp_path: Path) -> None:
    open_daemon = make_daemon(tmp_path / "a", 20, listen="0.0.0.0")
    app = create_app(open_daemon, open_daemon.metrics, open_daemon.verifier, open_daemon.batcher)
    with serve_in_thread(app) as url:
        refused = httpx.get(url + "/status", timeout=10)
        assert refused.status_code == 403
        assert "RECONCILER_STATUS_TOKEN" in refused.text

    tokens = StatusTokens(status="view-token-0123456789", costs="cost-token-0123456789")
    daemon = make_daemon(tmp_path / "b", 20, listen="10.0.0.5", tokens=tokens)
    app = create_app(daemon, daemon.metrics, daemon.verifier, daemon.batcher)
    with serve_in_thread(app) as url:
        assert httpx.get(url + "/status", timeout=10).status_code == 401
        wrong = httpx.get(url + "/status", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        viewer = httpx.get(
            url + "/status", headers={"Authorization": f"Bearer {tokens.status}"}, timeout=10
        )
        assert viewer.status_code == 200
        assert 'id="monthly-cost"' not in viewer.text
        assert "cost/mo" not in viewer.text
        admin = httpx.get(url + "/status", params={"token": tokens.costs}, timeout=10)
        assert admin.status_code == 200
        assert 'id="monthly-cost"' in admin.text
        assert tokens.costs not in admin.text  # the token is never echoed


def test_authorize_rules() -> None:
    none = StatusTokens()
    assert authorize("127.0.0.1", none, None).status == 200
    assert authorize("127.0.0.1", none, None).show_costs
    assert authorize("::1", none, None).status == 200
    assert authorize("0.0.0.0", none, None).status == 403
    both = StatusTokens("s" * 20, "c" * 20)
    assert not authorize("127.0.0.1", both, None).show_costs  # a cost token exists: ask for it
    assert authorize("127.0.0.1", both, "c" * 20).show_costs
    assert authorize("127.0.0.1", both, "x").status == 401
    assert authorize("192.0.2.1", both, "s" * 20).status == 200
    assert not authorize("192.0.2.1", both, "s" * 20).show_costs
    assert authorize("192.0.2.1", both, "s" * 19).status == 401


def test_outside_text_is_escaped_and_a_refused_spec_and_staleness_show(tmp_path: Path) -> None:
    daemon = make_daemon(tmp_path, 10)
    daemon.source.mark_failed(
        "files:deadbeef", "regions.yaml:2:3: <script>alert(1)</script> & co", NOW
    )
    daemon._store_ok = False
    code, body = daemon.status_page(None, None)
    assert code == 200
    assert "<script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in body
    assert 'id="spec-refused"' in body
    assert 'id="stale"' in body
    assert "unreachable" in body


def test_hooks_for_phases_blocklists_and_warmup_render_when_present() -> None:
    from reconciler.views.pages import StatusHeader, StatusInputs, attention_items

    node = {
        "name": "acme-dallas-001",
        "region": "dallas",
        "status": "provisioning",
        "phase": "dns",
        "phase_error": "PTR does not match",
        "blocklist": [{"zone": "zen.spamhaus.org", "listed": True}, {"zone": "b", "listed": False}],
        "health": "unknown",
    }
    inputs = StatusInputs(
        header=StatusHeader(fleet="acme", generated_at=NOW), fleet={"nodes": [node], "groups": []}
    )
    texts = [text for _, _, text in attention_items(inputs)]
    assert "provisioning failed: PTR does not match" in texts
    assert "listed on zen.spamhaus.org" in texts
    from reconciler.views.pages import render_status_page

    body = render_status_page(dataclasses.replace(inputs, show_costs=False))
    assert "zen.spamhaus.org" in body
    assert 'id="phase-dns"' in body


def test_reputation_figures_reach_the_page() -> None:
    """Issue 13's assessment (``reputation.nodes`` in /v1/fleet): listings become the node's
    blocklist column and a needs-attention item; a quarantine asks for `node resume`."""
    from reconciler.daemon.statuspage import with_reputation
    from reconciler.views.pages import StatusHeader, StatusInputs, attention_items

    fleet = {
        "nodes": [
            {"name": "acme-dallas-001", "region": "dallas", "status": "paused", "health": "ok"},
            {"name": "acme-dallas-002", "region": "dallas", "status": "paused", "health": "ok"},
            {"name": "acme-dallas-003", "region": "dallas", "status": "active", "health": "ok"},
        ],
        "groups": [],
        "reputation": {
            "enabled": True,
            "nodes": {
                "acme-dallas-001": {
                    "ip_state": "listed",
                    "reasons": ["listed on zen.spamhaus.org (SBL, 127.0.0.2)"],
                    "hold_reasons": [],
                },
                "acme-dallas-002": {
                    "ip_state": "quarantined",
                    "reasons": ["hard-bounce rate 6.00% over 5.00% (60 of 1000)"],
                    "hold_reasons": [],
                },
                "acme-dallas-003": {"ip_state": "warmed", "reasons": [], "hold_reasons": []},
            },
        },
    }
    document = with_reputation(fleet)
    nodes = {n["name"]: n for n in document["nodes"]}
    assert nodes["acme-dallas-001"]["blocklist"] == ["zen.spamhaus.org (SBL, 127.0.0.2)"]
    assert nodes["acme-dallas-003"]["blocklist"] == []
    inputs = StatusInputs(header=StatusHeader(fleet="acme", generated_at=NOW), fleet=document)
    texts = [text for _, _, text in attention_items(inputs)]
    assert "listed on zen.spamhaus.org (SBL, 127.0.0.2)" in texts
    assert any("quarantined: hard-bounce rate" in t and "node resume" in t for t in texts)
    from reconciler.views.pages import render_status_page

    page = render_status_page(inputs)
    assert ">clean<" in page  # a node the lists do not list
    assert with_reputation({"nodes": [], "reputation": {"enabled": False}}) == {
        "nodes": [],
        "reputation": {"enabled": False},
    }
