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

import click

from reconciler.core.costs import IP_KEY, PLAN_KEY
from reconciler.core.errors import LockHeldError, UserError
from reconciler.core.ports import StorePort
from reconciler.engine.costing import refresh_recorded_costs
from reconciler.engine.reconciling import lock_name
from reconciler.wiring import build_store
from specs.loading import load_spec
from specs.model import FleetSpec

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
    """The cost constants finance owns: show them, set them (with history)."""


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
