"""`reconcile node cordon|uncordon|drain|maintenance|resume|retry` against the real store
(SQLite and PostgreSQL) and the embedded simulator: the hold is recorded with who and why,
the next reconcile honours it (out of rotation, drained, held), it survives a spec change and
the node's record being rewritten, it shows in plans, `status`, `node list|show` and
`history`, and uncordon puts the node back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.cli.main import main
from reconciler.core.fleet import NodeStatus, StepState, StepStatus
from state.store import open_store
from tests.ops.quickstart import fast_quickstart

NODE = "demo-dallas-001"


@pytest.fixture
def fleet(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    database_url: str,
) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECONCILER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RECONCILER_DATABASE_URL", database_url)
    monkeypatch.delenv("HOSTWINDS_API_URL", raising=False)
    monkeypatch.setenv("RECONCILER_ACTOR", "cli alice@ops")
    spec = tmp_path / "fleet.yaml"
    spec.write_text(fast_quickstart())
    assert main(["db", "upgrade"]) == 0  # PostgreSQL is never migrated implicitly
    assert main(["-f", str(spec), "--yes"]) == 0
    capsys.readouterr()
    return spec


def status_of(url: str, name: str = NODE) -> NodeStatus:
    store = open_store(url)
    try:
        return next(n for n in store.load_fleet("demo").nodes if n.name == name).status
    finally:
        store.close()


def plan_json(spec: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["--dry-run", "-f", str(spec), "-o", "json"]) == 0
    document: dict[str, object] = json.loads(capsys.readouterr().out)
    return document


def test_cordon_is_honoured_kept_shown_and_lifted(
    fleet: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["node", "cordon", NODE, "-f", str(fleet), "--reason", "disk check"]) == 0
    out = capsys.readouterr().out
    assert "cordoned by cli alice@ops: disk check" in out
    assert f"reconcile node uncordon {NODE}" in out
    # the plan takes it out of the rotation, with who and why
    plan = plan_json(fleet, capsys)
    changes = [c for c in plan["changes"] if c["address"] == NODE]  # type: ignore[attr-defined]
    assert [(c["action"], c["after"]) for c in changes] == [("pause", {"status": "maintenance"})]
    assert "cordon by cli alice@ops: disk check" in changes[0]["reason"]
    assert main(["-f", str(fleet), "--yes"]) == 0
    capsys.readouterr()
    assert status_of(database_url) is NodeStatus.MAINTENANCE
    # a spec change (one more seattle node) and a re-apply keep it: the hold is in the store
    fleet.write_text(fleet.read_text().replace("nodes: 2", "nodes: 3", 1))
    assert main(["-f", str(fleet), "--yes"]) == 0
    capsys.readouterr()
    assert status_of(database_url) is NodeStatus.MAINTENANCE
    plan = plan_json(fleet, capsys)
    assert plan["changes"] == []
    assert any("cordoned by cli alice@ops" in n for n in plan["notes"])  # type: ignore[attr-defined]
    # shown in node list, node show, status and history
    assert main(["node", "list", "--fleet", "demo"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(NODE))
    assert "maintenance" in line
    assert "cordoned (cli alice@ops)" in line
    assert main(["node", "show", NODE, "--fleet", "demo", "-o", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["hold"]["kind"] == "cordon"
    assert shown["hold"]["by"] == "cli alice@ops"
    assert shown["hold"]["reason"] == "disk check"
    assert [e["what"] for e in shown["journal"]][:2] == ["pause", "cordon"]
    assert main(["status", "-f", str(fleet)]) == 0
    status_out = capsys.readouterr().out
    assert "cordoned by cli alice@ops" in status_out
    assert main(["status", "-f", str(fleet), "--output", "json"]) == 0
    status_doc = json.loads(capsys.readouterr().out)
    node_doc = next(n for n in status_doc["nodes"] if n["name"] == NODE)
    assert node_doc["hold"]["kind"] == "cordon"
    assert main(["history", "--fleet", "demo", "--node", NODE, "-o", "json"]) == 0
    entries = json.loads(capsys.readouterr().out)["entries"]
    cordon = next(e for e in entries if e["what"] == "cordon")
    assert (cordon["actor"], cordon["detail"], cordon["outcome"]) == (
        "cli alice@ops",
        "disk check",
        "done",
    )
    pause = next(e for e in entries if e["what"] == "pause")
    assert pause["actor"] == "cli alice@ops"
    # uncordon: back into the rotation at the next reconcile
    assert main(["node", "uncordon", NODE, "--fleet", "demo", "--reason", "disk ok"]) == 0
    assert "cordon by cli alice@ops ended" in capsys.readouterr().out
    assert main(["-f", str(fleet), "--yes"]) == 0
    capsys.readouterr()
    assert status_of(database_url) in (NodeStatus.ACTIVE, NodeStatus.WARMING)
    assert main(["node", "uncordon", NODE, "--fleet", "demo"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_drain_without_queue_figures_is_drained_then_held(
    fleet: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["node", "drain", NODE, "--fleet", "demo", "--reason", "kernel"]) == 0
    assert "drain ordered by cli alice@ops: kernel" in capsys.readouterr().out
    assert main(["-f", str(fleet), "--yes"]) == 0
    capsys.readouterr()
    assert status_of(database_url) is NodeStatus.MAINTENANCE
    assert main(["node", "show", NODE, "--fleet", "demo"]) == 0
    assert "drained by cli alice@ops" in capsys.readouterr().out
    # cordon over a drain replaces it (and says so); resume ends either
    assert main(["node", "cordon", NODE, "--fleet", "demo", "--reason", "look"]) == 0
    assert "replaces: drained by cli alice@ops" in capsys.readouterr().out
    assert main(["node", "resume", NODE, "--fleet", "demo"]) == 0
    assert "cordon ended" in capsys.readouterr().out
    assert main(["-f", str(fleet), "--yes"]) == 0
    capsys.readouterr()
    assert status_of(database_url) in (NodeStatus.ACTIVE, NodeStatus.WARMING)
    assert main(["history", "--fleet", "demo", "--node", NODE, "-o", "json"]) == 0
    kinds = [e["what"] for e in json.loads(capsys.readouterr().out)["entries"]]
    assert kinds[:5] == ["resume", "resume", "cordon", "drain", "drain"]


def test_retry_forgets_failed_steps(
    fleet: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["node", "retry", NODE, "--fleet", "demo"]) == 0
    assert "no failed provisioning step" in capsys.readouterr().out
    store = open_store(database_url)
    try:
        node = next(n for n in store.load_fleet("demo").nodes if n.name == NODE)
        failed = StepState("bootstrap", StepStatus.FAILED, attempts=3, error="apt lock")
        done = StepState("rdns", StepStatus.DONE)
        from dataclasses import replace

        store.upsert_node(replace(node, steps=(failed, done)))
    finally:
        store.close()
    assert main(["node", "retry", NODE, "--fleet", "demo", "--reason", "apt fixed"]) == 0
    assert "failed step(s) bootstrap forgotten" in capsys.readouterr().out
    store = open_store(database_url)
    try:
        node = next(n for n in store.load_fleet("demo").nodes if n.name == NODE)
        assert [s.name for s in node.steps] == ["rdns"]
        entry = next(i for i in store.journal("demo") if i.kind == "retry")
        assert entry.params == {"by": "cli alice@ops", "why": "apt fixed", "steps": "bootstrap"}
    finally:
        store.close()


BAD_INPUT = [
    (["node", "cordon", NODE, "--fleet", "demo", "--reason", " "], "--reason is empty"),
    (["node", "drain", "other-dallas-001", "--fleet", "demo", "--reason", "r"], "not a node"),
    (["node", "cordon", "demo-dallas-009", "--fleet", "demo", "--reason", "r"], "no recorded"),
    (["node", "uncordon", "demo-dallas-009", "--fleet", "demo"], "no recorded node"),
    (["node", "retry", "demo-dallas-009", "--fleet", "demo"], "no recorded node"),
    (["node", "cordon", NODE, "-f", "missing.yaml", "--reason", "r"], "missing.yaml"),
    (["node", "drain", NODE, "--fleet", "demo", "--reason", "x" * 301], "at most 300"),
]


def test_bad_input_is_named_without_a_traceback(
    fleet: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, message in BAD_INPUT:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert message in err, argv
        assert "Traceback" not in err
    # nothing was recorded by the refused commands
    store = open_store(database_url)
    try:
        node = next(n for n in store.load_fleet("demo").nodes if n.name == NODE)
        assert node.maintenance is None
    finally:
        store.close()


def test_every_node_subcommand_takes_the_same_fleet_options() -> None:
    from reconciler.cli.nodes import node

    for name, command in node.commands.items():
        flags = {opt for p in command.params for opt in getattr(p, "opts", [])}
        assert {"-f", "--file", "--fleet"} <= flags, name
