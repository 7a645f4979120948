"""``reconcile node ...`` (an operator's acts on one node, recorded in the state database with
who and why, in the journal that ``reconcile history`` reads) and ``reconcile platform-token``.

Every subcommand finds the fleet the same way: ``--fleet NAME``, or ``-f PATH`` (a spec file or
folder; default ``./fleet.yaml``).

- ``maintenance NAME --reason TEXT``: out of the sending rotation (the next reconcile, or the
  daemon's, moves it; its queue drains) and kept out until ``resume``; recorded with who, why
  and since when, so it survives spec changes and restarts.
- ``cordon NAME --reason TEXT``: like ``kubectl cordon``: out of the sending rotation (no new
  mail) and left alone by the health rule (not paused or replaced as unhealthy) until
  ``uncordon``.
- ``drain NAME --reason TEXT``: like ``kubectl drain``: out of the rotation as ``draining``
  until its queue is empty, then held (``maintenance``) until ``uncordon``.
- ``uncordon NAME``: ends a cordon, a drain or a maintenance: back into rotation at the next
  reconcile.
- ``resume NAME``: ends what holds the node out: its maintenance, cordon or drain (the next
  reconcile puts it back into rotation) and a reputation quarantine or pause (its bounce and
  complaint rates count only what it sends from now on; the daemon puts it back at its next
  assessment, unless a blocklist still lists it).
- ``release NAME [--repin]``: a node quarantined for a changed SSH host key is released after
  the operator checked it; ``--repin`` forgets the pinned key so the next contact pins the key
  the node presents now.
- ``retry NAME``: forget the node's failed provisioning steps (and their attempt counts) so the
  next reconcile tries them again.
- ``list`` and ``show NAME``: the recorded nodes; one node in full with its hold and journal.
- ``protect NAME --reason`` / ``unprotect NAME --reason``: the store's protection flag (no plan
  destroys the node, even after it leaves the spec; upserts never lower it), recorded in the
  journal with who and why.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import click

from reconciler.cli.auditing import collect, render_text
from reconciler.cli.options import fleet_options
from reconciler.core.errors import UserError
from reconciler.core.fleet import HoldKind, IntentStatus, Maintenance, RecordedNode
from reconciler.core.ports import StorePort
from reconciler.daemon.statusing import hold_of
from reconciler.wiring import reputation_store_for

DEFAULT_SPEC = "fleet.yaml"


@click.group()
def node() -> None:
    """Operator actions on one node: list, show, cordon, drain, uncordon, maintenance,
    resume, retry, release, protect, unprotect (recorded with who and why)."""


MAX_REASON = 300


def _fleet_of(files: tuple[str, ...], fleet: str | None) -> str:
    from reconciler.cli.auditing import _fleet_name

    return _fleet_name(files, fleet)


def _store() -> StorePort:
    from reconciler.wiring import build_store

    return build_store(dict(os.environ))


def _node(store: StorePort, fleet: str, name: str) -> RecordedNode:
    if not name.startswith(f"{fleet}-"):
        raise UserError(
            f"{name!r} is not a node of fleet {fleet!r}",
            hint=f"node names start with '{fleet}-', e.g. {fleet}-dallas-001 "
            "(`reconcile node list` lists them)",
        )
    for node in store.load_fleet(fleet).nodes:
        if node.name == name:
            return node
    raise UserError(
        f"no recorded node {name!r} in fleet {fleet!r}",
        hint="`reconcile node list` lists the recorded nodes",
    )


def _reason(reason: str) -> str:
    text = " ".join(reason.split())
    if not text:
        raise UserError("--reason is empty", hint='say why, e.g. --reason "disk check"')
    if len(text) > MAX_REASON:
        raise UserError(f"--reason is {len(text)} characters long (at most {MAX_REASON})")
    return text


def _by(by: str | None) -> str:
    from reconciler.cli.reconciling import cli_actor

    return (" ".join(by.split()) if by else cli_actor())[:200]


def node_document(node: RecordedNode) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "name": node.name,
        "region": node.region,
        "pool": node.pool,
        "plan": node.plan,
        "status": node.status.value,
        "paused_by": node.paused_by.value if node.paused_by is not None else None,
        "protected": node.protected,
        "service_id": node.service_id,
        "ip": node.ip_address,
        "hostname": node.hostname,
        "created_at": when(node.created_at),
        "status_changed_at": when(node.status_changed_at),
        "last_heartbeat": when(node.last_heartbeat),
        "warmup_started_at": when(node.warmup_started_at),
        "monthly_cost": str(node.approximate_cost) if node.approximate_cost is not None else None,
        "hold": hold_of(node),
        "quarantine": node.quarantine,
        "failed_steps": [s.name for s in node.steps if s.status.value != "done"],
    }


@node.command("list")
@fleet_options
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text")
def list_nodes(files: tuple[str, ...], fleet: str | None, output: str) -> int:
    """The recorded nodes: status, protection, IP, server id, last heartbeat."""
    name = _fleet_of(files, fleet)
    store = _store()
    try:
        nodes = sorted(store.load_fleet(name).nodes, key=lambda n: (n.region, n.name))
    finally:
        store.close()
    if output == "json":
        click.echo(
            json.dumps({"fleet": name, "nodes": [node_document(n) for n in nodes]}, indent=2)
        )
        return 0
    if not nodes:
        click.echo(f"no nodes recorded for fleet {name}")
        return 0
    rows = [("NODE", "REGION", "STATUS", "HOLD", "PROTECTED", "IP", "SERVER", "LAST BEAT")]
    for n in nodes:
        held = n.maintenance if n.maintenance is not None and n.maintenance.active else None
        rows.append(
            (
                n.name,
                n.region,
                n.status.value + (f" (by {n.paused_by.value})" if n.paused_by else ""),
                f"{held.verb(n.status)} ({held.by})" if held else "-",
                "yes" if n.protected else "-",
                n.ip_address or "-",
                str(n.service_id) if n.service_id is not None else "-",
                n.last_heartbeat.isoformat(timespec="seconds") if n.last_heartbeat else "never",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return 0


@node.command("show")
@click.argument("name")
@fleet_options
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text")
def show(name: str, files: tuple[str, ...], fleet: str | None, output: str) -> int:
    """One node in full, with its journal (what was done to it, by whom, why)."""
    fleet_name = _fleet_of(files, fleet)
    store = _store()
    try:
        recorded = _node(store, fleet_name, name)
        intents = store.journal(fleet_name, 20_000)
    finally:
        store.close()
    entries = collect([], intents, node=name, limit=50)
    if output == "json":
        document = node_document(recorded)
        document["journal"] = [e.to_json() for e in entries]
        click.echo(json.dumps(document, indent=2))
        return 0
    for key, value in node_document(recorded).items():
        if key == "hold":
            value = value["summary"] if value else None
        elif key == "failed_steps":
            value = ", ".join(value) or None
        click.echo(f"{key + ':':<19}{'-' if value is None else value}")
    click.echo("")
    click.echo(render_text(entries))
    return 0


def _set_protection(
    name: str, files: tuple[str, ...], fleet: str | None, reason: str, by: str | None, on: bool
) -> int:
    fleet_name = _fleet_of(files, fleet)
    why = _reason(reason)
    who = _by(by)
    kind = "protect" if on else "unprotect"
    store = _store()
    try:
        recorded = _node(store, fleet_name, name)
        intent = store.begin_intent(fleet_name, kind, name, {"by": who, "why": why})
        try:
            store.set_protected(fleet_name, name, on)
        except Exception as exc:
            store.finish_intent(intent.id, IntentStatus.FAILED, error=str(exc)[:500])
            raise
        store.finish_intent(intent.id, IntentStatus.DONE)
    finally:
        store.close()
    was = "protected" if recorded.protected else "not protected"
    now = "protected" if on else "not protected"
    click.echo(
        f"{name}: {now} (was {was}), by {who} at "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}: {why}"
    )
    if on:
        click.echo("No plan destroys it, even once it leaves the spec, until `node unprotect`.")
    return 0


@node.command("protect")
@click.argument("name")
@fleet_options
@click.option("--reason", required=True, metavar="TEXT", help="Why (recorded in the journal).")
@click.option("--by", metavar="WHO", help="Who (default: cli user@host, or RECONCILER_ACTOR).")
def protect(
    name: str, files: tuple[str, ...], fleet: str | None, reason: str, by: str | None
) -> int:
    """Protect NAME: no plan destroys it (survives spec changes, restarts and its removal from
    the spec). Recorded with who and why."""
    return _set_protection(name, files, fleet, reason, by, True)


@node.command("unprotect")
@click.argument("name")
@fleet_options
@click.option("--reason", required=True, metavar="TEXT", help="Why (recorded in the journal).")
@click.option("--by", metavar="WHO", help="Who (default: cli user@host, or RECONCILER_ACTOR).")
def unprotect(
    name: str, files: tuple[str, ...], fleet: str | None, reason: str, by: str | None
) -> int:
    """Lift the store's protection of NAME (a node protected in the spec stays protected).
    Recorded with who and why."""
    return _set_protection(name, files, fleet, reason, by, False)


def _record(
    store: StorePort,
    fleet: str,
    kind: str,
    name: str,
    params: dict[str, str],
    act: Callable[[], RecordedNode],
) -> RecordedNode:
    """Do an operator's act on a node with its journal entry (who, why): the entry is written
    first and closed done, or failed with the error."""
    intent = store.begin_intent(fleet, kind, name, {k: v for k, v in params.items() if v})
    try:
        recorded = act()
    except Exception as exc:
        store.finish_intent(intent.id, IntentStatus.FAILED, error=str(exc)[:500])
        raise
    store.finish_intent(intent.id, IntentStatus.DONE)
    return recorded


def _optional_reason(reason: str | None) -> str:
    return _reason(reason) if reason is not None else ""


def _hold(
    kind: HoldKind,
    name: str,
    files: tuple[str, ...],
    fleet: str | None,
    reason: str,
    by: str | None,
) -> tuple[RecordedNode, RecordedNode, str, str]:
    fleet_name = _fleet_of(files, fleet)
    why = _reason(reason)
    who = _by(by)
    store = _store()
    try:
        before = _node(store, fleet_name, name)
        held = Maintenance(why, who, datetime.now(UTC), kind=kind)
        after = _record(
            store,
            fleet_name,
            kind.value,
            name,
            {"by": who, "why": why},
            lambda: store.set_maintenance(fleet_name, name, held),
        )
    finally:
        store.close()
    return before, after, who, why


def _previous(before: RecordedNode) -> str:
    current = before.maintenance
    if current is None or not current.active:
        return ""
    return f" (replaces: {current.describe(before.status)})"


@node.command()
@click.argument("name")
@fleet_options
@click.option("--reason", required=True, metavar="TEXT", help="Why (shown in plans and status).")
@click.option("--by", metavar="WHO", help="Who (default: cli user@host, or RECONCILER_ACTOR).")
def maintenance(
    name: str, files: tuple[str, ...], fleet: str | None, reason: str, by: str | None
) -> int:
    """Take NAME out of the sending rotation and keep it out until `reconcile node resume`."""
    before, after, who, why = _hold(HoldKind.MAINTENANCE, name, files, fleet, reason, by)
    click.echo(
        f"{name} (status {after.status.value}): in maintenance (by {who}): {why}"
        f"{_previous(before)}. The next reconcile takes it out of the sending rotation; "
        f"`reconcile node resume {name}` ends it."
    )
    return 0


@node.command()
@click.argument("name")
@fleet_options
@click.option("--reason", required=True, metavar="TEXT", help="Why (shown in plans and status).")
@click.option("--by", metavar="WHO", help="Who (default: cli user@host, or RECONCILER_ACTOR).")
def cordon(
    name: str, files: tuple[str, ...], fleet: str | None, reason: str, by: str | None
) -> int:
    """Cordon NAME (like kubectl cordon): out of the sending rotation at the next reconcile,
    and neither paused nor replaced as unhealthy, until `reconcile node uncordon`. Survives
    spec changes and restarts."""
    before, after, who, why = _hold(HoldKind.CORDON, name, files, fleet, reason, by)
    click.echo(
        f"{name} (status {after.status.value}): cordoned by {who}: {why}{_previous(before)}. "
        "The next reconcile (the daemon's, or `reconcile`) takes it out of the sending "
        f"rotation; `reconcile node uncordon {name}` ends it."
    )
    return 0


@node.command()
@click.argument("name")
@fleet_options
@click.option("--reason", required=True, metavar="TEXT", help="Why (shown in plans and status).")
@click.option("--by", metavar="WHO", help="Who (default: cli user@host, or RECONCILER_ACTOR).")
def drain(name: str, files: tuple[str, ...], fleet: str | None, reason: str, by: str | None) -> int:
    """Drain NAME (like kubectl drain): out of the sending rotation as `draining` until its
    queue is empty (from heartbeats; disruption.drain_timeout at most; at once without queue
    figures), then held out until `reconcile node uncordon`."""
    before, after, who, why = _hold(HoldKind.DRAIN, name, files, fleet, reason, by)
    click.echo(
        f"{name} (status {after.status.value}): drain ordered by {who}: {why}{_previous(before)}."
        " The next reconcile takes it out of the sending rotation; once its queue is empty it "
        f"is held out (`reconcile node show {name}` says when); `reconcile node uncordon "
        f"{name}` ends it."
    )
    return 0


def _end_hold(
    store: StorePort, fleet: str, name: str, kind: str, who: str, why: str
) -> Maintenance | None:
    current = _node(store, fleet, name)
    held = current.maintenance
    if held is None or not held.active:
        return None
    ended = replace(held, ended_at=datetime.now(UTC))
    _record(
        store,
        fleet,
        kind,
        name,
        {"by": who, "why": why, "ends": held.kind.value},
        lambda: store.set_maintenance(fleet, name, ended),
    )
    return held


@node.command()
@click.argument("name")
@fleet_options
@click.option("--reason", metavar="TEXT", help="Why (recorded in the journal).")
@click.option("--by", metavar="WHO", help="Who (default: cli user@host, or RECONCILER_ACTOR).")
def uncordon(
    name: str, files: tuple[str, ...], fleet: str | None, reason: str | None, by: str | None
) -> int:
    """End NAME's cordon, drain or maintenance: back into the rotation at the next reconcile."""
    fleet_name = _fleet_of(files, fleet)
    why = _optional_reason(reason)
    who = _by(by)
    store = _store()
    try:
        ended = _end_hold(store, fleet_name, name, "uncordon", who, why)
    finally:
        store.close()
    if ended is None:
        click.echo(f"{name}: not cordoned, drained or in maintenance: nothing to do")
        return 0
    click.echo(
        f"{name}: {ended.kind.value} by {ended.by} ended by {who}; back into the sending "
        "rotation at the next reconcile."
    )
    return 0


