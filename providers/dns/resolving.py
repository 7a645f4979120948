"""``ResolverPort``: real DNS queries with dnspython, no cache (every check sees the zone as
it is now). Used for forward-confirmed reverse DNS and to read the published DKIM key.

``DnsResolver()`` uses the machine's resolvers (``/etc/resolv.conf``); tests and stand-ins
name their own (``DnsResolver([("127.0.0.1", 5353)])``). An absent name or type is ``()``;
a resolver that times out or fails (SERVFAIL) raises ``TransientError``.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from providers.dns.rfc2136 import rdata_text
from reconciler.core.errors import TransientError

__all__ = ["DnsResolver"]


class DnsResolver:
    def __init__(
        self, nameservers: Sequence[tuple[str, int]] | None = None, *, timeout: float = 5.0
    ) -> None:
        if nameservers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers
            ]
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.cache = None
        resolver.lifetime = timeout
        resolver.timeout = timeout
        self._resolver = resolver
        self._where = (
            ", ".join(f"{h}:{p}" for h, p in nameservers) if nameservers else "the system resolver"
        )

    async def lookup(self, name: str, rtype: str) -> tuple[str, ...]:
        return await self._query(name.rstrip(".") + ".", rtype)

    async def reverse(self, ip: str) -> tuple[str, ...]:
        try:
            qname = dns.reversename.from_address(ip)
        except (dns.exception.SyntaxError, ValueError) as exc:
            raise TransientError(f"{ip!r} is not an IP address") from exc
        return await self._query(qname.to_text(), "PTR")

    async def _query(self, qname: str, rtype: str) -> tuple[str, ...]:
        try:
            answer = await self._resolver.resolve(
                qname, dns.rdatatype.from_text(rtype), raise_on_no_answer=False, search=False
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return ()
        except dns.resolver.LifetimeTimeout as exc:
            raise TransientError(f"{self._where} did not answer {rtype} {qname} in time") from exc
        except dns.resolver.NoNameservers as exc:
            raise TransientError(f"{self._where} failed {rtype} {qname} (SERVFAIL)") from exc
        except dns.exception.DNSException as exc:
            raise TransientError(f"{self._where} failed {rtype} {qname}: {exc}") from exc
        if answer.rrset is None:
            return ()
        return tuple(sorted(rdata_text(r) for r in answer.rrset))
