"""The daemon against a private PostgreSQL that the test freezes (SIGSTOP), stops and restarts,
and several daemons whose leader is frozen, killed or has its sessions terminated (issue 10).

Real processes over loopback: the simulator, ``reconcile daemon`` and simulated agents (the
real ``Agent`` with synthetic figures), PostgreSQL run by the test as an unprivileged user
(tests/daemon/privatepg.py).
"""

from __future__ import annotations

import json
import signal
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from state.store import open_store
from tests.daemon.privatepg import PrivatePostgres, postgres_binary, private_postgres
from tests.daemon.processes import (
    Proc,
    Swarm,
    daemon_env,
    fleet,
    leaders,
    live_servers,
    simulator,
    start_daemon,
    wait_for,
)
from tests.daemon.processes import _spawn as spawn

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(280),
    pytest.mark.skipif(postgres_binary("initdb") is None, reason="PostgreSQL binaries missing"),
]

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: faults}}
provider: {{type: simulator, build_time: 300ms}}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
regions:
  dallas: {{location_id: 13, plan: baseline, nodes: {nodes}}}
health: {{heartbeat_interval: 1s, missed_beats: 3, replace_after: 20s}}
reconcile: {{interval: 2s, concurrency: 1, adoption_grace: 5s}}
"""


@pytest.fixture
def pg() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        open_store(server.url, upgrade=True).close()
        yield server


def events(proc: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]


def recorded_sent(pg: PrivatePostgres) -> dict[str, int]:
    """Per node, the emails the store counted (hourly counts, written with each beat)."""
    with psycopg.connect(pg.dsn) as conn:
        rows = conn.execute(
            "SELECT n.name, COALESCE(SUM(c.sent + c.hard_bounces), 0) FROM sending_nodes n "
            "LEFT JOIN node_send_counts c ON c.node_id = n.id GROUP BY n.name"
        ).fetchall()
    return {str(name): int(total) for name, total in rows}


def latencies(url: str, count: int) -> list[float]:
    result = []
    with httpx.Client(timeout=5) as client:
        for _ in range(count):
            started = time.perf_counter()
            assert client.get(f"{url}/healthz").status_code == 200
            result.append(time.perf_counter() - started)
            time.sleep(0.02)
    return result


def test_frozen_stopped_and_restarted_database(tmp_path: Path, pg: PrivatePostgres) -> None:
    """/healthz stays fast while the database is frozen; no 2xx beat is lost and none counted
    twice; the outage pauses and replaces nothing."""
    spec = tmp_path / "fleet.yaml"
    spec.write_text(SPEC.format(nodes=3))
    with simulator(tmp_path, build_time="300ms") as sim:
        env = daemon_env(sim, pg.url, tmp_path / "state")
        daemon, url = start_daemon("daemon", spec, env, tmp_path)
        try:
            wait_for(lambda: len(fleet(url)["nodes"]) == 3, 30, "three nodes")
            with Swarm(url, interval=0.5, rate=40.0, timeout=8.0) as swarm:
                wait_for(lambda: len(swarm.started) == 3, 20, "the agents")
                time.sleep(4)
                baseline = latencies(url, 40)
                pg.freeze()
                frozen_at = time.monotonic()
                healthz = latencies(url, 60)
                ready = httpx.get(f"{url}/readyz", timeout=10)
                assert ready.status_code == 503
                time.sleep(max(0.0, 12 - (time.monotonic() - frozen_at)))
                pg.thaw()
                time.sleep(6)
                pg.stop()
                time.sleep(6)
                pg.start()
                time.sleep(8)
            # every agent is stopped: what it read is recorded, or still carried by it
            recorded = recorded_sent(pg)
            for name, agent in swarm.agents.items():
                carried = agent._carry_sent + agent._carry_bounces
                if agent._pending is not None:
                    carried += agent._pending.sent + agent._pending.bounces
                read = swarm.figures[name].total
                assert recorded.get(name, 0) + carried == read, (name, recorded, carried, read)
                assert recorded.get(name, 0) > 0
        finally:
            assert daemon.stop() == 0, daemon.log()[-3000:]
    healthz.sort()
    baseline.sort()
    p99 = healthz[int(len(healthz) * 0.99) - 1]
    before = baseline[int(len(baseline) * 0.99) - 1]
    # the bound is 50 ms; on a machine loaded by other work the same request can take longer
    # with the database healthy: then it must not be slower than that (the freeze adds nothing)
    assert p99 < max(0.05, 2 * before + 0.02), (
        f"/healthz p99 {p99 * 1000:.1f} ms while the database was frozen, "
        f"{before * 1000:.1f} ms before"
    )
    log = events(daemon)
    decisions = [e for e in log if e.get("event") == "health.decision"]
    assert not [e for e in decisions if e.get("decision") in ("pause", "replace")], decisions
    changes = [e for e in log if e.get("event") in ("plan.change", "apply.change")]
    assert not [e for e in changes if "PAUSE" in str(e) or "DESTROY" in str(e).upper()], changes
    assert any(e.get("event") == "health.observation_gap" for e in log)
    assert statistics.median(healthz) < max(0.02, 2 * statistics.median(baseline))


READS = ("list_servers", "get_server", "find_servers_by_name", "price_list", "locations")


def mutating_calls(url: str) -> float:
    """The cloud calls that change something, as counted by that daemon (its /metrics)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("reconciler_api_calls_total{"):
            labels, value = line.rsplit(" ", 1)
            if not any(f'"{read}"' in labels for read in READS):
                total += float(value)
    return total


