"""The daemon's status page: server-rendered HTML with inline SVG charts, no JavaScript.

Everything on the page comes from the same fleet document ``GET /v1/fleet`` serves (so its
numbers match it by construction) plus a header (leadership, last reconcile, spec revisions),
the warmup schedules, recent events and whether the reader may see costs. Every text from
outside (node names, error messages, spec problems) is HTML-escaped; the daemon serves the page
with a Content-Security-Policy that allows no script at all.

Sections: header (leader and epoch, last reconcile and its outcome, applied vs attempted
revision, a banner when the data are stale); counts of nodes by life-cycle phase and health;
utilization per region and pool against the target line, with capacity; warmup curves (each
schedule's daily limit, and each warming node's current rate against it); the monthly cost
(only for readers allowed to see costs); "needs attention"; recent events; the node table.

Hooks for data other parts add to the fleet document (shown when present, see
docs/production.md "The status page"): per node ``phase`` and ``phase_error`` (life-cycle phase
of provisioning), ``blocklist`` (verdicts: a list of ``{"zone", "listed"}`` or strings),
``warmup`` (per IP: ``{"ip", "day", "limit", "sent_today"}``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

#: node statuses in life-cycle order (anything else is appended)
PHASES = (
    "provisioning",
    "warming",
    "active",
    "paused",
    "maintenance",
    "draining",
    "unhealthy",
)
GRADES = ("healthy", "warning", "critical", "unknown")
_CHUNK = 100
_COLORS = {
    "provisioning": "#8e9aaf",
    "warming": "#f4a261",
    "active": "#2a9d8f",
    "paused": "#adb5bd",
    "maintenance": "#6c757d",
    "draining": "#9d8189",
    "unhealthy": "#e63946",
    "healthy": "#2a9d8f",
    "warning": "#f4a261",
    "critical": "#e63946",
    "unknown": "#adb5bd",
}
_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2731;
background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:12px 20px}
header h1{font-size:18px;margin:0 0 4px}
header .meta span{margin-right:18px;white-space:nowrap}
main{padding:12px 20px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:10px 14px;
margin:0 0 12px;overflow-x:auto}
div.chunk{content-visibility:auto;contain-intrinsic-size:auto 2300px}
table.rows{table-layout:fixed}
table.rows td{overflow:hidden;text-overflow:ellipsis}
svg.chart{max-width:100%;height:auto}
section h2{font-size:15px;margin:0 0 8px}
.banner{background:#ffe8a3;border:1px solid #e0b400;padding:8px 14px;margin:0 0 12px;
border-radius:6px}
.banner.bad{background:#ffd6d9;border-color:#e63946}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(360px,1fr));gap:12px}
.tiles{display:flex;flex-wrap:wrap;gap:8px;margin:0 0 8px}
.tile{border:1px solid #dde1e6;border-radius:4px;padding:4px 10px;min-width:70px}
.tile b{display:block;font-size:18px}
table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{text-align:left;padding:3px 6px;border-bottom:1px solid #eceff2;white-space:nowrap}
th{background:#f0f2f5;position:sticky;top:0}
td.num,th.num{text-align:right}
.ok{color:#2a9d8f}.warn{color:#b56a00}.bad{color:#c1121f}
ul.attention li,ul.events li{margin:2px 0}
.muted{color:#6c757d}
code{font-size:12px}
"""


@dataclass(frozen=True)
class StatusHeader:
    fleet: str
    generated_at: datetime
    leader: bool | None = None
    epoch: int | None = None
    holder: str | None = None
    last_reconcile_at: datetime | None = None
    last_reconcile_outcome: str | None = None
    source: Mapping[str, Any] = field(default_factory=dict)  # SourceStatus.to_json()
    stale: str | None = None  # why the data are stale (None: fresh)
    target_utilization: float = 0.8
    version: str | None = None


