"""`reconcile simulator`: serve the Hostwinds simulator in the foreground."""

from __future__ import annotations

import os
from pathlib import Path

import click

from providers.simulator.app import API_PATH
from providers.simulator.serving import DEFAULT_API_KEY, bind, build_app, serve_foreground
from specs.durations import parse_duration


def _seconds(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return parse_duration(value).total_seconds()
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on (0 picks a free one and prints it).",
)
@click.option(
    "--state",
    "state",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON file holding the simulated account; loaded at start, saved on change. "
    "Without it the account lives in memory only.",
)
@click.option(
    "--api-key-env",
    default="HOSTWINDS_API_KEY",
    show_default=True,
    help=f"Environment variable holding the key clients must send "
    f"(when unset, the key is '{DEFAULT_API_KEY}').",
)
@click.option(
    "--build-time",
    default="2s",
    show_default=True,
    callback=_seconds,
    help="How long a new instance stays in BUILD (a duration: 500ms, 5s, 2m).",
)
@click.option(
    "--resize-time",
    default="2s",
    show_default=True,
    callback=_seconds,
    help="How long upgrade_server stays in RESIZE before RESIZED.",
)
@click.option(
    "--build-failure-rate",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Share of builds that end in ERROR (deterministic for a given --seed).",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for every random choice."
)
@click.option(
    "--allow-ip",
    "allow_ips",
    multiple=True,
    help="Only accept API calls from this IPv4 address (repeatable), like a Hostwinds key's "
    "allow-list. Default: any address.",
)
def simulator(
    host: str,
    port: int,
    state: Path | None,
    api_key_env: str,
    build_time: float,
    resize_time: float,
    build_failure_rate: float,
    seed: int,
    allow_ips: tuple[str, ...],
) -> int:
    """Serve the Hostwinds Cloud API simulator (POST /cloud/api.php, admin under /sim/).

    Stops cleanly on Ctrl-C or SIGTERM. See docs/simulator.md for the admin endpoints
    (fault injection, stats, clock, seeding).
    """
    key = os.environ.get(api_key_env) or DEFAULT_API_KEY
    key_source = f"${api_key_env}" if os.environ.get(api_key_env) else f"'{DEFAULT_API_KEY}'"
    app = build_app(
        state_path=state,
        api_key=key,
        build_seconds=build_time,
        build_failure_rate=build_failure_rate,
        resize_seconds=resize_time,
        seed=seed,
        allow_ips=list(allow_ips) or None,
    )
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    url = f"http://{bound_host}:{bound_port}"

    def announce() -> None:
        click.echo(f"Hostwinds simulator listening on {url}")
        click.echo(f"  API:   {url}{API_PATH}  (key: {key_source})")
        click.echo(f"  admin: {url}/sim/stats, {url}/sim/faults")
        click.echo(f"  state: {state if state is not None else 'in memory only'}")
        click.echo(f"  instances loaded: {len(app.world.instances)}")

    serve_foreground(app, sock, announce)
    click.echo("simulator stopped", err=True)
    return 0
