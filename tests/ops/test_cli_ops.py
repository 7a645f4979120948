"""The commands operators reach for: --version, shell completion, --log-level/--log-format on
every command (debug shows the provider's requests, redacted; timestamps carry their zone)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import package_version
from reconciler.cli.main import main
from reconciler.daemon.formatting import JsonFormatter, TextFormatter, configure_logging

BIN = Path(sys.executable).parent
QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.strip() == f"reconcile, version {package_version()}"
    assert re.match(r"\d+\.\d+", package_version())


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert "_RECONCILE_COMPLETE" in script
    assert ("complete " if shell == "fish" else "reconcile") in script


def test_bash_completion_completes_commands_and_options(tmp_path: Path) -> None:
    script = tmp_path / "reconcile.bash"
    script.write_text(
        subprocess.run(
            [str(BIN / "reconcile"), "completion", "bash"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    probe = (
        f"source {script}; "
        "COMP_WORDS=(reconcile hist); COMP_CWORD=1; COMPREPLY=(); _reconcile_completion reconcile; "
        'echo "${COMPREPLY[@]}"; '
        "COMP_WORDS=(reconcile history --out); COMP_CWORD=2; COMPREPLY=(); "
        "_reconcile_completion reconcile; "
        'echo "${COMPREPLY[@]}"; '
        "COMP_WORDS=(reconcile completion ''); COMP_CWORD=2; COMPREPLY=(); "
        "_reconcile_completion reconcile; "
        'echo "${COMPREPLY[@]}"'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "history"
    assert lines[1] == "--output"
    assert set(lines[2].split()) == {"bash", "zsh", "fish"}


def test_debug_logs_show_the_providers_requests_redacted(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "HOSTWINDS_"))}
    env["RECONCILER_STATE_DIR"] = str(tmp_path / "state")
    env["RECONCILER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'state.db'}"
    result = subprocess.run(
        [str(BIN / "reconcile"), "--log-level", "debug", "--dry-run", "-f", str(QUICKSTART)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    requests = [line for line in result.stderr.splitlines() if "get_instances request" in line]
    assert requests
    assert '"API": "***"' in requests[0]
    # every log line starts with an ISO 8601 UTC time with its offset
    for line in result.stderr.splitlines():
        if line.startswith("20"):
            assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 ", line), line
    quiet = subprocess.run(
        [str(BIN / "reconcile"), "--dry-run", "-f", str(QUICKSTART)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "get_instances request" not in quiet.stderr


def test_json_logs_and_formats_carry_the_zone() -> None:
    record = logging.LogRecord("reconciler.x", logging.INFO, "x", 1, "hello %s", ("world",), None)
    record.event = "test.event"
    document = json.loads(JsonFormatter().format(record))
    assert document["msg"] == "hello world"
    assert document["event"] == "test.event"
    assert document["ts"].endswith("+00:00")
    assert "+00:00 info" in TextFormatter().format(record)


def test_configure_logging_keeps_other_handlers_and_replaces_its_own() -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    try:
        configure_logging("text", "INFO")
        configure_logging("json", "DEBUG")
        ours = [h for h in root.handlers if h.get_name() == "fleet-reconciler"]
        assert len(ours) == 1
        assert isinstance(ours[0].formatter, JsonFormatter)
        assert foreign in root.handlers
        assert logging.getLogger("providers").level == logging.DEBUG
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "fleet-reconciler"]:
            root.removeHandler(handler)
        root.removeHandler(foreign)
        for name in ("reconciler", "providers", "state"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_every_command_accepts_the_root_log_options(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        assert (
            main(["--log-level", "info", "--log-format", "json", "validate", str(QUICKSTART)]) == 0
        )
        assert "valid" in capsys.readouterr().out
        assert main(["--log-level", "nonsense", "validate", str(QUICKSTART)]) == 2
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == "fleet-reconciler"]:
            root.removeHandler(handler)
        for name in ("reconciler", "providers", "state"):
            logging.getLogger(name).setLevel(logging.NOTSET)


def _status_on_a_terminal(tmp_path: Path, term: str, *extra: str) -> str:
    """`reconcile status` with its stdout on a pseudo-terminal (as a person would run it)."""
    return _on_a_terminal(tmp_path, term, "status", "-f", str(QUICKSTART), *extra)


def _on_a_terminal(tmp_path: Path, term: str, *argv: str) -> str:
    """`reconcile ARGV` with its stdout and stderr on a pseudo-terminal."""
    import pty

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "NO_COLOR"))}
    env.update(
        TERM=term,
        COLUMNS="160",
        RECONCILER_STATE_DIR=str(tmp_path / "state"),
        RECONCILER_DATABASE_URL=f"sqlite:///{tmp_path / 'state.db'}",
    )
    if argv[0] == "status":
        _record_a_node(env["RECONCILER_DATABASE_URL"])
    leader, follower = pty.openpty()
    errors = tmp_path / "stderr.txt"
    try:
        with errors.open("wb") as stderr:
            process = subprocess.Popen(
                [str(BIN / "reconcile"), *argv],
                stdout=follower,
                stderr=follower if argv[0] != "status" else stderr,
                env=env,
                cwd=tmp_path,
            )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(60) == 0, errors.read_text()
    finally:
        os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


def _record_a_node(url: str) -> None:
    from reconciler.core.fleet import NodeStatus, RecordedNode
    from state.store import open_store

    store = open_store(url)
    try:
        store.upsert_nodes(
            [
                RecordedNode(
                    id="00000000-0000-4000-8000-000000000001",
                    fleet="demo",
                    name="demo-dallas-001",
                    region="dallas",
                    plan="baseline",
                    status=NodeStatus.ACTIVE,
                    service_id=1234,
                    ip_address="198.51.100.7",
                    pool="shared",
                )
            ]
        )
    finally:
        store.close()


def test_status_draws_tables_on_a_terminal_and_plain_text_with_term_dumb(tmp_path: Path) -> None:
    fancy = _status_on_a_terminal(tmp_path, "xterm-256color")
    assert "━" in fancy or "─" in fancy  # rich's table rules
    assert "fleet demo" in fancy
    dumb = _status_on_a_terminal(tmp_path, "dumb")
    assert "━" not in dumb
    assert "─" not in dumb
    assert "\x1b[" not in dumb  # no escape sequences
    assert "demo-dallas-001" in dumb
    assert "NODE" in dumb  # the plain table's header
    plain = _status_on_a_terminal(tmp_path, "xterm-256color", "--no-color")
    assert "\x1b[" not in plain


def test_plans_and_progress_honour_term_dumb(tmp_path: Path) -> None:
    """`reconcile` (plan, then apply with its progress) on a terminal: colors and the live bar
    on xterm; with TERM=dumb plain lines, no escape sequence."""
    fancy = _on_a_terminal(tmp_path, "xterm-256color", "--dry-run", "-f", str(QUICKSTART))
    assert "\x1b[" in fancy
    dumb = _on_a_terminal(tmp_path, "dumb", "-f", str(QUICKSTART), "--yes")
    assert "\x1b[" not in dumb
    assert "+ demo-dallas-001" in dumb
    assert "[1/3] ok" in dumb  # the plain progress lines, not the live bar
    assert "done: 3" in dumb


def test_wants_rich_rules() -> None:
    import io

    from reconciler.views.tables import wants_rich

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert wants_rich(Tty(), {"TERM": "xterm"})
    assert not wants_rich(Tty(), {"TERM": "dumb"})
    assert not wants_rich(Tty(), {"TERM": "xterm", "NO_COLOR": "1"})
    assert not wants_rich(Tty(), {"TERM": "xterm"}, color=False)
    assert not wants_rich(io.StringIO(), {"TERM": "xterm"})
    assert not wants_rich(Tty(), {})


def _embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECONCILER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RECONCILER_DATABASE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.delenv("HOSTWINDS_API_URL", raising=False)


def test_out_says_where_the_plan_went_and_plan_finds_its_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _embedded(monkeypatch, tmp_path)
    spec = tmp_path / "specs" / "fleet.yaml"
    spec.parent.mkdir()
    spec.write_text(QUICKSTART.read_text())
    plan = tmp_path / "plan.json"
    assert main(["--dry-run", "-f", str(spec), "--out", str(plan)]) == 0
    err = capsys.readouterr().err
    assert f"Saved the plan (3 changes) to {plan}" in err
    assert f"reconcile --plan {plan}" in err
    assert json.loads(plan.read_text())["spec_paths"] == [str(spec.resolve())]
    # from another directory, without -f: the plan names its spec
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["--plan", str(plan), "--yes"]) == 0
    assert "done: 3" in capsys.readouterr().out
    spec.unlink()
    assert main(["--plan", str(plan), "--yes"]) == 1
    err = capsys.readouterr().err
    assert f"was made from {spec.resolve()}, which no longer exist" in err
    assert "pass the spec with -f PATH" in err


def test_plan_applied_elsewhere_uses_the_state_it_was_made_against(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quickstart's way: no database URL, the state in ./.reconciler/. A plan saved in one
    folder and applied from another uses the first folder's state (not a fresh, empty one)."""
    monkeypatch.delenv("RECONCILER_STATE_DIR", raising=False)
    monkeypatch.delenv("RECONCILER_DATABASE_URL", raising=False)
    monkeypatch.delenv("HOSTWINDS_API_URL", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "fleet.yaml").write_text(QUICKSTART.read_text())
    assert main(["--dry-run", "--out", "plan.json"]) == 0
    capsys.readouterr()
    document = json.loads((work / "plan.json").read_text())
    assert document["state_dir"] == str((work / ".reconciler").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["--plan", str(work / "plan.json"), "--yes"]) == 0
    captured = capsys.readouterr()
    assert "using the state folder the plan was made against" in captured.err
    assert "done: 3" in captured.out
    assert not (elsewhere / ".reconciler").exists()
    monkeypatch.chdir(work)
    assert main(["--dry-run", "--detailed-exitcode"]) == 0  # converged, in the plan's state
    capsys.readouterr()
    # with a database URL set, a saved plan names no state folder (the URL says where)
    monkeypatch.setenv("RECONCILER_DATABASE_URL", f"sqlite:///{work / '.reconciler' / 'state.db'}")
    assert (
        main(["--dry-run", "--out", str(elsewhere / "p2.json"), "-f", str(work / "fleet.yaml")])
        == 0
    )
    capsys.readouterr()
    assert "state_dir" not in json.loads((elsewhere / "p2.json").read_text())


def test_errors_name_the_endpoint_they_failed_to_reach(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.daemon.serving import free_port

    _embedded(monkeypatch, tmp_path)
    port = free_port()  # nothing listens there
    monkeypatch.setenv("HOSTWINDS_API_URL", f"http://bot:hunter2@127.0.0.1:{port}/cloud/api.php")
    assert main(["--dry-run", "-f", str(QUICKSTART)]) == 1
    err = capsys.readouterr().err
    assert f"could not connect to http://127.0.0.1:{port}/cloud/api.php" in err
    assert "hunter2" not in err
    monkeypatch.delenv("HOSTWINDS_API_URL")
    assert main(["status", "-f", str(QUICKSTART), "--url", f"http://127.0.0.1:{port}"]) == 1
    assert f"cannot reach the daemon at http://127.0.0.1:{port}/v1/fleet" in capsys.readouterr().err
    monkeypatch.setenv("RECONCILER_DATABASE_URL", f"postgresql+psycopg://u@127.0.0.1:{port}/db")
    assert main(["status", "-f", str(QUICKSTART)]) == 1
    assert f"127.0.0.1:{port}" in capsys.readouterr().err
