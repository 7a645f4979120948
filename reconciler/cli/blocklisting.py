"""`reconcile blocklists check IP...`: a one-off DNSBL look-up for operators.

The same reading rules as the daemon's checks: each zone is probed with its RFC 5782 test
entries first; Spamhaus' error answers (127.255.255.252/.254/.255, DQS .250/.251), timeouts
and unusable zones are "unknown", never "listed".

Exit codes: 0 no IP listed (every verdict reached), 2 some IP listed, 1 some verdict could not
be reached (and none listed), or bad input.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from reconciler.core.errors import UserError
from reconciler.core.reputation import IpVerdict, Verdict, ZoneProbe
from reconciler.wiring import build_blocklist_checker
from specs.loading import load_spec
from specs.model import BlocklistSpec, ReputationPolicy

EXIT_CLEAN = 0
EXIT_UNKNOWN = 1
EXIT_LISTED = 2
MAX_IPS = 10_000
DEFAULT_SPEC = "fleet.yaml"


def _policy(paths: tuple[str, ...], zones: tuple[str, ...]) -> ReputationPolicy:
    if paths:
        policy = load_spec(list(paths)).spec.reputation
    elif Path(DEFAULT_SPEC).is_file():
        policy = load_spec([DEFAULT_SPEC]).spec.reputation
    else:
        policy = ReputationPolicy()
    if not zones:
        return policy
    specs: list[BlocklistSpec] = []
    for zone in zones:
        try:
            specs.append(BlocklistSpec.model_validate(zone))
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise UserError(
                f"--zone {zone!r}: {reason}",
                hint="a zone like zen.spamhaus.org, or zone=codes like bl.example.net=127.0.0.2",
            ) from None
    zones_seen = [s.zone for s in specs]
    if len(set(zones_seen)) != len(zones_seen):
        raise UserError("--zone: a zone is given twice")
    return policy.model_copy(update={"blocklists": specs})


def _ips(values: tuple[str, ...]) -> list[str]:
    if len(values) > MAX_IPS:
        raise UserError(f"at most {MAX_IPS:,} IPs at once (got {len(values):,})")
    result: list[str] = []
    for value in values:
        try:
            result.append(str(ipaddress.ip_address(value.strip())))
        except ValueError:
            raise UserError(
                f"{value!r} is not an IP address", hint="e.g. reconcile blocklists check 192.0.2.10"
            ) from None
    return list(dict.fromkeys(result))


def _document(
    resolver: str, probes: dict[str, ZoneProbe], verdicts: list[IpVerdict], queries: dict[str, int]
) -> dict[str, Any]:
    return {
        "format_version": 1,
        "resolver": resolver,
        "zones": {
            zone: {"health": probe.health.value, "reason": probe.reason}
            for zone, probe in sorted(probes.items())
        },
        "ips": [
            {
                "ip": verdict.ip,
                "verdict": verdict.verdict.value,
                "zones": [
                    {
                        "zone": z.zone,
                        "verdict": z.verdict.value,
                        "codes": list(z.codes),
                        "listing": z.listing,
                        "severity": z.severity.value if z.severity else None,
                        "action": z.action.value if z.action else None,
                        "reason": z.reason,
                    }
                    for z in verdict.zones
                ],
            }
            for verdict in verdicts
        ],
        "queries": queries,
    }


def _render_text(document: dict[str, Any]) -> str:
    lines = []
    width = max([len(ip["ip"]) for ip in document["ips"]] + [2])
    for ip in document["ips"]:
        label = {"listed": "LISTED", "not_listed": "clean", "unknown": "UNKNOWN"}[ip["verdict"]]
        details = []
        for zone in ip["zones"]:
            if zone["verdict"] == "listed":
                details.append(
                    f"{zone['zone']}: {zone['listing']} ({', '.join(zone['codes'])}) "
                    f"{zone['severity']}, {zone['action']}"
                )
            elif zone["verdict"] == "unknown":
                details.append(f"{zone['zone']}: unknown ({zone['reason']})")
        lines.append(f"{ip['ip']:<{width}}  {label:<7}  " + "; ".join(details))
    zones = ", ".join(
        f"{zone} {z['health']}" + (f" ({z['reason']})" if z["reason"] else "")
        for zone, z in document["zones"].items()
    )
    lines.append(f"zones via {document['resolver']}: {zones}")
    return "\n".join(lines)


@click.group()
def blocklists() -> None:
    """DNS blocklists: look IPs up the way the daemon does."""


@blocklists.command("check")
@click.argument("ips", nargs=-1, required=True, metavar="IP...")
@click.option(
    "--zone",
    "zones",
    multiple=True,
    help="zone (or zone=codes); repeatable; default: the spec's reputation.blocklists",
)
@click.option(
    "--resolver",
    help="HOST:PORT of your recursive resolver (default: "
    "$RECONCILER_DNSBL_RESOLVER, the spec's reputation.resolver, /etc/resolv.conf)",
)
@click.option(
    "-f",
    "--file",
    "paths",
    multiple=True,
    help="spec file or directory whose "
    "reputation settings apply (default ./fleet.yaml when present)",
)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def check(
    ips: tuple[str, ...],
    zones: tuple[str, ...],
    resolver: str | None,
    paths: tuple[str, ...],
    output: str,
) -> int:
    """Look IPs up on the DNSBL zones.

    Exit 0: no IP listed; 2: an IP is listed; 1: some verdict could not be reached (an error
    answer, a timeout or an unusable zone is never "listed").
    """
    addresses = _ips(ips)
    policy = _policy(paths, zones)
    checker = build_blocklist_checker(policy, os.environ, resolver=resolver)
    assert checker is not None  # with the system fallback there is always a checker

    async def run() -> tuple[dict[str, ZoneProbe], list[IpVerdict]]:
        try:
            return await checker.check(addresses)
        finally:
            await checker.aclose()

    probes, verdicts = asyncio.run(run())
    queries = {zone: stats.queries for zone, stats in checker.stats().items()}
    document = _document(str(checker.resolver or "none"), probes, verdicts, queries)
    if output == "json":
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(_render_text(document))
    if any(v.verdict is Verdict.LISTED for v in verdicts):
        return EXIT_LISTED
    if any(v.verdict is Verdict.UNKNOWN for v in verdicts):
        return EXIT_UNKNOWN
    return EXIT_CLEAN
