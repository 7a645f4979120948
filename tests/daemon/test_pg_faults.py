"""The daemon against a private PostgreSQL that the test freezes (SIGSTOP), stops and restarts,
and stop signals while the database is frozen (issue 10; several daemons whose leader is
frozen, killed or has its sessions terminated: test_pg_leaders.py).

Real processes over loopback: the simulator, ``reconcile daemon`` and simulated agents (the
real ``Agent`` with synthetic figures), PostgreSQL run by the test as an unprivileged user
(tests/daemon/privatepg.py).
"""

from __future__ import annotations

import signal
import statistics
import time
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.daemon.pgfaults import MARKS, SPEC, events
from tests.daemon.privatepg import PrivatePostgres
from tests.daemon.processes import (
    Swarm,
    daemon_env,
    fleet,
    simulator,
    start_daemon,
    wait_for,
)
from tests.daemon.processes import _spawn as spawn

pytestmark = MARKS


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
                freezing = time.time()
                pg.freeze()
                frozen_at = time.monotonic()
                healthz = latencies(url, 60)
                asked = time.monotonic()
                ready = httpx.get(f"{url}/readyz", timeout=10)
                ready_took = time.monotonic() - asked
                assert ready.status_code == 503
                # /readyz has a deadline (2 s), it does not wait on the frozen store
                assert ready_took < 4, ready_took
                time.sleep(max(0.0, 12 - (time.monotonic() - frozen_at)))
                thawing = time.time()
                pg.thaw()
                time.sleep(6)
                stopping = time.time()
                pg.stop()
                time.sleep(6)
                starting = time.time()
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
    # each outage opened an observation gap of its own (the start-up's ended before the
    # freeze), whose window counts from when the daemon could observe again: after the thaw,
    # after the restart, never from a moment when the database did not answer
    gaps = [e for e in log if e.get("event") == "health.observation_gap"]
    since = [
        (e["cause"], datetime.fromisoformat(e["since"]).timestamp())
        for e in gaps
        if not e["ongoing"]
    ]
    assert since[0][0] == "start", gaps
    assert since[0][1] < freezing, gaps
    causes = ("stall", "store", "intake")  # a frozen read shows as a stalled sweep
    assert [c for c, t in since if thawing <= t < stopping and c in causes], gaps
    assert [c for c, t in since if t >= starting and c in causes], gaps
    assert not [t for _, t in since if freezing <= t < thawing or stopping <= t < starting], gaps
    assert statistics.median(healthz) < max(0.02, 2 * statistics.median(baseline))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_while_the_reconcile_is_stuck_on_a_frozen_database(
    tmp_path: Path, pg: PrivatePostgres, sig: signal.Signals
) -> None:
    """SIGTERM (once) or SIGINT (twice) while the reconcile in flight waits on a frozen
    database: the signal is logged at once, nothing is mutated afterwards, and leadership is
    free for another daemon as soon as the database answers again. SIGTERM: a clean stop
    (exit 0, not forced) soon after the grace, which says what it left behind (the lease left
    to expire, at when; the reconcile's store call); a second SIGINT: a forced stop at once."""
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
    forced = [e for e in after if e.get("event") == "daemon.forced_exit"]
    if sig == signal.SIGTERM:
        # the reconcile waits on the database in its own thread: the daemon's loop answers the
        # signal at once (issue 10), abandons the reconcile past the grace (5 s; 2 s for it to
        # unwind), gives the release 1.5 s and leaves the frozen connections behind: a clean
        # stop, well before the watchdog would force one (grace + 10 s - 3 s = 12 s)
        assert code == 0, (code, kinds)
        assert not forced, kinds
        assert took < 12, (took, kinds)
        assert "daemon.abandoned" in kinds, kinds
        (release,) = [e for e in after if e.get("event") == "leadership.release_failed"]
        assert release["epoch"] >= 1, release
        assert release["lease_expires_at"], release
        assert "lease left to expire" in release["msg"] or "lease expired" in release["msg"]
        (stopped,) = [e for e in after if e.get("event") == "daemon.stopped"]
        assert "the leadership lease (left to expire)" in stopped["left_behind"], stopped
        assert "the reconcile's store call" in stopped["left_behind"], stopped
        assert kinds[-1] == "daemon.exit_unjoined", kinds
    else:
        assert took < 6, (took, kinds)  # a second SIGINT: the 3 s release wait
        assert code == 1, (code, kinds)  # a forced stop says so
        assert len(forced) == 1, kinds
        assert "event loop never answered" not in forced[0]["phase"], forced
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
