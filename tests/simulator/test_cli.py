"""`reconcile simulator` as a real process: serves, keeps state, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from reconciler.cli.main import main
from tests.simulator.calling import IMAGE

pytestmark = pytest.mark.e2e

SECRET = "cli-canary-key-5f1e"


def start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli.main", "simulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "listening on http://127.0.0.1:" in line, line
    return process, line.rsplit(" ", 1)[-1].strip()


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    return out, err


def test_serves_keeps_state_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "sim.json"
    env = {"SIM_KEY": SECRET}
    process, url = start(
        "--state", str(state), "--api-key-env", "SIM_KEY", "--build-time", "0s", env=env
    )
    try:
        with httpx.Client(timeout=10) as http:
            api = url + "/cloud/api.php"
            denied = http.post(api, data={"action": "get_instances", "API": "simulator"}).json()
            assert denied[0]["message"] == "Not Authorized!"
            form = {"action": "add_instance", "API": SECRET, "template": IMAGE, "rid": "52"}
            http.post(api, data={**form, "location_id": "12", "srvrname": "cli-1"})
            instances = http.post(api, data={"action": "get_instances", "API": SECRET}).json()
            assert [i["status"] for i in instances["success"]] == ["ACTIVE"]
    finally:
        out, err = stop(process)
    assert SECRET not in out + err
    assert "simulator stopped" in err
    process, url = start("--state", str(state), "--api-key-env", "SIM_KEY", env=env)
    try:
        with httpx.Client(timeout=10) as http:
            body = http.post(
                url + "/cloud/api.php", data={"action": "get_instances", "API": SECRET}
            ).json()
            assert [i["srvrname"] for i in body["success"]] == ["cli-1"]
    finally:
        stop(process)


def test_sigint_also_exits_zero() -> None:
    process, _ = start()
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=15)
    assert process.returncode == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--build-time", "5"], "expected a duration"),
        (["--build-failure-rate", "2"], "--build-failure-rate"),
        (["--port", "70000"], "--port"),
        (["--allow-ip", "nope"], "bad allow-list address"),
    ],
)
def test_bad_flags_are_clear_errors(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulator", "--port", "0", *args]) != 0
    err = capsys.readouterr().err
    assert fragment in err
    assert "Traceback" not in err


def test_a_corrupt_state_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "sim.json"
    state.write_text("{oops")
    assert main(["simulator", "--port", "0", "--state", str(state)]) == 1
    err = capsys.readouterr().err
    assert "not valid JSON" in err
    assert "hint:" in err
    assert "Traceback" not in err
