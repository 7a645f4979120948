"""Finding the real tools the ops tests run (promtool, systemd-analyze, hadolint, chromium).

Looked up in this order: the ``FLEET_<NAME>`` environment variable, the env file written by
``.ci/services`` (``.cache/services.env``, or ``$FLEET_SERVICES_ENV``), then ``PATH`` (and the
virtual environment's ``bin``). A tool that is missing skips its test locally and fails it under
``CI=true``, as the team's rules require.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Tool:
    path: str
    env: dict[str, str]


def _env_file() -> dict[str, str]:
    path = Path(os.environ.get("FLEET_SERVICES_ENV") or ROOT / ".cache" / "services.env")
    values: dict[str, str] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return values
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("export ") or "=" not in line:
            continue
        key, _, raw = line[len("export ") :].partition("=")
        parsed = shlex.split(raw)
        values[key] = parsed[0] if parsed else ""
    return values


def find_tool(name: str, *, binary: str | None = None) -> Tool | None:
    key = "FLEET_" + name.upper().replace("-", "_")
    services = _env_file()
    candidates = [os.environ.get(key), services.get(key)]
    env = dict(os.environ)
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            libs = os.environ.get("FLEET_SERVICES_LD_LIBRARY_PATH") or services.get(
                "FLEET_SERVICES_LD_LIBRARY_PATH", ""
            )
            if libs:
                env["LD_LIBRARY_PATH"] = libs
            return Tool(candidate, env)
    venv_bin = str(Path(sys.executable).parent)
    found = shutil.which(binary or name, path=venv_bin + os.pathsep + os.environ.get("PATH", ""))
    return Tool(found, env) if found else None


def require_tool(name: str, *, binary: str | None = None) -> Tool:
    tool = find_tool(name, binary=binary)
    if tool is None:
        message = (
            f"{name} not found (FLEET_{name.upper().replace('-', '_')}, .cache/services.env "
            "or PATH): run .ci/services"
        )
        # in CI the tool is required once the repository has the script that installs it
        # (.ci/services, unpacking Debian packages); hadolint comes with the dev extras
        installer = (ROOT / ".ci" / "services").exists() or name == "hadolint"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes") and installer:
            pytest.fail(message + " (required in CI)")
        pytest.skip(message)
    return tool
