"""End to end, as processes: daemon + simulator + simulated agents (short intervals)."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.daemon.processes import (
    Proc,
    Swarm,
    daemon_env,
    fleet,
    instances,
    simulator,
    start_daemon,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: e2e}}
provider: {{type: simulator, build_time: 300ms}}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
regions:
  dallas: {{location_id: 13, plan: baseline, nodes: {nodes}}}
ip_pools:
  shared: {{size: {size}, regions: [dallas], warmup: e2e}}
warmup:
  schedules:
    e2e:
      phases: [{{days: "1-1", start: 864000, end: 864000}}]
scaling: {{evaluation_interval: 1s, max_step: 1}}
health: {{heartbeat_interval: 1s, missed_beats: 3, replace_after: 3s}}
reconcile: {{interval: 2s}}
"""


def _write_spec(tmp_path: Path, nodes: str, size: int) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(SPEC.format(nodes=nodes, size=size))
    return path


def _names(sim_url: str) -> list[str]:
    return [
        i["srvrname"] for i in instances(sim_url) if str(i.get("status", "")).lower() != "deleted"
    ]


def test_load_above_target_adds_a_node(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, "{min: 2, max: 3}", 3)
    with simulator(tmp_path) as sim:
        env = daemon_env(sim, f"sqlite:///{tmp_path}/state.db", tmp_path / "state")
        proc, url = start_daemon("daemon", spec, env, tmp_path)
        try:
            wait_for(
                lambda: (
                    len(fleet(url)["nodes"]) == 2
                    and all(n["status"] == "warming" for n in fleet(url)["nodes"])
                ),
                30,
                "2 warming nodes",
            )
            # each node's warmup capacity is 864,000/day = 10/s; 9/s is 0.90 >= 0.80
            with Swarm(url, interval=1.0, rate=9.0):
                wait_for(lambda: len(fleet(url)["nodes"]) == 3, 30, "a third node")
                wait_for(lambda: len(_names(sim)) == 3, 20, "the third server")
        finally:
            code = proc.stop()
        log = proc.log()
        assert code == 0, log[-3000:]
    decisions = [json.loads(line) for line in log.splitlines() if '"scaling.decision"' in line]
    up = [d for d in decisions if d["desired"] > d["current"]]
    assert up, log[-3000:]
    assert up[0]["msg"].startswith("dallas: 2 -> 3 nodes, utilization 0.")
    assert 0.8 <= up[0]["utilization"] <= 1.0
    assert ">= 0.80" in up[0]["msg"]
    assert any(
        '"plan.change"' in line and "dallas: 2 -> 3 nodes" in line for line in log.splitlines()
    )
    assert "e2e-master-secret" not in log


def test_silent_node_goes_unhealthy_and_is_replaced(tmp_path: Path) -> None:
    # three nodes: replacing one of two is half the fleet, which the mass-delete guard refuses
    # (at the threshold since 49d155f); a replacement goes through the guards like any destroy
    spec = _write_spec(tmp_path, "3", 2)
    with simulator(tmp_path) as sim:
        env = daemon_env(sim, f"sqlite:///{tmp_path}/state.db", tmp_path / "state")
        proc, url = start_daemon("daemon", spec, env, tmp_path)
        try:
            wait_for(
                lambda: (
                    len(fleet(url)["nodes"]) == 3
                    and all(n["status"] == "warming" for n in fleet(url)["nodes"])
                ),
                30,
                "3 warming nodes",
            )
            with Swarm(url, interval=1.0, rate=1.0) as swarm:
                wait_for(lambda: all(n["last_heartbeat"] for n in fleet(url)["nodes"]), 15, "beats")
                victim = sorted(n["name"] for n in fleet(url)["nodes"])[0]
                swarm.silence(victim)

                def status_of(name: str) -> str | None:
                    return next(
                        (n["status"] for n in fleet(url)["nodes"] if n["name"] == name), None
                    )

                wait_for(lambda: status_of(victim) == "unhealthy", 15, f"{victim} unhealthy")
                # replaced after replace_after, within the disruption budget
                wait_for(lambda: victim not in _names(sim), 30, f"{victim} destroyed")
                wait_for(
                    lambda: (
                        len(_names(sim)) == 3
                        and status_of(victim) is None
                        and all(n["status"] == "warming" for n in fleet(url)["nodes"])
                    ),
                    30,
                    "a replacement",
                )
                servers = _names(sim)
                assert victim not in servers
                assert max(Counter(servers).values()) == 1
        finally:
            code = proc.stop()
        log = proc.log()
        assert code == 0, log[-3000:]
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    decisions = [
        e for e in events if e.get("event") == "health.decision" and e.get("node") == victim
    ]
    assert [d["decision"] for d in decisions][:2] == ["pause", "replace"], decisions


def test_signals_are_logged_and_only_a_stop_signal_stops_with_a_release(tmp_path: Path) -> None:
    """SIGHUP asks for a spec reload, SIGUSR1, SIGUSR2 and SIGALRM (whose default action
    kills a process without a word) are logged and ignored; SIGINT then stops the daemon
    quickly, exit 0, leadership released (issue 10: no signal kills it without a log line and
    a clean release)."""
    spec = _write_spec(tmp_path, "1", 1)
    with simulator(tmp_path) as sim:
        env = daemon_env(sim, f"sqlite:///{tmp_path}/state.db", tmp_path / "state")
        proc, url = start_daemon("daemon", spec, env, tmp_path)
        wait_for(lambda: fleet(url)["leader"], 10, "leadership")

        def logged(event: str, name: str) -> bool:
            return any(e.get("event") == event and e.get("signal") == name for e in events(proc))

        proc.popen.send_signal(signal.SIGHUP)
        wait_for(lambda: logged("spec.reload_requested", "SIGHUP"), 10, "the reload logged")
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
            proc.popen.send_signal(sig)
            wait_for(lambda sig=sig: logged("daemon.signal", sig.name), 10, f"{sig.name} logged")
        assert proc.popen.poll() is None
        assert fleet(url)["leader"]
        assert proc.stop(signal.SIGINT, timeout=15) == 0
    kinds = [e.get("event") for e in events(proc)]
    assert "leadership.released" in kinds, kinds
    assert kinds[-1] == "daemon.stopped", kinds


def events(proc: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
