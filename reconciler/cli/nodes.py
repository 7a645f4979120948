"""``reconcile node ...`` (an operator's acts on one node, recorded in the state database) and
``reconcile platform-token``.

- ``maintenance NAME --reason TEXT``: out of the sending rotation (the next reconcile, or the
  daemon's, moves it; its queue drains) and kept out until ``resume``; recorded with who, why
  and since when, so it survives spec changes and restarts.
- ``resume NAME``: ends what holds the node out: its maintenance (the next reconcile puts it
  back into rotation) and a reputation quarantine or pause (its bounce and complaint rates count
  only what it sends from now on; the daemon puts it back at its next assessment, unless a
  blocklist still lists it).
- ``release NAME [--repin]``: a node quarantined for a changed SSH host key is released after
  the operator checked it; ``--repin`` forgets the pinned key so the next contact pins the key
  the node presents now.
- ``list`` and ``show NAME``: the recorded nodes; one node in full with its journal.
- ``protect NAME --reason`` / ``unprotect NAME --reason``: the store's protection flag (no plan
  destroys the node, even after it leaves the spec; upserts never lower it), recorded in the
  journal with who and why.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from reconciler.cli.auditing import collect, render_text
from reconciler.core.errors import UserError
from reconciler.core.fleet import IntentStatus, Maintenance, RecordedNode
from reconciler.core.ports import StorePort
from reconciler.wiring import build_store, reputation_store_for
from specs.loading import load_spec

DEFAULT_SPEC = "fleet.yaml"

_files = click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    metavar="PATH",
    help=f"Spec file or directory (repeatable). Default: ./{DEFAULT_SPEC}",
)


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or "unknown"


def _fleet(files: tuple[str, ...], name: str) -> str:
    loaded = load_spec(list(files) or [DEFAULT_SPEC])
    fleet = loaded.spec.name
    if not name.startswith(f"{fleet}-"):
        raise UserError(
            f"{name!r} is not a node of fleet {fleet!r}",
            hint=f"node names start with '{fleet}-', e.g. {fleet}-dallas-001 "
            "(`reconcile status` lists them)",
        )
    return fleet


def _describe(node: RecordedNode) -> str:
    return f"{node.name} (status {node.status.value})"


@click.group()
def node() -> None:
    """Operator actions on one node: maintenance, resume, release."""


@node.command()
@click.argument("name")
@click.option("--reason", required=True, help="Why (shown in every plan and in status).")
@click.option("--by", "by", default=None, help="Who (default: the current user).")
@_files
def maintenance(name: str, reason: str, by: str | None, files: tuple[str, ...]) -> int:
    """Take NAME out of the sending rotation and keep it out until `reconcile node resume`."""
    reason = " ".join(reason.split())
    if not reason:
        raise UserError("--reason is empty", hint="say why, e.g. --reason 'kernel update'")
    fleet = _fleet(files, name)
    who = (by or _who()).strip() or "unknown"
    store: StorePort = build_store(os.environ)
    try:
        recorded = store.set_maintenance(
            fleet, name, Maintenance(reason[:500], who[:100], datetime.now(UTC))
        )
    finally:
        store.close()
    click.echo(
        f"{_describe(recorded)}: in maintenance (by {who}): {reason}. The next reconcile takes "
        f"it out of the sending rotation; `reconcile node resume {name}` ends it."
    )
    return 0


@node.command("resume")
@click.argument("name")
@_files
def resume(name: str, files: tuple[str, ...]) -> int:
    """End NAME's maintenance and its reputation quarantine or pause: back into the rotation."""
    fleet = _fleet(files, name)
    store = build_store(os.environ)
    ended: list[str] = []
    try:
        current = next((n for n in store.load_fleet(fleet).nodes if n.name == name), None)
        if current is None:
            raise UserError(
                f"{name!r} is not a node of fleet {fleet!r} (no record of it)",
                hint="reconcile status lists the nodes",
            )
        if current.maintenance is not None and current.maintenance.active:
            store.set_maintenance(
                fleet, name, replace(current.maintenance, ended_at=datetime.now(UTC))
            )
            ended.append("maintenance ended (back into rotation at the next reconcile)")
        reputation = reputation_store_for(store)
        if reputation is not None and reputation.resume_reputation(fleet, name, datetime.now(UTC)):
            ended.append(
                "reputation quarantine and pause cleared; rates count from now; back in the "
                "rotation at the daemon's next assessment (unless a blocklist still lists it)"
            )
    finally:
        store.close()
    if not ended:
        click.echo(f"{name}: nothing to resume (no maintenance, reputation pause or quarantine)")
        return 0
    click.echo(f"{name}: " + "; ".join(ended))
    return 0


