"""The real ``reconcile`` process against the simulator over a socket."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from state.store import open_store
from tests.e2e.conftest import (
    QUICKSTART,
    RECONCILE,
    Cli,
    Sim,
    base_env,
    finish,
    plan_document,
    spec_text,
)

pytestmark = pytest.mark.e2e


def assert_sound(cli: Cli, sim: Sim, fleet: str) -> None:
    """No duplicate name; every server of the fleet recorded with its id; no orphan record."""
    names = sim.names(f"{fleet}-")
    assert all(count == 1 for count in names.values()), names
    store = open_store(cli.env["RECONCILER_DATABASE_URL"], environ={})
    try:
        recorded = {n.name: n.service_id for n in store.load_fleet(fleet).nodes}
        assert not store.load_fleet(fleet).pending_intents
    finally:
        store.close()
    servers = {
        str(i["srvrname"]): int(i["serviceid"])
        for i in sim.instances()
        if str(i["srvrname"]).startswith(f"{fleet}-")
    }
    assert servers == recorded


def test_quickstart_dry_run_prints_the_plan(cli: Cli, sim: Sim) -> None:
    result = cli.run("--dry-run", "-f", str(QUICKSTART), "--no-color")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "+ demo-seattle-001" in out
    assert "+ demo-dallas-001" in out
    assert "Plan: 3 to create, 0 to resize, 0 to destroy, 0 to adopt." in out
    assert "Monthly cost: $0.00 -> $44.94 (+$44.94)" in out
    assert sim.stats()["mutations"] == 0


def test_missing_default_spec_gives_a_hint(cli: Cli) -> None:
    result = cli.run("--dry-run")
    assert result.returncode == 1
    assert "fleet.yaml" in result.stderr
    assert "hint: pass -f examples/quickstart.yaml" in result.stderr
    assert "Traceback" not in result.stderr


def test_apply_then_a_dry_run_finds_nothing(cli: Cli, sim: Sim) -> None:
    cli.write_spec(spec_text("web", {"dallas": 2, "seattle": 1}))
    before = cli.run("--dry-run", "--detailed-exitcode")
    assert before.returncode == 2, before.stderr
    applied = cli.run("--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "done: 3, failed: 0" in applied.stdout
    assert sorted(sim.names("web-")) == ["web-dallas-001", "web-dallas-002", "web-seattle-001"]
    sim.reset_stats()
    after = cli.run("--dry-run", "--detailed-exitcode")
    assert after.returncode == 0, after.stdout + after.stderr
    assert after.stdout.startswith("No changes.")
    stats = sim.stats()
    assert stats["mutations"] == 0
    assert_sound(cli, sim, "web")


def test_json_output_is_a_versioned_document(cli: Cli) -> None:
    cli.write_spec(spec_text("doc", {"dallas": 1}))
    result = cli.run("--dry-run", "--output", "json")
    assert result.returncode == 0, result.stderr
    document = plan_document(result)
    assert document["format_version"] == 2
    assert str(document["fingerprint"]).startswith("sha256:")
    assert [c["action"] for c in document["changes"]] == ["create"]
    markdown = cli.run("--dry-run", "--output", "markdown")
    assert markdown.returncode == 0
    assert "doc-dallas-001" in markdown.stdout


def test_saved_plan_applies_and_a_stale_one_is_refused(cli: Cli, sim: Sim) -> None:
    cli.write_spec(spec_text("saved", {"dallas": 1}))
    made = cli.run("--dry-run", "--out", "plan.json")
    assert made.returncode == 0, made.stderr
    applied = cli.run("--plan", "plan.json", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert sorted(sim.names("saved-")) == ["saved-dallas-001"]

    # the same file again: made against an empty store, the world has changed since
    stale = cli.run("--plan", "plan.json", "--yes")
    assert stale.returncode == 1
    assert "stale" in stale.stderr
    assert "hint: make a fresh plan" in stale.stderr
    assert sorted(sim.names("saved-")) == ["saved-dallas-001"]

    # a plan made now, then a server appears behind our back: refused too
    cli.write_spec(spec_text("saved", {"dallas": 2}))
    assert cli.run("--dry-run", "--out", "plan2.json").returncode == 0
    sim.seed("saved-dallas-009", location_id=13)
    refused = cli.run("--plan", "plan2.json", "--yes")
    assert refused.returncode == 1
    assert "stale" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_mass_delete_is_refused_without_the_flag(cli: Cli, sim: Sim) -> None:
    cli.write_spec(spec_text("mass", {"dallas": 1, "seattle": 1}))
    cli.converge()
    cli.write_spec(spec_text("mass", {"dallas": 1}))
    refused = cli.run("--yes")
    assert refused.returncode == 1
    assert "--allow-mass-destroy" in refused.stderr
    assert sorted(sim.names("mass-")) == ["mass-dallas-001", "mass-seattle-001"]
    cli.converge("--allow-mass-destroy")
    assert sorted(sim.names("mass-")) == ["mass-dallas-001"]
    assert_sound(cli, sim, "mass")


def test_destroys_need_a_confirmation(cli: Cli, sim: Sim) -> None:
    cli.write_spec(spec_text("confirm", {"dallas": 3}))
    cli.converge()
    cli.write_spec(spec_text("confirm", {"dallas": 2}))
    unconfirmed = cli.run()  # drain + destroy (no queue figures): a question, no TTY
    assert unconfirmed.returncode == 1
    assert "--yes" in unconfirmed.stderr
    assert len(sim.names("confirm-")) == 3
    confirmed = cli.run("--yes")
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert len(sim.names("confirm-")) == 2


def test_unmanaged_servers_are_left_alone(cli: Cli, sim: Sim) -> None:
    legacy = sim.seed("legacy-mail-1", location_id=13)
    cli.write_spec(spec_text("tidy", {"dallas": 1}))
    cli.converge()
    after = {int(i["serviceid"]): i for i in sim.instances()}
    assert legacy["serviceid"] in after
    assert after[legacy["serviceid"]]["status"] == legacy["status"]
    dry = cli.run("--dry-run", "--output", "json")
    unmanaged = plan_document(dry)["unmanaged"]
    assert [u["name"] for u in unmanaged] == ["legacy-mail-1"]


def test_server_deleted_behind_our_back_is_replaced(cli: Cli, sim: Sim) -> None:
    cli.write_spec(spec_text("drift", {"dallas": 2}))
    cli.converge()
    victim = next(i for i in sim.instances() if i["srvrname"] == "drift-dallas-001")
    sim.delete(int(victim["serviceid"]))
    plan = cli.run("--dry-run", "--no-color")
    assert "drift-dallas-001" in plan.stdout
    cli.converge()
    assert sorted(sim.names("drift-")) == ["drift-dallas-002", "drift-dallas-003"]
    assert_sound(cli, sim, "drift")


#: mutating steps of a one-node create: intent (written sent, at the wire), add_instance, record,
#: rDNS intent, set_rdns, rDNS done and into rotation
STEPS = 6


def test_sigkill_at_each_step_then_rerun_converges(tmp_path: Path, sim: Sim) -> None:
    """One fleet (and one database) per kill point, run side by side against one simulator."""
    clis: dict[int, Cli] = {}
    for step in range(1, STEPS + 2):
        work = tmp_path / f"step{step}"
        work.mkdir()
        clis[step] = Cli(work, base_env(work, sim))
        clis[step].write_spec(spec_text(f"kill{step}", {"dallas": 1}))
    killed = {
        step: cli.start("--yes", env={"RECONCILER_TEST_KILL_AT_STEP": str(step)})
        for step, cli in clis.items()
    }
    for step, process in killed.items():
        code, output = finish(process)
        assert code == (-signal.SIGKILL if step <= STEPS else 0), (step, output)
    pending = set(clis)
    for _ in range(8):
        for _code, output in [finish(clis[s].start("--yes")) for s in sorted(pending)]:
            assert "Traceback" not in output, output
        checks = {s: clis[s].start("--dry-run", "--detailed-exitcode") for s in sorted(pending)}
        pending = {s for s, process in checks.items() if finish(process)[0] != 0}
        if not pending:
            break
        time.sleep(1.0)
    assert not pending, f"kill points that did not converge: {sorted(pending)}"
    for step, cli in clis.items():
        assert sorted(sim.names(f"kill{step}-")) == [f"kill{step}-dallas-001"], step
        assert_sound(cli, sim, f"kill{step}")


def test_embedded_defaults_converge(tmp_path: Path) -> None:
    """No environment at all: embedded simulator and SQLite under ./.reconciler/."""
    work = tmp_path / "embedded"
    work.mkdir()
    env = base_env(tmp_path, None)
    del env["RECONCILER_DATABASE_URL"]
    cli = Cli(work, env)
    applied = cli.run("-f", str(QUICKSTART), "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    check = cli.run("--dry-run", "-f", str(QUICKSTART), "--detailed-exitcode")
    assert check.returncode == 0, check.stdout + check.stderr
    assert (work / ".reconciler" / "state.db").exists()
    assert (work / ".reconciler" / "simulator.json").exists()


@pytest.mark.postgres
def test_apply_on_postgresql(tmp_path: Path, sim: Sim, fresh_postgres_url: str) -> None:
    open_store(fresh_postgres_url, upgrade=True, environ={}).close()
    work = tmp_path / "pg"
    work.mkdir()
    cli = Cli(work, base_env(tmp_path, sim, fresh_postgres_url))
    cli.write_spec(spec_text("pg", {"dallas": 2}))
    applied = cli.run("--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    check = cli.run("--dry-run", "--detailed-exitcode")
    assert check.returncode == 0, check.stdout + check.stderr
    assert_sound(cli, sim, "pg")


def test_a_second_writer_is_refused_with_a_clear_message(cli: Cli, sim: Sim) -> None:
    from datetime import UTC, datetime

    cli.write_spec(spec_text("busy", {"dallas": 1}))
    store = open_store(cli.env["RECONCILER_DATABASE_URL"], environ={})
    try:
        lease = store.acquire_lock("busy", "other-host:4242", 600, datetime.now(UTC))
        refused = cli.run("--yes")
        assert refused.returncode == 1
        assert "other-host:4242" in refused.stderr
        assert "hint:" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert not sim.names("busy-")
        store.release_lock(lease)
    finally:
        store.close()
    assert cli.run("--yes").returncode == 0


def test_ctrl_c_mid_apply_says_how_to_resume_and_a_rerun_converges(cli: Cli, sim: Sim) -> None:
    sim._call("POST", "/sim/faults", {"build_seconds": 5})
    cli.write_spec(spec_text("intr", {"dallas": 2, "seattle": 1}))
    # a default SIGINT disposition whatever this runner inherited (a background job's shell
    # ignores SIGINT, and an ignored signal stays ignored across exec)
    wrapper = (
        "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", wrapper, RECONCILE, "--yes"],
        cwd=cli.cwd,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not sim.names("intr-") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sim.names("intr-"), "no server was created before the deadline"
    process.send_signal(signal.SIGINT)
    code, output = finish(process)
    assert code == 130, output
    assert "interrupted: nothing is lost" in output
    assert "Traceback" not in output
    sim._call("DELETE", "/sim/faults")
    cli.converge()
    names = sim.names("intr-")
    assert sorted(names) == ["intr-dallas-001", "intr-dallas-002", "intr-seattle-001"]
    assert set(names.values()) == {1}  # no duplicate server
