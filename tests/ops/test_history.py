"""`reconcile history`: runs and journal entries from a real store (SQLite), merged, filtered
by node and time, as text and JSON; who acted and the revision when recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.cli.auditing import collect, parse_since
from reconciler.cli.main import main
from reconciler.core.errors import UserError
from reconciler.core.fleet import IntentStatus
from reconciler.core.ports import RunRecord
from state.store import open_store

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def _store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_store(url)
    try:
        run = store.start_run(
            RunRecord(
                fleet="acme",
                started_at=T0,
                spec_hash="a" * 64,
                mode="daemon",
                summary={
                    "count.create": "2",
                    "changes": "2",
                    "monthly_cost_before": "0.00",
                    "monthly_cost_after": "29.96",
                    "actor": "daemon daemon-a:1234",
                    "epoch": "7",
                    "revision": "0123456789abcdef0123456789abcdef01234567",
                },
            )
        )
        store.finish_run(run, "ok", T0 + timedelta(seconds=30))
        other = store.start_run(
            RunRecord(fleet="other", started_at=T0, spec_hash="b" * 64, mode="apply", summary={})
        )
        store.finish_run(other, "ok", T0)
        first = store.begin_intent(
            "acme", "create", "acme-dallas-001", {"region": "dallas"}, epoch=7
        )
        store.finish_intent(first.id, IntentStatus.DONE, epoch=7)
        second = store.begin_intent(
            "acme", "cordon", "acme-dallas-002", {"by": "alice@ops-laptop", "why": "disk check"}
        )
        store.finish_intent(second.id, IntentStatus.DONE)
        failed = store.begin_intent("acme", "destroy", "acme-dallas-001", {}, epoch=7)
        store.finish_intent(failed.id, IntentStatus.FAILED, error="HTTP 503", epoch=7)
    finally:
        store.close()
    return url


def test_history_lists_runs_and_journal_newest_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_DATABASE_URL", _store(tmp_path))
    assert main(["history", "--fleet", "acme"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["WHEN", "WHAT", "NODE"]
    assert "journal:cordon" in out
    assert "alice@ops-laptop" in out
    assert "disk check" in out
    assert "run:daemon" in out
    assert "daemon daemon-a:1234 (epoch 7)" in out
    assert "2 create; monthly cost $0.00 -> $29.96" in out
    assert "error: HTTP 503" in out
    assert "other" not in out  # another fleet's runs stay out
    assert main(["history", "--fleet", "acme", "--node", "acme-dallas-001", "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["format_version"] == 1
    assert {e["what"] for e in document["entries"]} == {"create", "destroy"}
    assert all(e["node"] == "acme-dallas-001" for e in document["entries"])
    assert main(["history", "--fleet", "acme", "--limit", "1", "-o", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["entries"]) == 1


def test_history_since_and_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECONCILER_DATABASE_URL", _store(tmp_path))
    # the run is at T0 (2026-05-01 08:00 UTC); journal rows at the time the test ran
    assert (
        main(["history", "--fleet", "acme", "--since", "2026-05-01T09:00:00+00:00", "-o", "json"])
        == 0
    )
    entries = json.loads(capsys.readouterr().out)["entries"]
    assert all(e["kind"] == "journal" for e in entries)
    assert main(["history", "--fleet", "acme", "--since", "yesterday-ish"]) == 1
    err = capsys.readouterr().err
    assert "--since 'yesterday-ish'" in err
    assert "Traceback" not in err
    monkeypatch.chdir(tmp_path)
    assert main(["history"]) == 1
    assert "no fleet given" in capsys.readouterr().err


def test_parse_since() -> None:
    now = datetime(2026, 5, 2, tzinfo=UTC)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-05-01", now) == datetime(2026, 5, 1, tzinfo=UTC)
    with pytest.raises(UserError):
        parse_since("soon", now)


def test_collect_orders_and_bounds() -> None:
    runs = [
        RunRecord("acme", T0 + timedelta(minutes=i), "h", "apply", {}, outcome="ok")
        for i in range(30)
    ]
    entries = collect(runs, [], limit=5)
    assert [e.at for e in entries] == sorted((e.at for e in entries), reverse=True)
    assert len(entries) == 5
    assert entries[0].at == T0 + timedelta(minutes=29)
    assert collect(runs, [], since=T0 + timedelta(minutes=28), limit=50)[-1].at == T0 + timedelta(
        minutes=28
    )


def test_a_cli_apply_is_recorded_with_who_ran_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    quickstart = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECONCILER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("RECONCILER_DATABASE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.delenv("HOSTWINDS_API_URL", raising=False)
    monkeypatch.setenv("RECONCILER_ACTOR", "ci github:alice")
    assert main(["-f", str(quickstart), "--yes"]) == 0
    capsys.readouterr()
    assert main(["history", "-f", str(quickstart), "-o", "json"]) == 0
    entries = json.loads(capsys.readouterr().out)["entries"]
    runs = [e for e in entries if e["kind"] == "run"]
    assert runs
    assert runs[0]["actor"] == "ci github:alice"
    assert runs[0]["epoch"] is not None
    creates = [e for e in entries if e["what"] == "create"]
    assert len(creates) == 3
    assert all(e["actor"] == "ci github:alice" for e in creates)
