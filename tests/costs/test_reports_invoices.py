"""`reconcile costs report` and `reconcile costs reconcile --invoices FILE` through the CLI,
from the history the real store records (SQLite): cost periods opened by billed nodes, a new
one at a resize or a constant change, ended when the node closes. Golden reports."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from reconciler.cli.main import main
from reconciler.core.fleet import NodeStatus, RecordedNode
from state.store import SqlStore, open_store

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {name: acme}
plans:
  baseline: {rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}
  large: {rid: 53, vcpu: 2, ram_gb: 4, disk_gb: 75, monthly_price: 19.99}
regions:
  dallas: {location_id: 13, plan: baseline, nodes: 2}
  seattle: {location_id: 12, plan: baseline, nodes: 1}
ip_pools:
  shared: {size: 2, regions: [dallas], contract: deal}
  premium: {size: 1, regions: [seattle]}
costs:
  ip_monthly_price: 4.99
  contracts:
    deal: {ip_monthly_price: 4.49}
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 9, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def set(self, text: str) -> None:
        self.now = datetime.fromisoformat(text).replace(tzinfo=UTC)


def node(name: str, region: str, pool: str, plan: str, cost: str, sid: int) -> RecordedNode:
    return RecordedNode(
        id="",
        fleet="acme",
        name=name,
        region=region,
        plan=plan,
        status=NodeStatus.ACTIVE,
        service_id=sid,
        ip_address=f"192.0.2.{sid % 200}",
        pool=pool,
        approximate_cost=Decimal(cost),
    )


@pytest.fixture
def history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqlStore]:
    """Two months of a small fleet:
    - dallas-001 (shared/deal): all of September and October at 14.48;
    - dallas-002 (shared/deal): from 2026-09-21, resized to large on 2026-10-11 (24.48);
    - seattle-001 (premium): September only, closed 2026-10-01;
    - seattle-002 (premium): 2026-10-05 12:00 to 2026-10-15 12:00 (ten days) at 14.98.
    """
    url = f"sqlite:///{tmp_path}/state.db"
    monkeypatch.setenv("RECONCILER_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fleet.yaml").write_text(SPEC)
    clock = Clock()
    store = open_store(url, clock=clock)
    assert isinstance(store, SqlStore)
    store.upsert_node(node("acme-dallas-001", "dallas", "shared", "baseline", "14.48", 1001))
    store.upsert_node(node("acme-seattle-001", "seattle", "premium", "baseline", "14.98", 2001))
    clock.set("2026-09-21")
    store.upsert_node(node("acme-dallas-002", "dallas", "shared", "baseline", "14.48", 1002))
    clock.set("2026-10-01")
    store.close_node("acme", "acme-seattle-001", clock.now)
    clock.set("2026-10-05T12:00:00")
    store.upsert_node(node("acme-seattle-002", "seattle", "premium", "baseline", "14.98", 2002))
    clock.set("2026-10-11")
    store.upsert_node(node("acme-dallas-002", "dallas", "shared", "large", "24.48", 1002))
    # an unchanged record opens no new period
    store.upsert_node(node("acme-dallas-002", "dallas", "shared", "large", "24.48", 1002))
    clock.set("2026-10-15T12:00:00")
    store.close_node("acme", "acme-seattle-002", clock.now)
    clock.set("2026-11-01")
    try:
        yield store
    finally:
        store.close()


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs (UPDATE_GOLDEN=1 rewrites it)"


def test_the_store_records_cost_periods(history: SqlStore) -> None:
    periods = history.cost_periods("acme", datetime(2026, 1, 1, tzinfo=UTC))
    seen = [
        (
            p.node,
            p.plan,
            str(p.monthly_cost),
            p.started_at.date().isoformat(),
            p.ended_at.date().isoformat() if p.ended_at else None,
        )
        for p in periods
    ]
    assert seen == [
        ("acme-dallas-001", "baseline", "14.48", "2026-09-01", None),
        ("acme-seattle-001", "baseline", "14.98", "2026-09-01", "2026-10-01"),
        ("acme-dallas-002", "baseline", "14.48", "2026-09-21", "2026-10-11"),
        ("acme-seattle-002", "baseline", "14.98", "2026-10-05", "2026-10-15"),
        ("acme-dallas-002", "large", "24.48", "2026-10-11", None),
    ]


@pytest.mark.parametrize("by", ["region", "pool", "plan", "contract"])
def test_golden_reports_by_each_dimension(history: SqlStore, by: str) -> None:
    code, text = run(["costs", "report", "--month", "2026-10", "--by", by])
    assert code == 0
    golden(f"report_2026-10_{by}.txt", text)


@pytest.mark.parametrize("output", ["json", "csv"])
def test_golden_report_documents(history: SqlStore, output: str) -> None:
    code, text = run(["costs", "report", "--month", "2026-10", "--by", "pool", "-o", output])
    assert code == 0
    golden(f"report_2026-10_pool.{output}", text)
    if output == "json":
        document = json.loads(text)
        rows = {row["key"]: row for row in document["rows"]}
        # dallas-001: 744 h in October -> one month 14.48; dallas-002: 240 h at 14.48 and 504 h
        # at 24.48 -> (240 x 14.48 + 504 x 24.48) x (730/744) / 730 = 21.25...
        assert rows["shared"]["cost"] == str(
            Decimal("14.48")
            + ((Decimal(240) * Decimal("14.48") + Decimal(504) * Decimal("24.48")) / 744).quantize(
                Decimal("0.01")
            )
        )
        # seattle-002: ten days = 240 h x 14.98 / 730
        assert rows["premium"]["cost"] == str(
            (Decimal(240) * Decimal("14.98") / 730).quantize(Decimal("0.01"))
        )


def test_bad_month_is_a_clear_error(history: SqlStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["costs", "report", "--month", "october"]) == 1
    err = capsys.readouterr().err
    assert "--month 'october' is not a month" in err
    assert "Traceback" not in err


INVOICES = """\
date,service_id,description,amount,period
2026-10-01,1001,Unmanaged Linux VPS 2GB,9.99,2026-10
2026-10-01,1001,Dedicated IP,4.49,2026-10
2026-10-11,1002,Unmanaged Linux VPS 4GB (upgrade),29.99,2026-10
2026-10-03,4242,Unmanaged Linux VPS 8GB,39.99,2026-10
"""


def test_an_invoice_file_with_each_kind_of_discrepancy_is_recorded_with_its_run(
    history: SqlStore, tmp_path: Path
) -> None:
    (tmp_path / "october.csv").write_text(INVOICES)
    code, text = run(["costs", "reconcile", "--invoices", "october.csv", "-o", "json"])
    assert code == 2
    document = json.loads(text)
    kinds = [(f["kind"], f["service_id"], f["node"]) for f in document["findings"]]
    assert kinds == [
        ("drift", 1002, "acme-dallas-002"),
        ("unknown_service", 4242, None),
        ("no_invoice", 2002, "acme-seattle-002"),
        ("ok", 1001, "acme-dallas-001"),
    ]
    assert document["discrepancies"] == 3
    run_id = document["run_id"]
    recorded = history.invoice_findings(run_id)
    assert [(f.kind, f.service_id) for f in recorded] == [(k, s) for k, s, _ in kinds]
    assert recorded[0].invoiced == Decimal("29.99")
    with sqlite3.connect(tmp_path / "state.db") as db:
        mode, outcome = db.execute(
            "SELECT mode, outcome FROM reconcile_runs WHERE id = ?", (run_id,)
        ).fetchone()
    assert (mode, outcome) == ("invoices", "drift")

    code, text = run(["costs", "reconcile", "--invoices", "october.csv"])
    assert code == 2
    assert "1 drift, 1 unknown service(s), 1 node(s) without invoice, 1 matching." in text
    assert "october.csv:4" in text  # where the drifting line is


def test_matching_invoices_exit_zero(history: SqlStore, tmp_path: Path) -> None:
    (tmp_path / "sept.csv").write_text(
        "date,service_id,description,amount,period\n"
        "2026-09-01,1001,VPS + IP,14.48,2026-09\n"
        "2026-09-01,2001,VPS + IP,14.98,2026-09\n"
        "2026-09-21,1002,VPS + IP (prorated 10 days),4.76,2026-09\n"
    )
    code, text = run(["costs", "reconcile", "--invoices", "sept.csv", "--tolerance", "1%"])
    assert code == 0, text
    assert "0 drift, 0 unknown service(s), 0 node(s) without invoice, 3 matching." in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("date,service_id,description,amount,period\n2026-10-01,1001,x,9,99,2026-10\n", None),
        (
            "date,service_id,description,amount,period\n2026-10-01,1001,x,nine,2026-10\n",
            "bad.csv:2: amount: 'nine' is not an amount of money",
        ),
        ("service,amount\n1,2\n", "bad.csv:1: header: missing column(s)"),
        (b"\xff\xfe\x00d", "bad.csv: not UTF-8 text"),
    ],
)
def test_bad_invoice_files_give_file_line_errors_and_no_traceback(
    history: SqlStore,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str | bytes,
    message: str | None,
) -> None:
    path = tmp_path / "bad.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    code = main(["costs", "reconcile", "--invoices", "bad.csv"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if message is None:  # an extra column shifts nothing we read: period gets "99"
        assert code == 1
        assert "bad.csv:2: period: '99' is not a month" in err
    else:
        assert code == 1
        assert message in err


def test_missing_invoice_file(history: SqlStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["costs", "reconcile", "--invoices", "nope.csv"]) == 1
    assert "nope.csv: no such file" in capsys.readouterr().err


def test_the_migration_starts_the_history_from_the_records(tmp_path: Path) -> None:
    from state import sessions

    url = f"sqlite:///{tmp_path}/old.db"
    clock = Clock()
    store = open_store(url, clock=clock)
    assert isinstance(store, SqlStore)
    try:
        store.upsert_node(node("acme-dallas-001", "dallas", "shared", "baseline", "14.48", 1001))
        clock.set("2026-09-11")
        store.upsert_node(node("acme-dallas-002", "dallas", "shared", "large", "24.48", 1002))
        clock.set("2026-10-01")
        store.close_node("acme", "acme-dallas-002", clock.now)
        unbilled = node("acme-dallas-003", "dallas", "shared", "baseline", "14.48", 1003)
        store.upsert_node(dataclasses.replace(unbilled, service_id=None))
    finally:
        store.close()
    sessions.downgrade(url, "0008_slot_failures")  # a database from before the history
    sessions.upgrade(url)
    store = open_store(url)
    assert isinstance(store, SqlStore)
    try:
        periods = store.cost_periods("acme", datetime(2026, 1, 1, tzinfo=UTC))
    finally:
        store.close()
    assert [
        (p.node, str(p.monthly_cost), p.started_at.date().isoformat(), p.ended_at) for p in periods
    ] == [
        ("acme-dallas-001", "14.48", "2026-09-01", None),
        ("acme-dallas-002", "24.48", "2026-09-11", datetime(2026, 10, 1, tzinfo=UTC)),
    ]
