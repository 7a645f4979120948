"""The plan as Markdown for a pull-request comment, always under a size limit.

GitHub refuses comments over 65,536 characters; the default limit (65,000) leaves room. A plan
too large to list in full is summarized: counts, cost and warnings always come first, then as
many changes as fit, then "... and N more changes not shown".
"""

from __future__ import annotations

from reconciler.core.plans import Action, Change, GuardWarning, Plan
from reconciler.core.specdiff import SpecChange, render_value
from reconciler.views.human import (
    change_details,
    constant_label,
    money,
    signed_money,
)

DEFAULT_LIMIT = 65_000
_MAX_WARNINGS = 50
_CELL_MAX = 300
_FOOTER_RESERVE = 200  # room kept for the closing lines and the "N more" line


def _cell(text: str, limit: int = _CELL_MAX) -> str:
    """Safe inside a table cell: pipes escaped, one line, bounded."""
    flat = " ".join(text.split()).replace("\\", "\\\\").replace("|", "\\|")
    flat = flat.replace("<", "&lt;").replace(">", "&gt;")
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return flat


def _warning_line(warning: GuardWarning) -> str:
    label = f"**REFUSED** ({warning.guard})" if warning.blocking else f"({warning.guard})"
    text = f"- {label}: {_cell(warning.message, 500)}"
    if warning.hint:
        text += f" — hint: {_cell(warning.hint, 200)}"
    return text


def _change_row(change: Change) -> str:
    delta = signed_money(change.monthly_cost_delta) if change.monthly_cost_delta else ""
    drift = " (drift)" if change.drift else ""
    details = _cell(change_details(change).replace(" -> ", " → "), 200)
    return (
        f"| `{change.action.marker}` | `{_cell(change.address, 80)}` | {_cell(change.region, 40)}"
        f" | {change.action.value}{drift} | {details} | {delta}"
        f" | {_cell(change.reason)} |"
    )


def _head(plan: Plan) -> list[str]:
    s = plan.summary
    title = f"### Fleet `{_cell(plan.fleet, 40)}`: "
    if plan.is_empty:
        title += "no changes"
    else:
        count = len(plan.changes)
        title += f"{count} {'change' if count == 1 else 'changes'}"
    if plan.blocked:
        title += " — **refused by a guard**"
    lines = [title, ""]
    meta = []
    if plan.spec_hash:
        meta.append(f"spec `{_cell(plan.spec_hash[:12], 12)}`")
    if plan.generated_at is not None:
        meta.append(f"generated {plan.generated_at.isoformat()}")
    if meta:
        lines += [", ".join(meta), ""]
    lines += ["| Action | Count |", "|---|---:|"]
    for action in Action:
        count = s.counts.get(action.value, 0)
        if count or action in (Action.CREATE, Action.RESIZE, Action.DESTROY, Action.ADOPT):
            lines.append(f"| {action.value} | {count} |")
    lines.append("")
    lines.append(f"**Nodes:** {s.node_count_before} → {s.node_count_after}  ")
    lines.append(
        f"**Monthly cost:** {money(s.monthly_cost_before)} → {money(s.monthly_cost_after)} "
        f"({signed_money(s.monthly_cost_delta)})"
        + (f", budget {money(s.monthly_budget)}" if s.monthly_budget is not None else "")
        + "  "
    )
    if s.constants:
        shown = ", ".join(constant_label(c) for c in s.constants[:20])
        more = len(s.constants) - 20
        lines.append(
            f"**Cost constants:** {_cell(shown, 2000)}" + (f" and {more} more" if more > 0 else "")
        )
    lines.append("")
    if plan.warnings:
        lines.append("#### Warnings")
        lines.append("")
        lines += [_warning_line(w) for w in plan.warnings[:_MAX_WARNINGS]]
        extra = len(plan.warnings) - _MAX_WARNINGS
        if extra > 0:
            lines.append(f"- ... and {extra} more warnings not shown")
        lines.append("")
    if plan.unmanaged:
        names = ", ".join(f"`{_cell(u.name, 60)}`" for u in plan.unmanaged[:20])
        more = len(plan.unmanaged) - 20
        lines.append(
            f"Unmanaged servers (never touched): {names}"
            + (f" and {more} more" if more > 0 else "")
        )
        lines.append("")
    return lines


def render_markdown(plan: Plan, *, limit: int = DEFAULT_LIMIT) -> str:
    """The plan as Markdown of at most ``limit`` characters."""
    head = "\n".join(_head(plan)) + "\n"
    if plan.is_empty:
        return _fit(head, limit)
    table_head = (
        f"<details><summary>Changes ({len(plan.changes)})</summary>\n\n"
        "| | Node | Region | Action | Details | Cost Δ | Reason |\n"
        "|---|---|---|---|---|---:|---|\n"
    )
    closing = "\n</details>\n"
    budget = limit - len(head) - len(table_head) - len(closing) - _FOOTER_RESERVE
    rows: list[str] = []
    used = 0
    for change in plan.changes:
        row = _change_row(change) + "\n"
        if used + len(row) > budget:
            break
        rows.append(row)
        used += len(row)
    left = len(plan.changes) - len(rows)
    body = table_head + "".join(rows)
    if left > 0:
        body += f"\n... and {left} more changes not shown (see `reconcile --output json`)\n"
    return _fit(head + "\n" + body + closing, limit)


def _fit(text: str, limit: int) -> str:
    """Last resort for tiny limits: cut and say so."""
    if len(text) <= limit:
        return text
    marker = "\n\n... (truncated)\n"
    if limit <= len(marker):
        return text[:limit]
    return text[: limit - len(marker)] + marker


_SPEC_DIFF_ROWS = 200
_MARKERS = {"added": "+", "removed": "-", "changed": "~"}


def render_spec_diff(
    changes: list[SpecChange], old: str, new: str, *, max_rows: int = _SPEC_DIFF_ROWS
) -> str:
    """What a pull request changes in the desired state, as a Markdown table (bounded)."""
    count = len(changes)
    head = f"### Desired state: {count} {'change' if count == 1 else 'changes'}"
    lines = [head, "", f"`{_cell(old, 120)}` → `{_cell(new, 120)}`", ""]
    if not changes:
        lines.append("No change in the desired state.")
        return "\n".join(lines) + "\n"
    lines += ["| | field | before | after |", "|---|---|---|---|"]
    for change in changes[:max_rows]:
        before = "" if change.kind == "added" else f"`{_cell(render_value(change.old), 150)}`"
        after = "" if change.kind == "removed" else f"`{_cell(render_value(change.new), 150)}`"
        lines.append(
            f"| `{_MARKERS[change.kind]}` | `{_cell(change.path, 120)}` | {before} | {after} |"
        )
    if count > max_rows:
        lines += ["", f"... and {count - max_rows} more changes not shown"]
    return "\n".join(lines) + "\n"
