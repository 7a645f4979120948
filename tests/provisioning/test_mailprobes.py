"""The test mail is a well-formed RFC 5322 message for every value the checks let through."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.mailprobes import PROBE_HEADER, probe_message, probe_of

LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
HOST = st.lists(LABEL, min_size=2, max_size=6).map(".".join).filter(lambda h: len(h) <= 190)
LOCAL = st.from_regex(r"[A-Za-z0-9+_-]{1,20}(\.[A-Za-z0-9+_-]{1,20}){0,2}", fullmatch=True)
#: what probe ids look like: node name, bundle version, attempt (any of the safe characters
#: but "@", which a probe id never holds)
PROBE = st.from_regex(r"[A-Za-z0-9_+-]{1,60}(\.[A-Za-z0-9_+-]{1,60}){0,2}", fullmatch=True)
WHEN = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)


@given(hostname=HOST, local=LOCAL, domain=HOST, probe=PROBE)
def test_the_probe_parses_strictly_with_its_values(
    hostname: str, local: str, domain: str, probe: str
) -> None:
    sink = f"{local}@{domain}"
    raw = probe_message(hostname=hostname, sink_address=sink, probe=probe, now=WHEN)
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    message = email.message_from_bytes(raw, policy=email.policy.strict)
    assert message[PROBE_HEADER] == probe
    assert message["From"].addresses[0].addr_spec == f"postmaster@{hostname}"
    assert message["To"].addresses[0].addr_spec == sink
    assert message["Message-ID"] == f"<{probe}@{hostname}>"
    assert message["Date"].datetime == WHEN
    assert message.get_content_type() == "text/plain"
    assert probe in message.get_content()
    assert probe_of(raw) == probe


def test_a_typical_probe_has_its_addresses_and_subject() -> None:
    raw = probe_message(
        hostname="demo-dallas-001.mail.example.com",
        sink_address="probe@sink.example.com",
        probe="demo-dallas-001.0123456789ab.1",
        now=WHEN,
    )
    message = email.message_from_bytes(raw, policy=email.policy.strict)
    assert message["From"].addresses[0].addr_spec == "postmaster@demo-dallas-001.mail.example.com"
    assert message["To"].addresses[0].addr_spec == "probe@sink.example.com"
    assert message["Subject"] == "fleet-reconciler test mail demo-dallas-001.0123456789ab.1"
    assert message.defects == []


@pytest.mark.parametrize("field", ["hostname", "sink_address", "probe"])
def test_an_unsafe_value_is_refused(field: str) -> None:
    values = {"hostname": "h.example", "sink_address": "s@example", "probe": "p.1"}
    values[field] = "a\r\nBcc: someone@example.com"
    with pytest.raises(ValueError, match="unsafe"):
        probe_message(**values, now=WHEN)  # type: ignore[arg-type]
