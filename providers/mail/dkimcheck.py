"""``DkimVerifierPort`` with dkimpy: a message's DKIM signature checked against the public
key as DNS serves it now (read through our own ``ResolverPort``, so the check sees exactly
the record the DNS step published, on the server it was published to)."""

from __future__ import annotations

import re

import dkim

from reconciler.core.errors import TransientError
from reconciler.core.ports import DkimVerdict, ResolverPort

__all__ = ["DkimVerifier", "signature_tags"]

_TAG = re.compile(rb"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)")


def signature_tags(raw: bytes) -> dict[str, str] | None:
    """The tags of the first DKIM-Signature header (unfolded), or None when unsigned."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    lines: list[bytes] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and lines:
            lines[-1] += line
        else:
            lines.append(line)
    for line in lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"dkim-signature":
            return {
                k.decode("ascii", "replace"): b"".join(v.split()).decode("ascii", "replace")
                for k, v in _TAG.findall(value)
            }
    return None


class DkimVerifier:
    def __init__(self, resolver: ResolverPort) -> None:
        self.resolver = resolver

    async def verify(self, raw: bytes) -> DkimVerdict:
        tags = signature_tags(raw)
        if tags is None:
            return DkimVerdict(False, None, None, "the message carries no DKIM-Signature")
        domain, selector = tags.get("d"), tags.get("s")
        if not domain or not selector:
            return DkimVerdict(False, domain, selector, "the DKIM-Signature has no d= or s=")
        name = f"{selector}._domainkey.{domain}"
        try:
            records = await self.resolver.lookup(name, "TXT")
        except TransientError:
            raise
        if not records:
            return DkimVerdict(False, domain, selector, f"no DKIM key published at {name}")
        published = records[0].encode("ascii", "replace")

        def dnsfunc(qname: bytes | str, timeout: int = 5) -> bytes:
            return published

        try:
            ok = bool(dkim.verify(raw, dnsfunc=dnsfunc, minkey=1024))
        except (dkim.DKIMException, ValueError, IndexError) as exc:
            return DkimVerdict(False, domain, selector, f"DKIM verification failed: {exc}")
        reason = "signature verified" if ok else "signature does not verify with the published key"
        return DkimVerdict(ok, domain, selector, reason)
