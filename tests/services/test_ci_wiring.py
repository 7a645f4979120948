"""`.ci/services` is what the README's test command and `.ci/run` call, and it is idempotent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.services.environment import ROOT, ServiceEnv, env_file, skip_or_fail

SERVICES = ROOT / ".ci" / "services"


def readme_test_command() -> str:
    lines = (ROOT / "README.md").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# 2. Install, then run the tests"):
            return lines[i + 1].strip()
    raise AssertionError("README has no '# 2. Install, then run the tests' block")


def test_readme_and_ci_run_the_same_test_command_with_the_services() -> None:
    command = readme_test_command()
    assert "&& .ci/services &&" in command
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_a_warm_run_is_quick_and_rewrites_the_env_file(tmp_path: Path) -> None:
    if not env_file().exists():
        skip_or_fail(f"{env_file()} missing")
    target = tmp_path / "services.env"
    env = {**os.environ, "FLEET_SERVICES_ENV": str(target)}

    done = subprocess.run(
        [str(SERVICES)], env=env, capture_output=True, text=True, timeout=600, check=False
    )

    assert done.returncode == 0, done.stderr
    assert "cache warm" in done.stderr
    # The same paths as the checkout's env file (the first line is a dated comment).
    assert target.read_text().splitlines()[1:] == env_file().read_text().splitlines()[1:]
    assert ServiceEnv.load().binary("named") is not None


def test_an_unknown_argument_is_refused() -> None:
    done = subprocess.run(
        [str(SERVICES), "--frobnicate"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "unknown argument: --frobnicate" in done.stderr
