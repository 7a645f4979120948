"""`reconcile validate` and `reconcile schema`.

``validate`` prints every problem as ``file:line:column: field.path: message (hint)`` on
stderr (warnings prefixed ``warning:``), then a count, and exits 1 on any error; a valid spec
prints one summary line on stdout and exits 0. Bad input never produces a traceback: the
``SpecError`` is rendered by ``reconciler.cli.main``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from reconciler.core.errors import UserError
from specs.loading import LoadedSpec, load_spec
from specs.schema import json_schema

DEFAULT_SPEC = "fleet.yaml"


def _summary(paths: tuple[str, ...], loaded: LoadedSpec) -> str:
    spec = loaded.spec
    regions = len(spec.regions)
    nodes = sum(region.min_nodes for region in spec.regions.values())
    pools = len(spec.ip_pools)
    where = ", ".join(paths)
    return (
        f"{where}: valid (fleet {spec.name!r}, {regions} region{'s' if regions != 1 else ''}, "
        f"{nodes} node{'s' if nodes != 1 else ''} min, {pools} pool{'s' if pools != 1 else ''})"
    ).replace("'", '"')


@click.command()
@click.argument("paths", nargs=-1, metavar="PATH...")
@click.option(
    "--remote",
    is_flag=True,
    help="Also check the plan ids (rid) and locations against the provider's account "
    "(get_price_list, get_locations): two reads, nothing changed.",
)
def validate(paths: tuple[str, ...], remote: bool) -> int:
    """Check spec files (or directories of them) and report every problem.

    With no PATH, checks ./fleet.yaml. Exits 0 when valid, 1 on any problem.
    """
    if not paths:
        paths = (DEFAULT_SPEC,)
    loaded = load_spec(list(paths))  # a SpecError is rendered by main: problems, count, exit 1
    if remote:
        _check_remote(loaded)
    for warning in loaded.warnings:
        click.echo(f"warning: {warning.render()}", err=True)
    click.echo(_summary(paths, loaded) + (" and offered by the provider" if remote else ""))
    return 0


def _check_remote(loaded: LoadedSpec) -> None:
    """Problems (with file:line) for every rid and location the provider does not offer."""
    import asyncio
    import os

    from reconciler.core.offers import offer_problems, plan_mismatches
    from reconciler.wiring import build_cloud
    from specs.errors import SpecError, SpecProblem

    async def fetch() -> tuple[list[Any], list[Any]]:
        async with build_cloud(loaded, environ=os.environ) as cloud:
            return await cloud.price_list(), await cloud.locations()

    prices, locations = asyncio.run(fetch())
    problems = []
    for found in offer_problems(loaded.spec, prices, locations):
        file, line, column = loaded.locate(found.path)
        problems.append(
            SpecProblem(file, line, column, ".".join(found.path), found.message, found.hint)
        )
    warnings = list(loaded.warnings)
    for found in plan_mismatches(loaded.spec, prices):
        file, line, column = loaded.locate(found.path)
        warnings.append(
            SpecProblem(file, line, column, ".".join(found.path), found.message, found.hint)
        )
    if problems:
        raise SpecError(problems, warnings=warnings)
    for warning in warnings[len(loaded.warnings) :]:
        click.echo(f"warning: {warning.render()}", err=True)


def render_schema() -> str:
    """The JSON Schema as printed: indent 2, sorted keys, trailing newline."""
    return json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@click.command()
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write the schema to this file instead of stdout.",
)
def schema(output: Path | None) -> int:
    """Print the JSON Schema of the fleet spec (for editors' YAML language servers)."""
    text = render_schema()
    if output is None:
        click.echo(text, nl=False)
        return 0
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(
            f"cannot write {output}: {exc.strerror or exc}", hint="check the path"
        ) from exc
    click.echo(f"wrote {output}", err=True)
    return 0