@node.command()
@click.argument("name")
@click.option(
    "--repin",
    is_flag=True,
    help="Also forget the pinned SSH host key: the next contact pins the key presented now.",
)
@_files
def release(name: str, repin: bool, files: tuple[str, ...]) -> int:
    """Release a node quarantined for a changed SSH host key (after checking why)."""
    fleet = _fleet(files, name)
    store: StorePort = build_store(os.environ)
    try:
        recorded = store.clear_quarantine(fleet, name, repin=repin)
    finally:
        store.close()
    extra = "; its host key will be pinned again at the next contact" if repin else ""
    click.echo(f"{_describe(recorded)}: released from quarantine{extra}.")
    return 0


@click.command("platform-token")
@_files
def platform_token_command(files: tuple[str, ...]) -> int:
    """Print the sending platform's token for GET /v1/rotation and POST /v1/complaints,
    derived from RECONCILER_NODE_MASTER_SECRET and the fleet's name (nothing is stored)."""
    from reconciler.daemon.heartbeats import MasterSecret
    from reconciler.daemon.rotation import platform_token
    from specs.loading import load_spec

    master = MasterSecret.from_env(dict(os.environ))
    loaded = load_spec(list(files) or [DEFAULT_SPEC])
    click.echo(platform_token(master.raw, loaded.spec.name))
    return 0


F = TypeVar("F", bound=Callable[..., Any])
MAX_REASON = 300


def _fleet_options(func: F) -> F:
    func = click.option("--fleet", metavar="NAME", help="The fleet's name (instead of -f).")(func)
    func = click.option(
        "-f",
        "--file",
        "files",
        multiple=True,
        metavar="PATH",
        help="Spec file or directory naming the fleet (default ./fleet.yaml).",
    )(func)
    return func


def _fleet_of(files: tuple[str, ...], fleet: str | None) -> str:
    from reconciler.cli.auditing import _fleet_name

    return _fleet_name(files, fleet)


def _store() -> StorePort:
    from reconciler.wiring import build_store

    return build_store(dict(os.environ))


def _node(store: StorePort, fleet: str, name: str) -> RecordedNode:
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
    }


@node.command("list")
@_fleet_options
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
    rows = [("NODE", "REGION", "STATUS", "PROTECTED", "IP", "SERVER", "LAST BEAT")]
    for n in nodes:
        rows.append(
            (
                n.name,
                n.region,
                n.status.value + (f" (by {n.paused_by.value})" if n.paused_by else ""),
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
@_fleet_options
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
@_fleet_options
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
@_fleet_options
@click.option("--reason", required=True, metavar="TEXT", help="Why (recorded in the journal).")
@click.option("--by", metavar="WHO", help="Who (default: cli user@host, or RECONCILER_ACTOR).")
def unprotect(
    name: str, files: tuple[str, ...], fleet: str | None, reason: str, by: str | None
) -> int:
    """Lift the store's protection of NAME (a node protected in the spec stays protected).
    Recorded with who and why."""
    return _set_protection(name, files, fleet, reason, by, False)
