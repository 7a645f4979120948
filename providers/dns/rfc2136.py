"""``DnsPort`` by RFC 2136 dynamic update, signed with TSIG (RFC 8945), using dnspython.

Works with BIND, PowerDNS, Knot and most managed DNS that accept dynamic updates. Every update
replaces or deletes one whole RRset (idempotent: applying it twice is the same as once), is sent
over TCP to the zone's primary and signed with the operator's TSIG key. The key is a ``TsigKey``
whose ``repr`` hides the secret; it is read from a file the operator names outside the spec
(``load_tsig_key``), never from the spec, and never appears in an error.

Errors: a timeout or a refused connection -> ``TransientError``; SERVFAIL -> ``TransientError``;
a TSIG failure (BADKEY, BADSIG, BADTIME), NOTAUTH or REFUSED -> ``AuthError`` with a hint; a
name outside the zone or any other refusal -> ``TerminalError``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.update

from reconciler.core.dnsrecords import RecordSet, split_txt
from reconciler.core.errors import AuthError, TerminalError, TransientError, UserError

__all__ = ["Rfc2136Dns", "TsigKey", "load_tsig_key", "parse_tsig_key"]

_ALGORITHMS = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha224": dns.tsig.HMAC_SHA224,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
}
TSIG_HINT = (
    "the DNS server refused the update's TSIG signature or the key's rights: check the key "
    "name, algorithm and secret in the TSIG key file, the server's update-policy for the zone, "
    "and this machine's clock (TSIG allows 5 minutes of skew)"
)


@dataclass(frozen=True, slots=True)
class TsigKey:
    """A TSIG key. ``secret`` is base64; it never shows in ``repr`` or ``str``."""

    name: str
    algorithm: str
    secret: str = field(repr=False)

    def __str__(self) -> str:
        return f"TSIG key {self.name} ({self.algorithm})"


_BIND_KEY = re.compile(
    r'key\s+"?(?P<name>[A-Za-z0-9._-]+)"?\s*\{(?P<body>[^}]*)\}\s*;', re.IGNORECASE | re.DOTALL
)
_STATEMENT = re.compile(r'(?P<k>algorithm|secret)\s+"?(?P<v>[^";\s]+)"?\s*;', re.IGNORECASE)


def parse_tsig_key(text: str, *, source: str = "TSIG key") -> TsigKey:
    """A key from BIND's ``key "name" { algorithm hmac-sha256; secret "..."; };`` (what
    ``tsig-keygen`` prints) or from one line ``name:algorithm:secret``."""
    match = _BIND_KEY.search(text)
    if match is not None:
        values = {m.group("k").lower(): m.group("v") for m in _STATEMENT.finditer(match["body"])}
        name, algorithm, secret = match["name"], values.get("algorithm"), values.get("secret")
    else:
        fields = text.strip().split(":")
        if len(fields) != 3:
            raise UserError(
                f"{source}: not a TSIG key",
                hint='write it as tsig-keygen prints it (key "name" { algorithm hmac-sha256; '
                'secret "..."; };) or as one line name:hmac-sha256:secret',
            )
        name, algorithm, secret = (f.strip() for f in fields)
    if not algorithm or algorithm.lower() not in _ALGORITHMS:
        raise UserError(
            f"{source}: unsupported TSIG algorithm {algorithm!r}",
            hint="use one of " + ", ".join(sorted(_ALGORITHMS)),
        )
    try:
        raw = base64.b64decode(secret or "", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) < 16:
        raise UserError(
            f"{source}: the TSIG secret is not base64 of at least 16 bytes",
            hint="generate one with tsig-keygen",
        )
    return TsigKey(name.rstrip("."), algorithm.lower(), secret or "")


def load_tsig_key(path: Path) -> TsigKey:
    """Read the key file the operator names (outside the spec)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(
            f"cannot read the TSIG key file {path}: {exc.strerror or exc}",
            hint="name a readable key file in the operator settings",
        ) from exc
    return parse_tsig_key(text, source=str(path))


def _fqdn(name: str) -> dns.name.Name:
    return dns.name.from_text(name.strip().rstrip(".") + ".")


