"""Reading .ci/services' env file; missing binaries skip locally and fail under CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.services.environment import ServiceEnv


def load(monkeypatch: pytest.MonkeyPatch, path: Path) -> ServiceEnv:
    monkeypatch.setenv("FLEET_SERVICES_ENV", str(path))
    for name in ("FLEET_NAMED", "FLEET_POSTCONF", "FLEET_SERVICES_BIN"):
        monkeypatch.delenv(name, raising=False)
    return ServiceEnv.load()


def test_reads_export_lines_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = tmp_path / "named"
    named.write_text("")
    other = tmp_path / "postconf-elsewhere"
    other.write_text("")
    env_file = tmp_path / "services.env"
    env_file.write_text(
        "# comment\n"
        f"export FLEET_NAMED={named}\n"
        "export FLEET_POSTCONF=/nonexistent/postconf\n"
        "export FLEET_SERVICES_LD_LIBRARY_PATH='/a b/lib'\n"
    )
    monkeypatch.setenv("FLEET_SERVICES_ENV", str(env_file))
    monkeypatch.setenv("FLEET_POSTCONF", str(other))

    env = ServiceEnv.load()

    assert env.binary("named") == named
    assert env.binary("postconf") == other
    assert env.ld_library_path == "/a b/lib"
    assert env.tool_env({"LD_LIBRARY_PATH": "/x"})["LD_LIBRARY_PATH"] == "/a b/lib:/x"


def test_a_missing_binary_skips_locally(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = load(monkeypatch, tmp_path / "absent.env")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"named not found .*run \.ci/services"):
        env.require_binary("named")


def test_a_missing_binary_fails_under_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "services.env"
    env_file.write_text("export FLEET_NAMED=/nonexistent/named\n")
    env = load(monkeypatch, env_file)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true: required"):
        env.require_binary("named")


def test_a_malformed_env_file_names_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "broken.env"
    env_file.write_text("export FLEET_NAMED=/x\nrm -rf /\n")
    with pytest.raises(ValueError, match=r"broken\.env:2: expected `export NAME=value`"):
        load(monkeypatch, env_file)
