"""The provisioning pipeline through the real engine, against the simulator and stand-ins:
several nodes through every step, resumed, and each failure ending in its documented outcome."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.fleet import NodeStatus, StepStatus
from reconciler.core.planning import PlanOptions
from reconciler.core.plans import Action
from tests.provisioning.harness import spec_yaml, with_ports, world

pytestmark = pytest.mark.anyio

STEPS = ("rdns", "hostkey", "dns", "bootstrap", "verify", "heartbeat", "rotation")


async def test_several_nodes_go_through_every_step(reachable_dir: Path) -> None:
    async with world(reachable_dir, spec_yaml("pf", {"seattle": 2, "dallas": 1})) as w:
        plan, report = await w.run()
        assert report is not None
        assert all(o.status.value == "done" for o in report.outcomes), report.outcomes
        nodes = w.nodes("pf")
        assert len(nodes) == 3
        for node in nodes.values():
            assert node.status is NodeStatus.WARMING
            assert node.host_key is not None
            assert node.bundle_version is not None
            for step in STEPS:
                assert node.step_done(step), (node.name, step, node.steps)
            assert all(s.attempts == 1 for s in node.steps)
            assert w.stand_ins.dns_server.values(f"{node.name}.mail.test", "A") == [node.ip_address]
            assert w.stand_ins.dns_server.values(f"{node.name}._domainkey.mail.test", "TXT")
        spf = w.stand_ins.dns_server.values("mail.test", "TXT")[0]
        for node in nodes.values():
            assert node.ip_address.rsplit(".", 1)[0] in spf
        plan, _ = await w.run(dry_run=True)
        assert plan.is_empty


async def test_without_a_daemon_url_the_heartbeat_step_waits_when_required(
    reachable_dir: Path,
) -> None:
    async with world(reachable_dir, spec_yaml("hb", {"seattle": 1})) as w:
        options = PlanOptions(require_heartbeat=True)
        w.ports = with_ports(w.ports, require_heartbeat=True)
        await w.run(options=options)
        node = next(iter(w.nodes("hb").values()))
        # the daemon's view: a node that never beats is not put into rotation
        assert node.status is NodeStatus.PROVISIONING
        assert node.step_done("verify")
        assert not node.step_done("heartbeat")
        plan, _ = await w.run(dry_run=True, options=options)
        assert any("waiting for the node's first heartbeat" in n for n in plan.notes)
        assert not any(c.address == node.name for c in plan.changes)


async def test_a_refused_dns_update_fails_the_dns_step_and_the_node_never_sends(
    reachable_dir: Path,
) -> None:
    from providers.dns.rfc2136 import TsigKey

    async with world(reachable_dir, spec_yaml("ts", {"seattle": 1})) as w:
        wrong = TsigKey(w.stand_ins.tsig.name, "hmac-sha256", "d3Jvbmcgd3Jvbmcgd3Jvbmcgd3Jvbmc=")
        w.ports = with_ports(w.ports, dns=w.stand_ins.dns(wrong))
        _, report = await w.run()
        assert report is not None
        failed = [o for o in report.outcomes if o.status.value == "failed"]
        assert failed
        assert "TSIG" in failed[0].message
        node = next(iter(w.nodes("ts").values()))
        assert node.status is NodeStatus.PROVISIONING
        state = node.step("dns")
        assert state is not None
        assert state.status is StepStatus.FAILED
        assert not node.step_done("bootstrap")
        # the plan names the step again (attempt 2), then stops at the attempt budget
        plan, _ = await w.run(dry_run=True)
        assert any(c.step == "dns" and "attempt 2" in c.reason for c in plan.changes)
        await w.run()
        plan, _ = await w.run(dry_run=True)
        assert not any(c.step == "dns" for c in plan.changes)
        assert any("step dns failed 2 times" in n for n in plan.notes)
        assert w.stand_ins.dns_server.values(f"{node.name}.mail.test", "A") == []


async def test_a_changed_host_key_quarantines_the_node(reachable_dir: Path) -> None:
    async with world(reachable_dir, spec_yaml("hk", {"seattle": 1})) as w:
        # pin, then the node presents another key before its bootstrap
        class Rekey:
            def __init__(self, inner):  # type: ignore[no-untyped-def]
                self.inner = inner

            async def scan_host_key(self, host, port, **kwargs):  # type: ignore[no-untyped-def]
                key = await self.inner.scan_host_key(host, port, **kwargs)
                node = w.stand_ins.nodes.nodes[host]
                node.rekey()
                await w.stand_ins.nodes.restart(host)
                return key

            async def run(self, *args, **kwargs):  # type: ignore[no-untyped-def]
                return await self.inner.run(*args, **kwargs)

        w.ports = with_ports(w.ports, remote=Rekey(w.stand_ins.remote()))
        _, report = await w.run()
        assert report is not None
        messages = " ".join(o.message for o in report.outcomes)
        assert "QUARANTINED" in messages
        node = next(iter(w.nodes("hk").values()))
        assert node.quarantine is not None
        assert "host key" in node.quarantine
        assert node.status is NodeStatus.PROVISIONING
        stand_in = w.stand_ins.nodes.by_name(node.name)
        assert stand_in is not None
        assert not any("run.sh" in c for c in stand_in.commands)  # nothing ran on it
        plan, _ = await w.run(dry_run=True)
        assert any("quarantined" in n for n in plan.notes)
        assert not [c for c in plan.changes if c.action is Action.PROVISION]


async def test_a_failing_test_mail_fails_the_verify_step(reachable_dir: Path) -> None:
    async with world(reachable_dir, spec_yaml("tm", {"seattle": 1})) as w:
        # the sink never receives: the node's mail route goes nowhere
        w.stand_ins.nodes.relay = None
        w.ports = with_ports(w.ports, probe_wait=0.3)
        _, report = await w.run()
        assert report is not None
        failed = [o for o in report.outcomes if o.status.value == "failed"]
        assert failed
        assert "did not reach the sink" in failed[0].message
        node = next(iter(w.nodes("tm").values()))
        assert node.step_done("bootstrap")
        assert node.step("verify") is not None
        assert node.status is NodeStatus.PROVISIONING


async def test_a_node_past_its_deadline_is_replaced_until_the_breaker_opens(
    reachable_dir: Path,
) -> None:
    from datetime import timedelta

    from tests.provisioning.harness import LaterClock

    text = spec_yaml("dl", {"seattle": 1}, deadline="5m", step_timeout="2m")
    text = text.replace("step_attempts: 2", "step_attempts: 1\n  circuit_breaker: {failures: 1}")
    async with world(reachable_dir, text) as w:
        w.stand_ins.nodes.relay = None  # test mails never arrive: verify always fails
        w.ports = with_ports(w.ports, probe_wait=0.2)
        await w.run()
        (first,) = w.nodes("dl").values()
        assert first.status is NodeStatus.PROVISIONING
        later = LaterClock(timedelta(minutes=6))
        plan, _ = await w.run(dry_run=True, clock=later)
        destroy = next(c for c in plan.changes if c.action is Action.DESTROY)
        assert destroy.address == first.name
        assert "provisioning deadline passed (5 min, stuck at verify)" in destroy.reason
        assert any(c.action is Action.CREATE for c in plan.changes)
        await w.run(clock=later)
        names = set(w.nodes("dl"))
        assert first.name not in names
        assert len(names) == 1  # the replacement
        # its replacement misses its deadline too: the breaker (1 failure/h) stops creating
        plan, _ = await w.run(dry_run=True, clock=LaterClock(timedelta(minutes=12)))
        assert any(c.action is Action.DESTROY for c in plan.changes)
        await w.run(clock=LaterClock(timedelta(minutes=12)))
        plan, _ = await w.run(dry_run=True, clock=LaterClock(timedelta(minutes=12)))
        assert not any(c.action is Action.CREATE for c in plan.changes)
        breaker = [w_ for w_ in plan.warnings if w_.guard == "circuit_breaker"]
        assert breaker
        assert "circuit breaker open in seattle" in breaker[0].message


async def test_a_slot_is_replaced_at_most_replacements_times_then_fails(
    reachable_dir: Path,
) -> None:
    from datetime import timedelta

    from tests.provisioning.harness import LaterClock

    text = spec_yaml("sl", {"seattle": 1}, deadline="5m", step_timeout="2m", replacements=1)
    text = text.replace("step_attempts: 2", "step_attempts: 1\n  circuit_breaker: {failures: 9}")
    async with world(reachable_dir, text) as w:
        w.stand_ins.nodes.relay = None  # test mails never arrive: verify always fails
        w.ports = with_ports(w.ports, probe_wait=0.2)
        await w.run()
        (first,) = w.nodes("sl").values()
        assert first.slot_failures == 0
        later = LaterClock(timedelta(minutes=6))
        plan, _ = await w.run(dry_run=True, clock=later)
        create = next(c for c in plan.changes if c.action is Action.CREATE)
        assert create.slot_failures == 1
        assert f"replaces {first.name}" in create.reason
        assert "replacement 1 of 1 for this slot" in create.reason
        await w.run(clock=later)
        (second,) = w.nodes("sl").values()
        assert second.name != first.name
        assert second.slot_failures == 1  # store-backed: the count survives in the record
        # the replacement misses its deadline too: the slot has no replacement left
        much_later = LaterClock(timedelta(minutes=12))
        plan, _ = await w.run(dry_run=True, clock=much_later)
        assert not any(c.action in (Action.CREATE, Action.DESTROY) for c in plan.changes)
        failed = [x for x in plan.warnings if x.guard == "slot_failed"]
        assert len(failed) == 1
        assert failed[0].message.startswith(f"HIGH: slot of {second.name} failed")
        assert failed[0].hint is not None
        assert "reconcile node release" in failed[0].hint
        await w.run(clock=much_later)
        assert set(w.nodes("sl")) == {second.name}  # kept for examination, not replaced
        # a later spec change or restart does not forget it (the count is in the store)
        plan, _ = await w.run(dry_run=True, clock=much_later)
        assert [x.guard for x in plan.warnings].count("slot_failed") == 1
        # the operator's release gives the slot a fresh set of replacements
        w.store.clear_quarantine("sl", second.name)
        plan, _ = await w.run(dry_run=True, clock=much_later)
        assert not [x for x in plan.warnings if x.guard == "slot_failed"]
        assert any(c.action is Action.DESTROY and c.address == second.name for c in plan.changes)
        assert next(c for c in plan.changes if c.action is Action.CREATE).slot_failures == 1
