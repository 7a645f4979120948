"""Cost history arithmetic (issue 16): monthly reports and invoice checks. Pure.

A billed node's recorded history is a list of :class:`CostPeriod` (one monthly cost, plan and
pool from ``started_at`` to ``ended_at``). For a calendar month (UTC), a node counts for its
share: ``hours in the month x monthly cost / costs.hours_per_month``, at most one month; a
node present for the whole calendar month counts exactly one month (it is billed a month,
whether the month has 672 or 744 hours). Each node-month is rounded half up to cents, as an
invoice line is; every total is the sum of those cents. All arithmetic is exact ``Decimal``.
"""

from __future__ import annotations

import csv
import io
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation

from reconciler.core.costs import cents
from reconciler.core.errors import UserError

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
SECONDS_PER_HOUR = Decimal(3600)
DIMENSIONS = ("region", "pool", "plan", "contract")
NO_VALUE = "(none)"


@dataclass(frozen=True, slots=True)
class CostPeriod:
    """One stretch of a billed node's recorded history."""

    node: str
    service_id: int | None
    region: str
    pool: str | None
    plan: str
    monthly_cost: Decimal
    started_at: datetime
    ended_at: datetime | None = None  # None: still running


@dataclass(frozen=True, slots=True)
class NodeMonth:
    """What one node costs in one month, from its periods."""

    node: str
    service_id: int | None
    region: str
    pool: str | None
    plan: str  # the plan it ran longest that month
    hours: Decimal
    share: Decimal  # of a month, at most 1
    amount: Decimal  # cents


class MonthError(UserError):
    """A month given on the command line is not YYYY-MM."""


def parse_month(text: str, what: str = "--month") -> str:
    match = _MONTH.match(text.strip())
    if match is None:
        raise MonthError(
            f"{what} {text!r} is not a month", hint="write it as YYYY-MM, e.g. 2026-11"
        )
    return text.strip()


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) in UTC."""
    year, number = int(month[:4]), int(month[5:7])
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + (number == 12), number % 12 + 1, 1, tzinfo=UTC)
    return start, end


def previous_month(month: str) -> str:
    start, _ = month_bounds(month)
    last = start - timedelta(days=1)
    return f"{last.year:04d}-{last.month:02d}"


def month_of(moment: datetime | date) -> str:
    return f"{moment.year:04d}-{moment.month:02d}"


def _hours(start: datetime, end: datetime) -> Decimal:
    seconds = (end - start) // timedelta(microseconds=1)
    return Decimal(seconds) / Decimal(1_000_000) / SECONDS_PER_HOUR


def node_months(
    periods: Iterable[CostPeriod], month: str, hours_per_month: Decimal, now: datetime
) -> list[NodeMonth]:
    """Each node's cost in ``month`` (sorted by node name). Open periods run until ``now``."""
    start, end = month_bounds(month)
    per_node: dict[str, list[tuple[CostPeriod, Decimal]]] = defaultdict(list)
    for period in periods:
        begin = max(period.started_at, start)
        finish = min(period.ended_at or now, end, now)
        if finish <= begin:
            continue
        per_node[period.node].append((period, _hours(begin, finish)))
    out: list[NodeMonth] = []
    for node in sorted(per_node):
        parts = per_node[node]
        hours = sum((h for _, h in parts), Decimal(0))
        # a node present for the whole month costs one month (as it is billed); otherwise
        # hours / hours_per_month, never more than one month
        whole = hours >= _hours(start, end)
        basis = hours if whole else max(hours, hours_per_month)
        scale = hours_per_month / basis if hours > 0 else Decimal(0)
        amount = sum((p.monthly_cost * h * scale / hours_per_month for p, h in parts), Decimal(0))
        longest = max(parts, key=lambda item: (item[1], item[0].started_at))[0]
        latest = max(parts, key=lambda item: item[0].started_at)[0]
        out.append(
            NodeMonth(
                node=node,
                service_id=latest.service_id,
                region=latest.region,
                pool=latest.pool,
                plan=longest.plan,
                hours=hours,
                share=Decimal(1) if whole else min(Decimal(1), hours / hours_per_month),
                amount=cents(amount),
            )
        )
    return out


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    start, end = month_bounds(f"{year:04d}-{month:02d}")
    last_day = (end - start).days
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))


