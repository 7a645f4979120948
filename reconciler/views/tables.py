"""``reconcile status`` on a terminal: the fleet document as rich tables.

Chosen only for an interactive terminal that can show it: standard output is a TTY, ``TERM`` is
not ``dumb`` and ``NO_COLOR`` is unset (and not ``--no-color``). Anywhere else (pipes, files,
CI logs, ``TERM=dumb``) the plain-text table of ``render_text`` is printed, which scripts may
parse. Both read the same document as ``GET /v1/fleet``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import IO, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

_GRADE_STYLE = {"healthy": "green", "warning": "yellow", "critical": "bold red", "unknown": "dim"}
_STATUS_STYLE = {
    "active": "green",
    "warming": "yellow",
    "provisioning": "cyan",
    "unhealthy": "bold red",
    "paused": "dim",
    "maintenance": "dim",
    "draining": "magenta",
}


def wants_rich(
    stream: IO[str], environ: Mapping[str, str] = os.environ, *, color: bool = True
) -> bool:
    """True on an interactive terminal that can draw tables (TERM=dumb and NO_COLOR honoured)."""
    if not color or environ.get("NO_COLOR"):
        return False
    if (environ.get("TERM") or "").lower() in ("dumb", ""):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _ago(at: str | None, now: datetime) -> str:
    if not at:
        return "never"
    seconds = int((now - datetime.fromisoformat(at)).total_seconds())
    if seconds < 0:
        return "now"
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0%}"


def render_rich(view: Mapping[str, Any], console: Console) -> None:
    now = datetime.fromisoformat(str(view["generated_at"]))
    nodes = view.get("nodes") or []
    if nodes:
        table = Table(box=box.SIMPLE_HEAD, title=f"fleet {view['fleet']}", title_justify="left")
        for header, justify in (
            ("node", "left"),
            ("region", "left"),
            ("pool", "left"),
            ("status", "left"),
            ("ip", "left"),
            ("ip state", "left"),
            ("plan", "left"),
            ("warmup", "right"),
            ("limit/day", "right"),
            ("util", "right"),
            ("last beat", "right"),
            ("cost/mo", "right"),
            ("health", "left"),
        ):
            table.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
        for n in nodes:
            status = str(n["status"])
            grade = str(n["health"])
            table.add_row(
                n["name"],
                n["region"],
                n["pool"] or "-",
                Text(
                    f"{status} ({n['paused_by']})"
                    if n.get("paused_by") and status != "maintenance"
                    else status,
                    style=_STATUS_STYLE.get(status, ""),
                ),
                n["ip"] or "-",
                n.get("ip_state") or "-",
                n["plan"],
                f"day {n['warmup_day']}" if n["warmup_day"] else "-",
                str(n["daily_limit"]) if n["daily_limit"] is not None else "-",
                _pct(n["utilization"]),
                Text(_ago(n["last_heartbeat"], now), style="red" if n["unhealthy"] else ""),
                _money_or_hidden(n.get("monthly_cost")),
                Text(grade, style=_GRADE_STYLE.get(grade, "")),
            )
        console.print(table)
    else:
        console.print("no nodes recorded")
    groups = view.get("groups") or []
    if groups:
        table = Table(box=box.SIMPLE_HEAD)
        for header in ("region", "pool", "nodes", "desired", "capacity/day", "sent/day", "util"):
            table.add_column(header, justify="left" if header in ("region", "pool") else "right")
        for g in groups:
            util = g["utilization"]
            table.add_row(
                g["region"],
                g["pool"] or "-",
                str(g["nodes"]),
                "-" if g["desired"] is None else str(g["desired"]),
                f"{g['capacity_per_day']:,}",
                f"{g['throughput_per_day']:,.0f}",
                Text(_pct(util), style="bold red" if util is not None and util >= 0.8 else ""),
            )
        console.print(table)
    for node in nodes:
        hold = node.get("hold")
        if hold:
            ends = "resume" if hold["kind"] == "maintenance" else "uncordon"
            console.print(
                f"held: {node['name']}: {hold['summary']} (`reconcile node {ends} {node['name']}`)",
                highlight=False,
                markup=False,
            )
        if node.get("quarantine"):
            console.print(
                f"quarantined: {node['name']}: {node['quarantine']} "
                f"(`reconcile node release {node['name']}`)",
                highlight=False,
                markup=False,
            )
    leader = view.get("leader")
    lead = "" if leader is None else (", this daemon leads" if leader else ", standby daemon")
    console.print(
        f"fleet [bold]{view['fleet']}[/bold]: {len(nodes)} nodes, monthly cost "
        f"{_money_or_hidden(view.get('monthly_cost'))}{lead}",
        highlight=False,
    )
    for decision in view.get("decisions") or []:
        console.print(f"autoscaler: {decision}", highlight=False, markup=False)


def _money_or_hidden(value: object) -> str:
    """``$12.34``, or ``(hidden)`` when the document came without costs (no cost token)."""
    return "(hidden)" if value is None else f"${value}"
