"""Nodes: upsert by (fleet, name), load_fleet, close, protection, costs of VPS and IP rows."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from state_builders import FakeClock, count_statements, make_node

from reconciler.core.errors import StoreError
from reconciler.core.fleet import IpStatus, NodeStatus, StepState, StepStatus
from state import SqlStore
from state import models as m
from state.store import InvalidRecordError, UnknownNodeError


def test_upsert_then_load_round_trips_every_field(store: SqlStore, clock: FakeClock) -> None:
    node = make_node(
        service_id=501,
        ip_address="192.0.2.10",
        hostname="mx1.example.net",
        pool="shared_default",
        status=NodeStatus.WARMING,
        reputation_score=87,
        current_load=Decimal("0.4200"),
        rdns_done=True,
        warmup_started_at=clock.now() - timedelta(days=3),
        approximate_cost=Decimal("14.98"),
        observed_generation="spec-abc",
    )
    store.upsert_node(node)
    (loaded,) = store.load_fleet("acme").nodes
    assert loaded.id == node.id
    assert loaded.service_id == 501
    assert loaded.ip_address == "192.0.2.10"
    assert loaded.hostname == "mx1.example.net"
    assert loaded.pool == "shared_default"
    assert loaded.status is NodeStatus.WARMING
    assert loaded.reputation_score == 87
    assert loaded.current_load == Decimal("0.42")
    assert loaded.rdns_done is True
    assert loaded.warmup_started_at == clock.now() - timedelta(days=3)
    assert loaded.approximate_cost == Decimal("14.98")
    assert loaded.observed_generation == "spec-abc"
    assert loaded.created_at == clock.now()
    assert loaded.status_changed_at == clock.now()
    assert loaded.created_at is not None
    assert loaded.created_at.tzinfo is not None


def test_pipeline_step_state_round_trips_and_survives_a_write_without_it(
    store: SqlStore, clock: FakeClock
) -> None:
    steps = (
        StepState("bootstrap", StepStatus.FAILED, 2, clock.now(), "ssh: connection refused"),
        StepState("rdns", StepStatus.DONE, 1, clock.now() - timedelta(minutes=3)),
    )
    store.upsert_node(make_node(steps=steps))
    (loaded,) = store.load_fleet("acme").nodes
    assert loaded.steps == steps
    assert loaded.step_done("rdns")
    assert not loaded.step_done("bootstrap")
    assert loaded.step("bootstrap") == steps[0]
    # a writer that knows nothing of steps (a cost refresh, say) keeps them
    store.upsert_node(make_node(plan="large"))
    (again,) = store.load_fleet("acme").nodes
    assert again.plan == "large"
    assert again.steps == steps


def test_update_keeps_identity_and_created_at(store: SqlStore, clock: FakeClock) -> None:
    store.upsert_node(make_node())
    created = clock.now()
    clock.advance(60)
    store.upsert_node(make_node(id="00000000-0000-0000-0000-000000000001", plan="large"))
    (loaded,) = store.load_fleet("acme").nodes
    assert loaded.id == make_node().id  # the recorded id wins
    assert loaded.plan == "large"
    assert loaded.created_at == created


def test_status_changed_at_moves_only_when_status_changes(
    store: SqlStore, clock: FakeClock
) -> None:
    store.upsert_node(make_node())
    clock.advance(10)
    store.upsert_node(make_node(plan="medium"))
    assert store.load_fleet("acme").nodes[0].status_changed_at == clock.now() - timedelta(
        seconds=10
    )
    clock.advance(10)
    store.upsert_node(make_node(status=NodeStatus.ACTIVE))
    assert store.load_fleet("acme").nodes[0].status_changed_at == clock.now()


def test_none_fields_never_erase_recorded_values(store: SqlStore) -> None:
    store.upsert_node(
        make_node(service_id=7, ip_address="192.0.2.7", hostname="h", approximate_cost=Decimal(15))
    )
    store.upsert_node(make_node(status=NodeStatus.ACTIVE))
    (loaded,) = store.load_fleet("acme").nodes
    assert (loaded.service_id, loaded.ip_address, loaded.hostname) == (7, "192.0.2.7", "h")
    assert loaded.approximate_cost == Decimal(15)
    assert loaded.status is NodeStatus.ACTIVE


def test_load_fleet_is_a_few_queries_whatever_the_size(store: SqlStore) -> None:
    nodes = [make_node(f"acme-dallas-{i:03d}", service_id=1000 + i) for i in range(300)]
    store.upsert_nodes(nodes)
    store.begin_intent("acme", "create", "acme-dallas-999", {"rid": "2"})
    with count_statements(store.engine) as statements:
        fleet = store.load_fleet("acme")
    assert len(fleet.nodes) == 300
    assert len(fleet.pending_intents) == 1
    assert len(statements) <= 3


def test_upsert_nodes_is_batched(store: SqlStore) -> None:
    nodes = [
        make_node(f"acme-dallas-{i:03d}", ip_address=f"10.0.{i // 250}.{i % 250 + 1}")
        for i in range(400)
    ]
    with count_statements(store.engine) as statements:
        store.upsert_nodes(nodes)
    assert len(store.load_fleet("acme").nodes) == 400
    assert len(statements) < 40  # a handful per chunk of 500 rows, not a few per node


def test_fleets_are_separate(store: SqlStore) -> None:
    store.upsert_node(make_node())
    store.upsert_node(make_node(fleet="other", id="3f1e9a52-5c1b-4d4e-9a41-0d7a1c2b3e4f"))
    assert [n.fleet for n in store.load_fleet("acme").nodes] == ["acme"]
    assert [n.fleet for n in store.load_fleet("other").nodes] == ["other"]


def test_service_id_is_unique_among_open_records(store: SqlStore) -> None:
    store.upsert_node(make_node("acme-dallas-001", service_id=42))
    with pytest.raises(StoreError, match="service id 42 is already recorded"):
        store.upsert_node(make_node("acme-dallas-002", service_id=42))
    assert [n.name for n in store.load_fleet("acme").nodes] == ["acme-dallas-001"]


def test_close_node_keeps_the_record_out_of_load_fleet(store: SqlStore, clock: FakeClock) -> None:
    store.upsert_node(make_node(service_id=9, ip_address="192.0.2.9", approximate_cost=Decimal(15)))
    store.close_node("acme", "acme-dallas-001", clock.now())
    store.close_node("acme", "acme-dallas-001", clock.now())  # idempotent
    assert store.load_fleet("acme").nodes == ()
    assert store.ip_addresses("acme") == []
    with store.engine.connect() as connection:
        row = connection.execute(sa.select(m.SendingNode.status, m.SendingNode.closed_at)).one()
    assert row.status == "decommissioned"
    assert row.closed_at == clock.now()
    # the name (and the service id of the gone server) can be recorded again
    store.upsert_node(make_node(id="7b0c3a3e-0000-4000-8000-000000000000", service_id=9))
    assert len(store.load_fleet("acme").nodes) == 1


def test_protection_survives_and_upsert_never_lowers_it(store: SqlStore) -> None:
    store.upsert_node(make_node())
    store.set_protected("acme", "acme-dallas-001", True)
    store.upsert_node(make_node(protected=False, status=NodeStatus.ACTIVE))
    fleet = store.load_fleet("acme")
    assert fleet.protected_names == frozenset({"acme-dallas-001"})
    assert fleet.nodes[0].protected
    store.set_protected("acme", "acme-dallas-001", False)
    assert store.load_fleet("acme").protected_names == frozenset()


def test_protecting_an_unknown_node_is_a_user_error(store: SqlStore) -> None:
    with pytest.raises(UnknownNodeError, match="no recorded node 'ghost'") as info:
        store.set_protected("acme", "ghost", True)
    assert info.value.hint


def test_cost_is_split_between_vps_and_ip_rows(store: SqlStore, clock: FakeClock) -> None:
    store.upsert_node(make_node(ip_address="192.0.2.1", approximate_cost=Decimal("14.98")))
    assert store.vps_costs("acme") == {"acme-dallas-001": Decimal("9.99")}
    (ip,) = store.ip_addresses("acme")
    assert ip["approximate_cost"] == "4.99"
    assert ip["status"] == IpStatus.ASSIGNED.value
    # finance's per-pool price wins over the default, the caller's ip_cost over both
    store.set_cost_constant("ip_monthly_price", "pool:vip", Decimal("6.50"), "finance", clock.now())
    store.upsert_node(
        make_node(
            "acme-dallas-002", ip_address="192.0.2.2", pool="vip", approximate_cost=Decimal(20)
        )
    )
    store.upsert_node(
        make_node(
            "acme-dallas-003",
            ip_address="192.0.2.3",
            approximate_cost=Decimal(20),
            ip_cost=Decimal("3.25"),
        )
    )
    assert store.vps_costs("acme")["acme-dallas-002"] == Decimal("13.50")
    assert store.vps_costs("acme")["acme-dallas-003"] == Decimal("16.75")
    totals = {n.name: n.approximate_cost for n in store.load_fleet("acme").nodes}
    assert totals == {
        "acme-dallas-001": Decimal("14.98"),
        "acme-dallas-002": Decimal(20),
        "acme-dallas-003": Decimal(20),
    }


def test_a_changed_ip_releases_the_old_one(store: SqlStore) -> None:
    store.upsert_node(make_node(ip_address="192.0.2.1", status=NodeStatus.WARMING))
    store.upsert_node(make_node(ip_address="192.0.2.2", status=NodeStatus.WARMING))
    (ip,) = store.ip_addresses("acme")
    assert ip["ip_address"] == "192.0.2.2"
    assert ip["status"] == "warming"
    store.upsert_node(make_node(status=NodeStatus.ACTIVE))
    assert store.ip_addresses("acme")[0]["status"] == "warmed"


def test_ip_status_and_reputation(store: SqlStore) -> None:
    store.upsert_node(make_node(ip_address="2001:db8::1"))
    assert store.set_ip_status("2001:0db8::0001", IpStatus.DEGRADED, reputation_state="poor") == 1
    store.upsert_node(make_node(ip_address="2001:db8::1", status=NodeStatus.ACTIVE))
    (ip,) = store.ip_addresses("acme")
    assert (ip["status"], ip["reputation_state"]) == ("degraded", "poor")  # not promoted
    with pytest.raises(InvalidRecordError, match="reputation state"):
        store.set_ip_status("2001:db8::1", IpStatus.BURNED, reputation_state="meh")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ip_address": "300.1.1.1"}, "not an IP address"),
        ({"approximate_cost": 9.99}, "must be a Decimal"),
        ({"approximate_cost": Decimal("1.00001")}, "does not fit"),
        ({"id": "not-a-uuid"}, "not a UUID"),
        ({"reputation_score": 101}, "reputation_score"),
    ],
)
def test_bad_values_are_refused(store: SqlStore, changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRecordError, match=message):
        store.upsert_node(make_node(**changes))
    assert store.load_fleet("acme").nodes == ()


def test_get_node(store: SqlStore) -> None:
    assert store.get_node("acme", "acme-dallas-001") is None
    store.upsert_node(make_node(service_id=3))
    found = store.get_node("acme", "acme-dallas-001")
    assert found is not None
    assert found.service_id == 3


def test_blocklist_events(store: SqlStore, clock: FakeClock) -> None:
    store.upsert_node(make_node(ip_address="192.0.2.5"))
    first = store.record_listing(
        "acme", "192.0.2.5", "zen.spamhaus.org", clock.now(), node="acme-dallas-001", details="x"
    )
    again = store.record_listing("acme", "192.0.2.5", "zen.spamhaus.org", clock.now())
    assert first == again
    (listing,) = store.open_listings("acme")
    assert (listing["node"], listing["zone"]) == ("acme-dallas-001", "zen.spamhaus.org")
    assert store.record_delisting("192.0.2.5", "zen.spamhaus.org", clock.advance(3600)) == 1
    assert store.open_listings() == []


def test_a_full_load_over_several_fetch_batches_gives_every_node_once_in_name_order(
    store: SqlStore, clock: FakeClock
) -> None:
    """``load_fleet`` converts the rows batch by batch as the cursor gives them (PostgreSQL:
    a server-side cursor; issue 14, the daemon's RSS peak): a fleet of more than two batches,
    not a multiple of one, reads back whole, each node once, in name order, and the same node
    reads the same as alone (``get_node``)."""
    from state.store import _OPEN_NODES_BATCH

    count = 2 * _OPEN_NODES_BATCH + 7
    written = [
        make_node(
            name=f"acme-sea-{i:05d}",
            status=NodeStatus.ACTIVE,
            service_id=1000 + i,
            ip_address=f"10.0.{i // 256}.{i % 256}",
            approximate_cost=Decimal("14.98"),
        )
        for i in reversed(range(count))
    ]
    for start in range(0, count, 500):
        store.upsert_nodes(written[start : start + 500])
    store.close_node("acme", "acme-sea-00003", clock.now())
    loaded = store.load_fleet("acme").nodes
    names = [n.name for n in loaded]
    assert names == sorted(n.name for n in written if n.name != "acme-sea-00003")
    assert len(set(names)) == count - 1
    by_name = {n.name: n for n in loaded}
    for name in ("acme-sea-00000", f"acme-sea-{_OPEN_NODES_BATCH:05d}", names[-1]):
        assert by_name[name] == store.get_node("acme", name)
    assert by_name["acme-sea-00010"].ip_address == "10.0.0.10"
    assert by_name["acme-sea-00010"].service_id == 1010