def paid_until(created_at: datetime, now: datetime) -> datetime:
    """The end of the month already paid for a server bought at ``created_at``: Hostwinds
    bills a month ahead, renewing on the day of the month it was created (the 31st renews on
    a shorter month's last day)."""
    if now < created_at:
        return _add_months(created_at, 1)
    months = (now.year - created_at.year) * 12 + now.month - created_at.month
    end = _add_months(created_at, max(months, 0))
    while end <= now:
        months += 1
        end = _add_months(created_at, months)
    return end


def unused_paid(
    created_at: datetime, now: datetime, monthly_cost: Decimal, hours_per_month: Decimal
) -> Decimal:
    """What the rest of the paid month is worth (thrown away when the server goes now)."""
    left = _hours(now, paid_until(created_at, now))
    return min(monthly_cost, left * monthly_cost / hours_per_month)


# --- reports -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportRow:
    key: str
    cost: Decimal
    node_months: Decimal
    nodes: int
    ip_months: Decimal
    previous_cost: Decimal

    @property
    def change(self) -> Decimal:
        return self.cost - self.previous_cost


@dataclass(frozen=True, slots=True)
class CostReport:
    fleet: str
    month: str
    previous_month: str
    by: str
    hours_per_month: Decimal
    rows: tuple[ReportRow, ...]
    total: ReportRow


def _key(item: NodeMonth, by: str, contracts: Mapping[str, str]) -> str:
    if by == "region":
        return item.region
    if by == "pool":
        return item.pool or NO_VALUE
    if by == "plan":
        return item.plan
    return contracts.get(item.pool or "", NO_VALUE)


def cost_report(
    fleet: str,
    periods: Sequence[CostPeriod],
    month: str,
    by: str,
    *,
    hours_per_month: Decimal,
    ips_per_node: int,
    contracts: Mapping[str, str],
    now: datetime,
) -> CostReport:
    """Monthly cost by ``by`` (region, pool, plan or contract: a pool's contract from the
    spec), with node-months, IP-months, and the change against the previous month."""
    if by not in DIMENSIONS:
        raise UserError(f"--by {by!r} is not one of {', '.join(DIMENSIONS)}")
    before = previous_month(month)
    current = node_months(periods, month, hours_per_month, now)
    previous = node_months(periods, before, hours_per_month, now)
    cost: dict[str, Decimal] = defaultdict(Decimal)
    shares: dict[str, Decimal] = defaultdict(Decimal)
    nodes: dict[str, int] = defaultdict(int)
    prior: dict[str, Decimal] = defaultdict(Decimal)
    for item in current:
        key = _key(item, by, contracts)
        cost[key] += item.amount
        shares[key] += item.share
        nodes[key] += 1
    for item in previous:
        prior[_key(item, by, contracts)] += item.amount
    rows = tuple(
        ReportRow(
            key=key,
            cost=cost[key],
            node_months=shares[key],
            nodes=nodes[key],
            ip_months=shares[key] * ips_per_node,
            previous_cost=prior[key],
        )
        for key in sorted(set(cost) | set(prior))
    )
    total = ReportRow(
        key="total",
        cost=sum((r.cost for r in rows), Decimal(0)),
        node_months=sum((r.node_months for r in rows), Decimal(0)),
        nodes=sum(r.nodes for r in rows),
        ip_months=sum((r.ip_months for r in rows), Decimal(0)),
        previous_cost=sum((r.previous_cost for r in rows), Decimal(0)),
    )
    return CostReport(fleet, month, before, by, hours_per_month, rows, total)


# --- invoices ------------------------------------------------------------------------------

INVOICE_COLUMNS = ("date", "service_id", "description", "amount", "period")


class InvoiceFileError(UserError):
    """An invoice file that cannot be read as the documented layout."""


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    source: str
    line: int
    date: date
    service_id: int
    description: str
    amount: Decimal
    month: str