@dataclass(frozen=True)
class StatusInputs:
    header: StatusHeader
    fleet: Mapping[str, Any]  # the /v1/fleet document
    show_costs: bool = False
    #: schedule name -> daily limits for day 1..N
    curves: Mapping[str, Sequence[int]] = field(default_factory=dict)
    #: pool name -> schedule name
    pool_schedules: Mapping[str, str] = field(default_factory=dict)
    #: newest first: {"at", "level", "event", "message"}
    events: Sequence[Mapping[str, Any]] = ()
    #: plan-level things waiting (guard refusals, budget-deferred changes)
    waiting: Sequence[str] = ()
    #: IPs per node: a node's rate is compared with its IPs' limit per IP
    ips_per_node: int = 1


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _age(at: str | None, now: datetime) -> tuple[str, float | None]:
    if not at:
        return "never", None
    try:
        seconds = (now - datetime.fromisoformat(at)).total_seconds()
    except ValueError:
        return "?", None
    if seconds < 0:
        return "now", 0.0
    if seconds < 120:
        return f"{seconds:.0f}s", seconds
    if seconds < 7200:
        return f"{seconds / 60:.0f}m", seconds
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h", seconds
    return f"{seconds / 86400:.0f}d", seconds


def _short(revision: str | None) -> str:
    if not revision:
        return "-"
    if revision.startswith("files:"):
        return "files:" + revision[6:18]
    return revision[:12]


# --- sections -----------------------------------------------------------------------------


def _header(h: StatusHeader) -> str:
    lead = "unknown"
    if h.leader is True:
        lead = (
            f"this daemon leads (epoch {h.epoch})" if h.epoch is not None else "this daemon leads"
        )
    elif h.leader is False:
        lead = "standby (another daemon leads)"
    last = "not yet"
    if h.last_reconcile_at is not None:
        outcome = h.last_reconcile_outcome or "?"
        css = "ok" if outcome in ("ok", "dry-run") else "bad"
        last = (
            f"{_e(h.last_reconcile_at.isoformat(timespec='seconds'))} "
            f'<b class="{css}" id="last-outcome">{_e(outcome)}</b>'
        )
    source = h.source or {}
    applied = _short(source.get("applied_revision"))
    attempted = _short(source.get("attempted_revision"))
    rev = f'applied <code id="rev-applied">{_e(applied)}</code>'
    if source.get("attempted_revision") and attempted != applied:
        rev += f', attempted <code id="rev-attempted">{_e(attempted)}</code>'
    parts = [
        f"<span>{_e(lead)}</span>",
        f"<span>last reconcile: {last}</span>",
        f"<span>spec {rev}</span>",
        f"<span>at {_e(h.generated_at.isoformat(timespec='seconds'))}</span>",
    ]
    if h.version:
        parts.append(f'<span class="muted">fleet-reconciler {_e(h.version)}</span>')
    return (
        f'<header><h1>Fleet <span id="fleet-name">{_e(h.fleet)}</span></h1>'
        f'<div class="meta">{"".join(parts)}</div></header>'
    )


def _banners(h: StatusHeader) -> str:
    out = []
    if h.stale:
        out.append(f'<div class="banner" id="stale">Data are stale: {_e(h.stale)}</div>')
    error = (h.source or {}).get("attempted_error")
    if error:
        attempted = _short((h.source or {}).get("attempted_revision"))
        out.append(
            f'<div class="banner bad" id="spec-refused">Spec revision <code>{_e(attempted)}'
            f"</code> was refused; the daemon keeps running "
            f"<code>{_e(_short((h.source or {}).get('applied_revision')))}</code>:"
            f"<pre>{_e(error[:4000])}</pre></div>"
        )
    fetch = (h.source or {}).get("fetch_error")
    if fetch:
        out.append(f'<div class="banner" id="fetch-error">Cannot fetch the spec: {_e(fetch)}</div>')
    return "".join(out)


def _stacked_bar(counts: Mapping[str, int], order: Sequence[str], width: int = 340) -> str:
    total = sum(counts.values())
    if total == 0:
        return '<svg width="340" height="18" role="img"><title>no nodes</title></svg>'
    x = 0.0
    rects = []
    for name in [*order, *sorted(set(counts) - set(order))]:
        count = counts.get(name, 0)
        if not count:
            continue
        w = width * count / total
        color = _COLORS.get(name, "#457b9d")
        rects.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="18" fill="{color}">'
            f"<title>{_e(name)}: {count}</title></rect>"
        )
        x += w
    return f'<svg width="{width}" height="18" role="img">{"".join(rects)}</svg>'