@node.command("resume")
@click.argument("name")
@fleet_options
@click.option("--reason", metavar="TEXT", help="Why (recorded in the journal).")
@click.option("--by", metavar="WHO", help="Who (default: cli user@host, or RECONCILER_ACTOR).")
def resume(
    name: str, files: tuple[str, ...], fleet: str | None, reason: str | None, by: str | None
) -> int:
    """End NAME's maintenance (or cordon, drain) and its reputation quarantine or pause: back
    into the rotation."""
    fleet_name = _fleet_of(files, fleet)
    why = _optional_reason(reason)
    who = _by(by)
    store = _store()
    done: list[str] = []
    try:
        held = _end_hold(store, fleet_name, name, "resume", who, why)
        if held is not None:
            what = "maintenance" if held.kind is HoldKind.MAINTENANCE else held.kind.value
            done.append(f"{what} ended (back into rotation at the next reconcile)")
        reputation = reputation_store_for(store)
        if reputation is not None and reputation.resume_reputation(
            fleet_name, name, datetime.now(UTC)
        ):
            params = {"by": who, "why": why} if why else {"by": who}
            store.begin_intent(fleet_name, "resume_reputation", name, params, done=True)
            done.append(
                "reputation quarantine and pause cleared; rates count from now; back in "
                "the rotation at the daemon's next assessment (unless a blocklist still "
                "lists it)"
            )
    finally:
        store.close()
    if not done:
        click.echo(f"{name}: nothing to resume (no maintenance, reputation pause or quarantine)")
        return 0
    click.echo(f"{name}: " + "; ".join(done))
    return 0


