"""Finding the real counterparts (BIND, sshd, postconf) the shared services script unpacks.

Until ``tests/services/`` (the shared fixtures) is on main, look for the binary on PATH and in
the services env file; skip locally when missing, fail under CI=true.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env_file() -> dict[str, str]:
    path = Path(os.environ.get("FLEET_SERVICES_ENV", ROOT / ".cache" / "services.env"))
    values: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.removeprefix("export ").strip()
            if "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                values[key] = value.strip().strip("'\"")
    return values


def binary(name: str) -> str:
    env = _env_file()
    for key, value in env.items():
        if key.endswith("_BIN") or key.startswith("FLEET_"):
            candidate = Path(value)
            if candidate.name == name and candidate.exists():
                return str(candidate)
    for prefix in [v for k, v in env.items() if k.endswith("PREFIX")]:
        for sub in ("usr/sbin", "usr/bin", "sbin", "bin"):
            candidate = Path(prefix) / sub / name
            if candidate.exists():
                return str(candidate)
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{name} is required in CI (run .ci/services)")
    pytest.skip(f"{name} not installed (run .ci/services)")