def _counts(nodes: Sequence[Mapping[str, Any]]) -> str:
    phases: dict[str, int] = {}
    grades: dict[str, int] = {}
    for n in nodes:
        phase = str(n.get("phase") or n.get("status") or "?")
        phases[phase] = phases.get(phase, 0) + 1
        grade = str(n.get("health") or "unknown")
        grades[grade] = grades.get(grade, 0) + 1

    def tiles(counts: Mapping[str, int], order: Sequence[str], kind: str) -> str:
        names = [*[o for o in order if o in counts], *sorted(set(counts) - set(order))]
        return "".join(
            f'<div class="tile" id="{kind}-{_e(name)}"><b>{counts[name]}</b> {_e(name)}</div>'
            for name in names
        )

    return (
        '<section id="counts"><h2>Nodes: <span id="node-total">'
        f"{len(nodes)}</span></h2>"
        f'<div class="tiles">{tiles(phases, PHASES, "phase")}</div>'
        f"{_stacked_bar(phases, PHASES)}"
        f'<h2 style="margin-top:10px">Health</h2><div class="tiles">'
        f"{tiles(grades, GRADES, 'grade')}</div>{_stacked_bar(grades, GRADES)}</section>"
    )


def _utilization(groups: Sequence[Mapping[str, Any]], target: float) -> str:
    if not groups:
        return (
            '<section id="utilization"><h2>Utilization</h2><p class="muted">no groups</p></section>'
        )
    scale = max(1.2, *[float(g.get("utilization") or 0) for g in groups])
    width, label_w, row_h = 300, 150, 22
    height = row_h * len(groups) + 20
    rows = []
    for i, g in enumerate(groups):
        y = 10 + i * row_h
        util = g.get("utilization")
        name = f"{g['region']}/{g.get('pool') or '-'}"
        w = 0.0 if util is None else width * min(float(util), scale) / scale
        color = "#2a9d8f" if util is None or util < target else "#e76f51"
        rows.append(
            f'<text x="0" y="{y + 14}" font-size="12">{_e(name)}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{width}" height="14" fill="#eceff2"/>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="14" fill="{color}">'
            f"<title>{_e(name)}: {_pct(util)} of {g.get('capacity_per_day', 0):,} emails/day"
            f"</title></rect>"
            f'<text x="{label_w + width + 6}" y="{y + 14}" font-size="12">{_pct(util)}</text>'
        )
    line_x = label_w + width * target / scale
    chart = (
        f'<svg class="chart" width="{label_w + width + 50}" height="{height}" '
        f'viewBox="0 0 {label_w + width + 50} {height}" role="img">'
        f"<title>utilization against the {target:.0%} line</title>{''.join(rows)}"
        f'<line x1="{line_x:.1f}" x2="{line_x:.1f}" y1="4" y2="{height - 4}" stroke="#c1121f"'
        f' stroke-dasharray="4 3"/><text x="{line_x + 3:.1f}" y="{height - 2}" font-size="10"'
        f' fill="#c1121f">{target:.0%}</text></svg>'
    )
    table = "".join(
        f"<tr><td>{_e(g['region'])}</td><td>{_e(g.get('pool') or '-')}</td>"
        f'<td class="num">{g.get("nodes", 0)}</td>'
        f'<td class="num">{"-" if g.get("desired") is None else g["desired"]}</td>'
        f'<td class="num">{g.get("capacity_per_day", 0):,}</td>'
        f'<td class="num">{float(g.get("throughput_per_day") or 0):,.0f}</td>'
        f'<td class="num">{_pct(g.get("utilization"))}</td></tr>'
        for g in groups
    )
    return (
        f'<section id="utilization"><h2>Utilization (target {target:.0%})</h2>{chart}'
        '<table id="groups"><tr><th>region</th><th>pool</th><th class="num">nodes</th>'
        '<th class="num">desired</th><th class="num">capacity/day</th>'
        f'<th class="num">sent/day</th><th class="num">utilization</th></tr>{table}</table>'
        "</section>"
    )