@node.command()
@click.argument("name")
@click.option(
    "--repin",
    is_flag=True,
    help="Also forget the pinned SSH host key: the next contact pins the key presented now.",
)
@fleet_options
@click.option("--reason", metavar="TEXT", help="Why (recorded in the journal).")
@click.option("--by", metavar="WHO", help="Who (default: cli user@host, or RECONCILER_ACTOR).")
def release(
    name: str,
    repin: bool,
    files: tuple[str, ...],
    fleet: str | None,
    reason: str | None,
    by: str | None,
) -> int:
    """Release a node quarantined (a changed SSH host key, drift) or whose slot failed
    (provisioning.replacements used up; the slot gets a fresh set), after checking why."""
    fleet_name = _fleet_of(files, fleet)
    why = _optional_reason(reason)
    who = _by(by)
    store = _store()
    try:
        _node(store, fleet_name, name)
        recorded = _record(
            store,
            fleet_name,
            "release",
            name,
            {"by": who, "why": why, "repin": "yes" if repin else ""},
            lambda: store.clear_quarantine(fleet_name, name, repin=repin),
        )
    finally:
        store.close()
    extra = "; its host key will be pinned again at the next contact" if repin else ""
    click.echo(f"{name} (status {recorded.status.value}): released from quarantine{extra}.")
    return 0


