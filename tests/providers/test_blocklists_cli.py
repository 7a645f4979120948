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
