"""Provisioning facts of a node: pinned host key, bundle version, quarantine, maintenance."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from state_builders import FakeClock, make_node

from reconciler.core.fleet import HostKey, Maintenance, NodeStatus
from state import SqlStore
from state.store import InvalidRecordError, UnknownNodeError

KEY = HostKey("ssh-ed25519", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3Q", "SHA256:abc")


def test_host_key_bundle_and_quarantine_round_trip(store: SqlStore) -> None:
    node = make_node(status=NodeStatus.PROVISIONING, host_key=KEY, bundle_version="a" * 64)
    store.upsert_node(node)
    (loaded,) = store.load_fleet("acme").nodes
    assert loaded.host_key == KEY
    assert loaded.bundle_version == "a" * 64
    # a record written without them (an older copy) keeps the recorded ones
    store.upsert_node(replace(node, host_key=None, bundle_version=None))
    (loaded,) = store.load_fleet("acme").nodes
    assert loaded.host_key == KEY
    assert loaded.bundle_version == "a" * 64
    store.upsert_node(replace(node, quarantine="presented another host key"))
    assert store.load_fleet("acme").nodes[0].quarantine == "presented another host key"
    released = store.clear_quarantine("acme", node.name, repin=True)
    assert released.quarantine is None
    assert released.host_key is None
    (loaded,) = store.load_fleet("acme").nodes
    assert loaded.quarantine is None
    assert loaded.host_key is None


def test_the_agent_url_is_recorded_and_one_that_could_carry_a_secret_is_refused(
    store: SqlStore,
) -> None:
    url = "https://fleet.example.com:8443/v1/heartbeats"
    node = make_node(status=NodeStatus.PROVISIONING, bundle_version="a" * 64, agent_url=url)
    store.upsert_node(node)
    (loaded,) = store.load_fleet("acme").nodes
    assert loaded.agent_url == url
    # an older copy written without it keeps it
    store.upsert_node(replace(node, agent_url=None))
    assert store.load_fleet("acme").nodes[0].agent_url == url
    for bad in (
        "https://user:s3cret@fleet.example.com/v1/heartbeats",
        "https://fleet.example.com/v1/heartbeats?token=s3cret",
        "https://fleet.example.com/v1/heartbeats#s3cret",
        "ftp://fleet.example.com/",
    ):
        with pytest.raises(InvalidRecordError, match="agent URL") as caught:
            store.upsert_node(replace(node, agent_url=bad))
        assert "s3cret" not in str(caught.value)
    assert store.load_fleet("acme").nodes[0].agent_url == url


def test_maintenance_survives_record_rewrites(store: SqlStore, clock: FakeClock) -> None:
    node = make_node(status=NodeStatus.ACTIVE)
    store.upsert_node(node)
    since = clock.now() - timedelta(minutes=5)
    marked = store.set_maintenance("acme", node.name, Maintenance("kernel update", "alice", since))
    assert marked.maintenance == Maintenance("kernel update", "alice", since)
    # the engine rewrites the record (it read it before the operator acted): kept
    store.upsert_node(replace(node, status=NodeStatus.MAINTENANCE))
    (loaded,) = store.load_fleet("acme").nodes
    assert loaded.maintenance is not None
    assert loaded.maintenance.by == "alice"
    ended = store.set_maintenance(
        "acme", node.name, Maintenance("kernel update", "alice", since, ended_at=clock.now())
    )
    assert ended.maintenance is not None
    assert not ended.maintenance.active
    cleared = store.set_maintenance("acme", node.name, None)
    assert cleared.maintenance is None
    with pytest.raises(UnknownNodeError, match="no recorded node"):
        store.set_maintenance("acme", "acme-dallas-404", None)
