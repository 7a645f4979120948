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
"""

from __future__ import annotations

import getpass
import os
from dataclasses import replace
from datetime import UTC, datetime

import click

from reconciler.core.errors import UserError
from reconciler.core.fleet import Maintenance, RecordedNode
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
