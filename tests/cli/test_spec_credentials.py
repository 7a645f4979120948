"""A spec edit alone cannot send a credential to a new host (issue 11).

An endpoint on loopback records every request it receives; a plain ``reconcile --dry-run`` of
a spec naming it (or naming another secret of the environment as the API key) must send it
nothing, unless the operator allowed it outside the spec. Files holding state or plans are
readable by their owner only.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from reconciler.cli.main import main

KEY = "operator-api-key-0123456789"
MASTER = "node-master-secret-abcdef"

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: demo}}
provider:
  type: hostwinds
{provider}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
regions:
  seattle: {{location_id: 12, plan: baseline, nodes: 1}}
"""


class Recorder:
    """An HTTP endpoint on loopback that records the bodies it receives and answers 403."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                recorder.bodies.append(self.rfile.read(length).decode("utf-8", "replace"))
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cloud/api.php"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def keys_received(self) -> set[str]:
        return {v for body in self.bodies for v in parse_qs(body).get("API", [])}

    def everything_received(self) -> str:
        return "\n".join(self.bodies)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    rec.thread.start()
    try:
        yield rec
    finally:
        rec.server.shutdown()
        rec.server.server_close()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in (
        "HOSTWINDS_API_URL",
        "RECONCILER_API_KEY_ENV",
        "RECONCILER_ALLOWED_ENDPOINTS",
        "RECONCILER_DATABASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RECONCILER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HOSTWINDS_API_KEY", KEY)
    monkeypatch.setenv("RECONCILER_NODE_MASTER_SECRET", MASTER)
    return tmp_path


def dry_run(workdir: Path, provider: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = workdir / "fleet.yaml"
    path.write_text(SPEC.format(provider=provider))
    code = main(["--dry-run", "-f", str(path)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_a_spec_endpoint_receives_nothing_unless_the_operator_allowed_it(
    workdir: Path, recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = dry_run(workdir, f"  endpoint: {recorder.url}", capsys)
    assert code == 1
    assert recorder.bodies == []
    assert "not the official Hostwinds endpoint" in err
    assert "RECONCILER_ALLOWED_ENDPOINTS" in err
    assert KEY not in err


def test_a_spec_cannot_name_another_secret_as_the_api_key(
    workdir: Path,
    recorder: Recorder,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # even towards an endpoint the operator chose, the spec cannot pick the secret sent
    monkeypatch.setenv("HOSTWINDS_API_URL", recorder.url)
    code, err = dry_run(workdir, "  api_key_env: RECONCILER_NODE_MASTER_SECRET", capsys)
    assert code == 1
    assert recorder.bodies == []
    assert "a spec cannot choose which secret of the environment is sent" in err
    assert MASTER not in err


def test_both_at_once_send_nothing(
    workdir: Path, recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = f"  endpoint: {recorder.url}\n  api_key_env: RECONCILER_NODE_MASTER_SECRET"
    code, _ = dry_run(workdir, provider, capsys)
    assert code == 1
    assert recorder.bodies == []


def test_an_endpoint_the_operator_allowed_receives_the_operators_key_only(
    workdir: Path,
    recorder: Recorder,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RECONCILER_ALLOWED_ENDPOINTS", f"https://other.invalid, {recorder.url}")
    code, err = dry_run(workdir, f"  endpoint: {recorder.url}", capsys)
    assert code == 1  # the recorder answers 403
    assert recorder.bodies, err
    assert recorder.keys_received() == {KEY}
    assert MASTER not in recorder.everything_received()


def test_the_operator_may_name_the_key_variable_outside_the_spec(
    workdir: Path,
    recorder: Recorder,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOSTWINDS_API_URL", recorder.url)
    monkeypatch.setenv("PROD_HOSTWINDS_KEY", "prod-key")
    monkeypatch.setenv("RECONCILER_API_KEY_ENV", "PROD_HOSTWINDS_KEY")
    # the spec may then name the same variable (or nothing)
    for provider in ("  api_key_env: PROD_HOSTWINDS_KEY", "  template: ubuntu-22.04"):
        recorder.bodies.clear()
        code, err = dry_run(workdir, provider, capsys)
        assert code == 1
        assert recorder.keys_received() == {"prod-key"}, err


def test_the_official_endpoint_needs_no_permission(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from reconciler.wiring import provider_credentials
    from specs.loading import load_spec_text

    spec = load_spec_text(
        SPEC.format(provider="  endpoint: https://clients.hostwinds.com/cloud/api.php/")
    ).spec
    assert provider_credentials(spec, {}) == (
        "https://clients.hostwinds.com/cloud/api.php/",
        "HOSTWINDS_API_KEY",
    )


# --- files holding state or plans: owner only ----------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_database_simulator_account_and_saved_plans_are_0600(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = workdir / "fleet.yaml"
    path.write_text(
        SPEC.format(provider="  template: ubuntu-22.04").replace("hostwinds", "simulator")
    )
    plan = workdir / "plan.json"
    plan.write_text("{}")
    plan.chmod(0o644)  # an existing file is narrowed too
    code = main(["--dry-run", "-f", str(path), "--out", str(plan)])
    assert code == 0, capsys.readouterr().err
    state = workdir / "state"
    assert mode(plan) == 0o600
    database = workdir / ".reconciler" / "state.db"  # the default SQLite store
    assert mode(database) == 0o600
    assert mode(state / "simulator.json") == 0o600
    for extra in database.parent.glob("state.db-*"):
        assert mode(extra) == 0o600, extra
