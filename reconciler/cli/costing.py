"""`reconcile costs`: the cost constants finance owns (per-IP and plan prices).

The spec carries defaults; a value set here wins over the spec, and every plan says which
constant it used and where it came from. Each change is kept in a history (who, when, old, new).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from reconciler.core.billing import (
    DIMENSIONS,
    Tolerance,
    cost_report,
    month_bounds,
    month_of,
    parse_invoices,
    parse_month,
    previous_month,
    reconcile_invoices,
)
from reconciler.core.costs import IP_KEY, PLAN_KEY
from reconciler.core.errors import LockHeldError, UserError
from reconciler.core.ports import RunRecord, StorePort
from reconciler.engine.costing import refresh_recorded_costs
from reconciler.engine.reconciling import lock_name
from reconciler.views.costreports import (
    findings_json,
    findings_text,
    report_csv,
    report_json,
    report_text,
)
from reconciler.wiring import build_store
from specs.loading import load_spec
from specs.model import FleetSpec
from state.store import SqlStore

_SCOPE = re.compile(r"^(global|(pool|plan|contract):[a-z][a-z0-9_-]*)$")


class CostInputError(UserError):
    """A cost constant the user typed is not valid."""


def _parse_amount(text: str) -> Decimal:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise CostInputError(
            f"{text!r} is not an amount of money", hint="write it like 4.99 (USD per month)"
        ) from None
    if not amount.is_finite() or amount < 0 or amount > Decimal("1000000"):
        raise CostInputError(
            f"{text!r} is not a monthly price between 0 and 1,000,000",
            hint="write it like 4.99 (USD per month)",
        )
    return amount.quantize(Decimal("0.0001"))


def _check_scope(key: str, scope: str) -> None:
    if not _SCOPE.match(scope):
        raise CostInputError(
            f"scope {scope!r} is not 'global', 'pool:<name>', 'plan:<name>' or 'contract:<name>'",
            hint="e.g. --scope pool:dedicated_high_volume",
        )
    if key == PLAN_KEY and not scope.startswith("plan:"):
        raise CostInputError(
            f"{PLAN_KEY} is set per plan, not for scope {scope!r}",
            hint="e.g. reconcile costs set plan_monthly_price 9.99 --scope plan:baseline",
        )
    if key == IP_KEY and scope.startswith("plan:"):
        raise CostInputError(
            f"{IP_KEY} is set globally, per pool or per contract, not for scope {scope!r}",
            hint="use --scope global, pool:<name> or contract:<name>",
        )


def _money(value: Decimal) -> str:
    """Cents, or more digits only when the value has them: 4.99, 4.995."""
    cents = value.quantize(Decimal("0.01"))
    return str(cents) if cents == value else format(value.normalize(), "f")


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or "unknown"


@click.group()
def costs() -> None:
    """Finance's view: the cost constants (show, set, with history), invoice checks
    (reconcile) and monthly reports (report)."""


@costs.command("show")
@click.option("--history", is_flag=True, help="also list every change: who, when, old, new")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def show(history: bool, output: str) -> int:
    """Print the values set in the state database (they win over the spec's defaults)."""
    store = build_store()
    try:
        values = store.cost_constants()
        changes = store.cost_history() if history else []
    finally:
        store.close()
    if output == "json":
        document = {
            "constants": [
                {
                    "key": c.key,
                    "scope": c.scope,
                    "value": _money(c.value),
                    "set_by": c.set_by,
                    "set_at": c.set_at.isoformat(),
                }
                for c in values
            ],
            "history": changes,
        }
        click.echo(json.dumps(document, indent=2, sort_keys=True))
        return 0
    if not values:
        click.echo("No cost constants set in the database: plans use the spec's values.")
    for c in values:
        click.echo(
            f"{c.key:<20} {c.scope:<30} {_money(c.value):>10}  set by {c.set_by} at "
            f"{c.set_at.isoformat(timespec='seconds')}"
        )
    if history:
        click.echo("")
        click.echo("History (newest first):")
        for row in changes:
            old = row["old"] or "(unset)"
            click.echo(
                f"  {row['set_at']}  {row['key']} [{row['scope']}]  {old} -> {row['new']}  "
                f"by {row['set_by']}"
            )
    return 0


@costs.command("set")
@click.argument("key", type=click.Choice([IP_KEY, PLAN_KEY]))
@click.argument("value")
@click.option(
    "--scope",
    default="global",
    show_default=True,
    help="global, pool:<name>, contract:<name> (ip_monthly_price) or plan:<name> "
    "(plan_monthly_price)",
)
@click.option("--by", "set_by", default=None, help="who sets it (default: the current user)")
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    metavar="PATH",
    help="The fleet's spec (repeatable): the recorded costs of its nodes follow at once "
    "(without it: at the next apply, or the daemon's next sweep).",
)
def set_constant(
    key: str, value: str, scope: str, set_by: str | None, files: tuple[str, ...]
) -> int:
    """Set KEY to VALUE (USD per month) for a scope; the old value goes to the history."""
    amount = _parse_amount(value)
    _check_scope(key, scope)
    who = (set_by or _who()).strip() or "unknown"
    loaded = load_spec(list(files)) if files else None
    store = build_store()
    try:
        store.set_cost_constant(key, scope, amount, who, datetime.now(UTC))
        click.echo(f"{key} [{scope}] = {_money(amount)} (set by {who})")
        if loaded is not None:
            _refresh_now(store, loaded.spec)
        else:
            click.echo(
                "Recorded node costs follow at the next apply or daemon sweep "
                "(give -f SPEC to refresh them now)."
            )
    finally:
        store.close()
    return 0


