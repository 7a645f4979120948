"""Nodes in service: the rolling re-bootstrap of a changed bundle (within the disruption
budget, each node in maintenance while it is updated) and the scheduled drift checks (host
key, DNS and FCrDNS, the bootstrap's files: repaired or quarantined, never left in rotation)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.core.fleet import IntentStatus, NodeStatus, StepStatus
from reconciler.core.plans import Action
from tests.provisioning.harness import LaterClock, spec_yaml, with_ports, world

pytestmark = pytest.mark.anyio


AGENT_URL = "http://127.0.0.1:9/v1/heartbeats"  # the daemon's (never reached here)


def _one_at_a_time(text: str) -> str:
    return text.replace("max_unavailable: 2", "max_unavailable: 1")


async def test_a_changed_bundle_rolls_through_within_the_disruption_budget(
    reachable_dir: Path,
) -> None:
    async with world(reachable_dir, _one_at_a_time(spec_yaml("rb", {"seattle": 3}))) as w:
        w.ports = with_ports(w.ports, agent_url=AGENT_URL)
        await w.run()
        before = w.nodes("rb")
        assert all(n.status is NodeStatus.WARMING for n in before.values())
        old = {n.bundle_version for n in before.values()}
        assert len(old) == 3  # each node's bundle names the node
        plan, _ = await w.run(dry_run=True)
        assert not [c for c in plan.changes if c.step == "rebootstrap"]
        # a new Postfix tuning: a new bundle version for every node
        w.spec_path.write_text(
            _one_at_a_time(spec_yaml("rb", {"seattle": 3}, postfix={"default_process_limit": 120}))
        )
        assert all(n.agent_url == AGENT_URL for n in before.values())
        # a run that does not know the nodes' heartbeat URL (a CLI run beside a daemon)
        # renders their bundles with the URL recorded for them: the change rolls, and the
        # nodes keep their URL
        w.ports = with_ports(w.ports, agent_url=None)
        plan, _ = await w.run(dry_run=True)
        rolling = [c for c in plan.changes if c.step == "rebootstrap"]
        assert len(rolling) == 1  # max_unavailable 1: one node at a time
        assert rolling[0].action is Action.PROVISION
        assert "bundle changed" in rolling[0].reason
        assert "in maintenance while it is updated" in rolling[0].reason
        assert rolling[0].status is NodeStatus.WARMING  # where it goes back to
        assert any("2 node(s) wait for the disruption budget" in n for n in plan.notes)
        updated: list[str] = []
        for _ in range(3):
            plan, report = await w.run()
            assert report is not None
            assert not report.failed
            updated.extend(c.address for c in plan.changes if c.step == "rebootstrap")
        assert sorted(updated) == sorted(before)
        after = w.nodes("rb")
        for name, node in after.items():
            assert node.status is NodeStatus.WARMING
            assert node.bundle_version not in old
            assert node.step_done("rebootstrap")
            stand_in = w.stand_ins.nodes.by_name(name)
            assert stand_in is not None
            main_cf = (stand_in.root / "etc/postfix/main.cf").read_text()
            assert "default_process_limit = 120" in main_cf
            unit = (stand_in.root / "etc/systemd/system/fleet-reconciler-agent.service").read_text()
            assert AGENT_URL in unit
            assert node.agent_url == AGENT_URL
        journal = [i for i in w.store.journal("rb", limit=500) if i.kind == "rebootstrap"]
        assert len(journal) == 3
        assert all(i.status is IntentStatus.DONE for i in journal)
        plan, _ = await w.run(dry_run=True)
        assert not [c for c in plan.changes if c.step == "rebootstrap"]


async def test_a_changed_agent_url_rolls_out_and_nodes_without_one_are_left_alone(
    reachable_dir: Path,
) -> None:
    async with world(reachable_dir, spec_yaml("au", {"seattle": 2})) as w:
        w.ports = with_ports(w.ports, agent_url=AGENT_URL)
        await w.run()
        first = w.nodes("au")
        assert all(n.agent_url == AGENT_URL for n in first.values())
        # the daemon moved: its new URL is a new bundle for every node (drift of the URL)
        moved = "http://127.0.0.2:9/v1/heartbeats"
        w.ports = with_ports(w.ports, agent_url=moved)
        plan, _ = await w.run(dry_run=True)
        rolling = [c for c in plan.changes if c.step == "rebootstrap"]
        assert sorted(c.address for c in rolling) == sorted(first)
        for _ in range(2):
            _, report = await w.run()
            assert report is not None
            assert not report.failed
        for name, node in w.nodes("au").items():
            assert node.agent_url == moved
            assert node.bundle_version != first[name].bundle_version
            stand_in = w.stand_ins.nodes.by_name(name)
            assert stand_in is not None
            unit = (stand_in.root / "etc/systemd/system/fleet-reconciler-agent.service").read_text()
            assert moved in unit
            assert AGENT_URL not in unit
        # a CLI run without the URL now renders with the recorded one: nothing to roll
        w.ports = with_ports(w.ports, agent_url=None)
        plan, _ = await w.run(dry_run=True)
        assert not [c for c in plan.changes if c.step == "rebootstrap"]
    (reachable_dir / "none").mkdir()
    async with world(reachable_dir / "none", spec_yaml("an", {"seattle": 1})) as w:
        # bootstrapped without a URL (nothing recorded): a run without one never compares
        w.ports = with_ports(w.ports, agent_url=None)
        await w.run()
        (node,) = w.nodes("an").values()
        assert node.agent_url is None
        assert node.bundle_version is not None
        w.spec_path.write_text(
            spec_yaml("an", {"seattle": 1}, postfix={"default_process_limit": 90})
        )
        plan, _ = await w.run(dry_run=True)
        assert not [c for c in plan.changes if c.step == "rebootstrap"]


async def test_a_failing_rebootstrap_keeps_the_node_out_then_quarantines_it(
    reachable_dir: Path,
) -> None:
    async with world(reachable_dir, _one_at_a_time(spec_yaml("rf", {"seattle": 2}))) as w:
        w.ports = with_ports(w.ports, agent_url=AGENT_URL)
        await w.run()
        names = sorted(w.nodes("rf"))
        w.spec_path.write_text(
            _one_at_a_time(spec_yaml("rf", {"seattle": 2}, postfix={"default_process_limit": 90}))
        )
        # the first node's package manager is broken from now on: its install fails
        for name in names:
            stand_in = w.stand_ins.nodes.by_name(name)
            assert stand_in is not None
            (stand_in.folder / "stubs" / "apt-get").write_text("#!/bin/sh\nexit 100\n")
        plan, report = await w.run()
        assert report is not None
        (first,) = [c.address for c in plan.changes if c.step == "rebootstrap"]
        assert any(first in o.message for o in report.failed)
        node = w.nodes("rf")[first]
        assert node.status is NodeStatus.MAINTENANCE  # out of rotation, not silently back
        state = node.step("rebootstrap")
        assert state is not None
        assert state.status is StepStatus.FAILED
        assert node.quarantine is None
        # the next plan retries it first, without taking more of the budget
        plan, _ = await w.run(dry_run=True)
        retry = [c for c in plan.changes if c.step == "rebootstrap"]
        assert [c.address for c in retry] == [first]
        assert "interrupted or failed" in retry[0].reason
        await w.run()  # second failure: step_attempts (2) used up -> quarantined
        node = w.nodes("rf")[first]
        assert node.status is NodeStatus.MAINTENANCE
        assert node.quarantine is not None
        assert node.quarantine.startswith("re-bootstrap failed")
        plan, _ = await w.run(dry_run=True)
        assert any(n.startswith(f"{first}: quarantined") for n in plan.notes)
        assert not any(c.address == first for c in plan.changes)
        # the other node's budget: the quarantined one is unavailable (max_unavailable 1)
        assert not [c for c in plan.changes if c.step == "rebootstrap"]
        # released, and its failed step forgotten by `reconcile node retry`: tried again
        w.store.clear_quarantine("rf", first)
        w.store.retry_steps("rf", first)
        assert w.nodes("rf")[first].step("rebootstrap") is None
        plan, _ = await w.run(dry_run=True)
        assert [c.address for c in plan.changes if c.step == "rebootstrap"] == [first]


async def test_drift_in_dns_and_files_is_repaired_by_the_scheduled_check(
    reachable_dir: Path,
) -> None:
    async with world(reachable_dir, spec_yaml("dr", {"seattle": 1}, drift_check="5m")) as w:
        await w.run()
        (node,) = w.nodes("dr").values()
        plan, _ = await w.run(dry_run=True)
        assert not [c for c in plan.changes if c.step == "drift"]  # not due yet
        later = LaterClock(timedelta(minutes=6))
        plan, report = await w.run(clock=later)
        (check,) = [c for c in plan.changes if c.step == "drift"]
        assert "scheduled drift check (every 5 min)" in check.reason
        assert report is not None
        assert not report.failed
        clean = w.nodes("dr")[node.name].step("drift")
        assert clean is not None
        assert clean.status is StepStatus.DONE
        assert clean.error is None  # nothing found
        # drift on the node and in DNS
        stand_in = w.stand_ins.nodes.by_name(node.name)
        assert stand_in is not None
        main_cf = stand_in.root / "etc/postfix/main.cf"
        good = main_cf.read_text()
        main_cf.write_text(good + "relayhost = [evil.example]\n")
        dns = w.stand_ins.dns_server
        hostname = f"{node.name}.mail.test"
        del dns.records.rrsets[(hostname, "A")]
        much_later = LaterClock(timedelta(minutes=12))
        plan, report = await w.run(clock=much_later)
        assert [c.address for c in plan.changes if c.step == "drift"] == [node.name]
        assert report is not None
        assert not report.failed
        assert main_cf.read_text() == good  # the bundle ran again
        assert dns.values(hostname, "A") == [node.ip_address]
        repaired = w.nodes("dr")[node.name]
        state = repaired.step("drift")
        assert state is not None
        assert state.status is StepStatus.DONE
        assert state.error is not None
        assert "changed: /etc/postfix/main.cf" in state.error
        assert f"A {hostname} is not {node.ip_address}" in state.error
        assert repaired.status is NodeStatus.WARMING  # back in rotation, repaired
        assert repaired.quarantine is None


async def test_a_changed_host_key_found_by_the_drift_check_quarantines_the_node(
    reachable_dir: Path,
) -> None:
    async with world(reachable_dir, spec_yaml("dk", {"seattle": 1}, drift_check="5m")) as w:
        await w.run()
        (node,) = w.nodes("dk").values()
        assert node.ip_address is not None
        stand_in = w.stand_ins.nodes.by_name(node.name)
        assert stand_in is not None
        stand_in.rekey()
        await w.stand_ins.nodes.restart(node.ip_address)
        await w.ports.remote.aclose()  # a later run: no connection kept from before
        plan, report = await w.run(clock=LaterClock(timedelta(minutes=6)))
        assert [c.address for c in plan.changes if c.step == "drift"] == [node.name]
        assert report is not None
        assert any("QUARANTINED" in o.message for o in report.failed), report.outcomes
        held = w.nodes("dk")[node.name]
        assert held.status is NodeStatus.PAUSED  # out of rotation at once
        assert held.quarantine is not None
        assert "host key" in held.quarantine.lower()
        plan, _ = await w.run(dry_run=True, clock=LaterClock(timedelta(minutes=20)))
        assert not [c for c in plan.changes if c.address == node.name]
        assert any(n.startswith(f"{node.name}: quarantined") for n in plan.notes)
