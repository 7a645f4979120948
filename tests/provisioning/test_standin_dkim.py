"""The node stand-ins' DKIM signer (what OpenDKIM does to a test mail) against dkimpy's verifier,
the one the tool runs on the mail the sink received."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from providers.simulator.mailrelay import dkim_signature
from reconciler.core.mailprobes import probe_message

SELECTOR = "demo-seattle-001"
DOMAIN = "mail.test"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _dns(key: rsa.RSAPrivateKey) -> object:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    return lookup


def _probe() -> bytes:
    return probe_message(
        hostname=f"{SELECTOR}.{DOMAIN}",
        sink_address="probe@sink.test",
        probe=f"{SELECTOR}.abcdef012345.1",
        now=datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
    )


def test_a_signed_test_mail_verifies_with_dkimpy(key: rsa.RSAPrivateKey) -> None:
    raw = _probe()
    signed = dkim_signature(raw, SELECTOR, DOMAIN, _pem(key)) + raw
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;")
    assert dkim.verify(signed, dnsfunc=_dns(key))


def test_white_space_and_folding_are_canonicalised_relaxed(key: rsa.RSAPrivateKey) -> None:
    """What a relay may change under relaxed/relaxed (header folding, white-space runs,
    trailing blank lines) keeps the signature valid."""
    raw = _probe()
    signed = dkim_signature(raw, SELECTOR, DOMAIN, _pem(key)) + raw
    head, _, body = signed.partition(b"\r\n\r\n")
    head = head.replace(b"Subject: fleet-reconciler", b"Subject:   fleet-reconciler\r\n\t")
    body = body.replace(b"Test mail", b"Test   mail") + b"\r\n\r\n"
    assert dkim.verify(head + b"\r\n\r\n" + body, dnsfunc=_dns(key))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"provisioning verification", b"provisioning verificatioN"),  # the body
        (b"X-Reconciler-Probe: demo", b"X-Reconciler-Probe: dema"),  # a signed header
    ],
)
def test_a_changed_message_does_not_verify(key: rsa.RSAPrivateKey, old: bytes, new: bytes) -> None:
    raw = _probe()
    signed = dkim_signature(raw, SELECTOR, DOMAIN, _pem(key)) + raw
    assert old in signed
    assert not dkim.verify(signed.replace(old, new), dnsfunc=_dns(key))


def test_another_key_does_not_verify(key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raw = _probe()
    signed = dkim_signature(raw, SELECTOR, DOMAIN, _pem(other)) + raw
    assert not dkim.verify(signed, dnsfunc=_dns(key))