@node.command()
@click.argument("name")
@fleet_options
@click.option("--reason", metavar="TEXT", help="Why (recorded in the journal).")
@click.option("--by", metavar="WHO", help="Who (default: cli user@host, or RECONCILER_ACTOR).")
def retry(
    name: str, files: tuple[str, ...], fleet: str | None, reason: str | None, by: str | None
) -> int:
    """Forget NAME's failed provisioning steps (and their attempt counts): the next reconcile
    tries them again (within the node's provisioning deadline; hold the node with `node
    maintenance` to stop the deadline while you look). For a failed create slot (sent, never
    appeared, its re-creates used up) the slot is released instead: the next reconcile creates
    a new node (check the account for a server of that name first)."""
    fleet_name = _fleet_of(files, fleet)
    why = _optional_reason(reason)
    who = _by(by)
    store = _store()
    forgotten: tuple[str, ...] = ()
    try:
        current = _node(store, fleet_name, name)
        if _retry_failed_slot(store, fleet_name, current, who, why):
            click.echo(
                f"{name}: the failed create slot is released (its intents closed); the next "
                "reconcile creates a new node. A server of this name that shows up later is "
                "adopted, never bought twice."
            )
            return 0
        failed = [s.name for s in current.steps if s.status.value != "done"]
        if failed:

            def act() -> RecordedNode:
                nonlocal forgotten
                recorded, forgotten = store.retry_steps(fleet_name, name)
                return recorded

            _record(
                store,
                fleet_name,
                "retry",
                name,
                {"by": who, "why": why, "steps": ",".join(failed)},
                act,
            )
    finally:
        store.close()
    if not forgotten:
        click.echo(f"{name}: no failed provisioning step to retry")
        return 0
    click.echo(
        f"{name}: failed step(s) {', '.join(forgotten)} forgotten; the next reconcile tries "
        "them again."
    )
    return 0


