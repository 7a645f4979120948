"""Two daemons on one PostgreSQL store: one acts; SIGKILL of the leader mid-apply and the
other takes over within 30 s and converges with no duplicate server. Two daemons on one SQLite
file: the same lease, through a frozen and a killed leader."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from state.store import open_store
from tests.daemon.processes import (
    Proc,
    daemon_env,
    fleet,
    leaders,
    live_servers,
    simulator,
    start_daemon,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

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


@pytest.mark.postgres
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
            wait_for(lambda: len(live_servers(sim)) == 1, 30, "the first server")
            assert fleet(url_a)["leader"] is True
            assert fleet(url_b)["leader"] is False  # one acts, the other stands by
            # a spec change asks for 4 more servers; kill the leader in the middle of it
            spec.write_text(SPEC.format(nodes=5))
            wait_for(lambda: len(live_servers(sim)) >= 2, 30, "the leader to start creating")
            a.stop(signal.SIGKILL)
            killed = time.monotonic()
            wait_for(lambda: fleet(url_b)["leader"], 30, "daemon-b to take over")
            takeover = time.monotonic() - killed
            assert takeover < 30
            wait_for(lambda: len(live_servers(sim)) == 5, 60, "convergence to 5 servers")
            wait_for(
                lambda: (
                    len(fleet(url_b)["nodes"]) == 5
                    and all(n["status"] == "warming" for n in fleet(url_b)["nodes"])
                ),
                30,
                "5 recorded nodes",
            )
            servers = live_servers(sim)
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


def test_two_daemons_on_one_sqlite_file_freeze_and_kill(tmp_path: Path) -> None:
    """SQLite too: the lease fails over from a frozen leader (SIGSTOP), the resumed one stands
    down, a killed one is replaced at once; one acting leader, no duplicate server."""
    spec = tmp_path / "fleet.yaml"
    spec.write_text(SPEC.format(nodes=1).replace("build_time: 2s", "build_time: 300ms"))
    database = f"sqlite:///{tmp_path}/state.db"
    open_store(database, upgrade=True).close()
    procs: dict[str, Proc] = {}
    urls: dict[str, str] = {}
    with simulator(tmp_path, build_time="300ms") as sim:
        env = daemon_env(sim, database, tmp_path / "state")
        try:
            for name in ("a", "b"):
                procs[name], urls[name] = start_daemon(f"daemon-{name}", spec, env, tmp_path)
            wait_for(lambda: len(leaders(urls, set())) == 1, 20, "one leader")
            wait_for(lambda: len(live_servers(sim)) == 1, 30, "the first server")
            (first,) = leaders(urls, set())
            procs[first].popen.send_signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            wait_for(lambda: len(leaders(urls, {first})) == 1, 25, "a takeover")
            freeze_failover = time.monotonic() - frozen_at
            assert freeze_failover < 15, freeze_failover
            spec.write_text(spec.read_text().replace("nodes: 1", "nodes: 2"))
            wait_for(lambda: len(live_servers(sim)) == 2, 30, "two servers")
            procs[first].popen.send_signal(signal.SIGCONT)
            time.sleep(3)
            assert len(leaders(urls, set())) == 1  # the resumed one stood down
            (second,) = leaders(urls, set())
            assert second != first
            spec.write_text(spec.read_text().replace("nodes: 2", "nodes: 3"))
            procs[second].stop(signal.SIGKILL)
            killed_at = time.monotonic()
            wait_for(lambda: len(leaders(urls, {second})) == 1, 20, "a takeover after a kill")
            kill_failover = time.monotonic() - killed_at
            assert kill_failover < 5, kill_failover
            wait_for(lambda: len(live_servers(sim)) == 3, 40, "three servers")
            time.sleep(2)
            servers = live_servers(sim)
            assert max(Counter(servers).values()) == 1, servers
            assert len(servers) == 3
        finally:
            for proc in procs.values():
                proc.popen.send_signal(signal.SIGCONT)
                if proc.popen.poll() is None:
                    assert proc.stop(signal.SIGTERM) == 0, proc.log()[-2000:]
    resumed = [json.loads(line) for line in procs[first].log().splitlines() if line[:1] == "{"]
    lost = [i for i, e in enumerate(resumed) if e.get("event") == "leadership.lost"]
    assert lost, [e.get("event") for e in resumed][-30:]
    after = resumed[lost[0] + 1 :]
    retaken = [i for i, e in enumerate(after) if e.get("event") == "leadership.taken"]
    writes = [i for i, e in enumerate(after) if e.get("event") in ("apply.change", "plan.change")]
    if writes:  # only once it led again (a new epoch)
        assert retaken, after[writes[0]]
        assert writes[0] > retaken[0]
    print(
        f"SQLite: failover after freeze {freeze_failover:.1f} s, after kill {kill_failover:.1f} s"
    )