def _refresh_now(store: StorePort, spec: FleetSpec) -> None:
    """Refresh the fleet's recorded costs under the fleet's writer lock (a run holding it
    refreshes them itself when it ends)."""
    owner = f"costs {socket.gethostname()}:{os.getpid()}"
    try:
        lease = store.acquire_lock(lock_name(spec.name), owner, 60.0, datetime.now(UTC))
    except LockHeldError as exc:
        click.echo(
            f"Recorded node costs not refreshed now: {exc.message}. The holder refreshes them: "
            "a run when it ends, the leading daemon at its next sweep."
        )
        return
    try:
        changed = refresh_recorded_costs(spec, store, epoch=lease.epoch)
    finally:
        store.release_lock(lease)
    click.echo(f"Recorded monthly cost refreshed for {len(changed)} node(s) of {spec.name}.")


# --- invoices and reports (docs/costs.md) ---------------------------------------------------

MAX_INVOICE_BYTES = 50 * 1024 * 1024
DEFAULT_SPEC = "fleet.yaml"

_spec_files = click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    metavar="PATH",
    help=f"The fleet's spec (repeatable). Default: ./{DEFAULT_SPEC}",
)


def _history_store() -> SqlStore:
    store = build_store()
    if not isinstance(store, SqlStore):  # pragma: no cover - build_store gives a SqlStore
        store.close()
        raise UserError("cost history needs the state database")
    return store


def _read_invoices(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_INVOICE_BYTES:
            raise UserError(
                f"{path}: {size:,} bytes is more than an invoice export can be "
                f"({MAX_INVOICE_BYTES:,})",
                hint="split the file by month",
            )
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not UTF-8 text (byte {exc.start})", hint="export the invoices as CSV (UTF-8)"
        ) from None
    except FileNotFoundError:
        raise UserError(f"{path}: no such file", hint="give the invoice CSV export") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not an invoice file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None