def _problem(source: str, line: int, field: str, message: str, hint: str) -> InvoiceFileError:
    return InvoiceFileError(f"{source}:{line}: {field}: {message}", hint=hint)


def _amount(text: str) -> Decimal | None:
    cleaned = text.strip().replace(",", "")
    negative = cleaned.startswith("(") and cleaned.endswith(")")  # accounting negatives
    cleaned = cleaned.strip("()").strip()
    if cleaned.startswith("-$"):
        cleaned = "-" + cleaned[2:]
    cleaned = cleaned.removeprefix("$").removesuffix("USD").strip()
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite() or abs(value) >= Decimal(10) ** 8:
        return None
    return -value if negative else value


def parse_invoices(text: str, source: str) -> list[InvoiceLine]:
    """Invoice lines from a CSV file with the header ``date,service_id,description,amount,
    period`` (any order, case-insensitive; extra columns ignored). ``period`` (YYYY-MM) may be
    empty: the month of ``date`` then. Amounts are USD (``9.99``, ``$9.99``, ``-1.00``,
    ``(1.00)``). Errors name the file, the line and the field."""
    hint_layout = "the layout is: date,service_id,description,amount,period (docs/costs.md)"
    if "\x00" in text:
        raise InvoiceFileError(f"{source}: not a text file (NUL bytes)", hint=hint_layout)
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    lines: list[InvoiceLine] = []
    header: dict[str, int] | None = None
    try:
        for row in reader:
            number = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if header is None:
                names = [cell.strip().lower() for cell in row]
                missing = [c for c in INVOICE_COLUMNS if c not in names]
                if missing:
                    raise _problem(
                        source,
                        number,
                        "header",
                        f"missing column(s) {', '.join(missing)}",
                        hint_layout,
                    )
                header = {name: names.index(name) for name in INVOICE_COLUMNS}
                continue
            lines.append(_invoice_line(source, number, row, header))
    except csv.Error as exc:
        raise _problem(source, reader.line_num, "csv", str(exc), hint_layout) from None
    if header is None:
        raise InvoiceFileError(f"{source}: empty file, no header", hint=hint_layout)
    return lines


