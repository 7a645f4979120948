"""The click command tree: the root ``reconcile`` command and its subcommands."""

from __future__ import annotations

import click

from reconciler import package_version
from reconciler.cli import (
    auditing,
    blocklisting,
    completing,
    costing,
    daemonizing,
    database,
    diffing,
    nodes,
    reconciling,
    simulating,
    validating,
)
from reconciler.daemon.formatting import LEVELS, configure_logging

#: where the root command leaves --log-level/--log-format for subcommands (click's ctx.meta)
LOG_META = "reconciler.log"


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_version(), "--version", "-V", prog_name="reconcile")
@reconciling.reconcile_options
@click.option(
    "--log-level",
    type=click.Choice(LEVELS),
    default=None,
    help="Log level for this command and any subcommand (default: warning; the daemon and "
    "the agent: info). debug shows each Hostwinds request and answer, redacted.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines as text (UTC timestamps with their offset) or one JSON object per line.",
)
@click.pass_context
def cli(ctx: click.Context, /, **options: object) -> int:
    """Declarative manager for a fleet of email-sending servers on Hostwinds.

    With no subcommand: observe, plan and (unless --dry-run) apply the fleet spec.
    """
    level = options.pop("log_level", None)
    fmt = options.pop("log_format", None)
    ctx.meta[LOG_META] = (level, fmt)
    if level is not None or fmt is not None:
        configure_logging(str(fmt or "text"), str(level or "warning").upper())
    if ctx.invoked_subcommand is None:
        return reconciling.run(ctx, **options)
    ctx.obj = options
    return 0


cli.add_command(validating.validate)
cli.add_command(validating.schema)
cli.add_command(simulating.simulator)
cli.add_command(database.db)
cli.add_command(costing.costs)
cli.add_command(blocklisting.blocklists)
cli.add_command(nodes.node)
cli.add_command(nodes.platform_token_command)
cli.add_command(diffing.diff)
cli.add_command(auditing.history)
cli.add_command(completing.completion)
cli.add_command(nodes.node)
for command in daemonizing.COMMANDS:
    cli.add_command(command)
