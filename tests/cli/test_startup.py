"""CLI start-up: the light commands import nothing heavy, and the lazy command tree says what
the commands themselves say (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from reconciler.cli.commands import LAZY_COMMANDS, cli
from reconciler.cli.main import main
from reconciler.cli.options import LOG_LEVELS
from reconciler.daemon.formatting import LEVELS

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "examples" / "quickstart.yaml")

#: what a light command must never load: the store, the HTTP client and servers, the engine
HEAVY = (
    "sqlalchemy",
    "alembic",
    "psycopg",
    "httpx",
    "uvicorn",
    "starlette",
    "asyncssh",
    "apscheduler",
    "rich",
    "state",
    "providers",
    "reconciler.engine",
    "reconciler.daemon.running",
    "reconciler.wiring",
)

PROBE = (
    "import json, sys\n"
    "from reconciler.cli.main import main\n"
    "code = main(sys.argv[1:])\n"
    "print(json.dumps({'code': code, 'modules': sorted(sys.modules)}), file=sys.stderr)\n"
)


def loaded_modules(*args: str, env: dict[str, str] | None = None) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    return set(report["modules"])


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(
        name for name in modules if any(name == h or name.startswith(h + ".") for h in HEAVY)
    )


@pytest.mark.parametrize(
    "args",
    [("--help",), ("validate", QUICKSTART), ("schema",), ("--version",)],
    ids=["help", "validate", "schema", "version"],
)
def test_light_commands_import_no_store_client_or_server(args: tuple[str, ...]) -> None:
    assert heavy_in(loaded_modules(*args)) == []


@pytest.mark.parametrize(
    "args", [("--help",), ("validate", QUICKSTART), ("schema",)], ids=["help", "validate", "schema"]
)
def test_light_commands_do_not_import_traceback(args: tuple[str, ...]) -> None:
    # the CLI imports it only to print a bug's traceback (neither click, PyYAML, pydantic nor
    # the spec models need it)
    assert "traceback" not in loaded_modules(*args)


#: the probe as the console script runs (``reconciler.cli.main.entry``)
CONSOLE_PROBE = "import reconciler.cli\nreconciler.cli.process_ends_after_command = True\n" + PROBE


def console_modules(*args: str, env: dict[str, str] | None = None) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", CONSOLE_PROBE, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **{k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"},
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        },
        check=False,
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, done.stderr
    return set(report["modules"])


@pytest.mark.parametrize(
    "args", [("validate", QUICKSTART), ("schema",)], ids=["validate", "schema"]
)
def test_the_console_script_does_not_look_for_pydantic_plugins(args: tuple[str, ...]) -> None:
    # importlib.metadata (email, zipfile, csv) and the entry points of every distribution were
    # read at the first validator pydantic built (reconciler/cli/pydanticplugins.py)
    loaded = console_modules(*args)
    assert "pydantic.plugin._loader" in loaded
    assert "importlib.metadata" not in loaded
    assert "zipfile" not in loaded


def test_an_operator_who_sets_the_pydantic_plugin_variable_gets_pydantics_own_loading() -> None:
    loaded = console_modules("validate", QUICKSTART, env={"PYDANTIC_DISABLE_PLUGINS": ""})
    assert "importlib.metadata" in loaded


def test_the_probe_sees_heavy_imports_when_a_command_uses_them() -> None:
    # the check above can fail: `reconcile db --help` loads the store's module
    assert "sqlalchemy" in {m.split(".")[0] for m in loaded_modules("db", "current", "--help")}


#: what a dry-run (embedded simulator, SQLite) never needs: the saved-plan format, migrations,
#: PostgreSQL, the provisioning adapters and stand-ins, the daemon, httpx's command-line client
#: (rich, pygments: providers/hostwinds/lighthttpx.py), SQLAlchemy's ORM (the store's tables
#: are Core tables: state/models.py), the reputation model (the ports name it in annotations)
NOT_FOR_A_DRY_RUN = (
    "reconciler.views.documents",
    "reconciler.core.reputation",
    "sqlalchemy.orm",
    "httpx._main",
    "rich",
    "pygments",
    "alembic",
    "psycopg",
    "asyncssh",
    "dns",
    "aiosmtpd",
    "apscheduler",
    "reconciler.daemon",
    "providers.simulator.standins",
)


#: a fleet without provisioning (the benchmark's: benchmarks/dry_run.py)
SMALL_FLEET = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {name: probe}
provider: {type: simulator, build_time: 1s}
plans:
  baseline: {rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}
regions:
  dallas: {location_id: 13, plan: baseline, nodes: 2}
"""


def test_a_dry_run_imports_only_what_it_uses(tmp_path: Path) -> None:
    spec = tmp_path / "fleet.yaml"
    spec.write_text(SMALL_FLEET)
    env = {
        "RECONCILER_STATE_DIR": str(tmp_path),
        "RECONCILER_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        "HOSTWINDS_API_URL": "",
    }
    args = ("-f", str(spec), "--dry-run")
    # the first run creates the database (migrations: alembic); the second is the measured one
    loaded_modules(*args, env=env)
    modules = loaded_modules(*args, env=env)
    assert {"sqlalchemy", "httpx", "uvicorn"} <= {m.split(".")[0] for m in modules}
    loaded = sorted(
        m for m in modules if any(m == h or m.startswith(h + ".") for h in NOT_FOR_A_DRY_RUN)
    )
    assert loaded == []
    # the check can fail: with --out the plan's document format is loaded
    out = loaded_modules(*args, "--out", str(tmp_path / "plan.json"), env=env)
    assert "reconciler.views.documents" in out


def test_help_does_not_even_build_the_spec_models() -> None:
    assert "specs.model" not in loaded_modules("--help")


def test_every_subcommand_is_in_the_lazy_table_under_its_own_name() -> None:
    ctx = click.Context(cli)
    for name, lazy in LAZY_COMMANDS.items():
        command = lazy.load()
        assert command.name == name, lazy.target
    assert cli.list_commands(ctx) == sorted(LAZY_COMMANDS)


@pytest.mark.parametrize("limit", [20, 45, 60, 80, 1000])
def test_the_table_help_lines_are_the_commands_own(limit: int) -> None:
    for name, lazy in LAZY_COMMANDS.items():
        command = lazy.load()
        assert lazy.short_help_str(limit) == command.get_short_help_str(limit), name


def test_root_help_lists_every_command_with_its_line() -> None:
    result = CliRunner().invoke(cli, ["--help"], terminal_width=100)
    assert result.exit_code == 0
    commands = result.output.split("Commands:", 1)[1]
    for name in LAZY_COMMANDS:
        assert f"\n  {name} " in commands
    assert "Check spec files" in commands


def test_log_level_choices_are_the_formatters() -> None:
    assert LOG_LEVELS == LEVELS


def test_unknown_command_is_a_clean_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_a_subcommand_still_runs_after_lazy_loading(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", QUICKSTART]) == 0
    assert "valid" in capsys.readouterr().out
