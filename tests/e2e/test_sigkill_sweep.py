"""The process-level SIGKILL sweep (issue 9): the real ``reconcile`` process against the
simulator over a socket, SIGKILLed at random moments of its apply (seeded), with spec edits
between rounds (grow; then a shrink within the mass-delete guard, a plan change and a pool for
the new node). With the default settings (no lock TTL set: a killed holder on this host is taken
over at once) every round converges within a bounded number of runs, with no duplicate server
for any slot (names unique in the account, one server ever made per name) and nothing left
pending."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from state.store import open_store
from tests.e2e.conftest import LOCATIONS, SPEC, Cli, Sim, base_env, finish
from tests.e2e.test_reconcile import assert_sound

pytestmark = pytest.mark.e2e

FLEET = "sweep"
#: the kill delays' seed (another one explores other kill points: RECONCILER_SWEEP_SEED=N)
SEED = int(os.environ.get("RECONCILER_SWEEP_SEED", "9"))
#: SIGKILLed runs per round, and the applying runs allowed afterwards to converge (the last
#: one finds nothing to do)
KILLS_PER_ROUND = 2
CONVERGE_RUNS = 4
#: a kill lands after 0..KILL_AFTER_MUTATIONS mutating requests of the run (a create is two:
#: add_instance, set_rdns) and then 0..KILL_DELAY s (uniform): inside its apply
KILL_AFTER_MUTATIONS = 4
KILL_DELAY = 0.15

#: (region -> (plan, nodes)), pools: each round's spec
ROUNDS: list[tuple[dict[str, tuple[str, int]], str]] = [
    ({"dallas": ("baseline", 3), "seattle": ("baseline", 2)}, ""),  # from nothing
    ({"dallas": ("baseline", 4), "seattle": ("baseline", 3), "amsterdam": ("baseline", 1)}, ""),
    (  # shrink by 1 of 8 (within the mass-delete guard), a plan change, a new pool filled
        {"dallas": ("baseline", 3), "seattle": ("baseline", 3), "amsterdam": ("large", 2)},
        "ip_pools:\n  eu: {size: 1, regions: [amsterdam]}\n",
    ),
]
RIDS = {"baseline": 52, "large": 53}


def spec_for(regions: dict[str, tuple[str, int]], pools: str) -> str:
    lines = "\n".join(
        f"  {region}: {{location_id: {LOCATIONS[region]}, plan: {plan}, nodes: {count}}}"
        for region, (plan, count) in regions.items()
    )
    return SPEC.format(fleet=FLEET, regions=lines) + pools


def killed_run(cli: Cli, sim: Sim, mutations: int, delay: float) -> tuple[int, str]:
    """Start an apply; SIGKILL it ``delay`` s after the simulator saw ``mutations`` more
    mutating requests of it (0: after its first API request), or let it end."""
    stats = sim.stats()
    total, done = stats["total"], stats["mutations"]
    process = cli.start("--yes", "--no-color")
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        stats = sim.stats()
        if stats["total"] > total and stats["mutations"] >= done + mutations:
            break
        time.sleep(0.01)
    kill_at = time.monotonic() + delay
    while process.poll() is None and time.monotonic() < kill_at:
        time.sleep(0.005)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    return finish(process)


def assert_no_duplicate(sim: Sim) -> None:
    names = sim.names(f"{FLEET}-")
    assert all(count == 1 for count in names.values()), names
    created = Counter(
        {n: c for n, c in sim.stats()["created"].items() if n.startswith(f"{FLEET}-")}
    )
    assert all(count == 1 for count in created.values()), f"a name created twice: {created}"


def assert_matches(sim: Sim, regions: dict[str, tuple[str, int]]) -> None:
    servers = [i for i in sim.instances() if str(i["srvrname"]).startswith(f"{FLEET}-")]
    for region, (plan, count) in regions.items():
        here = [i for i in servers if str(i["srvrname"]).startswith(f"{FLEET}-{region}-")]
        assert len(here) == count, (region, [i["srvrname"] for i in here])
        assert {int(i["product_id"]) for i in here} <= {RIDS[plan]}, (region, plan, here)


def test_sigkill_at_random_moments_with_spec_edits_converges_without_duplicates(
    tmp_path: Path, sim: Sim
) -> None:
    rng = random.Random(SEED)
    env = base_env(tmp_path, sim)
    del env["RECONCILER_LOCK_TTL"]  # the default lock: a killed holder is taken over at once
    work = tmp_path / "work"
    work.mkdir()
    cli = Cli(work, env)
    log: list[str] = []
    kills = 0
    for number, (regions, pools) in enumerate(ROUNDS):
        cli.write_spec(spec_for(regions, pools))
        for _ in range(KILLS_PER_ROUND):
            mutations = rng.randint(0, KILL_AFTER_MUTATIONS)
            delay = rng.uniform(0.0, KILL_DELAY)
            code, output = killed_run(cli, sim, mutations, delay)
            assert "Traceback" not in output, output
            kills += code == -signal.SIGKILL
            log.append(f"round {number}: killed {delay:.2f}s after {mutations} mutations: {code}")
            assert_no_duplicate(sim)
        converged = False
        for run in range(CONVERGE_RUNS):
            # exit 0: nothing was left to do (the fleet matches the spec); 2: it applied changes
            applied = cli.run("--yes", "--detailed-exitcode", "--no-color")
            output = applied.stdout + applied.stderr
            assert "Traceback" not in output, output
            log.append(f"round {number}: apply {run + 1}: {applied.returncode}")
            if applied.returncode == 0:
                converged = True
                break
            log.append(f"  not yet: {output[-600:]}")
        assert converged, "\n".join(log)
        assert_no_duplicate(sim)
        assert_matches(sim, regions)
        assert_sound(cli, sim, FLEET)
    store = open_store(env["RECONCILER_DATABASE_URL"], environ={})
    try:
        amsterdam = [n for n in store.load_fleet(FLEET).nodes if n.region == "amsterdam"]
        assert sorted(n.pool or "-" for n in amsterdam) == ["-", "eu"], amsterdam
    finally:
        store.close()
    print("\n".join(log))
    # the seeded delays land inside the runs: most of them are real kills
    assert kills >= len(ROUNDS) * KILLS_PER_ROUND // 2, "\n".join(log)
