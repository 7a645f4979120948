"""Cost reports and invoice findings as text, JSON and CSV (rendering only)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from reconciler.core.billing import CostReport, Finding, ReportRow

REPORT_FORMAT_VERSION = 1


def _share(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.001")))


def _usd(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


def _signed(value: Decimal) -> str:
    return f"+{_usd(value)}" if value > 0 else _usd(value)


def _row_json(row: ReportRow) -> dict[str, Any]:
    return {
        "key": row.key,
        "cost": _usd(row.cost),
        "node_months": _share(row.node_months),
        "nodes": row.nodes,
        "ip_months": _share(row.ip_months),
        "previous_cost": _usd(row.previous_cost),
        "change": _usd(row.change),
    }


def report_json(report: CostReport) -> str:
    document = {
        "format_version": REPORT_FORMAT_VERSION,
        "fleet": report.fleet,
        "month": report.month,
        "previous_month": report.previous_month,
        "by": report.by,
        "hours_per_month": str(report.hours_per_month),
        "currency": "USD",
        "rows": [_row_json(r) for r in report.rows],
        "total": _row_json(report.total),
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def report_csv(report: CostReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            report.by,
            "cost_usd",
            "node_months",
            "nodes",
            "ip_months",
            "previous_cost_usd",
            "change_usd",
        ]
    )
    for row in (*report.rows, report.total):
        item = _row_json(row)
        writer.writerow(
            [
                item["key"],
                item["cost"],
                item["node_months"],
                item["nodes"],
                item["ip_months"],
                item["previous_cost"],
                item["change"],
            ]
        )
    return out.getvalue()


def report_text(report: CostReport) -> str:
    header = (
        report.by,
        "cost",
        "node-months",
        "nodes",
        "IP-months",
        report.previous_month,
        "change",
    )
    rows = [
        (
            r.key,
            f"${_usd(r.cost)}",
            _share(r.node_months),
            str(r.nodes),
            _share(r.ip_months),
            f"${_usd(r.previous_cost)}",
            _signed(r.change),
        )
        for r in (*report.rows, report.total)
    ]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    lines = [
        f"Fleet {report.fleet}: monthly cost for {report.month} by {report.by} "
        f"(prorated: hours x monthly price / {report.hours_per_month} hours; USD)",
        "",
    ]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    lines.append(line(header))
    for index, cells in enumerate(rows):
        if index == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths))
        lines.append(line(cells))
    if not report.rows:
        lines.append("(no recorded cost in either month)")
    return "\n".join(lines) + "\n"


def findings_json(
    findings: Sequence[Finding], *, fleet: str, source: str, tolerance: str, run_id: int | None
) -> str:
    document = {
        "format_version": 1,
        "fleet": fleet,
        "invoices": source,
        "tolerance": tolerance,
        "run_id": run_id,
        "discrepancies": sum(1 for f in findings if f.kind != "ok"),
        "findings": [
            {
                "kind": f.kind,
                "month": f.month,
                "service_id": f.service_id,
                "node": f.node,
                "invoiced": None if f.invoiced is None else str(f.invoiced),
                "expected": None if f.expected is None else str(f.expected),
                "difference": None if f.difference is None else str(f.difference),
                "detail": f.detail,
            }
            for f in findings
        ],
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def findings_text(findings: Sequence[Finding], *, fleet: str, source: str, tolerance: str) -> str:
    header = ("month", "kind", "service", "node", "invoiced", "recorded", "difference")
    rows = [
        (
            f.month,
            f.kind,
            str(f.service_id) if f.service_id is not None else "-",
            f.node or "-",
            f"${f.invoiced}" if f.invoiced is not None else "-",
            f"${f.expected}" if f.expected is not None else "-",
            _signed(f.difference) if f.difference is not None else "-",
        )
        for f in findings
    ]
    widths = [max(len(c) for c in column) for column in zip(header, *rows, strict=True)]
    problems = [f for f in findings if f.kind != "ok"]
    lines = [
        f"Fleet {fleet}: invoices in {source} against the recorded costs (tolerance {tolerance})",
        "",
    ]
    lines.append("  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)).rstrip())
    for cells in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip())
    lines.append("")
    counts = {
        kind: sum(1 for f in findings if f.kind == kind)
        for kind in ("drift", "unknown_service", "no_invoice", "ok")
    }
    lines.append(
        f"{counts['drift']} drift, {counts['unknown_service']} unknown service(s), "
        f"{counts['no_invoice']} node(s) without invoice, {counts['ok']} matching."
    )
    for f in problems:
        lines.append(f"  {f.kind}: {f.detail}")
    return "\n".join(lines) + "\n"
