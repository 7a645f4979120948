"""Reputation end to end, as processes: the real daemon (``reconcile daemon``) with the
simulator, simulated agents and a loopback DNSBL served by real BIND (tests/services).

- a node whose IP the test zone lists leaves ``GET /v1/rotation`` within one check interval,
  is paused by reputation (``paused_by``), and returns after the list delists it and the
  hysteresis (``delist_after`` clean checks);
- a node whose agent reports hard bounces over the pause level is quarantined: out of the
  rotation and paused by reputation, and it stays out when the listing of the other ends.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from reconciler.daemon.rotation import platform_token
from tests.daemon.processes import (
    MASTER,
    Swarm,
    daemon_env,
    fleet,
    simulator,
    start_daemon,
    wait_for,
)
from tests.services.bind import BindServer, dnsbl_zone_text

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

ZONE = "bl.dnsbl.test"
CHECK_INTERVAL = 10.0  # reputation.check_interval (the spec's minimum: 10 s)

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: e2e}}
provider: {{type: simulator, build_time: 300ms}}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
regions:
  dallas: {{location_id: 13, plan: baseline, nodes: 2}}
ip_pools:
  shared: {{size: 2, regions: [dallas], warmup: e2e}}
warmup:
  schedules:
    e2e:
      phases: [{{days: "1-1", start: 864000, end: 864000}}]
health: {{heartbeat_interval: 1s, missed_beats: 5, replace_after: 10m}}
reconcile: {{interval: 2s}}
reputation:
  resolver: 127.0.0.1:{port}
  blocklists:
    - zone: {zone}
      listings: [{{codes: 127.0.0.2, name: TESTBL, severity: high}}]
  check_interval: 10s
  delist_after: 2
  min_volume: 50
  window: 1h
"""


def rotation(url: str) -> list[str]:
    token = platform_token(MASTER.encode(), "e2e")
    answer = httpx.get(
        f"{url}/v1/rotation", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    answer.raise_for_status()
    return [n["node"] for n in answer.json()["nodes"]]


def node_of(url: str, name: str) -> dict[str, Any]:
    return next(n for n in fleet(url)["nodes"] if n["name"] == name)


def listed_zone(ips: dict[str, str], serial: int) -> str:
    # TTL 1 s: the daemon's cache (answers and the negative TTL) never hides a change
    return dnsbl_zone_text(ZONE, ips, serial=serial, ttl=1)


def test_listing_and_bounces_take_nodes_out_of_rotation_and_a_delisting_brings_back(
    bind_server: BindServer, tmp_path: Path
) -> None:
    bind_server.set_zone(ZONE, listed_zone({}, 1))
    spec = tmp_path / "fleet.yaml"
    spec.write_text(SPEC.format(port=bind_server.port, zone=ZONE))
    with simulator(tmp_path) as sim:
        env = daemon_env(sim, f"sqlite:///{tmp_path}/state.db", tmp_path / "state")
        proc, url = start_daemon("daemon", spec, env, tmp_path)
        try:
            wait_for(
                lambda: (
                    len(fleet(url)["nodes"]) == 2
                    and all(n["status"] == "warming" and n["ip"] for n in fleet(url)["nodes"])
                ),
                60,
                "2 warming nodes with their IPs",
            )
            listed, bouncing = sorted(n["name"] for n in fleet(url)["nodes"])
            ip = node_of(url, listed)["ip"]
            statuses = ("warming", "active", "unhealthy", "paused")
            with Swarm(url, interval=1.0, rate=5.0, statuses=statuses) as swarm:
                # the first check: both clean, both in rotation
                wait_for(
                    lambda: fleet(url)["reputation"]["last_blocklist_check"], 30, "a first check"
                )
                wait_for(lambda: set(rotation(url)) == {bouncing, listed}, 30, "the rotation")
                zones = fleet(url)["reputation"]["zones"]
                assert zones[ZONE]["health"] == "usable", zones

                # the list lists one node: out of the rotation within one check interval
                bind_server.set_zone(ZONE, listed_zone({ip: "127.0.0.2"}, 2))
                listed_at = time.monotonic()
                wait_for(
                    lambda: listed not in rotation(url),
                    CHECK_INTERVAL + 15,
                    f"{listed} out of the rotation",
                )
                took = time.monotonic() - listed_at
                assert took <= CHECK_INTERVAL + 5, took
                wait_for(lambda: node_of(url, listed)["status"] == "paused", 30, f"{listed} paused")
                assert node_of(url, listed)["paused_by"] == "reputation"
                assert bouncing in rotation(url)

                # the other node's agent reports hard bounces over the pause level
                wait_for(lambda: bouncing in swarm.figures, 10, "the bouncing node's agent")
                swarm.figures[bouncing].bounce_share = 0.3
                wait_for(lambda: bouncing not in rotation(url), 60, f"{bouncing} out (bounces)")
                wait_for(
                    lambda: node_of(url, bouncing)["status"] == "paused",
                    30,
                    f"{bouncing} paused",
                )
                shown = fleet(url)
                assert shown["reputation"]["nodes"][bouncing]["ip_state"] == "quarantined"
                assert node_of(url, bouncing)["paused_by"] == "reputation"
                swarm.figures[bouncing].bounce_share = 0.0

                # delisted: back after delist_after (2) clean checks; the quarantine stays
                bind_server.set_zone(ZONE, listed_zone({}, 3))
                delisted_at = time.monotonic()
                wait_for(
                    lambda: listed in rotation(url),
                    3 * CHECK_INTERVAL + 30,
                    f"{listed} back in the rotation",
                )
                back_after = time.monotonic() - delisted_at
                assert back_after >= CHECK_INTERVAL - 5, back_after  # not at the first check
                wait_for(
                    lambda: node_of(url, listed)["status"] == "warming",
                    30,
                    f"{listed} warming again",
                )
                assert node_of(url, listed)["paused_by"] is None
                assert bouncing not in rotation(url)
                assert node_of(url, bouncing)["status"] == "paused"
        finally:
            code = proc.stop()
        log = proc.log()
        assert code == 0, log[-3000:]
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    kinds = [e.get("event") for e in events]
    assert "reputation.listed" in kinds, log[-3000:]
    assert "reputation.delisted" in kinds, log[-3000:]
    resolved = [e for e in events if e.get("event") == "alert.resolved"]
    assert any(e.get("key") == f"listed:{listed}:{ZONE}" for e in resolved), resolved
    assert MASTER not in log