def leader_epoch(pg: PrivatePostgres) -> int:
    with psycopg.connect(pg.dsn) as conn:
        row = conn.execute("SELECT epoch FROM leadership WHERE name = 'faults'").fetchone()
    return int(row[0]) if row else 0


def intent_epochs(pg: PrivatePostgres) -> list[int]:
    """The epoch of every journal entry, in the order they were written."""
    with psycopg.connect(pg.dsn) as conn:
        rows = conn.execute("SELECT epoch FROM intents WHERE epoch IS NOT NULL ORDER BY id")
        return [int(epoch) for (epoch,) in rows.fetchall()]


def test_three_daemons_one_acting_leader_through_freeze_kill_and_termination(
    tmp_path: Path, pg: PrivatePostgres
) -> None:
    """Leader SIGSTOP (a standby takes over after the lease; the resumed one stands down and
    makes no store write and no cloud call), the same with the leader's apply in flight (a
    create sent, the build pending), pg_terminate_backend of the leader's sessions
    (only those), leader SIGKILL; never two acting leaders (the journal's epochs never go
    back), never a duplicate server."""
    spec = tmp_path / "fleet.yaml"
    spec.write_text(SPEC.format(nodes=2))
    procs: dict[str, Proc] = {}
    urls: dict[str, str] = {}
    with simulator(tmp_path, build_time="300ms") as sim:
        env = daemon_env(sim, pg.url, tmp_path / "state")
        try:
            for name in ("a", "b", "c"):
                procs[name], urls[name] = start_daemon(f"daemon-{name}", spec, env, tmp_path)
            wait_for(lambda: len(leaders(urls, set())) == 1, 20, "one leader")
            wait_for(lambda: len(live_servers(sim)) == 2, 30, "two servers")
            stopped: set[str] = set()

            # 1. freeze the leader: a standby takes over once the lease expired
            (first,) = leaders(urls, stopped)
            wait_for(
                lambda: any(e.get("event") == "reconcile.noop" for e in events(procs[first])),
                30,
                "a converged fleet",
            )
            calls_before = mutating_calls(urls[first])
            procs[first].popen.send_signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            stopped.add(first)
            wait_for(lambda: len(leaders(urls, stopped)) == 1, 25, "a takeover")
            freeze_failover = time.monotonic() - frozen_at
            assert freeze_failover < 15, freeze_failover
            spec.write_text(SPEC.format(nodes=3))  # work for the new leader
            wait_for(lambda: len(live_servers(sim)) == 3, 30, "three servers")
            procs[first].popen.send_signal(signal.SIGCONT)
            stopped.discard(first)
            time.sleep(3)
            assert len(leaders(urls, set())) == 1  # the resumed one stood down
            if first not in leaders(urls, set()):
                # it called no mutating cloud API since it was frozen (it has not led since)
                assert mutating_calls(urls[first]) == calls_before

            # 1b. freeze the leader while its apply is in flight (the fourth server created, its
            #     build slow), resume it once a standby took over and the build is done: the
            #     old apply goes on where it stopped, and its next step (reverse DNS of the
            #     built server) is refused: no cloud mutation, no write, no duplicate server
            (mid,) = leaders(urls, set())
            mid_started = time.monotonic()
            mid_before = mutating_calls(urls[mid])
            mid_lost = sum(e.get("event") == "leadership.lost" for e in events(procs[mid]))
            mid_stopped = sum(e.get("event") == "reconcile.stopped" for e in events(procs[mid]))
            slow = httpx.post(f"{sim}/sim/faults", json={"build_seconds": 600}, timeout=5)
            assert slow.status_code == 200, slow.text
            spec.write_text(SPEC.format(nodes=4))
            wait_for(lambda: len(live_servers(sim)) == 4, 20, "the fourth server created")
            wait_for(lambda: mutating_calls(urls[mid]) > mid_before, 10, "its create counted")
            # its next mutation waits for the build (600 s): nothing is sent in between
            mid_frozen = mutating_calls(urls[mid])
            procs[mid].popen.send_signal(signal.SIGSTOP)
            mid_frozen_at = time.monotonic()
            stopped.add(mid)
            wait_for(lambda: len(leaders(urls, stopped)) == 1, 25, "a takeover mid-apply")
            mid_failover = time.monotonic() - mid_frozen_at
            (successor,) = leaders(urls, stopped)
            httpx.post(f"{sim}/sim/faults", json={"build_seconds": 0.3}, timeout=5)
            built = httpx.post(f"{sim}/sim/clock/advance", json={"seconds": 600}, timeout=5)
            assert built.status_code == 200, built.text
            procs[mid].popen.send_signal(signal.SIGCONT)
            stopped.discard(mid)
            wait_for(
                lambda: (
                    sum(e.get("event") == "leadership.lost" for e in events(procs[mid])) > mid_lost
                ),
                10,
                "the resumed leader to see its lease over",
            )

            def finished() -> bool:
                nodes = fleet(urls[successor])["nodes"]
                return len(nodes) == 4 and all(n["status"] != "provisioning" for n in nodes)

            wait_for(finished, 20, "the new leader to finish the fourth server")

            def ended_by_the_loss() -> bool:
                ended = sum(e.get("event") == "reconcile.stopped" for e in events(procs[mid]))
                return ended > mid_stopped

            # the resumed leader's run in flight ended on its loss (its next step refused)
            wait_for(ended_by_the_loss, 15, "the old leader's apply to end on its loss")
            assert leaders(urls, set()) == [successor]
            assert mutating_calls(urls[mid]) == mid_frozen  # nothing sent once resumed
            servers = live_servers(sim)
            assert sorted(Counter(servers).values()) == [1, 1, 1, 1], servers
            mid_phase = time.monotonic() - mid_started

            # 2. terminate the leader's own database sessions, and only those: it stops, a
            #    leader again (with a newer epoch), the standbys' sessions untouched
            (second,) = leaders(urls, set())
            epoch_before = leader_epoch(pg)
            sessions_before = pg.sessions()

            def losses() -> int:
                return sum(e.get("event") == "leadership.lost" for e in events(procs[second]))

            lost_before = losses()
            terminated = pg.terminate_sessions_of(procs[second].popen.pid)
            assert 0 < terminated < sessions_before, (terminated, sessions_before)
            wait_for(lambda: len(leaders(urls, set())) == 1, 20, "a leader again")
            wait_for(lambda: leader_epoch(pg) > epoch_before, 20, "a newer epoch")
            wait_for(lambda: losses() > lost_before, 10, "the leader to notice its loss")

            # 3. kill the leader
            (third,) = leaders(urls, set())
            spec.write_text(SPEC.format(nodes=5))
            procs[third].stop(signal.SIGKILL)
            killed_at = time.monotonic()
            stopped.add(third)
            wait_for(lambda: len(leaders(urls, stopped)) == 1, 20, "a takeover after a kill")
            kill_failover = time.monotonic() - killed_at
            assert kill_failover < 5, kill_failover
            wait_for(lambda: len(live_servers(sim)) == 5, 40, "five servers")
            time.sleep(3)
            servers = live_servers(sim)
            assert max(Counter(servers).values()) == 1, servers
            assert len(servers) == 5
            epochs = intent_epochs(pg)
            assert epochs, "no journal entry"
            assert epochs == sorted(epochs), epochs  # an older epoch never wrote after a newer
        finally:
            for proc in procs.values():
                proc.popen.send_signal(signal.SIGCONT)
                if proc.popen.poll() is None:
                    proc.stop(signal.SIGTERM)
    # the frozen-then-resumed leader: lost leadership on resume, made no write with its epoch
    resumed = events(procs[first])
    lost = [i for i, e in enumerate(resumed) if e.get("event") == "leadership.lost"]
    assert lost, [e.get("event") for e in resumed][-30:]
    after = resumed[lost[0] + 1 :]
    writes = [e for e in after if e.get("event") in ("apply.change", "plan.change")]
    # anything it applied after resuming happened only once it led again (a new epoch)
    retaken = [i for i, e in enumerate(after) if e.get("event") == "leadership.taken"]
    if writes:
        assert retaken, writes[:3]
        assert after.index(writes[0]) > retaken[0], writes[:3]
    # the leader frozen mid-apply: after its loss, no change done and nothing planned again
    # unless it led again (a new epoch)
    resumed_mid = events(procs[mid])
    lost_mid = [i for i, e in enumerate(resumed_mid) if e.get("event") == "leadership.lost"]
    assert len(lost_mid) > mid_lost, [e.get("event") for e in resumed_mid][-30:]
    after_mid = resumed_mid[lost_mid[mid_lost] + 1 :]
    done = [e for e in after_mid if e.get("event") == "apply.change" and e.get("ok")]
    retaken_mid = [i for i, e in enumerate(after_mid) if e.get("event") == "leadership.taken"]
    if done:
        assert retaken_mid, done[:3]
        assert after_mid.index(done[0]) > retaken_mid[0], done[:3]
    print(
        f"failover after freeze {freeze_failover:.1f} s, after a freeze mid-apply "
        f"{mid_failover:.1f} s (that phase {mid_phase:.1f} s), after kill {kill_failover:.1f} s"
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_while_the_reconcile_is_stuck_on_a_frozen_database(
    tmp_path: Path, pg: PrivatePostgres, sig: signal.Signals
) -> None:
    """SIGTERM (once) or SIGINT (twice) while the reconcile in flight waits on a frozen
    database: the signal is logged at once, nothing is mutated afterwards, the daemon leaves
    within the grace plus the stop margin (a second SIGINT: at once), and leadership is free
    for another daemon as soon as the database answers again."""
    spec = tmp_path / "fleet.yaml"
    spec.write_text(SPEC.format(nodes=2))
    with simulator(tmp_path, build_time="300ms") as sim:
        env = daemon_env(sim, pg.url, tmp_path / "state")
        daemon, url = start_daemon("daemon", spec, env, tmp_path)
        try:
            wait_for(lambda: len(fleet(url)["nodes"]) == 2, 30, "two nodes")
            wait_for(lambda: fleet(url)["leader"], 15, "leadership")
            wait_for(
                lambda: any(e.get("event") == "reconcile.noop" for e in events(daemon)),
                30,
                "a converged fleet",
            )
            pg.freeze()
            # the next reconcile (every 2 s) reads the store in its thread: it waits there for
            # ever (the daemon's own loop goes on)
            time.sleep(5)
            before = len(events(daemon))
            signalled = time.monotonic()
            daemon.popen.send_signal(sig)
            wait_for(
                lambda: any(e.get("event") == "daemon.stopping" for e in events(daemon)),
                3,
                "the stop to be logged",
                step=0.05,
            )
            logged_after = time.monotonic() - signalled
            if sig == signal.SIGINT:
                daemon.popen.send_signal(sig)  # a second one: leave now
            code = daemon.popen.wait(40)
            took = time.monotonic() - signalled
            pg.thaw()
            from state.leadership import PostgresLeadership

            other = PostgresLeadership(pg.url, "faults", "after-the-stop")
            try:
                taken_from = time.monotonic()
                wait_for(other.try_acquire, 15, "leadership free for another daemon")
                free_after = time.monotonic() - taken_from
            finally:
                other.close()
        finally:
            pg.thaw()
            if daemon.popen.poll() is None:
                daemon.stop(signal.SIGKILL)
    log = events(daemon)
    after = log[before:]
    kinds = [e.get("event") for e in after]
    assert logged_after < 3, logged_after
    # --shutdown-grace 5s + the 10 s margin (a second SIGINT: the 3 s release wait), with
    # slack for a loaded machine
    assert took < (6 if sig == signal.SIGINT else 17), (took, kinds)
    forced = [e for e in after if e.get("event") == "daemon.forced_exit"]
    assert code == 1, (code, kinds)  # a forced stop says so
    assert len(forced) == 1, kinds
    # the reconcile waits on the database in its own thread: the daemon's loop answers the
    # signal at once (issue 10) and, past the grace, abandons the reconcile and goes on
    assert "event loop never answered" not in forced[0]["phase"], forced
    if sig == signal.SIGTERM:
        assert "daemon.abandoned" in kinds, kinds
        assert forced[0]["phase"] != "waiting for the reconcile in flight", forced
    assert any(e.get("event") == "daemon.forced_exit.leadership" for e in after), kinds
    assert not [e for e in after if e.get("exc")], [e.get("msg") for e in after if e.get("exc")]
    stop_at = kinds.index("daemon.stopping")
    mutations = [e for e in after[stop_at:] if e.get("event") in ("apply.change", "plan.change")]
    assert not mutations, mutations
    assert free_after < 10, free_after
    print(
        f"{sig.name}: logged after {logged_after:.2f} s, exit {code} after {took:.1f} s, "
        f"forced: {[e.get('phase') for e in forced]}, leadership free {free_after:.1f} s "
        "after the thaw"
    )


def test_stop_signal_while_starting_against_a_frozen_database(
    tmp_path: Path, pg: PrivatePostgres
) -> None:
    """A daemon that starts while the database does not answer (it waits up to the connect
    timeout): SIGTERM is logged and ends it at once."""
    spec = tmp_path / "fleet.yaml"
    spec.write_text(SPEC.format(nodes=1))
    with simulator(tmp_path, build_time="300ms") as sim:
        env = daemon_env(sim, pg.url, tmp_path / "state")
        pg.freeze()
        try:
            proc = spawn(
                "daemon",
                ["daemon", "-f", str(spec), "--listen", "127.0.0.1:0", "--log-format", "json"],
                env,
                tmp_path,
            )
            # it is connecting to the frozen database (the store is built before anything
            # else waits)
            wait_for(lambda: pg.client_ports(proc.popen.pid), 30, "a connection", step=0.05)
            signalled = time.monotonic()
            proc.popen.send_signal(signal.SIGTERM)
            code = proc.popen.wait(10)
            took = time.monotonic() - signalled
        finally:
            pg.thaw()
            if proc.popen.poll() is None:
                proc.stop(signal.SIGKILL)
    assert code == 0, proc.log()[-2000:]
    assert took < 2, took
    (stopping,) = [e for e in events(proc) if e.get("event") == "daemon.stopping"]
    assert stopping["phase"] == "starting"
    assert "Traceback" not in proc.log()
