"""`reconcile db ...`: the state database's schema, through Alembic only.

- ``reconcile db upgrade [--url URL] [--revision head]``
- ``reconcile db downgrade REV [--url URL] [--yes]`` (``base`` drops every table)
- ``reconcile db current [--url URL]``

The URL is ``--url``, else ``RECONCILER_DATABASE_URL``, else the embedded SQLite file
``.reconciler/state.db``. Errors (unreachable database, unknown revision) are reported by
``reconciler.cli.main`` with a hint and exit 1, never a traceback.
"""

from __future__ import annotations

import sys

import click

from reconciler.core.errors import UserError
from state import sessions

_URL_HELP = (
    f"database URL (default: ${sessions.ENV_VAR}, else {sessions.DEFAULT_URL} in the working "
    "directory)"
)


def _describe(status: sessions.SchemaStatus) -> str:
    if status.current is None:
        return f"no revision (empty schema; head is {status.head})"
    if status.is_head:
        return f"{status.current} (head)"
    return f"{status.current} (not head: head is {status.head}; {sessions.UPGRADE_HINT})"


@click.group()
def db() -> None:
    """Manage the state database (schema migrations)."""


@db.command()
@click.option("--url", default=None, metavar="URL", help=_URL_HELP)
@click.option("--revision", default="head", show_default=True, help="the revision to upgrade to")
def upgrade(url: str | None, revision: str) -> int:
    """Apply the schema migrations (creates the database schema on first use)."""
    status = sessions.upgrade(url, revision)
    click.echo(f"{status.url}: upgraded to {_describe(status)}")
    return 0


@db.command()
@click.argument("revision")
@click.option("--url", default=None, metavar="URL", help=_URL_HELP)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def downgrade(revision: str, url: str | None, yes: bool) -> int:
    """Revert the schema to REVISION (`base` drops every table and all recorded state)."""
    target = sessions.render_url(sessions.resolve_url(url))
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(
                f"refusing to downgrade {target} to {revision} without confirmation",
                hint="pass --yes to confirm (tables dropped by a downgrade lose their data)",
            )
        click.confirm(
            f"downgrade {target} to {revision}? Data in dropped tables is lost", abort=True
        )
    status = sessions.downgrade(url, revision)
    click.echo(f"{status.url}: downgraded to {_describe(status)}")
    return 0


@db.command()
@click.option("--url", default=None, metavar="URL", help=_URL_HELP)
def current(url: str | None) -> int:
    """Print the schema revision of the database and whether it is the latest (head)."""
    status = sessions.schema_status(url)
    click.echo(f"{status.url}: {_describe(status)}")
    return 0