@costs.command("reconcile")
@click.option(
    "--invoices",
    "invoices",
    required=True,
    type=click.Path(path_type=Path),
    help="CSV with the header date,service_id,description,amount,period (docs/costs.md).",
)
@click.option(
    "--tolerance",
    default="0.50",
    show_default=True,
    help="Drift beyond this is reported: USD (0.50) or a share of the recorded cost (2%).",
)
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
@_spec_files
def reconcile_invoices_command(
    invoices: Path, tolerance: str, output: str, files: tuple[str, ...]
) -> int:
    """Compare invoice lines with the recorded costs per node and month: drift beyond the
    tolerance, invoices for servers the store does not know, nodes without an invoice. The
    result is recorded as a run (mode "invoices"). Exit 0: all matches, 2: discrepancies."""
    allowed = Tolerance.parse(tolerance)
    loaded = load_spec(list(files) or [DEFAULT_SPEC])
    spec = loaded.spec
    lines = parse_invoices(_read_invoices(invoices), str(invoices))
    if not lines:
        raise UserError(f"{invoices}: no invoice lines under the header", hint="nothing to compare")
    months = sorted({line.month for line in lines})
    now = datetime.now(UTC)
    since, _ = month_bounds(months[0])
    store = _history_store()
    try:
        periods = store.cost_periods(spec.name, since)
        findings = reconcile_invoices(
            lines,
            periods,
            hours_per_month=spec.costs.hours_per_month,
            tolerance=allowed,
            now=now,
        )
        problems = sum(1 for f in findings if f.kind != "ok")
        run_id = store.start_run(
            RunRecord(
                fleet=spec.name,
                started_at=now,
                spec_hash=loaded.spec_hash,
                mode="invoices",
                summary={
                    "invoices": str(invoices)[:500],
                    "months": ",".join(months),
                    "tolerance": str(allowed),
                    "lines": str(len(lines)),
                    **{
                        kind: str(sum(1 for f in findings if f.kind == kind))
                        for kind in ("drift", "unknown_service", "no_invoice", "ok")
                    },
                    "actor": f"cli {_who()}",
                },
            )
        )
        store.record_invoice_findings(run_id, findings)
        store.finish_run(run_id, "drift" if problems else "ok", datetime.now(UTC))
    finally:
        store.close()
    if output == "json":
        click.echo(
            findings_json(
                findings,
                fleet=spec.name,
                source=str(invoices),
                tolerance=str(allowed),
                run_id=run_id,
            ),
            nl=False,
        )
    else:
        click.echo(
            findings_text(findings, fleet=spec.name, source=str(invoices), tolerance=str(allowed)),
            nl=False,
        )
        click.echo(f"Recorded as run {run_id} (`reconcile history` lists it).")
    return 2 if problems else 0


@costs.command("report")
@click.option("--month", default=None, metavar="YYYY-MM", help="Default: the current month.")
@click.option(
    "--by", "by", type=click.Choice(list(DIMENSIONS)), default="region", show_default=True
)
@click.option("-o", "--output", type=click.Choice(["text", "json", "csv"]), default="text")
@_spec_files
def report(month: str | None, by: str, output: str, files: tuple[str, ...]) -> int:
    """Monthly cost by region, pool, plan or contract from the recorded history: each node
    counts for hours x monthly price / costs.hours_per_month (at most one month), with
    node-months, IP-months and the change against the previous month."""
    now = datetime.now(UTC)
    chosen = parse_month(month) if month is not None else month_of(now)
    loaded = load_spec(list(files) or [DEFAULT_SPEC])
    spec = loaded.spec
    since, _ = month_bounds(previous_month(chosen))
    store = _history_store()
    try:
        periods = store.cost_periods(spec.name, since)
    finally:
        store.close()
    contracts = {name: pool.contract for name, pool in spec.ip_pools.items() if pool.contract}
    result = cost_report(
        spec.name,
        periods,
        chosen,
        by,
        hours_per_month=spec.costs.hours_per_month,
        ips_per_node=spec.costs.ips_per_node,
        contracts=contracts,
        now=now,
    )
    render = {"json": report_json, "csv": report_csv}.get(output, report_text)
    click.echo(render(result), nl=False)
    return 0
