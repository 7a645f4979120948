"""`reconcile daemon`, `reconcile status`, `reconcile agent`, `reconcile node-token`.

The daemon's modules (uvicorn, APScheduler, the store, the engine) are imported inside each
command, so that other commands do not pay for them at start-up.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import click

from reconciler.core.errors import UserError
from specs.durations import parse_duration

DEFAULT_SPEC = "fleet.yaml"
NODE_SECRET_ENV = "RECONCILER_NODE_SECRET"  # noqa: S105 (a variable name)

_files = click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    metavar="PATH",
    help=f"Spec file or directory (repeatable). Default: ./{DEFAULT_SPEC}",
)
_log_format = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Log lines as text or as JSON objects (one per line). [default: text]",
)
_log_level = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="[default: info] debug also shows each Hostwinds request and answer, redacted.",
)


def _logging(log_format: str | None, log_level: str | None) -> tuple[str, str]:
    """This command's --log-format/--log-level, else the root command's, else text/info."""
    root_level, root_format = (None, None)
    context = click.get_current_context(silent=True)
    if context is not None:
        root_level, root_format = context.meta.get("reconciler.log", (None, None))
    return (log_format or root_format or "text"), (log_level or root_level or "info").upper()


def _paths(files: tuple[str, ...]) -> tuple[str, ...]:
    return files or (DEFAULT_SPEC,)


def _seconds(value: str, option: str) -> float:
    try:
        seconds = parse_duration(value).total_seconds()
    except ValueError as exc:
        raise UserError(f"{option} {value!r}: {exc}", hint="e.g. 30s, 1m") from exc
    if seconds <= 0:
        raise UserError(f"{option} {value!r}: must be more than zero", hint="e.g. 30s")
    return seconds


@click.command()
@_files
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Address of the HTTP API (heartbeats, /metrics, /healthz, /readyz, /v1/fleet).",
)
@_log_format
@_log_level
@click.option(
    "--dry-run",
    is_flag=True,
    help="Observe and plan on schedule, log the plans, change nothing.",
)
@click.option(
    "--allow-mass-destroy",
    is_flag=True,
    help="Let plans destroy more than the spec's mass-delete threshold (use with care).",
)
@click.option(
    "--shutdown-grace",
    default="20s",
    show_default=True,
    metavar="DURATION",
    help="On SIGTERM/SIGINT, how long the step in flight may take before it is abandoned.",
)
@click.option(
    "--git",
    "git_url",
    metavar="URL",
    help="Follow this git repository instead of -f (https://, ssh:// or file://; a local "
    "mirror under the state folder). Credentials: RECONCILER_GIT_TOKEN, RECONCILER_GIT_SSH_KEY.",
)
@click.option("--branch", default="main", show_default=True, help="The branch to follow.")
@click.option(
    "--path", "git_path", default="", metavar="FOLDER", help="The spec folder in the repository."
)
@click.option(
    "--git-interval",
    default="60s",
    show_default=True,
    metavar="DURATION",
    help="How often to fetch (POST /v1/git/webhook also fetches at once).",
)
@click.option(
    "--git-allowed-signers",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Refuse commits whose SSH signature does not verify against this allowed-signers file.",
)
def daemon(
    files: tuple[str, ...],
    listen: str,
    log_format: str | None,
    log_level: str | None,
    dry_run: bool,
    allow_mass_destroy: bool,
    shutdown_grace: str,
    git_url: str | None,
    branch: str,
    git_path: str,
    git_interval: str,
    git_allowed_signers: Path | None,
) -> int:
    """Keep the fleet as declared: reconcile on schedule and on spec changes, watch heartbeats,
    autoscale, and serve the HTTP API. Several daemons may share one PostgreSQL store: one
    leads, the others stand by. Needs RECONCILER_NODE_MASTER_SECRET."""
    from reconciler.daemon.formatting import configure_logging
    from reconciler.daemon.heartbeats import MASTER_SECRET_ENV, MasterSecret
    from reconciler.daemon.http import parse_listen
    from reconciler.daemon.running import DaemonSettings, serve_daemon

    environ = dict(os.environ)
    master_value = environ.get(MASTER_SECRET_ENV, "")
    fmt, level = _logging(log_format, log_level)
    configure_logging(fmt, level, secrets=[master_value] if master_value else [])
    MasterSecret.from_env(environ)  # fail early and clearly
    host, port = parse_listen(listen)
    git = None
    if git_url:
        from providers.git.mirror import check_branch, check_path, check_url
        from reconciler.daemon.sources import GitSettings

        if files:
            raise UserError("give either -f PATH or --git URL, not both")
        git = GitSettings(
            url=check_url(git_url),
            branch=check_branch(branch),
            path=check_path(git_path),
            interval=_seconds(git_interval, "--git-interval"),
            allowed_signers=git_allowed_signers,
        )
    settings = DaemonSettings(
        paths=_paths(files) if git is None else (),
        listen=(host, port),
        dry_run=dry_run,
        allow_mass_destroy=allow_mass_destroy,
        shutdown_grace=_seconds(shutdown_grace, "--shutdown-grace"),
        git=git,
    )
    from reconciler.core.collector import tune_for_service

    tune_for_service()
    return asyncio.run(serve_daemon(settings, environ))


@click.command()
@_files
@click.option(
    "--url",
    default=None,
    metavar="URL",
    help="Ask a running daemon (GET URL/v1/fleet) instead of reading the store directly.",
)
@click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
)
@click.option("--no-color", is_flag=True, help="Plain text table (also with TERM=dumb, NO_COLOR).")
def status(files: tuple[str, ...], url: str | None, output: str, no_color: bool) -> int:
    """Show the fleet: per node region, status, IP, plan, warmup day and today's limit,
    utilization, last heartbeat, monthly cost and health; per region and pool the totals.
    Tables on a terminal; plain text in pipes, with TERM=dumb or NO_COLOR."""
    from reconciler.daemon.statusing import build_view, figures_horizon, render_text

    if url:
        document = _fetch_fleet(url)
    else:
        from reconciler.core.reputation import day_of
        from reconciler.wiring import SystemClock, build_store, reputation_store_for
        from specs.loading import load_spec

        loaded = load_spec(list(_paths(files)))
        store = build_store(dict(os.environ))
        try:
            now = SystemClock().now()
            recorded = store.load_fleet(loaded.spec.name)
            recent = store.recent_metrics(loaded.spec.name, now - figures_horizon(loaded.spec) * 2)
            reputation = reputation_store_for(store)
            ip_states = (
                {
                    name: record.ip_state.value
                    for name, record in reputation.reputation_snapshot(
                        loaded.spec.name, now, day_of(now)
                    ).records.items()
                }
                if reputation is not None
                else None
            )
        finally:
            store.close()
        document = build_view(loaded.spec, recorded, recent, now, ip_states=ip_states).to_json()
    if output == "json":
        click.echo(json.dumps(document, indent=2, sort_keys=True))
        return 0
    from reconciler.views.tables import render_rich, wants_rich

    stream = sys.stdout
    if wants_rich(stream, color=not no_color):
        from rich.console import Console

        render_rich(document, Console(file=stream))
    else:
        click.echo(render_text(document))
    return 0


def _fetch_fleet(url: str) -> dict[str, object]:
    import httpx

    from reconciler.daemon.statuspage import COST_TOKEN_ENV

    endpoint = url.rstrip("/") + "/v1/fleet"
    try:
        # cost figures come only with the cost token (statuspage.may_see_costs)
        token = (os.environ.get(COST_TOKEN_ENV) or "").strip()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.get(endpoint, timeout=10.0, headers=headers)
    except httpx.HTTPError as exc:
        raise UserError(
            f"cannot reach the daemon at {endpoint}: {type(exc).__name__}",
            hint="is `reconcile daemon` running, and is --url its --listen address?",
        ) from exc
    if response.status_code != 200:
        raise UserError(f"the daemon answered HTTP {response.status_code} for {endpoint}")
    document: dict[str, object] = response.json()
    return document


@click.command()
@click.option("--node", required=True, metavar="NAME", help="This node's name in the fleet.")
@click.option("--url", required=True, metavar="URL", help="The daemon's base URL.")
@click.option("--interval", default="30s", show_default=True, metavar="DURATION")
@click.option(
    "--secret-env",
    default=NODE_SECRET_ENV,
    show_default=True,
    metavar="NAME",
    help="Environment variable holding this node's token (from `reconcile node-token`).",
)
@click.option(
    "--mail-log",
    default="/var/log/mail.log",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Postfix log to count sent and bounced mail from.",
)
@click.option("--postqueue", default="postqueue", show_default=True, help="postqueue binary.")
@click.option("--once", is_flag=True, help="Post one heartbeat and exit (0 if accepted).")
@_log_format
@_log_level
def agent(
    node: str,
    url: str,
    interval: str,
    secret_env: str,
    mail_log: Path,
    postqueue: str,
    once: bool,
    log_format: str | None,
    log_level: str | None,
) -> int:
    """Run on a node: post a signed heartbeat (queue, CPU, memory, disk, mail sent) to the
    daemon every interval; keeps going when the daemon is unreachable."""
    from reconciler.daemon.agent import Agent, SystemFigures
    from reconciler.daemon.formatting import configure_logging

    secret = os.environ.get(secret_env, "")
    fmt, level = _logging(log_format, log_level)
    configure_logging(fmt, level, secrets=[secret] if secret else [])
    if not secret:
        raise UserError(
            f"this node's token is not set: environment variable {secret_env} is empty",
            hint=f"on the daemon's host: reconcile node-token {node}; then export {secret_env}=...",
        )
    seconds = _seconds(interval, "--interval")
    figures = SystemFigures(mail_log=mail_log, postqueue=postqueue)
    worker = Agent(node, url, secret, figures, interval=seconds)

    async def main() -> int:
        if once:
            try:
                return 0 if await worker.beat_once() else 1
            finally:
                await worker.aclose()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await worker.run(stop)
        return 0

    return asyncio.run(main())


@click.command("node-token")
@click.argument("name")
@_files
def node_token(name: str, files: tuple[str, ...]) -> int:
    """Print NAME's heartbeat token, derived from RECONCILER_NODE_MASTER_SECRET (nothing is
    stored). With -f, NAME must belong to the spec's fleet."""
    from reconciler.daemon.heartbeats import MasterSecret
    from specs.loading import load_spec

    master = MasterSecret.from_env(dict(os.environ))
    if files:
        loaded = load_spec(list(files))
        prefix = f"{loaded.spec.name}-"
        if not name.startswith(prefix):
            raise UserError(
                f"{name!r} is not a node of fleet {loaded.spec.name!r}",
                hint=f"node names start with {prefix!r}, e.g. {prefix}dallas-001",
            )
    if not name or len(name) > 64 or any(c.isspace() for c in name):
        raise UserError(f"{name!r} is not a valid node name")
    click.echo(master.node_secret(name))
    return 0


COMMANDS: list[click.Command] = [daemon, status, agent, node_token]