def _retry_failed_slot(
    store: StorePort, fleet: str, node: RecordedNode, who: str, why: str
) -> bool:
    """Release a failed create slot (issue 9): the node was never seen (no server id) and its
    pending create intent is a re-create already (``attempt`` >= 2). A slot still in its first
    attempt may be building: it is left alone (the planner resolves it)."""
    from reconciler.core.planning import create_attempt

    if node.service_id is not None:
        return False
    intents = [
        i
        for i in store.load_fleet(fleet).pending_intents
        if i.kind == "create" and i.target == node.name
    ]
    if not intents or max(create_attempt(i.params) for i in intents) < 2:
        return False

    def act() -> RecordedNode:
        for intent in intents:
            store.finish_intent(
                intent.id, IntentStatus.FAILED, error=f"slot failed; retried by {who}"
            )
        store.close_node(fleet, node.name, datetime.now(UTC))
        return node

    _record(store, fleet, "retry", node.name, {"by": who, "why": why, "slot": "create"}, act)
    return True


@click.command("platform-token")
@fleet_options
def platform_token_command(files: tuple[str, ...], fleet: str | None) -> int:
    """Print the sending platform's token for GET /v1/rotation and POST /v1/complaints,
    derived from RECONCILER_NODE_MASTER_SECRET and the fleet's name (nothing is stored)."""
    from reconciler.daemon.heartbeats import MasterSecret
    from reconciler.daemon.rotation import platform_token

    master = MasterSecret.from_env(dict(os.environ))
    click.echo(platform_token(master.raw, _fleet_of(files, fleet)))
    return 0
