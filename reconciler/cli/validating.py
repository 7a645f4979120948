"""`reconcile validate` and `reconcile schema` (placeholder until issue 2 lands)."""

from __future__ import annotations

import click


@click.command()
@click.argument("paths", nargs=-1)
def validate(paths: tuple[str, ...]) -> int:
    """Check spec files and report every problem."""
    raise click.ClickException("validate: under construction")


@click.command()
def schema() -> int:
    """Print the JSON Schema of the spec."""
    raise click.ClickException("schema: under construction")
