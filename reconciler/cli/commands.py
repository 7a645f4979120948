"""The click command tree: the root ``reconcile`` command and its subcommands."""

from __future__ import annotations

import click

from reconciler.cli import (
    auditing,
    blocklisting,
    costing,
    daemonizing,
    database,
    diffing,
    nodes,
    reconciling,
    simulating,
    validating,
)


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@reconciling.reconcile_options
@click.pass_context
def cli(ctx: click.Context, /, **options: object) -> int:
    """Declarative manager for a fleet of email-sending servers on Hostwinds.

    With no subcommand: observe, plan and (unless --dry-run) apply the fleet spec.
    """
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
for command in daemonizing.COMMANDS:
    cli.add_command(command)
