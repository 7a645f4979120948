"""The BIND fixture serves zones, takes TSIG-signed RFC 2136 updates, and refuses the rest."""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.reversename
import dns.update
import pytest

from tests.services.bind import (
    BindServer,
    Blackhole,
    dnsbl_name,
    dnsbl_zone_text,
    generate_tsig_key,
    reverse_zone_origin,
    reverse_zone_text,
    start_bind,
    zone_text,
)
from tests.services.environment import ServiceEnv
from tests.services.processes import UNPRIVILEGED_UID, running_as_root


def a_records(server: BindServer, name: str) -> list[str]:
    answer = server.query(name, "A")
    return sorted(rd.to_text() for rrset in answer.answer for rd in rrset)


def test_serves_a_zone_to_dig_and_dnspython(bind_server: BindServer) -> None:
    bind_server.set_zone("mail.test", zone_text("mail.test", ["n1 A 198.51.100.7"]))

    assert bind_server.dig("n1.mail.test", "A", "+short").strip() == "198.51.100.7"
    answer = bind_server.query("n1.mail.test.", "A", tcp=True)
    assert answer.flags & dns.flags.AA
    assert a_records(bind_server, "n1.mail.test.") == ["198.51.100.7"]
    missing = bind_server.query("nope.mail.test.", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN


def test_named_runs_unprivileged(bind_server: BindServer) -> None:
    assert bind_server.process is not None
    status = Path(f"/proc/{bind_server.process.pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    expected = UNPRIVILEGED_UID if running_as_root() else os.getuid()
    assert {int(u) for u in uids} == {expected}


def test_tsig_signed_update_is_applied(bind_server: BindServer) -> None:
    bind_server.set_zone("mail.test", zone_text("mail.test"), allow_update=True)

    done = bind_server.nsupdate("update add n2.mail.test. 60 A 198.51.100.8\nsend")

    assert done.returncode == 0, done.stderr
    assert a_records(bind_server, "n2.mail.test.") == ["198.51.100.8"]


def test_update_with_a_wrong_key_or_unsigned_is_refused(
    bind_server: BindServer, services_env: ServiceEnv
) -> None:
    bind_server.set_zone("mail.test", zone_text("mail.test"), allow_update=True)
    wrong = generate_tsig_key(services_env, bind_server.tsig_key.name)
    assert wrong.secret != bind_server.tsig_key.secret

    bad_key = bind_server.nsupdate("update add n3.mail.test. 60 A 198.51.100.9\nsend", key=wrong)
    unsigned = bind_server.nsupdate("update add n3.mail.test. 60 A 198.51.100.9\nsend", sign=False)

    assert bad_key.returncode != 0
    assert "tsig verify failure" in bad_key.stderr.lower() or "BADSIG" in bad_key.stderr
    assert unsigned.returncode != 0
    assert "REFUSED" in unsigned.stderr
    assert bind_server.query("n3.mail.test.", "A").rcode() == dns.rcode.NXDOMAIN


def test_dnspython_update_and_a_read_only_zone(bind_server: BindServer) -> None:
    bind_server.set_zone("mail.test", zone_text("mail.test"), allow_update=True)
    bind_server.set_zone("static.test", zone_text("static.test"))
    keyring = bind_server.tsig_key.keyring()

    update = dns.update.UpdateMessage("mail.test.", keyring=keyring, keyalgorithm="hmac-sha256")
    update.replace("n4", 60, "A", "203.0.113.4")
    answer = dns.query.tcp(update, bind_server.host, port=bind_server.port, timeout=5)
    assert answer.rcode() == dns.rcode.NOERROR
    assert a_records(bind_server, "n4.mail.test.") == ["203.0.113.4"]

    refused = dns.update.UpdateMessage("static.test.", keyring=keyring, keyalgorithm="hmac-sha256")
    refused.replace("n4", 60, "A", "203.0.113.4")
    answer = dns.query.tcp(refused, bind_server.host, port=bind_server.port, timeout=5)
    assert answer.rcode() == dns.rcode.REFUSED


def test_replacing_a_zone_forgets_its_dynamic_updates(bind_server: BindServer) -> None:
    bind_server.set_zone(
        "mail.test", zone_text("mail.test", ["n1 A 198.51.100.1"]), allow_update=True
    )
    assert bind_server.nsupdate("update add n2.mail.test. 60 A 198.51.100.2\nsend").returncode == 0

    bind_server.set_zone("mail.test", zone_text("mail.test", ["n1 A 198.51.100.3"], serial=2))

    assert a_records(bind_server, "n1.mail.test.") == ["198.51.100.3"]
    assert bind_server.query("n2.mail.test.", "A").rcode() == dns.rcode.NXDOMAIN
    refused = bind_server.nsupdate("update add n5.mail.test. 60 A 198.51.100.5\nsend")
    assert refused.returncode != 0  # no longer allow-update


def test_forward_confirmed_reverse_dns(bind_server: BindServer) -> None:
    nodes = {"n1.mail.test.": "198.51.100.7", "n2.mail.test.": "203.0.113.9"}
    bind_server.set_zone(
        "mail.test",
        zone_text("mail.test", [f"{name} A {ip}" for name, ip in nodes.items()]),
    )
    for network in ("198.51.100.0/24", "203.0.113.0/24"):
        net = ipaddress.IPv4Network(network)
        ptrs = {ip: name for name, ip in nodes.items() if ipaddress.IPv4Address(ip) in net}
        bind_server.set_zone(reverse_zone_origin(network), reverse_zone_text(network, ptrs))

    for name, ip in nodes.items():
        ptr = bind_server.query(dns.reversename.from_address(ip).to_text(), "PTR")
        (target,) = [rd.to_text() for rrset in ptr.answer for rd in rrset]
        assert target == name
        assert a_records(bind_server, target) == [ip]
    unknown = bind_server.query(dns.reversename.from_address("198.51.100.200").to_text(), "PTR")
    assert unknown.rcode() == dns.rcode.NXDOMAIN


def test_dnsbl_zone_listings_error_codes_and_rfc5782_entries(bind_server: BindServer) -> None:
    zone = "bl.test"
    bind_server.set_zone(
        zone,
        dnsbl_zone_text(
            zone,
            {
                "198.51.100.7": "127.0.0.2",
                "198.51.100.8": ["127.0.0.4", "127.0.0.10"],
                "198.51.100.9": "127.255.255.254",
            },
        ),
    )
    bind_server.set_zone(
        "everything.test", dnsbl_zone_text("everything.test", wildcard="127.0.0.2")
    )

    assert a_records(bind_server, dnsbl_name("127.0.0.2", zone)) == ["127.0.0.2"]
    assert bind_server.query(dnsbl_name("127.0.0.1", zone), "A").rcode() == dns.rcode.NXDOMAIN
    assert a_records(bind_server, dnsbl_name("198.51.100.8", zone)) == ["127.0.0.10", "127.0.0.4"]
    assert a_records(bind_server, dnsbl_name("198.51.100.9", zone)) == ["127.255.255.254"]
    assert bind_server.query(dnsbl_name("198.51.100.10", zone), "A").rcode() == dns.rcode.NXDOMAIN
    txt = bind_server.query(dnsbl_name("198.51.100.7", zone), "TXT")
    assert "listed in bl.test" in txt.answer[0].to_text()
    # The zone that lists everything lists RFC 5782's "never listed" entry too.
    assert a_records(bind_server, dnsbl_name("127.0.0.1", "everything.test")) == ["127.0.0.2"]


def test_a_bad_zone_is_refused_with_its_name(bind_server: BindServer) -> None:
    with pytest.raises(ValueError, match=r"zone broken\.test\."):
        bind_server.set_zone("broken.test", "$ORIGIN broken.test.\n@ IN A 1.2.3.4\n")


def test_blackhole_never_answers_but_the_resolver_still_serves_other_zones(
    bind_factory: object, blackhole_dns: Blackhole
) -> None:
    query = dns.message.make_query("x.dead.test.", "A")
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(query, blackhole_dns.host, port=blackhole_dns.port, timeout=0.3)
    with pytest.raises(dns.exception.Timeout):
        dns.query.tcp(query, blackhole_dns.host, port=blackhole_dns.port, timeout=0.3)

    assert callable(bind_factory)
    resolver: BindServer = bind_factory(recursion=True)
    resolver.add_forward_zone("dead.test", *blackhole_dns.address)
    resolver.set_zone("alive.test", dnsbl_zone_text("alive.test"))

    started = time.monotonic()
    alive = resolver.query(dnsbl_name("127.0.0.2", "alive.test"), "A")
    assert alive.rcode() == dns.rcode.NOERROR
    assert time.monotonic() - started < 2.0
    try:
        dead = resolver.query("2.0.0.127.dead.test.", "A", timeout=1.0)
    except dns.exception.Timeout:
        return  # a client-side timeout is a valid "no verdict"
    assert dead.rcode() == dns.rcode.SERVFAIL
    assert not dead.answer


def test_stop_kills_named_and_removes_its_folder(services_env: ServiceEnv) -> None:
    with start_bind(services_env) as server:
        assert server.process is not None
        process = server.process
        folder, port = server.folder, server.port
    assert not process.remaining()
    assert not folder.exists()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", port))  # the port is free again


def test_a_port_taken_before_named_binds_it_is_retried(
    services_env: ServiceEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tests.services.bind as bind_module

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        taken = int(squatter.getsockname()[1])
        handed_out: list[int] = []
        real_free_port = bind_module.free_port

        def first_a_taken_port(*, udp: bool = False) -> int:
            port = taken if udp and not handed_out else real_free_port(udp=udp)
            handed_out.append(port)
            return port

        monkeypatch.setattr(bind_module, "free_port", first_a_taken_port)
        with start_bind(services_env) as server:
            assert handed_out[0] == taken
            assert server.port != taken
            server.set_zone("ok.test", zone_text("ok.test", ["a A 192.0.2.1"]))
            assert a_records(server, "a.ok.test.") == ["192.0.2.1"]
