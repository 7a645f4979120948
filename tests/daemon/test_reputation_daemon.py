"""Reputation in the daemon: a node listed on a (real BIND) DNSBL leaves the rotation and comes
back after delisting and the hysteresis; an agent reporting bounces over the pause level gets
its node quarantined; complaints arrive through the authenticated endpoint; the rotation is
served to the sending platform with each node's remaining warmup allowance."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from reconciler.core.fleet import NodeStatus, RecordedNode
from reconciler.core.reputation import IpState, SendCounts, day_of
from reconciler.daemon.agent import Agent, Figures
from reconciler.daemon.heartbeats import MasterSecret
from reconciler.daemon.http import create_app
from reconciler.daemon.reputation import ReputationJob
from reconciler.daemon.rotation import create_handlers, platform_token
from reconciler.daemon.running import Daemon, DaemonSettings, daemon_blocklist_checker
from reconciler.wiring import build_blocklist_checker
from specs.loading import load_spec
from state import SqlStore, open_store
from state import models as m
from state.reputation import SqlReputationStore
from tests.fakes.clocks import FakeClock
from tests.fakes.cloud import FakeCloud
from tests.services.bind import BindServer, dnsbl_zone_text

ZONE = "bl.dnsbl.test"
LISTED_IP = "192.0.2.10"
MASTER = "a-master-secret-for-tests"

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: acme}}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
regions:
  dallas: {{location_id: 13, plan: baseline, nodes: 2}}
ip_pools:
  shared: {{size: 2, regions: [dallas], warmup: standard}}
reputation:
  resolver: 127.0.0.1:{port}
  blocklists:
    - zone: {zone}
      listings: [{{codes: 127.0.0.2, name: BL, severity: high}}]
  delist_after: 2
  min_volume: 500
"""


