"""The click command tree: the root ``reconcile`` command and its subcommands.

Subcommands are loaded lazily: the tree names each one with the module that defines it and
its one-line help, and imports the module only when the command runs (or its own ``--help``
is asked for). ``reconcile --help``, ``validate`` and ``schema`` therefore never import the
store (SQLAlchemy), the HTTP client, the servers or the engine; ``tests/cli/test_startup.py``
pins both that and that every one-line help below matches its command's docstring.
"""

from __future__ import annotations

import importlib

import click

from reconciler import package_version
from reconciler.cli.options import LOG_LEVELS, reconcile_options

#: where the root command leaves --log-level/--log-format for subcommands (click's ctx.meta)
LOG_META = "reconciler.log"


class LazyCommand:
    """A subcommand not imported yet: ``module:attribute`` and its one-line help.

    (A plain class: a dataclass costs a compile at import, and this module is on every start.)
    """

    __slots__ = ("short_help", "target")

    def __init__(self, target: str, short_help: str) -> None:
        self.target = target
        self.short_help = short_help

    def short_help_str(self, limit: int) -> str:
        """The help line as click would shorten the command's own (same rule, same limit)."""
        return click.Command(None, help=self.short_help).get_short_help_str(limit)

    def load(self) -> click.Command:
        _before_a_command()
        module_name, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(f"reconciler.cli.{module_name}"), attribute)
        if not isinstance(command, click.Command):  # pragma: no cover - a wrong table entry
            raise TypeError(f"{self.target} is not a click command")
        return command


#: every subcommand, in the order ``reconcile --help`` lists them (alphabetical, as click does)
LAZY_COMMANDS: dict[str, LazyCommand] = {
    "agent": LazyCommand(
        "daemonizing:agent",
        "Run on a node: post a signed heartbeat (queue, CPU, memory, disk, mail sent) to the "
        "daemon every interval; keeps going when the daemon is unreachable.",
    ),
    "blocklists": LazyCommand(
        "blocklisting:blocklists", "DNS blocklists: look IPs up the way the daemon does."
    ),
    "completion": LazyCommand(
        "completing:completion",
        "Print the completion script for SHELL (commands, options, choices).",
    ),
    "costs": LazyCommand(
        "costing:costs",
        "Finance's view: the cost constants (show, set, with history), invoice checks "
        "(reconcile) and monthly reports (report).",
    ),
    "daemon": LazyCommand(
        "daemonizing:daemon",
        "Keep the fleet as declared: reconcile on schedule and on spec changes, watch "
        "heartbeats, autoscale, and serve the HTTP API.",
    ),
    "db": LazyCommand("database:db", "Manage the state database (schema migrations)."),
    "diff": LazyCommand(
        "diffing:diff",
        "Show what changes in the desired state from OLD to NEW, field by field (e.g.",
    ),
    "history": LazyCommand(
        "auditing:history",
        "The fleet's audit trail, newest first: reconcile runs (who ran them: a CLI user or a "
        "daemon and its epoch; the spec revision; counts; outcome) and journal entries (every "
        "recorded action on a node, with who and why).",
    ),
    "node": LazyCommand(
        "nodes:node",
        "Operator actions on one node: list, show, cordon, drain, uncordon, maintenance, "
        "resume, retry, release, protect, unprotect (recorded with who and why).",
    ),
    "node-token": LazyCommand(
        "daemonizing:node_token",
        "Print NAME's heartbeat token, derived from RECONCILER_NODE_MASTER_SECRET (nothing is "
        "stored).",
    ),
    "platform-token": LazyCommand(
        "nodes:platform_token_command",
        "Print the sending platform's token for GET /v1/rotation and POST /v1/complaints, "
        "derived from RECONCILER_NODE_MASTER_SECRET and the fleet's name (nothing is stored).",
    ),
    "schema": LazyCommand(
        "validating:schema",
        "Print the JSON Schema of the fleet spec (for editors' YAML language servers).",
    ),
    "simulator": LazyCommand(
        "simulating:simulator",
        "Serve the Hostwinds Cloud API simulator (POST /cloud/api.php, admin under /sim/).",
    ),
    "status": LazyCommand(
        "daemonizing:status",
        "Show the fleet: per node region, status, IP, plan, warmup day and today's limit, "
        "utilization, last heartbeat, monthly cost and health; per region and pool the totals.",
    ),
    "unlock": LazyCommand(
        "locking:unlock",
        "Break the fleet's writer lock (left by a run killed on another host), after saying "
        "who holds it; the holder is fenced and the next run takes the lock.",
    ),
    "validate": LazyCommand(
        "validating:validate",
        "Check spec files (or directories of them) and report every problem.",
    ),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (see ``LAZY_COMMANDS``)."""

    def __init__(self, *args: object, lazy: dict[str, LazyCommand], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.commands[cmd_name] = self.lazy[cmd_name].load()
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help`` from the table, without importing the commands."""
        names = self.list_commands(ctx)
        if not names:  # pragma: no cover - the tree always has commands
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            loaded = self.commands.get(name)
            if loaded is not None:
                if loaded.hidden:
                    continue
                rows.append((name, loaded.get_short_help_str(limit)))
            else:
                rows.append((name, self.lazy[name].short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``: the installed version, read only when asked (reading the package
    metadata costs ~15 ms, which every other command would pay at start-up)."""
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"reconcile, version {package_version()}")
    ctx.exit()


@click.group(
    cls=LazyGroup,
    lazy=LAZY_COMMANDS,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--version",
    "-V",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_show_version,
    help="Show the version and exit.",
)
@reconcile_options
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
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
        from reconciler.daemon.formatting import configure_logging

        configure_logging(str(fmt or "text"), str(level or "warning").upper())
    if ctx.invoked_subcommand is None:
        _before_a_command()
        if options.get("dry_run"):
            return _dry_run(ctx, options)
        from reconciler.cli import reconciling  # the engine, the store, the cloud: only here

        return reconciling.run(ctx, **options)
    ctx.obj = options
    return 0


def _before_a_command() -> None:
    """What the console script does before it imports a command (not for ``--help``)."""
    import reconciler.cli

    if reconciler.cli.process_ends_after_command:
        from reconciler.cli.pydanticplugins import skip_plugin_discovery

        skip_plugin_discovery()


def _dry_run(ctx: click.Context, options: dict[str, object]) -> int:
    """A dry-run is bounded work: its imports (~150,000 objects, all kept to the end) and its
    run go without the collector's passes. In a process that ends with the command, what is
    alive is then frozen before the collector comes back, so its first pass does not walk it
    all (together ~50 ms CPU of a 10,000-node dry-run; issue 14)."""
    import gc

    import reconciler.cli
    from reconciler.core.collector import collector_paused

    with collector_paused():
        from reconciler.cli import reconciling

        try:
            return reconciling.run(ctx, **options)
        finally:
            if reconciler.cli.process_ends_after_command:
                gc.freeze()
