"""`reconcile history`: the audit trail of a fleet, from the state database.

One timeline, newest first, of the reconcile runs (who or what ran them: a CLI user on a host,
or a daemon with its leadership epoch; the spec revision; the plan's counts; the outcome) and the
journal entries (every recorded action on a node: creates, destroys, resizes, reverse DNS,
operator actions such as protect, cordon and drain, with who, why and the writer's epoch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

import click

from reconciler.cli.options import fleet_options
from reconciler.core.errors import UserError
from reconciler.core.fleet import RecordedIntent
from reconciler.core.ports import RunRecord
from specs.durations import parse_duration

FORMAT_VERSION = 1
DEFAULT_LIMIT = 50
MAX_LIMIT = 10_000
#: how many rows are read from each table before filtering (bounded: never the whole table)
_SCAN = 20_000


@runtime_checkable
class RunHistory(Protocol):
    """The store's run history (``state.store.SqlStore.recent_runs``)."""

    def recent_runs(self, fleet: str, limit: int = 20) -> list[RunRecord]: ...


@dataclass(frozen=True)
class Entry:
    at: datetime
    kind: str  # "run" or "journal"
    what: str  # "apply", "daemon", "create", "destroy", "cordon", ...
    target: str | None  # the node, for journal entries
    outcome: str
    actor: str | None
    revision: str | None
    epoch: int | None
    detail: str
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "kind": self.kind,
            "what": self.what,
            "node": self.target,
            "outcome": self.outcome,
            "actor": self.actor,
            "revision": self.revision,
            "epoch": self.epoch,
            "detail": self.detail,
            "error": self.error,
            **({"data": self.data} if self.data else {}),
        }


def parse_since(value: str, now: datetime) -> datetime:
    """``2h``, ``7d``, ``1w`` (ago) or an ISO date/time (UTC when no zone is given)."""
    text = value.strip()
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"--since {value!r}: expected a duration like 2h or 7d, or a date like 2026-05-01",
            hint="e.g. --since 24h, --since 2026-05-01T08:00:00+02:00",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _run_entry(run: RunRecord) -> Entry:
    summary = dict(run.summary)
    counts = {
        key.removeprefix("count."): value
        for key, value in sorted(summary.items())
        if key.startswith("count.") and value not in ("0", 0)
    }
    parts = [f"{v} {k}" for k, v in counts.items()]
    changes = summary.get("changes")
    detail = ", ".join(parts) if parts else ("no changes" if changes in ("0", 0) else "")
    before, after = summary.get("monthly_cost_before"), summary.get("monthly_cost_after")
    if before is not None and after is not None and before != after:
        detail += f"; monthly cost ${before} -> ${after}"
    detail += f"; spec {run.spec_hash[:12]}" if run.spec_hash else ""
    epoch_text = str(summary.get("epoch") or "")
    return Entry(
        at=run.started_at,
        kind="run",
        what=run.mode,
        target=None,
        outcome=run.outcome,
        actor=summary.get("actor"),
        revision=summary.get("revision"),
        epoch=int(epoch_text) if epoch_text.isdigit() else None,
        detail=detail.strip("; "),
        error=run.error,
    )


def _intent_entry(intent: RecordedIntent) -> Entry:
    params = dict(intent.params)
    actor = params.pop("by", None) or params.pop("actor", None)
    revision = params.pop("revision", None)
    why = params.pop("why", None) or params.pop("reason", None)
    detail = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
    if why:
        detail = f"{why}" + (f" ({detail})" if detail else "")
    if intent.attempts > 1:
        detail += f"; attempt {intent.attempts}"
    return Entry(
        at=intent.created_at or datetime.min.replace(tzinfo=UTC),
        kind="journal",
        what=intent.kind,
        target=intent.target,
        outcome=intent.status.value,
        actor=actor,
        revision=revision,
        epoch=intent.epoch,
        detail=detail.strip("; "),
        error=intent.error,
    )


def collect(
    runs: Sequence[RunRecord],
    intents: Sequence[RecordedIntent],
    *,
    node: str | None = None,
    since: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[Entry]:
    """The merged timeline, newest first, filtered and bounded."""
    entries: list[Entry] = []
    if node is None:
        entries.extend(_run_entry(r) for r in runs)
    entries.extend(_intent_entry(i) for i in intents if node is None or i.target == node)
    if since is not None:
        entries = [e for e in entries if e.at >= since]
    entries.sort(key=lambda e: (e.at, e.kind == "journal"), reverse=True)
    return entries[:limit]


def render_text(entries: Sequence[Entry], *, local: bool = False) -> str:
    if not entries:
        return "no history recorded for this selection"
    rows: list[tuple[str, ...]] = [("WHEN", "WHAT", "NODE", "OUTCOME", "BY", "REVISION", "DETAIL")]
    for e in entries:
        when = (e.at.astimezone() if local else e.at).isoformat(timespec="seconds")
        by = e.actor or ""
        if e.epoch is not None and "epoch" not in by:
            by = f"{by} (epoch {e.epoch})" if by else f"epoch {e.epoch}"
        detail = e.detail
        if e.error:
            detail = f"{detail}; error: {e.error}" if detail else f"error: {e.error}"
        rows.append(
            (
                when,
                f"{e.kind}:{e.what}",
                e.target or "-",
                e.outcome,
                by or "-",
                (e.revision or "-")[:19],
                " ".join(detail.split())[:200] or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def history_document(fleet: str, entries: Sequence[Entry]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "fleet": fleet,
        "entries": [e.to_json() for e in entries],
    }


def _fleet_name(files: tuple[str, ...], fleet: str | None) -> str:
    if fleet:
        return fleet
    from specs.loading import load_spec

    paths = list(files) or ["fleet.yaml"]
    if not files and not os.path.exists("fleet.yaml"):
        raise UserError(
            "no fleet given: pass --fleet NAME or -f PATH (./fleet.yaml does not exist)",
            hint="e.g. reconcile history --fleet demo",
        )
    return load_spec(paths).spec.name


@click.command("history")
@fleet_options
@click.option("--node", metavar="NAME", help="Only the journal entries of this node.")
@click.option(
    "--since",
    metavar="WHEN",
    help="Only entries since a duration ago (2h, 7d) or a date/time (2026-05-01T08:00Z).",
)
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_LIMIT),
    default=DEFAULT_LIMIT,
    show_default=True,
    help="At most this many entries (newest first).",
)
@click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
@click.option("--local-time", is_flag=True, help="Show times in this machine's time zone.")
def history(
    files: tuple[str, ...],
    fleet: str | None,
    node: str | None,
    since: str | None,
    limit: int,
    output: str,
    local_time: bool,
) -> int:
    """The fleet's audit trail, newest first: reconcile runs (who ran them: a CLI user or a
    daemon and its epoch; the spec revision; counts; outcome) and journal entries (every
    recorded action on a node, with who and why)."""
    from reconciler.wiring import build_store

    name = _fleet_name(files, fleet)
    now = datetime.now(UTC)
    moment = parse_since(since, now) if since else None
    store = build_store(dict(os.environ))
    try:
        runs: list[RunRecord] = []
        if node is None and isinstance(store, RunHistory):
            runs = store.recent_runs(name, _SCAN)
        intents = store.journal(name, _SCAN)
    finally:
        store.close()
    entries = collect(runs, intents, node=node, since=moment, limit=limit)
    if output == "json":
        click.echo(json.dumps(history_document(name, entries), indent=2))
    else:
        click.echo(render_text(entries, local=local_time))
    return 0