def node(
    name: str, ip: str, status: NodeStatus, started_days_ago: float, clock: FakeClock
) -> RecordedNode:
    return RecordedNode(
        id=str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
        fleet="acme",
        name=name,
        region="dallas",
        plan="baseline",
        status=status,
        service_id=abs(hash(name)) % 100000,
        ip_address=ip,
        pool="shared",
        rdns_done=True,
        warmup_started_at=clock.now() - timedelta(days=started_days_ago),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[SqlStore]:
    opened = open_store(f"sqlite:///{tmp_path}/state.db", upgrade=True, clock=clock.now)
    opened.upsert_nodes(
        [
            node("acme-dallas-001", LISTED_IP, NodeStatus.ACTIVE, 100, clock),
            node("acme-dallas-002", "192.0.2.20", NodeStatus.WARMING, 9, clock),
        ]
    )
    yield opened
    opened.close()


def spec_file(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(SPEC.format(port=port, zone=ZONE))
    return path


def test_listed_node_leaves_the_rotation_and_returns_after_delisting(
    bind_server: BindServer, store: SqlStore, clock: FakeClock, tmp_path: Path
) -> None:
    bind_server.set_zone(ZONE, dnsbl_zone_text(ZONE, {LISTED_IP: "127.0.0.2"}, serial=1))
    spec = load_spec([spec_file(tmp_path, bind_server.port)]).spec
    rep = SqlReputationStore(store)
    job = ReputationJob("acme", store, rep, lambda s: build_blocklist_checker(s.reputation, {}))

    def check() -> list[str]:
        asyncio.run(
            job.run(
                spec, store.load_fleet("acme"), clock.now(), epoch=None or 0, force_blocklists=True
            )
        )
        return [e.node for e in job.rotation(store.load_fleet("acme"), frozenset())]

    assert check() == ["acme-dallas-002"]
    assert job.view.nodes["acme-dallas-001"].ip_state is IpState.LISTED
    assert any(c.key == f"listed:acme-dallas-001:{ZONE}" for c in job.view.conditions)
    (event,) = rep.listing_history("acme")
    assert (event["node"], event["zone"], event["codes"]) == ("acme-dallas-001", ZONE, "127.0.0.2")
    assert event["delisted_at"] == ""

    bind_server.set_zone(ZONE, dnsbl_zone_text(ZONE, {}, serial=2))  # delisted by the list
    clock.advance(3600)
    first_clean = clock.now()
    assert check() == ["acme-dallas-002"]  # one clean check: still out (hysteresis)
    clock.advance(3600)
    assert check() == ["acme-dallas-001", "acme-dallas-002"]
    (event,) = rep.listing_history("acme")
    assert event["delisted_at"] == first_clean.isoformat()
    assert not any(c.key.startswith("listed:") for c in job.view.conditions)


def test_a_resolver_answering_errors_pauses_nothing(
    bind_server: BindServer, store: SqlStore, clock: FakeClock, tmp_path: Path
) -> None:
    from tests.services.bind import zone_text

    bind_server.set_zone(".", zone_text(".", ["* IN A 127.255.255.254"]))
    spec = load_spec([spec_file(tmp_path, bind_server.port)]).spec
    job = ReputationJob(
        "acme",
        store,
        SqlReputationStore(store),
        lambda s: build_blocklist_checker(s.reputation, {}),
    )
    asyncio.run(
        job.run(spec, store.load_fleet("acme"), clock.now(), epoch=0, force_blocklists=True)
    )
    assert not any(n.pause for n in job.view.nodes.values())
    assert [c.key for c in job.view.conditions] == [f"zone:{ZONE}"]
    assert len(job.rotation(store.load_fleet("acme"), frozenset())) == 2


class Reporting:
    """An agent's figures: 900 delivered and 100 hard bounces per read (10 %)."""

    def read(self) -> Figures:
        return Figures(0.1, 0.2, 0.3, 0, sent=900, bounces=100, complaints=0, soft_bounces=7)


def test_agent_bounces_over_the_pause_level_quarantine_the_node(
    store: SqlStore, clock: FakeClock, tmp_path: Path
) -> None:
    loaded = load_spec([spec_file(tmp_path, 53)])
    master = MasterSecret(MASTER)

    class Leading:
        def try_acquire(self) -> int | None:
            return 1

        def check(self) -> bool:
            return True

        def release(self) -> None:
            return None

    daemon = Daemon(
        DaemonSettings(paths=(str(tmp_path / "fleet.yaml"),), listen=None),
        loaded,
        store,
        FakeCloud(clock=clock),
        Leading(),
        master,
        clock=clock,
        monotonic=clock.monotonic,
        reputation=SqlReputationStore(store),
        checker_factory=None,
    )
    rotation, complaints = create_handlers(
        daemon, platform_token(master.raw, "acme"), now=clock.now
    )
    from starlette.routing import Route

    app = create_app(
        daemon,
        daemon.metrics,
        daemon.verifier,
        daemon.batcher,
        wall_clock=lambda: clock.now().timestamp(),
        lifespan_batcher=False,
        extra_routes=[
            Route("/v1/rotation", rotation, methods=["GET"]),
            Route("/v1/complaints", complaints, methods=["POST"]),
        ],
    )
    token = platform_token(master.raw, "acme")

    async def scenario() -> dict[str, Any]:
        await daemon._refresh(initial=True)
        await daemon.guard.tick()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
            auth = {"Authorization": f"Bearer {token}"}
            assert (await client.get("/v1/rotation")).status_code == 401
            assert (
                await client.get("/v1/rotation", headers={"Authorization": "Bearer nope"})
            ).status_code == 401
            await daemon._job_reputation()
            before = (await client.get("/v1/rotation", headers=auth)).json()
            agent = Agent(
                "acme-dallas-001",
                "http://daemon",
                master.node_secret("acme-dallas-001"),
                Reporting(),
                client=client,
                wall_clock=lambda: clock.now().timestamp(),
                monotonic=itertools.count(0.0, 30.0).__next__,  # a beat covers 30 s
            )
            assert await agent.beat_once()
            await daemon.batcher.flush()
            await daemon._job_reputation()
            after = (await client.get("/v1/rotation", headers=auth)).json()
            # complaints for the warming node, by IP, one event sent twice
            event = {"ip": "192.0.2.20", "count": 3, "id": "fbl-1"}
            answer = await client.post("/v1/complaints", json={"complaints": [event]}, headers=auth)
            again = await client.post("/v1/complaints", json={"complaints": [event]}, headers=auth)
            bad = await client.post(
                "/v1/complaints", json={"complaints": [{"ip": "203.0.113.9"}]}, headers=auth
            )
            unauth = await client.post("/v1/complaints", json={"complaints": [event]})
            return {
                "before": before,
                "after": after,
                "answer": answer.json(),
                "again": again.json(),
                "bad": (bad.status_code, bad.json()),
                "unauth": unauth.status_code,
            }

    result = asyncio.run(scenario())
    before = {n["node"]: n for n in result["before"]["nodes"]}
    assert set(before) == {"acme-dallas-001", "acme-dallas-002"}
    warming = before["acme-dallas-002"]
    assert warming["daily_limit"] == 10 + (100 - 10) * 9 // 13  # day 10 of the standard ramp
    assert warming["remaining_today"] == warming["daily_limit"]
    assert before["acme-dallas-001"]["remaining_today"] is None  # warmed: no warmup cap
    assert [n["node"] for n in result["after"]["nodes"]] == ["acme-dallas-002"]
    assessment = (
        daemon.reputation_job.view.nodes["acme-dallas-001"] if daemon.reputation_job else None
    )
    assert assessment is not None
    assert assessment.ip_state is IpState.QUARANTINED
    assert any(a.key == "quarantined:acme-dallas-001" for a in daemon.alerter.active)
    # the planner is told: the node gets a typed PAUSE (status paused) at the next reconcile
    paused = daemon.plan_options().reputation_paused
    assert paused is not None
    assert list(paused) == ["acme-dallas-001"]
    assert "quarantined: hard-bounce rate 10.00%" in paused["acme-dallas-001"]
    snapshot = SqlReputationStore(store).reputation_snapshot(
        "acme", clock.now() - timedelta(days=1), day_of(clock.now())
    )
    counts = snapshot.buckets["acme-dallas-001"][-1].counts
    assert (counts.sent, counts.hard_bounces, counts.soft_bounces) == (900, 100, 7)
    assert snapshot.records["acme-dallas-001"].quarantine is not None
    assert result["answer"]["accepted"] == 3
    assert result["again"]["duplicates"] == 1
    assert result["again"]["recorded"] == 0
    assert snapshot.buckets["acme-dallas-002"][-1].counts.complaints == 3
    assert result["bad"][0] == 422
    assert "no node" in result["bad"][1]["refused"][0]["reason"]
    assert result["unauth"] == 401
    # an operator's resume clears the quarantine: back in rotation at the next assessment
    clock.advance(600)
    assert SqlReputationStore(store).resume_reputation("acme", "acme-dallas-001", clock.now())
    clock.advance(3600)
    asyncio.run(daemon._job_reputation())
    assert "acme-dallas-001" in [n["node"] for n in daemon.rotation_document()["nodes"]]
    assert daemon.plan_options().reputation_paused == {}
    shown = daemon.reputation_document()["nodes"]
    assert shown["acme-dallas-001"]["ip_state"] == "warmed"
    assert shown["acme-dallas-002"]["ip_state"] == "warming"


def test_node_resume_command(
    store: SqlStore,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from reconciler.cli.main import main
    from reconciler.core.reputation import ReputationRecord

    rep = SqlReputationStore(store)
    record = ReputationRecord(
        "acme-dallas-001", IpState.QUARANTINED, quarantine="bounces", paused_at=clock.now()
    )
    rep.save_reputation("acme", [record], [], {}, clock.now())
    path = spec_file(tmp_path, 53)
    monkeypatch.setenv("RECONCILER_DATABASE_URL", f"sqlite:///{tmp_path}/state.db")
    assert main(["node", "resume", "acme-dallas-001", "-f", str(path)]) == 0
    assert "cleared" in capsys.readouterr().out
    after = rep.reputation_snapshot("acme", clock.now(), day_of(clock.now()))
    assert after.records["acme-dallas-001"].quarantine is None
    assert main(["node", "resume", "acme-dallas-009", "-f", str(path)]) == 1
    assert "no recorded node 'acme-dallas-009'" in capsys.readouterr().err
    monkeypatch.setenv("RECONCILER_NODE_MASTER_SECRET", MASTER)
    assert main(["platform-token", "-f", str(path)]) == 0
    assert capsys.readouterr().out.strip() == platform_token(MASTER.encode(), "acme")


def test_the_daemon_never_uses_a_resolver_nobody_named(
    store: SqlStore, clock: FakeClock, tmp_path: Path
) -> None:
    path = spec_file(tmp_path, 53)
    path.write_text(path.read_text().replace("  resolver: 127.0.0.1:53\n", ""))
    spec = load_spec([path]).spec
    assert spec.reputation.resolver is None
    # the factory the daemon process is wired with (``serve_daemon``): it once fell back to
    # /etc/resolv.conf, so a daemon on a machine naming a resolver there queried it
    assert daemon_blocklist_checker(spec, {}) is None
    job = ReputationJob(
        "acme",
        store,
        SqlReputationStore(store),
        lambda s: daemon_blocklist_checker(s, {}),
    )
    asyncio.run(
        job.run(spec, store.load_fleet("acme"), clock.now(), epoch=0, force_blocklists=True)
    )
    assert job.view.queries == {}
    assert job.view.probes == {}
    assert [c.key for c in job.view.conditions] == ["blocklists:unchecked"]
    assert len(job.rotation(store.load_fleet("acme"), frozenset())) == 2


class _StoreDown:
    """The platform side of a daemon whose store fails while it records complaints."""

    complaint_window = timedelta(days=7)

    def rotation_document(self) -> dict[str, Any]:
        return {"nodes": []}

    def node_for(self, name: str | None, ip: str | None) -> str | None:
        return name

    async def record_complaints(self, complaints: list[Any]) -> tuple[int, int]:
        from reconciler.core.errors import StoreError

        raise StoreError("state store failed (sqlite) while adding complaints: disk I/O error")


def test_complaints_are_refused_with_503_when_the_store_fails() -> None:
    """Nothing is counted (one transaction), so the platform is told to send them again."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    _, complaints = create_handlers(_StoreDown(), "platform-token")
    app = Starlette(routes=[Route("/v1/complaints", complaints, methods=["POST"])])

    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://daemon") as client:
            return await client.post(
                "/v1/complaints",
                json={"complaints": [{"node": "acme-dallas-001", "id": "fbl-9"}]},
                headers={"Authorization": "Bearer platform-token"},
            )

    answer = asyncio.run(scenario())
    assert answer.status_code == 503
    assert answer.json() == {"error": "store_unavailable"}
    assert "disk I/O" not in answer.text


def test_an_assessment_writes_only_the_records_that_changed(
    store: SqlStore, clock: FakeClock, tmp_path: Path
) -> None:
    """The leader's job saves a node's reputation row only when the assessment changed it
    (issue 14: every row rewritten every 30 s was most of the job's cost at rest); what the
    store holds equals what the job decided."""
    spec = load_spec([spec_file(tmp_path, 53)]).spec
    rep = SqlReputationStore(store)
    job = ReputationJob("acme", store, rep, None)

    def written() -> dict[str, Any]:
        with store._engine.connect() as connection:
            rows = connection.execute(
                sa.select(m.SendingNode.name, m.NodeReputation.updated_at).join(
                    m.NodeReputation, m.NodeReputation.node_id == m.SendingNode.id
                )
            ).all()
        return {name: at for name, at in rows}

    def run() -> None:
        asyncio.run(job.run(spec, store.load_fleet("acme"), clock.now(), epoch=0))

    run()
    first = written()
    assert set(first) == {"acme-dallas-001", "acme-dallas-002"}
    clock.advance(30)
    run()
    assert written() == first  # nothing changed: nothing written
    # bounces over the pause level quarantine one node: only its row is written again
    rep.add_send_counts("acme", [("acme-dallas-001", clock.now(), SendCounts(900, 100, 0, 0))])
    clock.advance(30)
    run()
    after = written()
    assert after["acme-dallas-002"] == first["acme-dallas-002"]
    assert after["acme-dallas-001"] > first["acme-dallas-001"]
    stored = rep.reputation_snapshot("acme", clock.now() - timedelta(days=1), day_of(clock.now()))
    assert stored.records["acme-dallas-001"].quarantine is not None
    assert job.view.nodes["acme-dallas-001"].ip_state is IpState.QUARANTINED
    clock.advance(30)
    run()
    assert written() == after