def _warmup(inputs: StatusInputs) -> str:
    nodes = [n for n in inputs.fleet.get("nodes", []) if n.get("daily_limit") is not None]
    if not inputs.curves:
        return ""
    width, height, pad = 360, 160, 30
    max_day = max((len(c) for c in inputs.curves.values()), default=1)
    max_day = max(max_day, *[int(n.get("warmup_day") or 0) for n in nodes], 1)
    top: float = max((max(c) for c in inputs.curves.values() if c), default=1)
    ips = max(1, inputs.ips_per_node)
    for n in nodes:
        per_ip = float(n.get("throughput_per_day") or 0) / max(ips, 1)
        top = max(top, per_ip)
    top = max(top, 1)

    def xy(day: float, value: float) -> tuple[float, float]:
        return (
            pad + (width - pad - 6) * day / max_day,
            height - pad + 10 - (height - pad) * value / top,
        )

    palette = ("#457b9d", "#f4a261", "#2a9d8f", "#9d4edd", "#e76f51")
    lines = []
    for i, (name, curve) in enumerate(sorted(inputs.curves.items())):
        points = " ".join("{:.1f},{:.1f}".format(*xy(d + 1, v)) for d, v in enumerate(curve))
        color = palette[i % len(palette)]
        lines.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}">'
            f"<title>{_e(name)}</title></polyline>"
        )
    dots = []
    for n in nodes[:2000]:
        day = int(n.get("warmup_day") or 0)
        sent = float(n.get("throughput_per_day") or 0) / ips
        x, y = xy(day, min(sent, top))
        over = sent > float(n.get("daily_limit") or 0)
        dots.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{"#c1121f" if over else "#1d3557"}">'
            f"<title>{_e(n['name'])}: day {day}, {sent:,.0f}/day per IP of "
            f"{n.get('daily_limit'):,}"
            "</title></circle>"
        )
    x0, y0 = xy(0, 0)
    x1, _ = xy(max_day, 0)
    _, ytop = xy(0, top)
    axes = (
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#999"/>'
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{ytop}" stroke="#999"/>'
        f'<text x="{x0}" y="{height - 4}" font-size="10">day 0</text>'
        f'<text x="{x1 - 30}" y="{height - 4}" font-size="10">day {max_day}</text>'
        f'<text x="2" y="{ytop + 8}" font-size="10">{top:,.0f}</text>'
    )
    legend = ", ".join(
        f'<span style="color:{palette[i % len(palette)]}">{_e(name)}</span>'
        for i, name in enumerate(sorted(inputs.curves))
    )
    return (
        '<section id="warmup"><h2>Warmup</h2>'
        f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'role="img"><title>warmup schedules (daily limit'
        " per IP) and warming nodes (emails/day now)</title>"
        f"{axes}{''.join(lines)}{''.join(dots)}</svg>"
        f'<p class="muted">Lines: daily limit per IP by schedule ({legend}). Dots: each warming '
        "node's current rate (red: above today's limit).</p></section>"
    )


def _costs(inputs: StatusInputs) -> str:
    if not inputs.show_costs:
        return ""
    fleet = inputs.fleet
    rows = "".join(
        f"<tr><td>{_e(g['region'])}</td><td>{_e(g.get('pool') or '-')}</td>"
        f'<td class="num">${_e(g.get("monthly_cost"))}</td></tr>'
        for g in fleet.get("groups", [])
    )
    return (
        '<section id="costs"><h2>Monthly cost: <span id="monthly-cost">$'
        f"{_e(fleet.get('monthly_cost'))}</span></h2>"
        f'<table><tr><th>region</th><th>pool</th><th class="num">per month</th></tr>{rows}'
        "</table></section>"
    )


def attention_items(inputs: StatusInputs) -> list[tuple[str, str, str]]:
    """(severity css, node or '', text) for everything an operator should look at."""
    items: list[tuple[str, str, str]] = []
    for n in inputs.fleet.get("nodes", []):
        name = str(n.get("name"))
        status = str(n.get("status"))
        if n.get("unhealthy"):
            items.append(("bad", name, f"unhealthy: {n.get('missed_beats', 0)} heartbeats missed"))
        elif isinstance(hold := n.get("hold"), Mapping):
            ends = "resume" if hold.get("kind") == "maintenance" else "uncordon"
            items.append(("warn", name, f"{hold.get('summary')} (reconcile node {ends} {name})"))
        elif status in ("paused", "maintenance", "draining"):
            by = n.get("paused_by")
            items.append(("warn", name, f"{status} (by {by})" if by else status))
        if n.get("ip_state") == "quarantined":
            why = "; ".join(str(r) for r in n.get("reputation_reasons") or []) or "quarantined"
            items.append(("bad", name, f"quarantined: {why} (reconcile node resume {name})"))
        if n.get("phase_error"):
            items.append(("bad", name, f"provisioning failed: {n['phase_error']}"))
        for verdict in _listed(n.get("blocklist")):
            items.append(("bad", name, f"listed on {verdict}"))
        if n.get("health") in ("critical", "warning") and not n.get("unhealthy"):
            reasons = ", ".join(str(r) for r in n.get("health_reasons") or []) or n.get("health")
            css = "bad" if n.get("health") == "critical" else "warn"
            items.append((css, name, f"{n.get('health')}: {reasons}"))
    for text in inputs.waiting:
        items.append(("warn", "", text))
    return items


