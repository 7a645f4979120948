"""Pure DNS record rules: SPF within the DNS limits, DMARC, DKIM key records, FCrDNS."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.dnsrecords import (
    MAX_RECORD_BYTES,
    SpfOverflowError,
    dkim_name,
    dkim_txt,
    dmarc_txt,
    fcrdns_problem,
    spf_lookups,
    spf_records,
    split_txt,
    txt_value,
)

DOMAIN = "mail.example.com"

ipv4 = st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))


def _covered(records: list, ips: list[str]) -> bool:
    nets = []
    for record in records:
        for term in record.values[0].split():
            if term.startswith("ip4:"):
                nets.append(ipaddress.ip_network(term[4:]))
    return all(any(ipaddress.ip_address(ip) in net for net in nets) for ip in ips)


@settings(max_examples=150, deadline=None)
@given(st.lists(ipv4, max_size=120))
def test_spf_lists_every_ip_within_the_limits(ips: list[str]) -> None:
    try:
        records = spf_records(DOMAIN, ips, extra=["include:_spf.google.com"])
    except SpfOverflowError:
        # only when the blocks really cannot fit 9 include parts
        assert len(set(ips)) > 9 * 20
        return
    main = records[0]
    assert main.name == DOMAIN
    assert main.values[0].startswith("v=spf1 include:_spf.google.com")
    assert main.values[0].endswith(" -all")
    for record in records:
        assert len(record.values[0].encode()) <= MAX_RECORD_BYTES
    assert spf_lookups(main.values[0].split()) <= 10
    assert _covered(records, ips)
    # deterministic: order of the input does not matter
    assert spf_records(DOMAIN, list(reversed(ips)), extra=["include:_spf.google.com"]) == records


def test_spf_collapses_adjacent_addresses_and_splits_when_long() -> None:
    block = [f"198.51.100.{i}" for i in range(4)]
    assert spf_records(DOMAIN, block)[0].values[0] == "v=spf1 ip4:198.51.100.0/30 -all"
    scattered = [f"198.51.{i}.{2 * i + 1}" for i in range(60)]
    records = spf_records(DOMAIN, scattered)
    assert len(records) > 2
    assert records[0].values[0].startswith("v=spf1 include:_spf1.mail.example.com")
    assert {r.name for r in records[1:]} == {f"_spf{i}.{DOMAIN}" for i in range(1, len(records))}


def test_spf_overflow_is_an_error_not_a_silent_truncation() -> None:
    many = [str(ipaddress.IPv4Address(0x0A000001 + 2 * i)) for i in range(400)]
    with pytest.raises(SpfOverflowError, match="look-ups"):
        spf_records(DOMAIN, many)
    with pytest.raises(SpfOverflowError):
        spf_records(DOMAIN, ["192.0.2.1"], extra=[f"include:x{i}.example" for i in range(11)])


def test_txt_strings_are_split_at_255_bytes_and_join_back() -> None:
    text = "v=DKIM1; k=rsa; p=" + "A" * 600
    strings = split_txt(text)
    assert all(len(s) <= 255 for s in strings)
    assert txt_value(strings) == text


def test_dkim_and_dmarc_records() -> None:
    assert dkim_name("demo-seattle-001", "Mail.Example.com.") == (
        "demo-seattle-001._domainkey.mail.example.com"
    )
    assert dkim_txt("MIIB IjAN\nBgkq") == "v=DKIM1; k=rsa; p=MIIBIjANBgkq"
    with pytest.raises(ValueError, match="base64"):
        dkim_txt("not base64!")
    assert dmarc_txt("none") == "v=DMARC1; p=none"
    assert dmarc_txt("reject", percent=50, rua=["dmarc@example.com"], adkim="s") == (
        "v=DMARC1; p=reject; adkim=s; pct=50; rua=mailto:dmarc@example.com"
    )
    with pytest.raises(ValueError, match="policy"):
        dmarc_txt("drop")


@pytest.mark.parametrize(
    ("ptrs", "forward", "expected"),
    [
        (["n1.mail.test."], ["192.0.2.7"], None),
        (["N1.MAIL.TEST"], ["192.0.2.7", "192.0.2.8"], None),
        ([], ["192.0.2.7"], "no PTR record"),
        (["other.example"], ["192.0.2.7"], "PTR of 192.0.2.7 is other.example"),
        (["n1.mail.test"], [], "no address record"),
        (["n1.mail.test"], ["192.0.2.9"], "resolves to 192.0.2.9"),
    ],
)
def test_fcrdns(ptrs: list[str], forward: list[str], expected: str | None) -> None:
    problem = fcrdns_problem("192.0.2.7", "n1.mail.test", ptrs, forward)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None
        assert expected in problem
