"""`reconcile db ...` (placeholder until issue 4 lands)."""

from __future__ import annotations

import click


@click.group()
def db() -> None:
    """Manage the state database."""
