"""`reconcile daemon`, `status`, `agent`, `node-token` (placeholder until issue 6 lands)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