def _invoice_line(source: str, number: int, row: list[str], header: dict[str, int]) -> InvoiceLine:
    def cell(name: str) -> str:
        index = header[name]
        if index >= len(row):
            raise _problem(
                source, number, name, "missing (the row is short)", "every row has 5 columns"
            )
        return row[index].strip()

    raw_date = cell("date")
    try:
        day = date.fromisoformat(raw_date)
    except ValueError:
        raise _problem(
            source, number, "date", f"{raw_date!r} is not a date", "write it as YYYY-MM-DD"
        ) from None
    raw_id = cell("service_id").lstrip("#")
    if not raw_id.isdigit() or len(raw_id) > 18:
        raise _problem(
            source,
            number,
            "service_id",
            f"{raw_id!r} is not a Hostwinds service id",
            "a whole number, e.g. 1234567",
        )
    amount = _amount(cell("amount"))
    if amount is None:
        raise _problem(
            source,
            number,
            "amount",
            f"{cell('amount')!r} is not an amount of money",
            "USD like 9.99, $9.99 or -1.00",
        )
    raw_period = cell("period")
    if raw_period:
        if _MONTH.match(raw_period) is None:
            raise _problem(
                source, number, "period", f"{raw_period!r} is not a month", "write it as YYYY-MM"
            )
        month = raw_period
    else:
        month = month_of(day)
    return InvoiceLine(source, number, day, int(raw_id), cell("description")[:500], amount, month)


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far an invoice may be from the recorded cost before it is drift: an amount
    (``0.50``) or a share of the recorded cost (``2%``)."""

    amount: Decimal = Decimal("0.50")
    percent: Decimal | None = None

    @classmethod
    def parse(cls, text: str) -> Tolerance:
        raw = text.strip()
        try:
            if raw.endswith("%"):
                value = Decimal(raw[:-1].strip())
                if value.is_finite() and 0 <= value <= 100:
                    return cls(Decimal(0), value)
            else:
                value = Decimal(raw.removeprefix("$"))
                if value.is_finite() and 0 <= value < 10**6:
                    return cls(value, None)
        except InvalidOperation:
            pass
        raise UserError(
            f"--tolerance {text!r} is not an amount or a percentage",
            hint="e.g. --tolerance 0.50 (USD) or --tolerance 2%",
        )

    def allows(self, difference: Decimal, expected: Decimal) -> bool:
        limit = self.amount if self.percent is None else abs(expected) * self.percent / 100
        return abs(difference) <= limit

    def __str__(self) -> str:
        if self.percent is not None:
            return f"{format(self.percent.normalize(), 'f')}%"
        return f"${self.amount}"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str  # "drift", "unknown_service", "no_invoice", "ok"
    month: str
    service_id: int | None
    node: str | None
    invoiced: Decimal | None
    expected: Decimal | None
    detail: str

    @property
    def difference(self) -> Decimal | None:
        if self.invoiced is None or self.expected is None:
            return None
        return self.invoiced - self.expected


def reconcile_invoices(
    lines: Sequence[InvoiceLine],
    periods: Sequence[CostPeriod],
    *,
    hours_per_month: Decimal,
    tolerance: Tolerance,
    now: datetime,
) -> list[Finding]:
    """Invoice lines against the recorded costs, per service id and month, for the months the
    file covers: drift beyond the tolerance, invoices for servers the store does not know
    (leaks, foreign spending), nodes that cost something that month but have no invoice, and
    the lines that match (``ok``). Sorted by month, kind, service id."""
    invoiced: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    where: dict[tuple[int, str], list[str]] = defaultdict(list)
    for line in lines:
        invoiced[(line.service_id, line.month)] += line.amount
        where[(line.service_id, line.month)].append(f"{line.source}:{line.line}")
    known = {p.service_id for p in periods if p.service_id is not None}
    findings: list[Finding] = []
    months = sorted({month for _, month in invoiced})
    for month in months:
        expected = {
            item.service_id: item
            for item in node_months(periods, month, hours_per_month, now)
            if item.service_id is not None
        }
        for (service_id, line_month), amount in sorted(invoiced.items()):
            if line_month != month:
                continue
            places = ", ".join(where[(service_id, month)][:3])
            item = expected.get(service_id)
            if service_id not in known:
                findings.append(
                    Finding(
                        "unknown_service",
                        month,
                        service_id,
                        None,
                        amount,
                        None,
                        f"invoiced ${amount} for service {service_id}, which the store does not "
                        f"know (a leak or foreign spending; {places})",
                    )
                )
                continue
            want = item.amount if item is not None else Decimal(0)
            node = item.node if item is not None else _node_of(periods, service_id)
            difference = amount - want
            if tolerance.allows(difference, want):
                findings.append(
                    Finding("ok", month, service_id, node, amount, want, f"within {tolerance}")
                )
                continue
            findings.append(
                Finding(
                    "drift",
                    month,
                    service_id,
                    node,
                    amount,
                    want,
                    f"invoiced ${amount}, recorded ${want} ({'+' if difference > 0 else ''}"
                    f"{difference}; tolerance {tolerance}; {places})",
                )
            )
        for service_id, item in sorted(expected.items()):
            if (service_id, month) in invoiced or item.amount == 0:
                continue
            findings.append(
                Finding(
                    "no_invoice",
                    month,
                    service_id,
                    item.node,
                    None,
                    item.amount,
                    f"recorded ${item.amount} for {item.node} "
                    f"({item.hours.quantize(Decimal('0.1'))} hours) but no invoice line",
                )
            )
    order = {"drift": 0, "unknown_service": 1, "no_invoice": 2, "ok": 3}
    findings.sort(key=lambda f: (f.month, order[f.kind], f.service_id or 0))
    return findings


def _node_of(periods: Sequence[CostPeriod], service_id: int) -> str | None:
    for period in periods:
        if period.service_id == service_id:
            return period.node
    return None
