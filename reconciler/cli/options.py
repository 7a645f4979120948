"""The root command's options, kept apart from the command body so that declaring the command
tree imports nothing heavy (``reconcile --help`` and ``validate`` start at once)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: ``--log-level`` choices: ``reconciler.daemon.formatting.LEVELS`` (a test pins them equal),
#: spelled here so that the command tree does not import the logging set-up
LOG_LEVELS = ("debug", "info", "warning", "error")


def reconcile_options(func: F) -> F:
    options = [
        click.option(
            "-f",
            "--file",
            "files",
            multiple=True,
            metavar="PATH",
            help="Spec file or directory (repeatable; default ./fleet.yaml).",
        ),
        click.option("--dry-run", is_flag=True, help="Print the plan and change nothing."),
        click.option("-y", "--yes", is_flag=True, help="Do not ask before destroying servers."),
        click.option(
            "--output",
            "-o",
            type=click.Choice(["text", "json", "markdown"]),
            default="text",
            show_default=True,
            help="How to print the plan.",
        ),
        click.option(
            "--detailed-exitcode",
            is_flag=True,
            help="Exit 0 when there is nothing to do, 2 when the plan has changes, 1 on error.",
        ),
        click.option(
            "--out",
            "out_file",
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="PLANFILE",
            help="Save the plan (JSON, with the fingerprint of what it was computed from).",
        ),
        click.option(
            "--plan",
            "plan_file",
            type=click.Path(dir_okay=False, path_type=Path),
            metavar="PLANFILE",
            help="Apply exactly this saved plan; refused if the world changed since.",
        ),
        click.option(
            "--allow-mass-destroy",
            is_flag=True,
            help="Allow a plan that removes a whole region or more than the mass-delete share.",
        ),
        click.option("--no-color", is_flag=True, help="Plain text, no colors."),
    ]
    for option in reversed(options):
        func = option(func)
    return func