def _listed(verdicts: object) -> list[str]:
    if not isinstance(verdicts, list):
        return []
    out = []
    for v in verdicts:
        if isinstance(v, Mapping):
            if v.get("listed"):
                out.append(str(v.get("zone") or "?"))
        elif isinstance(v, str):
            out.append(v)
    return out


def _attention(inputs: StatusInputs) -> str:
    items = attention_items(inputs)
    if not items:
        body = '<p class="ok">Nothing needs attention.</p>'
    else:
        shown = items[:200]
        body = '<ul class="attention">' + "".join(
            f'<li class="{css}">{f"<b>{_e(node)}</b>: " if node else ""}{_e(text)}</li>'
            for css, node, text in shown
        )
        if len(items) > len(shown):
            body += f"<li>... and {len(items) - len(shown)} more</li>"
        body += "</ul>"
    return (
        f'<section id="attention"><h2>Needs attention: <span id="attention-count">{len(items)}'
        f"</span></h2>{body}</section>"
    )


def _events(inputs: StatusInputs) -> str:
    if not inputs.events:
        body = '<p class="muted">No events since the daemon started.</p>'
    else:
        body = (
            '<ul class="events">'
            + "".join(
                f'<li class="{"bad" if e.get("level") in ("error", "critical") else ""}">'
                f'<span class="muted">{_e(e.get("at"))}</span> <code>{_e(e.get("event"))}</code> '
                f"{_e(str(e.get('message', ''))[:300])}</li>"
                for e in list(inputs.events)[:50]
            )
            + "</ul>"
        )
    return f'<section id="events"><h2>Recent events</h2>{body}</section>'


def _rate(value: object) -> str:
    if value is None:
        return "-"
    try:
        return f"{float(str(value)):.2%}"
    except ValueError:
        return "-"


#: node table columns: (header, css class, width in px); fixed widths let the browser lay
#: out each chunk of rows without measuring every cell of the fleet
_COLUMNS = (
    ("node", "", 170),
    ("region", "", 85),
    ("pool", "", 95),
    ("status", "", 90),
    ("ip", "", 110),
    ("last beat", "num", 78),
    ("queue", "num", 55),
    ("sent/min", "num", 70),
    ("bounce", "num", 60),
    ("complaint", "num", 75),
    ("blocklists", "", 90),
    ("warmup", "num", 60),
    ("limit/day", "num", 70),
    ("util", "num", 60),
    ("health", "", 75),
)
_COST_COLUMN = ("cost/mo", "num", 70)


def _colgroup(columns: Sequence[tuple[str, str, int]]) -> str:
    return (
        "<colgroup>" + "".join(f'<col style="width:{w}px">' for _, _, w in columns) + "</colgroup>"
    )


def _table_width(columns: Sequence[tuple[str, str, int]]) -> int:
    """Fixed table layout needs a set width (with ``width: auto`` browsers lay out by content)."""
    return sum(w for _, _, w in columns)


