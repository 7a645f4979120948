"""The plan for people, in the manner of ``terraform plan``.

::

    Fleet acme: 2 changes (spec 1a2b3c4d, 2026-11-23T18:00:00+00:00)

    # dallas
      + acme-dallas-003  create  plan=baseline pool=shared location=13  +$14.98/mo  (dallas: ...)

    Plan: 1 to create, 0 to resize, 0 to destroy, 0 to adopt.
    Nodes: 2 -> 3
    Monthly cost: $29.96 -> $44.94 (+$14.98)
    Cost constants: ip_monthly_price=4.99 (spec), baseline=9.99 (spec)

A plan without changes is one line:
``No changes. Fleet acme matches the spec (3 nodes, $44.94/month).``
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from reconciler.core.costs import cents
from reconciler.core.plans import (
    UNSETTLED,
    Action,
    AppliedConstant,
    Change,
    GuardWarning,
    Plan,
)

#: the actions always named in the summary line, then the others when present
_ALWAYS = (Action.CREATE, Action.RESIZE, Action.DESTROY, Action.ADOPT)
_VERBS: dict[Action, str] = {
    Action.CREATE: "create",
    Action.RESIZE: "resize",
    Action.DESTROY: "destroy",
    Action.ADOPT: "adopt",
    Action.SET_RDNS: "set rDNS",
    Action.ACTIVATE: "activate",
    Action.DRAIN: "drain",
    Action.FORGET: "forget",
    Action.REPAIR: "repair",
    Action.RESOLVE: "resolve",
    Action.PAUSE: "pause",
    Action.RESUME: "resume",
    Action.PROVISION: "provision",
    Action.BOOT: "boot",
}
_UNMANAGED_SHOWN = 50

_RESET = "\x1b[0m"
_COLORS: dict[str, str] = {
    "+": "\x1b[32m",  # green
    "~": "\x1b[33m",  # yellow
    "-": "\x1b[31m",  # red
    ">": "\x1b[36m",  # cyan
    "?": "\x1b[35m",  # magenta
    "refused": "\x1b[1;31m",
    "warn": "\x1b[33m",
    "dim": "\x1b[2m",
    "bold": "\x1b[1m",
}


def money(value: Decimal) -> str:
    """``$14.98``, ``-$14.98``."""
    amount = cents(value)
    return f"-${-amount}" if amount < 0 else f"${amount}"


def signed_money(value: Decimal) -> str:
    """``+$14.98``, ``-$14.98``, ``$0.00``."""
    amount = cents(value)
    if amount > 0:
        return f"+${amount}"
    if amount < 0:
        return f"-${-amount}"
    return "$0.00"


def constant_label(constant: AppliedConstant) -> str:
    """``ip_monthly_price=4.99 (spec)``; a plan price reads ``baseline=9.99 (spec)``."""
    key = constant.key
    if key.startswith("plan_monthly_price:"):
        key = key.split(":", 1)[1]
    return f"{key}={constant.value} ({constant.source})"


def summary_line(plan: Plan) -> str:
    counts = plan.summary.counts
    parts = [f"{counts.get(a.value, 0)} to {_VERBS[a]}" for a in _ALWAYS]
    parts += [
        f"{counts[a.value]} to {_VERBS[a]}"
        for a in Action
        if a not in _ALWAYS and counts.get(a.value, 0) > 0
    ]
    return "Plan: " + ", ".join(parts) + "."


def cost_line(plan: Plan) -> str:
    s = plan.summary
    return (
        f"Monthly cost: {money(s.monthly_cost_before)} -> {money(s.monthly_cost_after)} "
        f"({signed_money(s.monthly_cost_delta)})"
    )


def change_details(change: Change) -> str:
    """``plan=baseline pool=shared`` for a create; ``plan: small -> baseline`` otherwise."""
    before = change.before or {}
    after = change.after or {}
    if change.action is Action.CREATE:
        bits = [f"plan={change.plan}"] if change.plan else []
        if change.pool:
            bits.append(f"pool={change.pool}")
        if change.location_id is not None:
            bits.append(f"location={change.location_id}")
        return " ".join(bits)
    bits = []
    if not after:  # a removal: say what goes
        bits = [f"{key}={before[key]}" for key in sorted(before)]
    for key in sorted(set(before) | set(after) if after else ()):
        if key in before and key in after:
            bits.append(f"{key}: {before[key]} -> {after[key]}")
        elif key in after:
            bits.append(f"{key}={after[key]}")
        else:
            bits.append(f"{key}: {before[key]} -> (none)")
    if change.service_id is not None and "service_id" not in before and "service_id" not in after:
        bits.insert(0, f"id={change.service_id}")
    return ", ".join(bits)


def change_line(change: Change, *, color: bool = False) -> str:
    marker = change.action.marker
    details = change_details(change)
    cost = ""
    if change.monthly_cost_delta != 0:
        cost = f"  {signed_money(change.monthly_cost_delta)}/mo"
    drift = " [drift]" if change.drift else ""
    head = f"{marker} {change.address}"
    if color:
        head = f"{_COLORS[marker]}{head}{_RESET}"
    text = f"  {head}  {_VERBS[change.action]}{drift}"
    if details:
        text += f"  {details}"
    return f"{text}{cost}  ({change.reason})"


def warning_lines(warnings: Iterable[GuardWarning], *, color: bool = False) -> list[str]:
    lines: list[str] = []
    for warning in warnings:
        label = f"REFUSED [{warning.guard}]" if warning.blocking else f"[{warning.guard}]"
        if color:
            label = f"{_COLORS['refused' if warning.blocking else 'warn']}{label}{_RESET}"
        lines.append(f"  ! {label} {warning.message}")
        if warning.hint:
            lines.append(f"      hint: {warning.hint}")
    return lines


def unmanaged_line(plan: Plan) -> str | None:
    if not plan.unmanaged:
        return None
    shown = [f"{u.name} (#{u.service_id})" for u in plan.unmanaged[:_UNMANAGED_SHOWN]]
    more = len(plan.unmanaged) - len(shown)
    text = "unmanaged (never touched): " + ", ".join(shown)
    if more > 0:
        text += f" and {more} more"
    return text


def render_plan(plan: Plan, *, color: bool = False) -> str:
    """The plan as text; ends with a newline."""
    s = plan.summary
    if plan.is_empty:
        nodes = f"{s.node_count_before} {'node' if s.node_count_before == 1 else 'nodes'}"
        unsettled = sorted({w.guard for w in plan.warnings if w.guard in UNSETTLED})
        if unsettled:
            # work waits or was deferred: never "matches the spec" (issue 9)
            lines = [
                f"No changes to make now, but fleet {plan.fleet} does not match the spec yet "
                f"({nodes}; {', '.join(unsettled)}: see Warnings)."
            ]
        else:
            lines = [
                f"No changes. Fleet {plan.fleet} matches the spec ({nodes}, "
                f"{money(s.monthly_cost_before)}/month)."
            ]
        if plan.warnings:
            lines += ["", "Warnings:", *warning_lines(plan.warnings, color=color)]
        if plan.notes:
            lines += ["", "Notes:", *(f"  - {note}" for note in plan.notes)]
        return "\n".join(lines) + "\n"

    count = len(plan.changes)
    header = f"Fleet {plan.fleet}: {count} {'change' if count == 1 else 'changes'}"
    provenance = []
    if plan.spec_hash:
        provenance.append(f"spec {plan.spec_hash[:12]}")
    if plan.generated_at is not None:
        provenance.append(plan.generated_at.isoformat())
    if provenance:
        header += f" ({', '.join(provenance)})"
    if plan.blocked:
        header += " - REFUSED by a guard, see Warnings"
    lines = [_bold(header, color), ""]

    region: str | None = None
    for change in plan.changes:
        if change.region != region:
            if region is not None:
                lines.append("")
            region = change.region
            lines.append(_bold(f"# {region}", color))
        lines.append(change_line(change, color=color))

    if plan.warnings:
        lines += ["", "Warnings:", *warning_lines(plan.warnings, color=color)]
    unmanaged = unmanaged_line(plan)
    if unmanaged is not None:
        lines += ["", unmanaged]
    if plan.notes:
        lines += ["", "Notes:", *(f"  - {note}" for note in plan.notes)]

    lines += ["", _bold(summary_line(plan), color)]
    lines.append(f"Nodes: {s.node_count_before} -> {s.node_count_after}")
    lines.append(cost_line(plan))
    if s.monthly_budget is not None:
        lines.append(f"Monthly budget: {money(s.monthly_budget)}")
    if s.constants:
        lines.append("Cost constants: " + ", ".join(constant_label(c) for c in s.constants))
    return "\n".join(lines) + "\n"


def _bold(text: str, color: bool) -> str:
    return f"{_COLORS['bold']}{text}{_RESET}" if color else text
