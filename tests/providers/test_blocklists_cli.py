"""`reconcile blocklists check` against a real BIND: exit codes 0 / 2 / 1, JSON, bad input."""

from __future__ import annotations

import json

import pytest

from reconciler.cli.main import main
from tests.services.bind import BindServer, dnsbl_zone_text, zone_text

ZEN = "zen.spamhaus.org"


@pytest.fixture
def dnsbl(bind_server: BindServer) -> BindServer:
    bind_server.set_zone(
        ZEN, dnsbl_zone_text(ZEN, {"192.0.2.10": "127.0.0.2", "192.0.2.13": "127.255.255.254"})
    )
    bind_server.set_zone("dead.dnsbl.test", zone_text("dead.dnsbl.test"))
    return bind_server


def run(server: BindServer, *args: str) -> int:
    return main(["blocklists", "check", "--resolver", f"127.0.0.1:{server.port}", *args])


def test_exit_codes(dnsbl: BindServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(dnsbl, "--zone", ZEN, "192.0.2.99") == 0
    assert "clean" in capsys.readouterr().out
    assert run(dnsbl, "--zone", ZEN, "192.0.2.99", "192.0.2.10") == 2
    out = capsys.readouterr().out
    assert "LISTED" in out
    assert "SBL (127.0.0.2) high, pause" in out
    # an error code is never "listed": the verdict is unknown, exit 1
    assert run(dnsbl, "--zone", ZEN, "192.0.2.13") == 1
    assert "127.255.255.254" in capsys.readouterr().out
    # a dead zone: unusable, exit 1
    assert run(dnsbl, "--zone", "dead.dnsbl.test", "192.0.2.10") == 1
    assert "dead" in capsys.readouterr().out


def test_json_output(dnsbl: BindServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(dnsbl, "--zone", ZEN, "--output", "json", "192.0.2.10", "192.0.2.99") == 2
    document = json.loads(capsys.readouterr().out)
    assert document["format_version"] == 1
    assert document["zones"][ZEN]["health"] == "usable"
    verdicts = {ip["ip"]: ip["verdict"] for ip in document["ips"]}
    assert verdicts == {"192.0.2.10": "listed", "192.0.2.99": "not_listed"}
    assert document["queries"][ZEN] == 4  # two probes, two look-ups


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-an-ip"], "is not an IP address"),
        (["--zone", "dnsbl.sorbs.net", "192.0.2.1"], "SORBS shut down in 2024"),
        (["--zone", "ix.dnsbl.manitu.net", "192.0.2.1"], "NiX Spam"),
        (["--resolver", "8.8.8.8", "192.0.2.1"], "public resolver"),
        (["--zone", "bl.example=127.0.0.[9..2]", "192.0.2.1"], "ends before it starts"),
    ],
)
def test_bad_input_is_a_clear_error(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["blocklists", "check", *args]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_dnsbl_operator_settings_live_in_wiring_and_are_named_in_messages() -> None:
    """The resolver and the DQS key are operator settings (reconciler.wiring, beside the other
    credentials and endpoints): a bad key names its variable without showing it, and a DQS
    zone asked through the spec's resolver alone says which setting would allow it."""
    import asyncio

    from reconciler.core.errors import UserError
    from reconciler.wiring import DQS_KEY_ENV, RESOLVER_ENV, build_blocklist_checker
    from specs.model import ReputationPolicy

    assert (RESOLVER_ENV, DQS_KEY_ENV) == ("RECONCILER_DNSBL_RESOLVER", "RECONCILER_DQS_KEY")
    policy = ReputationPolicy.model_validate(
        {"blocklists": ["zen.dq.spamhaus.net"], "resolver": "127.0.0.1:5353"}
    )
    with pytest.raises(UserError) as bad:
        build_blocklist_checker(policy, {DQS_KEY_ENV: "short!key"}, system_fallback=False)
    assert DQS_KEY_ENV in bad.value.message
    assert "short!key" not in str(bad.value)
    with pytest.raises(UserError) as bad_resolver:
        build_blocklist_checker(policy, {RESOLVER_ENV: "not a resolver"})
    assert RESOLVER_ENV in bad_resolver.value.message
    checker = build_blocklist_checker(
        policy, {DQS_KEY_ENV: "abcdefgh12345678"}, system_fallback=False
    )
    assert checker is not None
    secret_key = "abcdefgh12345678"

    async def reasons() -> list[str]:
        try:
            _, verdicts = await checker.check(["192.0.2.1"])
        finally:
            await checker.aclose()
        return [z.reason for v in verdicts for z in v.zones]

    found = asyncio.run(reasons())
    assert found, found
    assert all(secret_key not in reason for reason in found)
    assert any(f"{RESOLVER_ENV} or --resolver" in reason for reason in found), found