class Rfc2136Dns:
    """``DnsPort`` for one zone on one primary server."""

    def __init__(
        self,
        server: str,
        zone: str,
        *,
        port: int = 53,
        key: TsigKey | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.server = server
        self.port = port
        self.zone = _fqdn(zone)
        self.timeout = timeout
        self._key = key
        self._keyring: dict[dns.name.Name, dns.tsig.Key] | None = None
        if key is not None:
            keyname = _fqdn(key.name)
            self._keyring = {keyname: dns.tsig.Key(keyname, key.secret, _ALGORITHMS[key.algorithm])}
            self._keyname: dns.name.Name | None = keyname
        else:
            self._keyname = None

    def __repr__(self) -> str:
        return f"Rfc2136Dns({self.server}:{self.port}, zone={self.zone}, key={self._key})"

    # --- DnsPort -------------------------------------------------------------------------

    async def replace(self, record: RecordSet) -> None:
        name = self._in_zone(record.name)
        update = self._update()
        rtype = dns.rdatatype.from_text(record.rtype)
        rdatas = [self._rdata(rtype, value) for value in record.values]
        if rdatas:
            update.replace(name, record.ttl, *rdatas)
        else:
            update.delete(name, rtype)
        await self._send(update, f"replace {record.rtype} {record.name}")

    async def delete(self, name: str, rtype: str) -> None:
        update = self._update()
        update.delete(self._in_zone(name), dns.rdatatype.from_text(rtype))
        await self._send(update, f"delete {rtype} {name}")

    async def update(
        self, replace: Sequence[RecordSet] = (), delete: Sequence[tuple[str, str]] = ()
    ) -> None:
        """One RFC 2136 message: applied all together or not at all (the server's rule)."""
        if not replace and not delete:
            return
        update = self._update()
        for name, rtype in delete:
            update.delete(self._in_zone(name), dns.rdatatype.from_text(rtype))
        for record in replace:
            kind = dns.rdatatype.from_text(record.rtype)
            rdatas = [self._rdata(kind, value) for value in record.values]
            if rdatas:
                update.replace(self._in_zone(record.name), record.ttl, *rdatas)
            else:
                update.delete(self._in_zone(record.name), kind)
        await self._send(update, f"update of {len(replace) + len(delete)} record sets")

    async def published(self, name: str, rtype: str) -> tuple[str, ...]:
        qname = self._in_zone(name)
        query = dns.message.make_query(qname, dns.rdatatype.from_text(rtype))
        query.flags &= ~dns.flags.RD
        response = await self._exchange(query, f"query {rtype} {name}")
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            return ()
        if rcode != dns.rcode.NOERROR:
            raise TransientError(
                f"DNS server {self.server}:{self.port} answered {dns.rcode.to_text(rcode)} "
                f"to a query for {rtype} {name}"
            )
        return _values(response, qname, dns.rdatatype.from_text(rtype))

    async def aclose(self) -> None:
        return None

    # --- internals -----------------------------------------------------------------------

    def _in_zone(self, name: str) -> dns.name.Name:
        fqdn = _fqdn(name)
        if not fqdn.is_subdomain(self.zone):
            raise TerminalError(
                f"{name} is not inside the zone {self.zone.to_text(omit_final_dot=True)}",
                hint="the fleet's sending domain must be the DNS zone or below it",
            )
        return fqdn

    def _update(self) -> dns.update.UpdateMessage:
        if self._keyring is not None and self._key is not None:
            return dns.update.UpdateMessage(
                self.zone,
                keyring=self._keyring,
                keyname=self._keyname,
                keyalgorithm=_ALGORITHMS[self._key.algorithm],
            )
        return dns.update.UpdateMessage(self.zone)

    @staticmethod
    def _rdata(rtype: dns.rdatatype.RdataType, value: str) -> dns.rdata.Rdata:
        if rtype == dns.rdatatype.TXT:
            strings = [s.encode("ascii") for s in split_txt(value)]
            return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings)
        return dns.rdata.from_text(dns.rdataclass.IN, rtype, value)

    async def _exchange(self, message: dns.message.Message, what: str) -> dns.message.Message:
        try:
            return await dns.asyncquery.tcp(
                message, self.server, timeout=self.timeout, port=self.port
            )
        except (dns.tsig.PeerBadKey, dns.tsig.PeerBadSignature, dns.tsig.PeerBadTime) as exc:
            raise AuthError(
                f"DNS server {self.server}:{self.port} refused the TSIG signature of {what} "
                f"({type(exc).__name__})",
                hint=TSIG_HINT,
            ) from exc
        except dns.tsig.PeerError as exc:
            raise AuthError(
                f"DNS server {self.server}:{self.port} refused {what}: TSIG error "
                f"{type(exc).__name__}",
                hint=TSIG_HINT,
            ) from exc
        except dns.exception.Timeout as exc:
            raise TransientError(
                f"DNS server {self.server}:{self.port} did not answer {what} within "
                f"{self.timeout:g} s"
            ) from exc
        except (OSError, EOFError) as exc:
            raise TransientError(
                f"cannot reach DNS server {self.server}:{self.port} for {what}: {exc}"
            ) from exc
        except dns.exception.DNSException as exc:
            raise TransientError(
                f"DNS server {self.server}:{self.port} sent a bad answer to {what}: {exc}"
            ) from exc

    async def _send(self, update: dns.update.UpdateMessage, what: str) -> None:
        response = await self._exchange(update, what)
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            return
        text = dns.rcode.to_text(rcode)
        where = f"DNS server {self.server}:{self.port}"
        if rcode in (dns.rcode.NOTAUTH, dns.rcode.REFUSED):
            raise AuthError(f"{where} refused {what} ({text})", hint=TSIG_HINT)
        if rcode == dns.rcode.SERVFAIL:
            raise TransientError(f"{where} failed {what} (SERVFAIL)")
        if rcode == dns.rcode.NOTZONE:
            raise TerminalError(
                f"{where} refused {what}: it is not authoritative for the zone (NOTZONE)",
                hint="check the zone name in the DNS settings",
            )
        raise TerminalError(f"{where} refused {what} ({text})")


def _values(
    response: dns.message.Message, qname: dns.name.Name, rtype: dns.rdatatype.RdataType
) -> tuple[str, ...]:
    try:
        rrset = response.find_rrset(response.answer, qname, dns.rdataclass.IN, rtype)
    except KeyError:
        return ()
    return tuple(sorted(rdata_text(r) for r in rrset))


def rdata_text(rdata: dns.rdata.Rdata) -> str:
    """A value as the records carry it: TXT strings joined, names without the final dot."""
    if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
        return b"".join(rdata.strings).decode("ascii", "replace")
    text: str = rdata.to_text()
    return text.rstrip(".") if rdata.rdtype in (dns.rdatatype.PTR, dns.rdatatype.CNAME) else text
