"""The deployment kit in examples/deploy/: the systemd unit (systemd-analyze), the container
file (hadolint) and the two-daemon example."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.ops.tools import ROOT, require_tool

DEPLOY = ROOT / "examples" / "deploy"
UNIT = DEPLOY / "systemd" / "fleet-reconciler.service"
CONTAINERFILE = DEPLOY / "Containerfile"
COMPOSE = DEPLOY / "ha" / "compose.yaml"
INSTALLED = "/opt/fleet-reconciler/bin/reconcile"


def _unit_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with the installed path replaced by this checkout's `reconcile` (verify checks
    that ExecStart exists and is executable)."""
    reconcile = Path(sys.executable).parent / "reconcile"
    assert reconcile.exists()
    path = tmp_path / UNIT.name
    path.write_text(
        (text if text is not None else UNIT.read_text()).replace(INSTALLED, str(reconcile))
    )
    return path


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("systemd-analyze")
    return subprocess.run(
        [tool.path, *args], cwd=cwd, env=tool.env, capture_output=True, text=True, timeout=60
    )


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = _unit_copy(tmp_path)
    verified = _analyze("verify", f"./{unit.name}", cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr.strip() == "", verified.stderr  # no "Unknown key", no warning


def test_verify_catches_a_mistake_in_the_unit(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("Restart=on-failure", "Restart=on-failur")
    unit = _unit_copy(tmp_path, broken)
    verified = _analyze("verify", f"./{unit.name}", cwd=tmp_path)
    assert "on-failur" in verified.stderr  # the check that test above relies on can fail


def _exposure(output: str) -> float:
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", output)
    assert match, output[-500:]
    return float(match.group(1))


def test_the_unit_is_hardened(tmp_path: Path) -> None:
    unit = _unit_copy(tmp_path)
    rated = _analyze("security", "--offline=yes", f"./{unit.name}", cwd=tmp_path)
    assert _exposure(rated.stdout + rated.stderr) <= 2.0, rated.stdout[-2000:]
    assert "Unknown key" not in rated.stderr
    # without its hardening block the same service rates far worse: the check can fail
    bare = (
        UNIT.read_text().split("# --- hardening")[0] + "\n[Install]\nWantedBy=multi-user.target\n"
    )
    (tmp_path / "bare").mkdir()
    bare_unit = _unit_copy(tmp_path / "bare", bare)
    rated_bare = _analyze("security", "--offline=yes", f"./{bare_unit.name}", cwd=bare_unit.parent)
    assert _exposure(rated_bare.stdout + rated_bare.stderr) > 5.0


def test_the_unit_runs_what_the_docs_say() -> None:
    text = UNIT.read_text()
    assert "ExecStartPre=/opt/fleet-reconciler/bin/reconcile db upgrade" in text
    assert "ExecStart=/opt/fleet-reconciler/bin/reconcile daemon" in text
    assert "EnvironmentFile=/etc/fleet-reconciler/daemon.env" in text
    # TimeoutStopSec leaves the daemon's shutdown grace (20 s) room to finish
    stop = int(re.search(r"TimeoutStopSec=(\d+)", text).group(1))  # type: ignore[union-attr]
    assert stop > 20
    example = (DEPLOY / "systemd" / "daemon.env.example").read_text()
    for key in ("RECONCILER_DATABASE_URL", "RECONCILER_NODE_MASTER_SECRET"):
        assert f"{key}=" in example


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    tool = require_tool("hadolint")
    return subprocess.run(
        [tool.path, "--no-color", str(path)],
        env=tool.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_containerfile_passes_hadolint() -> None:
    linted = _hadolint(CONTAINERFILE)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_hadolint_flags_a_bad_containerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Containerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install git\nCMD reconcile daemon\n")
    linted = _hadolint(bad)
    assert linted.returncode != 0
    assert "DL3007" in linted.stdout  # :latest


def test_the_containerfile_copies_what_exists_and_runs_unprivileged() -> None:
    text = CONTAINERFILE.read_text()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert user
    assert not user[-1].startswith("0")
    assert user[-1] != "root"
    assert "HEALTHCHECK" in text
    assert "/healthz" in text


def test_the_two_daemon_example_shares_one_database_and_secret() -> None:
    document = yaml.safe_load(COMPOSE.read_text())
    services = document["services"]
    daemons = {
        name: svc for name, svc in services.items() if (svc.get("command") or [None])[0] == "daemon"
    }
    assert len(daemons) == 2
    urls = {svc["environment"]["RECONCILER_DATABASE_URL"] for svc in daemons.values()}
    secrets = {svc["environment"]["RECONCILER_NODE_MASTER_SECRET"] for svc in daemons.values()}
    assert len(urls) == 1
    assert next(iter(urls)).startswith("postgresql+psycopg://")
    assert len(secrets) == 1
    assert len({svc["hostname"] for svc in daemons.values()}) == 2
    assert len({tuple(svc["ports"]) for svc in daemons.values()}) == 2
    # the schema is migrated once, before either daemon starts
    assert services["migrate"]["command"] == ["db", "upgrade"]
    for svc in daemons.values():
        assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        for volume in svc["volumes"]:
            source = volume.split(":")[0]
            assert (COMPOSE.parent / source).resolve().is_dir(), source
