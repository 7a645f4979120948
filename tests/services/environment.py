"""Where `.ci/services` put the binaries: read from its env file.

The env file (default ``<checkout>/.cache/services.env``, or ``$FLEET_SERVICES_ENV``) has
``export FLEET_X=value`` lines. Variables already set in the environment win over the file, so
``FLEET_POSTCONF=/usr/sbin/postconf pytest ...`` points a test at another binary.

A missing binary skips the tests that need it locally and **fails** them under ``CI=true``.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ENV_FILE = ROOT / ".cache" / "services.env"

# Short name -> the env file's variable (real binary paths; the wrappers are in FLEET_SERVICES_BIN).
BINARIES = {
    "named": "FLEET_NAMED",
    "named-checkconf": "FLEET_NAMED_CHECKCONF",
    "named-checkzone": "FLEET_NAMED_CHECKZONE",
    "rndc": "FLEET_RNDC",
    "tsig-keygen": "FLEET_TSIG_KEYGEN",
    "dig": "FLEET_DIG",
    "nsupdate": "FLEET_NSUPDATE",
    "sshd": "FLEET_SSHD",
    "ssh-keygen": "FLEET_SSH_KEYGEN",
    "ssh": "FLEET_SSH",
    "postconf": "FLEET_POSTCONF",
    "promtool": "FLEET_PROMTOOL",
    "chromium": "FLEET_CHROMIUM",
    "libnss_wrapper.so": "FLEET_NSS_WRAPPER",
    "setpriv": "FLEET_SETPRIV",
    "systemd-analyze": "FLEET_SYSTEMD_ANALYZE",
    "git": "FLEET_GIT",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip locally; fail under CI=true (a CI run must never skip a real counterpart)."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: required; run .ci/services)", pytrace=False)
    pytest.skip(f"{reason}; run .ci/services")


def env_file() -> Path:
    return Path(os.environ.get("FLEET_SERVICES_ENV", str(DEFAULT_ENV_FILE)))


@cache
def _file_values(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return values
    for number, line in enumerate(text.splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "export":
            words = words[1:]
        if len(words) != 1 or "=" not in words[0]:
            raise ValueError(f"{path}:{number}: expected `export NAME=value`, got {line!r}")
        name, _, value = words[0].partition("=")
        values[name] = value
    return values


@dataclass(frozen=True)
class ServiceEnv:
    """The values of the env file (overridden by the process environment)."""

    values: dict[str, str]
    source: Path

    @classmethod
    def load(cls) -> ServiceEnv:
        path = env_file()
        values = dict(_file_values(path))
        for name in [*BINARIES.values(), "FLEET_SERVICES_PREFIX", "FLEET_SERVICES_BIN"]:
            if name in os.environ:
                values[name] = os.environ[name]
        if "FLEET_SERVICES_LD_LIBRARY_PATH" in os.environ:
            values["FLEET_SERVICES_LD_LIBRARY_PATH"] = os.environ["FLEET_SERVICES_LD_LIBRARY_PATH"]
        return cls(values, path)

    @property
    def ld_library_path(self) -> str:
        return self.values.get("FLEET_SERVICES_LD_LIBRARY_PATH", "")

    @property
    def bin_dir(self) -> Path | None:
        value = self.values.get("FLEET_SERVICES_BIN")
        return Path(value) if value else None

    def binary(self, name: str) -> Path | None:
        """The real binary (needs ``ld_library_path``), or None if absent."""
        value = self.values.get(BINARIES[name], "")
        if not value:
            return None
        path = Path(value)
        return path if path.exists() else None

    def command(self, name: str) -> Path | None:
        """A command that runs as is (a wrapper setting LD_LIBRARY_PATH), or None if absent."""
        real = self.binary(name)
        if real is None:
            return None
        if self.bin_dir is not None and (self.bin_dir / name).exists():
            return self.bin_dir / name
        return real

    def require_binary(self, name: str) -> Path:
        found = self.binary(name)
        if found is None:
            skip_or_fail(f"{name} not found (env file {self.source})")
            raise AssertionError("unreachable")  # skip_or_fail raises
        return found

    def require_command(self, name: str) -> Path:
        self.require_binary(name)
        found = self.command(name)
        assert found is not None
        return found

    def tool_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment in which the real binaries find their libraries."""
        env = dict(os.environ if base is None else base)
        if self.ld_library_path:
            old = env.get("LD_LIBRARY_PATH")
            env["LD_LIBRARY_PATH"] = self.ld_library_path + (f":{old}" if old else "")
        return env
