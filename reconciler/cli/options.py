"""The root command's options, kept apart from the command body so that declaring the command
tree imports nothing heavy (``reconcile --help`` and ``validate`` start at once)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: ``--log-level`` choices: ``reconciler.daemon.formatting.LEVELS`` (a test pins them equal),
#: spelled here so that the command tree does not import the logging set-up
LOG_LEVELS = ("debug", "info", "warning", "error")


#: how long ``reconcile`` waits for convergence after an apply unless told (``--timeout``)
DEFAULT_WAIT_TIMEOUT = "10m"
#: the longest ``--timeout``
MAX_WAIT_TIMEOUT_SECONDS = 24 * 3600


_UNITS = {"s": 1, "m": 60, "h": 3600}
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?[smh])+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smh])")


def _duration(ctx: click.Context, param: click.Parameter, value: object) -> float:
    """``--timeout``: a duration with a unit (``30s``, ``10m``, ``1h30m``), 0s to 24h, in
    seconds (parsed here, not by the spec's parser: the command tree stays light)."""
    text = str(value).strip().lower()
    if len(text) > 20 or not _DURATION.match(text):
        raise click.BadParameter(
            f"expected a duration like 30s, 10m or 1h, got {str(value)[:20]!r}"
        )
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    if seconds > MAX_WAIT_TIMEOUT_SECONDS:
        raise click.BadParameter(f"at most 24h, got {text}")
    return seconds


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
        click.option(
            "--wait/--no-wait",
            default=True,
            show_default=True,
            help="After applying, wait until the fleet matches the spec (created servers seen, "
            "pipelines finished), applying follow-up runs; exit 1 when it did not within "
            "--timeout.",
        ),
        click.option(
            "--timeout",
            default=DEFAULT_WAIT_TIMEOUT,
            show_default=True,
            metavar="DURATION",
            callback=_duration,
            help="How long --wait waits (30s, 10m, 1h).",
        ),
        click.option("--no-color", is_flag=True, help="Plain text, no colors."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def fleet_options(func: F) -> F:
    """``-f/--file`` (the spec naming the fleet) and ``--fleet NAME``: how the commands that
    act on a recorded fleet (history, unlock, node ...) are told which one."""
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
