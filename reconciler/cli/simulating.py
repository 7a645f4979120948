"""`reconcile simulator` (placeholder until issue 3 lands)."""

from __future__ import annotations

import click


@click.command()
def simulator() -> int:
    """Serve the Hostwinds simulator."""
    raise click.ClickException("simulator: under construction")