def _node_row(n: Mapping[str, Any], now: datetime, show_costs: bool) -> str:
    age, seconds = _age(n.get("last_heartbeat"), now)
    age_css = "bad" if n.get("unhealthy") else ("warn" if seconds is None else "")
    throughput = n.get("throughput_per_day")
    per_minute = "-" if throughput is None else f"{float(throughput) / 1440:,.1f}"
    listed = _listed(n.get("blocklist"))
    blocklist = (
        f'<span class="bad">{_e(", ".join(listed))}</span>'
        if listed
        else ("clean" if isinstance(n.get("blocklist"), list) else "-")
    )
    grade = str(n.get("health") or "unknown")
    grade_css = {"critical": "bad", "warning": "warn", "healthy": "ok"}.get(grade, "muted")
    return (
        f'<tr id="node-{_e(n.get("name"))}"><td>{_e(n.get("name"))}</td>'
        f"<td>{_e(n.get('region'))}</td><td>{_e(n.get('pool') or '-')}</td>"
        f"<td{_hold_title(n)}>{_e(_status_cell(n))}</td><td>{_e(n.get('ip') or '-')}</td>"
        f'<td class="num {age_css}">{_e(age)}</td>'
        f'<td class="num">{"-" if n.get("queue_length") is None else n["queue_length"]}</td>'
        f'<td class="num">{per_minute}</td>'
        f'<td class="num">{_rate(n.get("bounce_rate"))}</td>'
        f'<td class="num">{_rate(n.get("complaint_rate"))}</td>'
        f"<td>{blocklist}</td>"
        f'<td class="num">{n.get("warmup_day") or "-"}</td>'
        f'<td class="num">{"-" if n.get("daily_limit") is None else n["daily_limit"]}</td>'
        f'<td class="num">{_pct(n.get("utilization"))}</td>'
        f'<td class="{grade_css}">{_e(grade)}</td>'
        + (f'<td class="num">${_e(n.get("monthly_cost"))}</td>' if show_costs else "")
        + "</tr>"
    )


def _status_cell(n: Mapping[str, Any]) -> str:
    """The phase (or status); a cordon or drain shows as what it is (``cordoned``,
    ``draining``, ``drained``), with who, why and since when in the cell's title."""
    hold = n.get("hold")
    if isinstance(hold, Mapping) and hold.get("kind") != "maintenance":
        return str(hold.get("state"))
    return str(n.get("phase") or n.get("status"))


def _hold_title(n: Mapping[str, Any]) -> str:
    hold = n.get("hold")
    if isinstance(hold, Mapping):
        return f' title="{_e(hold.get("summary"))}"'
    return ""


def _node_table(inputs: StatusInputs, now: datetime) -> str:
    """The header, then the rows in chunks: each chunk is its own fixed-layout table in a
    ``content-visibility: auto`` box, so the browser lays out only the chunks on screen
    (containment does not apply to a table's own parts, hence one table per chunk)."""
    nodes = inputs.fleet.get("nodes", [])
    columns = (*_COLUMNS, _COST_COLUMN) if inputs.show_costs else _COLUMNS
    cols = _colgroup(columns)
    width = _table_width(columns)
    head = (
        "<tr>"
        + "".join(
            f'<th class="{css}">{_e(name)}</th>' if css else f"<th>{_e(name)}</th>"
            for name, css, _ in columns
        )
        + "</tr>"
    )
    chunks = []
    for start in range(0, len(nodes), _CHUNK):
        rows = "".join(_node_row(n, now, inputs.show_costs) for n in nodes[start : start + _CHUNK])
        chunks.append(
            f'<div class="chunk"><table class="rows" style="width:{width}px" '
            f'id="node-table-{start // _CHUNK + 1}">'
            f"{cols}{rows}</table></div>"
        )
    return (
        f'<section id="nodes"><h2>Nodes</h2><table class="rows" style="width:{width}px" '
        'id="node-table">'
        f"{cols}<thead>{head}</thead></table>{''.join(chunks)}</section>"
    )


def render_status_page(inputs: StatusInputs) -> str:
    h = inputs.header
    nodes = inputs.fleet.get("nodes", [])
    utilization = _utilization(inputs.fleet.get("groups", []), h.target_utilization)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta http-equiv="refresh" content="30">'
        f"<title>{_e(h.fleet)}: fleet status</title><style>{_STYLE}</style></head><body>"
        f"{_header(h)}<main>{_banners(h)}"
        f'<div class="grid">{_counts(nodes)}{utilization}'
        f"{_warmup(inputs)}{_costs(inputs)}</div>"
        f'<div class="grid">{_attention(inputs)}{_events(inputs)}</div>'
        f"{_node_table(inputs, h.generated_at)}</main></body></html>"
    )
