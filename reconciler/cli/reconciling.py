"""The root reconcile command: plan and apply (placeholder until issue 5 lands)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def reconcile_options(func: F) -> F:
    func = click.option("-f", "--file", "files", multiple=True, help="spec file or directory")(func)
    func = click.option("--dry-run", is_flag=True, help="print the plan, change nothing")(func)
    return func


def run(ctx: click.Context, **options: object) -> int:
    raise click.ClickException("reconcile: under construction")
