"""Cost history arithmetic (issue 16): prorating by hours / costs.hours_per_month, reports by
dimension with the change against the previous month, invoice files and their discrepancies.
Exact decimals throughout."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.billing import (
    CostPeriod,
    InvoiceFileError,
    Tolerance,
    month_bounds,
    node_months,
    parse_invoices,
    parse_month,
    previous_month,
    reconcile_invoices,
)
from reconciler.core.errors import UserError

HPM = Decimal(730)
NOW = datetime(2026, 12, 15, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def period(
    node: str,
    cost: str,
    start: str,
    end: str | None = None,
    *,
    sid: int | None = 1000,
    region: str = "dallas",
    pool: str | None = "shared",
    plan: str = "baseline",
) -> CostPeriod:
    return CostPeriod(
        node, sid, region, pool, plan, Decimal(cost), at(start), at(end) if end else None
    )


# present all November: 10 days at 14.98, then 20 at 24.98, weighted over one month
RESIZED = (Decimal("14.98") * 240 + Decimal("24.98") * 480) / 720

PRORATING = [
    # (what, periods, month, expected amount or None)
    ("a whole 30-day month is one month", [period("a", "14.98", "2026-10-01")], "2026-11", "14.98"),
    ("February is one month", [period("a", "14.98", "2026-01-01")], "2026-02", "14.98"),
    (
        "719 of 720 hours: 719/730",
        [period("a", "14.98", "2026-11-01T01:00:00")],
        "2026-11",
        str((Decimal(719) * Decimal("14.98") / HPM).quantize(Decimal("0.01"))),
    ),
    (
        "740 of 744 hours: capped at one month",
        [period("a", "14.98", "2026-10-01T04:00:00")],
        "2026-10",
        "14.98",
    ),
    ("a 744-hour month costs one month", [period("a", "14.98", "2026-09-01")], "2026-10", "14.98"),
    (
        "ten days: 240 x 14.98 / 730",
        [period("a", "14.98", "2026-11-05", "2026-11-15")],
        "2026-11",
        "4.92",
    ),
    (
        "resized on the 11th",
        [
            period("a", "14.98", "2026-10-20", "2026-11-11", plan="baseline"),
            period("a", "24.98", "2026-11-11", "2026-12-03", plan="large"),
        ],
        "2026-11",
        str(RESIZED.quantize(Decimal("0.01"))),
    ),
    (
        "ended before the month",
        [period("a", "9.99", "2026-01-01", "2026-10-31T23:00:00")],
        "2026-11",
        None,
    ),
    ("starts after now", [period("a", "9.99", "2026-12-20")], "2026-12", None),
    ("open period runs until now", [period("a", "7.30", "2026-12-01")], "2026-12", "3.36"),
    ("4-decimal price", [period("a", "9.9950", "2026-11-01", "2026-11-02")], "2026-11", "0.33"),
]


@pytest.mark.parametrize(
    ("what", "periods", "month", "expected"), PRORATING, ids=[p[0] for p in PRORATING]
)
def test_prorating_table(
    what: str, periods: list[CostPeriod], month: str, expected: str | None
) -> None:
    result = node_months(periods, month, HPM, NOW)
    if expected is None:
        assert result == [], what
        return
    assert [r.amount for r in result] == [Decimal(expected)], what
    assert all(isinstance(r.amount, Decimal) for r in result)


def test_a_resized_node_reports_the_plan_it_ran_longest() -> None:
    periods = [
        period("a", "14.98", "2026-10-20", "2026-11-11", plan="baseline"),
        period("a", "24.98", "2026-11-11", "2026-12-03", plan="large"),
    ]
    (item,) = node_months(periods, "2026-11", HPM, NOW)
    assert item.plan == "large"
    assert item.hours == 720
    assert item.share == 1  # present all month


def test_hours_per_month_gives_the_share() -> None:
    one_day = [period("a", "30.00", "2026-11-01", "2026-11-02")]
    assert node_months(one_day, "2026-11", Decimal(720), NOW)[0].amount == Decimal("1.00")
    assert node_months(one_day, "2026-11", Decimal(24), NOW)[0].amount == Decimal("30.00")


@given(
    st.integers(min_value=0, max_value=744 * 60),
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999.99"), places=2),
)
def test_a_node_month_never_costs_more_than_its_price(minutes: int, price: Decimal) -> None:
    start = at("2026-10-01")
    from datetime import timedelta

    periods = [CostPeriod("a", 1, "r", None, "p", price, start, start + timedelta(minutes=minutes))]
    result = node_months(periods, "2026-10", HPM, NOW)
    if minutes == 0:
        assert result == []
    else:
        assert Decimal(0) <= result[0].amount <= price


def test_months() -> None:
    assert month_bounds("2026-12") == (at("2026-12-01"), at("2027-01-01"))
    assert previous_month("2026-01") == "2025-12"
    assert parse_month(" 2026-11 ") == "2026-11"
    for bad in ("2026-13", "2026-1", "26-11", "november", ""):
        with pytest.raises(UserError, match="is not a month") as info:
            parse_month(bad)
        assert info.value.hint is not None
        assert "YYYY-MM" in info.value.hint


# --- invoices ------------------------------------------------------------------------------

KNOWN = [
    period("acme-dallas-001", "14.98", "2026-10-01", sid=1001),
    period("acme-dallas-002", "14.98", "2026-10-01", sid=1002),
    period("acme-dallas-003", "14.98", "2026-10-01", sid=1003),
    period("acme-dallas-004", "14.98", "2026-11-21", sid=1004),  # 10 days in November
]

INVOICES = """\
date,service_id,description,amount,period
2026-11-01,1001,Unmanaged Linux VPS 2GB (11/01/2026 - 11/30/2026),9.99,2026-11
2026-11-01,1001,Dedicated IP,4.99,2026-11
2026-11-01,1002,Unmanaged Linux VPS 2GB,$19.99,2026-11
2026-11-01,#777,Unmanaged Linux VPS 8GB (not ours),39.99,
2026-11-21,1004,Unmanaged Linux VPS 2GB (prorated),4.92,2026-11
"""


def test_an_invoice_file_with_each_kind_of_discrepancy() -> None:
    lines = parse_invoices(INVOICES, "nov.csv")
    assert [line.month for line in lines] == ["2026-11"] * 5
    findings = reconcile_invoices(lines, KNOWN, hours_per_month=HPM, tolerance=Tolerance(), now=NOW)
    kinds = [(f.kind, f.service_id, f.node) for f in findings]
    assert kinds == [
        ("drift", 1002, "acme-dallas-002"),
        ("unknown_service", 777, None),
        ("no_invoice", 1003, "acme-dallas-003"),
        ("ok", 1001, "acme-dallas-001"),
        ("ok", 1004, "acme-dallas-004"),
    ]
    drift = findings[0]
    assert (drift.invoiced, drift.expected, drift.difference) == (
        Decimal("19.99"),
        Decimal("14.98"),
        Decimal("5.01"),
    )
    assert "nov.csv:4" in drift.detail
    assert "nov.csv:5" in findings[1].detail
    assert findings[2].expected == Decimal("14.98")
    assert findings[3].invoiced == Decimal("14.98")  # two lines of one service summed


@pytest.mark.parametrize(
    ("tolerance", "invoiced", "drift"),
    [
        ("0.50", "15.48", False),
        ("0.50", "15.49", True),
        ("0", "14.99", True),
        ("5%", "15.72", False),
        ("5%", "15.74", True),
    ],
)
def test_tolerance(tolerance: str, invoiced: str, drift: bool) -> None:
    text = f"date,service_id,description,amount,period\n2026-11-01,1001,VPS,{invoiced},2026-11\n"
    findings = reconcile_invoices(
        parse_invoices(text, "f.csv"),
        KNOWN[:1],
        hours_per_month=HPM,
        tolerance=Tolerance.parse(tolerance),
        now=NOW,
    )
    assert [f.kind for f in findings] == ["drift" if drift else "ok"]


@pytest.mark.parametrize("bad", ["x", "-1", "101%", "", "1e9"])
def test_bad_tolerance(bad: str) -> None:
    with pytest.raises(UserError, match="tolerance"):
        Tolerance.parse(bad)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "f.csv: empty file"),
        ("date,service_id,amount\n", "f.csv:1: header: missing column(s) description, period"),
        (
            "date,service_id,description,amount,period\n2026-13-01,1,x,1.00,\n",
            "f.csv:2: date: '2026-13-01' is not a date",
        ),
        (
            "date,service_id,description,amount,period\n\n2026-11-01,abc,x,1.00,\n",
            "f.csv:3: service_id: 'abc'",
        ),
        (
            "date,service_id,description,amount,period\n2026-11-01,1,x,ten,\n",
            "f.csv:2: amount: 'ten' is not an amount",
        ),
        ("date,service_id,description,amount,period\n2026-11-01,1,x,NaN,\n", "f.csv:2: amount"),
        (
            "date,service_id,description,amount,period\n2026-11-01,1,x,1.00,11/2026\n",
            "f.csv:2: period: '11/2026'",
        ),
        ("date,service_id,description,amount,period\n2026-11-01,1,x\n", "f.csv:2: amount: missing"),
        ('date,service_id,description,amount,period\n2026-11-01,1,"x\n', "f.csv"),
        ("date,service_id\x00", "NUL"),
    ],
)
def test_bad_invoice_files_name_file_line_and_field(text: str, message: str) -> None:
    with pytest.raises(InvoiceFileError) as info:
        parse_invoices(text, "f.csv")
    assert message in info.value.message
    assert info.value.hint


def test_invoice_layout_is_flexible_where_it_is_harmless() -> None:
    text = (
        "\ufeffPeriod,Amount,Description,Service_ID,Date,Invoice\n"
        '2026-11,"1,234.50",big,1001,2026-11-02,42\n'
        ",(1.00),credit,1001,2026-11-03,43\n"
        ",-$2.00,credit,1001,2026-12-03,44\n"
    )
    lines = parse_invoices(text, "f.csv")
    assert [(line.amount, line.month) for line in lines] == [
        (Decimal("1234.50"), "2026-11"),
        (Decimal("-1.00"), "2026-11"),
        (Decimal("-2.00"), "2026-12"),
    ]
