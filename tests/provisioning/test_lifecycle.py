"""The life cycle: maintenance (recorded, survives spec changes and restarts), resume, and
decommission in reverse (DNS records removed, the IP out of SPF, before the server goes)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from reconciler.cli.main import main
from reconciler.core.fleet import IntentStatus, Maintenance, NodeStatus
from reconciler.core.planning import PlanOptions
from tests.provisioning.harness import spec_yaml, world

#: 2 -> 1 node removes half the fleet: the mass-delete guard refuses it (at the threshold) unless
#: the operator allows it, as `--allow-mass-destroy` does
SHRINK = PlanOptions(allow_mass_destroy=True)

pytestmark = pytest.mark.anyio


async def test_maintenance_holds_a_node_out_until_resumed(reachable_dir: Path) -> None:
    async with world(reachable_dir, spec_yaml("mt", {"seattle": 2})) as w:
        await w.run()
        name = "mt-seattle-001"
        assert w.nodes("mt")[name].status is NodeStatus.WARMING
        since = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
        w.store.set_maintenance("mt", name, Maintenance("kernel update", "alice", since))
        plan, _ = await w.run()
        assert any(c.address == name and c.status is NodeStatus.MAINTENANCE for c in plan.changes)
        assert w.nodes("mt")[name].status is NodeStatus.MAINTENANCE
        # a spec change and a restart (a new Reconciler reads the store) keep it out
        w.spec_path.write_text(spec_yaml("mt", {"seattle": 2, "dallas": 1}))
        plan, _ = await w.run()
        note = next(n for n in plan.notes if n.startswith(name))
        assert "in maintenance (by alice since 2026-12-01 03:00 UTC): kernel update" in note
        assert not any(c.address == name for c in plan.changes)
        assert w.nodes("mt")[name].status is NodeStatus.MAINTENANCE
        assert len(w.nodes("mt")) == 3  # counted as present: not replaced
        w.store.set_maintenance(
            "mt", name, Maintenance("kernel update", "alice", since, ended_at=datetime.now(UTC))
        )
        plan, _ = await w.run()
        assert any(c.address == name and "maintenance over" in c.reason for c in plan.changes)
        assert w.nodes("mt")[name].status is NodeStatus.WARMING


async def test_decommission_removes_dns_before_destroying(reachable_dir: Path) -> None:
    async with world(reachable_dir, spec_yaml("dc", {"seattle": 2})) as w:
        await w.run()
        before = w.nodes("dc")
        dns = w.stand_ins.dns_server
        for node in before.values():
            assert dns.values(f"{node.name}.mail.test", "A") == [node.ip_address]
        w.spec_path.write_text(spec_yaml("dc", {"seattle": 1}))
        for _ in range(3):
            await w.run(options=SHRINK)
            if len(w.nodes("dc")) == 1:
                break
        (kept,) = w.nodes("dc").values()
        victim = next(n for n in before.values() if n.name != kept.name)
        assert victim.ip_address is not None
        assert kept.ip_address is not None
        assert dns.values(f"{victim.name}.mail.test", "A") == []
        assert dns.values(f"{victim.name}._domainkey.mail.test", "TXT") == []
        assert dns.values(f"{kept.name}.mail.test", "A") == [kept.ip_address]
        spf = dns.values("mail.test", "TXT")[0]
        assert f"ip4:{kept.ip_address}" in spf
        assert f"ip4:{victim.ip_address} " not in spf
        journal = sorted(w.store.journal("dc", limit=200), key=lambda i: i.id)
        kinds = [i.kind for i in journal if i.target == victim.name]
        assert kinds.index("unpublish") < kinds.index("destroy")
        assert all(
            i.status is IntentStatus.DONE
            for i in journal
            if i.target == victim.name and i.kind in ("unpublish", "destroy")
        )
        # each decommission step recorded, in order, once
        steps = [
            i.params["step"]
            for i in journal
            if i.target == victim.name and i.kind == "decommission"
        ]
        assert steps == ["rotation", "drain", "dns", "server", "ip", "record"]
        details = {
            i.params["step"]: i.params["detail"]
            for i in journal
            if i.target == victim.name and i.kind == "decommission"
        }
        assert f"{victim.ip_address} out of SPF" in details["dns"]
        assert details["ip"].startswith(f"{victim.ip_address} released")
        assert kinds.index("unpublish") < kinds.index("destroy")


def test_node_commands_name_what_is_wrong(
    reachable_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = reachable_dir / "fleet.yaml"
    spec.write_text(spec_yaml("cl", {"seattle": 1}))
    monkeypatch.setenv("RECONCILER_DATABASE_URL", f"sqlite:///{reachable_dir / 'state.db'}")
    assert main(["node", "maintenance", "other-seattle-001", "--reason", "x", "-f", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "is not a node of fleet 'cl'" in err
    assert "Traceback" not in err
    assert main(["node", "maintenance", "cl-seattle-009", "--reason", "x", "-f", str(spec)]) == 1
    assert "no recorded node 'cl-seattle-009'" in capsys.readouterr().err
    assert main(["node", "maintenance", "cl-seattle-001", "--reason", " ", "-f", str(spec)]) == 1
    assert "--reason is empty" in capsys.readouterr().err


async def test_a_decommission_interrupted_after_dns_resumes_without_repeating_it(
    reachable_dir: Path,
) -> None:
    from providers.simulator.faults import FaultSettings

    async with world(reachable_dir, spec_yaml("dr2", {"seattle": 2})) as w:
        await w.run()
        before = w.nodes("dr2")
        w.spec_path.write_text(spec_yaml("dr2", {"seattle": 1}))
        # every terminate fails (HTTP 503): the DNS step is recorded, the server stays
        w.server.app.faults.configure(FaultSettings(http_5xx_rate=1.0, actions=["terminate"]))
        for _ in range(3):
            await w.run(options=SHRINK)
        journal = w.store.journal("dr2", limit=300)
        victims = {i.target for i in journal if i.kind == "unpublish"}
        assert len(victims) == 1
        (victim,) = victims
        assert victim in w.nodes("dr2")  # not closed: its server is still there
        assert w.nodes("dr2")[victim].step_done("decommission.dns")
        w.server.app.faults.configure(FaultSettings())
        for _ in range(2):
            await w.run(options=SHRINK)
            if len(w.nodes("dr2")) == 1:
                break
        assert victim not in w.nodes("dr2")
        journal = sorted(w.store.journal("dr2", limit=300), key=lambda i: i.id)
        mine = [i for i in journal if i.target == victim]
        assert sum(1 for i in mine if i.kind == "unpublish") == 1  # not repeated
        steps = [i.params["step"] for i in mine if i.kind == "decommission"]
        assert steps == ["rotation", "drain", "dns", "server", "ip", "record"]
        assert set(before) - set(w.nodes("dr2")) == {victim}
