"""`reconcile node resume NAME` and `reconcile platform-token`.

``node resume`` ends a reputation quarantine or pause by an operator: the node's quarantine
and pause are cleared and its bounce and complaint rates count only what it sends from now on;
the daemon puts it back in the rotation at its next assessment (a listing still open keeps it
out until the list delists it).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import click

from reconciler.core.errors import UserError
from reconciler.wiring import build_store, reputation_store_for

DEFAULT_SPEC = "fleet.yaml"

_files = click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    metavar="PATH",
    help=f"Spec file or directory (repeatable). Default: ./{DEFAULT_SPEC}",
)


@click.group()
def node() -> None:
    """Operator actions on one node."""


@node.command("resume")
@click.argument("name")
@_files
def resume(name: str, files: tuple[str, ...]) -> int:
    """Return NAME to the sending rotation after a reputation quarantine or pause."""
    from specs.loading import load_spec

    loaded = load_spec(list(files) or [DEFAULT_SPEC])
    fleet = loaded.spec.name
    store = build_store(os.environ)
    try:
        reputation = reputation_store_for(store)
        if reputation is None:
            raise UserError("this state store keeps no reputation records")
        known = {n.name for n in store.load_fleet(fleet).nodes}
        if name not in known:
            raise UserError(
                f"{name!r} is not a node of fleet {fleet!r}",
                hint="reconcile status lists the nodes",
            )
        if not reputation.resume_reputation(fleet, name, datetime.now(UTC)):
            click.echo(f"{name}: nothing to resume (no reputation pause or quarantine recorded)")
            return 0
    finally:
        store.close()
    click.echo(
        f"{name}: quarantine and pause cleared; rates count from now; back in the rotation at "
        "the daemon's next assessment (unless a blocklist still lists it)"
    )
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
