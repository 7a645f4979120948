"""`reconcile node list|show|protect|unprotect`: against the real store (SQLite) and the
embedded simulator; protection recorded with who and why, kept by plans after the node leaves
the spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.cli.main import main
from state.store import open_store
from tests.ops.quickstart import fast_quickstart


@pytest.fixture
def fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECONCILER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RECONCILER_DATABASE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.delenv("HOSTWINDS_API_URL", raising=False)
    monkeypatch.setenv("RECONCILER_ACTOR", "cli alice@ops")
    spec = tmp_path / "fleet.yaml"
    spec.write_text(fast_quickstart())
    assert main(["-f", str(spec), "--yes"]) == 0
    capsys.readouterr()
    return spec


def test_list_and_show(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "list", "-f", str(fleet)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == [
        "NODE",
        "REGION",
        "STATUS",
        "HOLD",
        "PROTECTED",
        "IP",
        "SERVER",
        "LAST",
        "BEAT",
    ]
    assert "demo-dallas-001" in out
    assert main(["node", "list", "--fleet", "demo", "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert {n["name"] for n in document["nodes"]} == {
        "demo-dallas-001",
        "demo-seattle-001",
        "demo-seattle-002",
    }
    assert main(["node", "show", "demo-dallas-001", "-f", str(fleet), "-o", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] in ("warming", "active")
    assert [e["what"] for e in shown["journal"]][-1] == "create"
    assert shown["journal"][-1]["actor"] == "cli alice@ops"
    assert main(["node", "show", "demo-nowhere-009", "-f", str(fleet)]) == 1
    err = capsys.readouterr().err
    assert "no recorded node 'demo-nowhere-009'" in err
    assert "reconcile node list" in err


def test_protect_is_recorded_and_kept_when_the_node_leaves_the_spec(
    fleet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["node", "protect", "demo-dallas-001", "-f", str(fleet), "--reason", "disk check"])
        == 0
    )
    assert "protected (was not protected), by cli alice@ops" in capsys.readouterr().out
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        assert "demo-dallas-001" in store.load_fleet("demo").protected_names
        protect = [i for i in store.journal("demo") if i.kind == "protect"]
        assert protect[0].params == {"by": "cli alice@ops", "why": "disk check"}
        assert protect[0].status.value == "done"
    finally:
        store.close()
    # dallas leaves the spec: the plan never destroys the protected node
    fleet.write_text(
        fleet.read_text()
        .replace("  dallas:\n    location_id: 13\n", "  gone:\n    location_id: 13\n")
        .replace("regions: [seattle, dallas]", "regions: [seattle]")
        .replace("size: 3", "size: 2")
    )
    assert main(["--dry-run", "-f", str(fleet), "--allow-mass-destroy", "-o", "json"]) in (0, 1)
    plan = json.loads(capsys.readouterr().out)
    destroyed = {c["address"] for c in plan["changes"] if c["action"] == "destroy"}
    assert "demo-dallas-001" not in destroyed
    assert main(["history", "--fleet", "demo", "--node", "demo-dallas-001"]) == 0
    assert "disk check" in capsys.readouterr().out
    assert (
        main(["node", "unprotect", "demo-dallas-001", "--fleet", "demo", "--reason", "checked"])
        == 0
    )
    assert "not protected (was protected)" in capsys.readouterr().out


def test_bad_input(fleet: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "protect", "demo-dallas-001", "--fleet", "demo", "--reason", "  "]) == 1
    assert "--reason is empty" in capsys.readouterr().err
    assert main(["node", "protect", "demo-dallas-001", "--fleet", "demo"]) == 2
    assert "--reason" in capsys.readouterr().err
    long = "x" * 400
    assert main(["node", "protect", "demo-dallas-001", "--fleet", "demo", "--reason", long]) == 1
    assert main(["node", "protect", "nope", "--fleet", "demo", "--reason", "r"]) == 1
    assert "Traceback" not in capsys.readouterr().err
