"""Several daemons on a private PostgreSQL whose leader is frozen (also mid-apply), has its
sessions terminated or is killed: one acting leader at a time, no duplicate server (issue 10).
Split from test_pg_faults.py so the two long files run on different xdist workers."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.daemon.pgfaults import MARKS, SPEC, events
from tests.daemon.privatepg import PrivatePostgres
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

pytestmark = MARKS


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


def not_leading(log: list[dict[str, Any]], losses_before: int) -> list[dict[str, Any]]:
    """A daemon's events after its leadership loss number ``losses_before + 1`` and before it
    took leadership again (or its end)."""
    lost = [i for i, e in enumerate(log) if e.get("event") == "leadership.lost"]
    assert len(lost) > losses_before, [e.get("event") for e in log][-30:]
    after = log[lost[losses_before] + 1 :]
    taken = [i for i, e in enumerate(after) if e.get("event") == "leadership.taken"]
    return after[: taken[0]] if taken else after


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
            first_lost = sum(e.get("event") == "leadership.lost" for e in events(procs[first]))
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
            wait_for(
                lambda: (
                    sum(e.get("event") == "leadership.lost" for e in events(procs[first]))
                    > first_lost
                ),
                10,
                "the resumed leader to see its lease over",
            )
            # the resumed one stood down (the new leader's lease is valid: it cannot retake
            # it), and it called no mutating cloud API since it was frozen
            (leader,) = leaders(urls, set())
            assert leader != first, leader
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
            # then a whole reconcile of the new leader that finds nothing left to do: any
            # duplicate would have been created by then
            (fourth,) = leaders(urls, stopped)

            def noops() -> int:
                return sum(e.get("event") == "reconcile.noop" for e in events(procs[fourth]))

            noops_at_five = noops()
            wait_for(lambda: noops() > noops_at_five, 20, "a converged fleet after the kill")
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
    # the leaders' logs name their work as these events (a rename would leave the checks
    # below with nothing to find)
    worked = [e.get("event") for e in events(procs[successor])]
    assert "plan.change" in worked, worked[-30:]
    assert "apply.change" in worked, worked[-30:]
    # the frozen-then-resumed leader, from its loss until it led again (a new epoch; it may
    # have, later in the test) or its end: it saw the spec ask for more servers (the fourth
    # one, made by others meanwhile) and neither planned nor applied a change
    resumed = events(procs[first])
    standby = not_leading(resumed, first_lost)
    assert "spec.reloaded" in [e.get("event") for e in standby], standby[-30:]
    writes = [e for e in standby if e.get("event") in ("apply.change", "plan.change")]
    assert not writes, writes[:3]
    # the leader frozen mid-apply, from its loss on the same way: its run in flight ended on
    # the loss, and no change was planned or done
    standby_mid = not_leading(events(procs[mid]), mid_lost)
    kinds = [e.get("event") for e in standby_mid]
    assert "reconcile.stopped" in kinds, kinds[-30:]
    planned = [e for e in standby_mid if e.get("event") == "plan.change"]
    done = [e for e in standby_mid if e.get("event") == "apply.change" and e.get("ok")]
    assert not planned, planned[:3]
    assert not done, done[:3]
    print(
        f"failover after freeze {freeze_failover:.1f} s, after a freeze mid-apply "
        f"{mid_failover:.1f} s (that phase {mid_phase:.1f} s), after kill {kill_failover:.1f} s"
    )
