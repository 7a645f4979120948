"""``reconcile`` waits for convergence after applying (issue 9, like ``kubectl wait``): the
real process against the simulator over a socket."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Cli, Sim, spec_text

pytestmark = pytest.mark.e2e

#: every add_instance answered 503 without being applied: an unknown outcome for the client
LOST_CREATES = {"http_5xx_rate": 1.0, "actions": ["add_instance"]}


def _faults(sim: Sim, faults: dict[str, object] | None) -> None:
    if faults is None:
        sim._call("DELETE", "/sim/faults")
    else:
        sim._call("POST", "/sim/faults", dict(faults))


def test_waiting_work_exits_2_with_detailed_exitcode_and_no_wait(cli: Cli, sim: Sim) -> None:
    cli.write_spec(spec_text("web", {"dallas": 1}))
    _faults(sim, LOST_CREATES)
    result = cli.run("--yes", "--no-wait", "--detailed-exitcode")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "waiting: 1" in result.stdout
    assert "waiting for the fleet" not in result.stdout
    # a plan with only the waiting create left is still "changes remain"
    check = cli.run("--dry-run", "--detailed-exitcode")
    assert check.returncode == 2, check.stdout + check.stderr
    assert "matches the spec" not in check.stdout
    # without --detailed-exitcode, --no-wait exits 0 having sent what it could
    other = cli.write_spec(spec_text("mail", {"dallas": 1}), name="mail.yaml")
    plain = cli.run("--yes", "--no-wait", "-f", str(other))
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "waiting: 1" in plain.stdout


def test_the_wait_times_out_saying_why_and_what_the_next_run_does(cli: Cli, sim: Sim) -> None:
    cli.write_spec(spec_text("web", {"dallas": 1}))
    _faults(sim, LOST_CREATES)
    result = cli.run("--yes", "--timeout", "1s")
    assert result.returncode == 1, result.stdout + result.stderr
    err = result.stderr
    assert "error: the fleet did not converge: not within 1.0s" in err
    assert "remaining:" in err
    assert "web-dallas-001" in err
    assert "the next run:" in err
    assert "looks web-dallas-001 up again; re-creates it if it has not appeared by" in err
    assert "hint: run `reconcile` again later" in err
    assert "Traceback" not in err
    assert "waiting for the fleet to converge (up to 1.0s" in result.stdout
    assert sim.stats()["mutations"] == 0


def test_the_wait_re_creates_a_lost_create_after_the_grace_and_converges(
    cli: Cli, sim: Sim
) -> None:
    # a grace long enough that the second run starts inside it
    cli.write_spec(
        spec_text("web", {"dallas": 2}).replace("adoption_grace: 2s", "adoption_grace: 20s")
    )
    _faults(sim, LOST_CREATES)
    first = cli.run("--yes", "--no-wait")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "waiting: 2" in first.stdout
    _faults(sim, None)
    result = cli.run("--yes", "--timeout", "1m", "--detailed-exitcode")
    assert result.returncode == 2, result.stdout + result.stderr  # changes made, converged
    assert "converged: fleet web matches the spec" in result.stdout
    assert "waiting for the fleet to converge (up to 1m" in result.stdout
    assert "a follow-up run while waiting applies:" in result.stdout
    assert sorted(sim.names("web-")) == ["web-dallas-001", "web-dallas-002"]
    check = cli.run("--dry-run", "--detailed-exitcode")
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_bad_timeout_is_a_usage_error(cli: Cli) -> None:
    cli.write_spec(spec_text("web", {"dallas": 1}))
    result = cli.run("--yes", "--timeout", "10")
    assert result.returncode == 2
    assert "expected a duration like 30s, 10m or 1h" in result.stderr
    assert "Traceback" not in result.stderr
