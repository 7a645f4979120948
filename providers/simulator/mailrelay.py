"""The node stand-ins' mail system: what Postfix with the OpenDKIM milter does to a test mail.

A message a bootstrap hands to the stub ``sendmail`` is signed with the node's own DKIM key
(read inside the node's folder, where OpenDKIM would read it: the key never leaves the node
stand-in) and delivered by SMTP to the server that receives the recipient's domain (in the
stand-in world: the sink stand-in)."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parseaddr

import dkim

from providers.simulator.nodes import MailRelay, NodeStandIn

__all__ = ["SIGNED_HEADERS", "smtp_relay"]

SIGNED_HEADERS = [b"From", b"To", b"Subject", b"Date", b"Message-ID", b"X-Reconciler-Probe"]


def smtp_relay(route: Callable[[str], tuple[str, int] | None]) -> MailRelay:
    """A relay that delivers to ``route(recipient_domain)`` (host, port)."""

    async def relay(node: NodeStandIn, raw: bytes) -> None:
        headers = BytesHeaderParser().parsebytes(raw)
        recipients = [addr for _, addr in getaddresses(headers.get_all("To", [])) if addr]
        sender = parseaddr(str(headers.get("From", "")))[1] or f"postmaster@{node.name}"
        signed = raw
        key = node.dkim_key()
        if key is not None:
            domain, selector, private = key
            signature = dkim.sign(
                raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
                selector.encode(),
                domain.encode(),
                private,
                include_headers=SIGNED_HEADERS,
                canonicalize=(b"relaxed", b"relaxed"),
            )
            signed = signature + raw
        for rcpt in recipients:
            target = route(rcpt.rpartition("@")[2])
            if target is None:
                raise ValueError(f"no mail route to {rcpt}")
            await asyncio.to_thread(_send, target, sender, rcpt, signed)

    return relay


def _send(target: tuple[str, int], sender: str, rcpt: str, raw: bytes) -> None:
    with smtplib.SMTP(target[0], target[1], timeout=10) as smtp:
        smtp.sendmail(sender, [rcpt], raw)
