"""Two daemons on one PostgreSQL store: one acts; SIGKILL of the leader mid-apply and the
other takes over within 30 s and converges with no duplicate server."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from state.store import open_store
from tests.daemon.processes import daemon_env, fleet, instances, simulator, start_daemon, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.timeout(150)]

# adoption_grace: a create intent whose server never appeared (the leader died between the
# intent and add_instance) is retried after this grace, never before (design §3)
SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: ha}}
provider: {{type: simulator, build_time: 2s}}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
regions:
  dallas: {{location_id: 13, plan: baseline, nodes: {nodes}}}
health: {{heartbeat_interval: 1s}}
reconcile: {{interval: 2s, concurrency: 1, adoption_grace: 5s}}
"""


def _servers(sim: str) -> list[str]:
    return [i["srvrname"] for i in instances(sim) if str(i.get("status", "")).lower() != "deleted"]


def test_sigkill_of_the_leader_and_takeover(tmp_path: Path, fresh_postgres_url: str) -> None:
    open_store(fresh_postgres_url, upgrade=True).close()
    spec = tmp_path / "fleet.yaml"
    spec.write_text(SPEC.format(nodes=1))
    with simulator(tmp_path, build_time="2s") as sim:
        env = daemon_env(sim, fresh_postgres_url, tmp_path / "state")
        a, url_a = start_daemon("daemon-a", spec, env, tmp_path)
        b = None
        try:
            wait_for(lambda: fleet(url_a)["leader"], 15, "daemon-a to lead")
            b, url_b = start_daemon("daemon-b", spec, env, tmp_path)
            wait_for(lambda: len(_servers(sim)) == 1, 30, "the first server")
            assert fleet(url_a)["leader"] is True
            assert fleet(url_b)["leader"] is False  # one acts, the other stands by
            # a spec change asks for 4 more servers; kill the leader in the middle of it
            spec.write_text(SPEC.format(nodes=5))
            wait_for(lambda: len(_servers(sim)) >= 2, 30, "the leader to start creating")
            a.stop(signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda: fleet(url_b)["leader"], 30, "daemon-b to take over")
            takeover = time.monotonic() - killed
            assert takeover < 30
            wait_for(lambda: len(_servers(sim)) == 5, 60, "convergence to 5 servers")
            wait_for(
                lambda: (
                    len(fleet(url_b)["nodes"]) == 5
                    and all(n["status"] == "warming" for n in fleet(url_b)["nodes"])
                ),
                30,
                "5 recorded nodes",
            )
            servers = _servers(sim)
            assert max(Counter(servers).values()) == 1, servers
            assert sorted(servers) == sorted(n["name"] for n in fleet(url_b)["nodes"])
        finally:
            if b is not None:
                assert b.stop() == 0, b.log()[-2000:]
            a.stop(signal.SIGKILL)
    b_events = [json.loads(line) for line in b.log().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "leadership.taken" for e in b_events)
    a_events = [json.loads(line) for line in a.log().splitlines() if line.startswith("{")]
    assert any(e.get("event") == "plan.change" for e in a_events)
    print(f"takeover after SIGKILL: {takeover:.1f}s")
