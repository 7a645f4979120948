"""The DNS stand-in: a small authoritative DNS server on loopback, for the zero-account
quickstart and the tests that do not need BIND.

It speaks real DNS over UDP and TCP (dnspython's wire format), so the production adapters
(``providers.dns.Rfc2136Dns`` for RFC 2136 updates signed with TSIG, ``DnsResolver`` for
queries) talk to it unchanged:

- **UPDATE** (RFC 2136 §2.5): add, delete an RRset, delete a name, delete one record. An update
  must be signed with one of the stand-in's TSIG keys (a wrong key or signature is answered
  NOTAUTH with the TSIG error BADKEY / BADSIG, as BIND does); names outside the zone -> NOTZONE.
- **QUERY**: answers from the records of its zone, NXDOMAIN for an absent name, REFUSED outside
  its zones. ``in-addr.arpa`` PTR queries are answered from ``ptr_source`` (the simulated
  Hostwinds account's reverse DNS, as ``set_rdns`` left it).

The published records are written, after every update, to a readable zone file (``zone.txt``
in the stand-in's folder, under ``.reconciler/``) so a new user can see what would be
published. It binds loopback only and changes nothing else on the host.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import dns.tsig
import dns.update

__all__ = ["DnsStandIn", "ZoneRecords"]

_LOOPBACK = ("127.0.0.1", "::1", "localhost")

Key = tuple[str, str]  # (fqdn without final dot, TYPE)


@dataclass
class ZoneRecords:
    """The RRsets of one zone: ``(name, type) -> (ttl, rdatas)``."""

    origin: str
    rrsets: dict[Key, tuple[int, list[dns.rdata.Rdata]]] = field(default_factory=dict)
    #: each RRset's zone-file lines with the records they were made of: the file is written
    #: after every update, and rendering a long TXT record (DKIM keys, SPF) character by
    #: character every time cost ~2.5 s of CPU per 100 nodes provisioned
    _lines: dict[Key, tuple[int, tuple[dns.rdata.Rdata, ...], list[str]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def names(self) -> set[str]:
        return {name for name, _ in self.rrsets}

    def to_text(self) -> str:
        lines = [
            f"; zone {self.origin} as the DNS stand-in publishes it",
            f"$ORIGIN {self.origin}.",
        ]
        for key, (ttl, rdatas) in sorted(self.rrsets.items()):
            cached = self._lines.get(key)
            if (
                cached is None
                or cached[0] != ttl
                or len(cached[1]) != len(rdatas)
                or any(a is not b for a, b in zip(cached[1], rdatas, strict=True))
            ):
                name, rtype = key
                texts = sorted(r.to_text() for r in rdatas)
                cached = (ttl, tuple(rdatas), [f"{name}. {ttl} IN {rtype} {t}" for t in texts])
                self._lines[key] = cached
            lines.extend(cached[2])
        for gone in self._lines.keys() - self.rrsets.keys():
            del self._lines[gone]
        return "\n".join(lines) + "\n"


def _key(name: dns.name.Name, rdtype: int) -> Key:
    kind = dns.rdatatype.RdataType.make(rdtype)
    return name.to_text(omit_final_dot=True).lower(), dns.rdatatype.to_text(kind)


class DnsStandIn:
    """An authoritative server for ``zone`` on ``host:port`` (UDP and TCP)."""

    def __init__(
        self,
        zone: str,
        *,
        keys: dict[str, tuple[str, str]] | None = None,
        folder: Path | None = None,
        ptr_source: Callable[[str], str | None] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if host not in _LOOPBACK:
            raise ValueError("the DNS stand-in listens on loopback only")
        self.zone = dns.name.from_text(zone.rstrip(".") + ".")
        self.records = ZoneRecords(self.zone.to_text(omit_final_dot=True).lower())
        #: key name -> (algorithm, base64 secret)
        self._keys = {
            dns.name.from_text(name.rstrip(".") + "."): dns.tsig.Key(
                dns.name.from_text(name.rstrip(".") + "."), secret, algorithm
            )
            for name, (algorithm, secret) in (keys or {}).items()
        }
        self.folder = folder
        self.ptr_source = ptr_source
        self.host = host
        self.port = port
        self.updates = 0
        self.refused_updates = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: dict[asyncio.StreamWriter, asyncio.Task[None]] = {}
        if folder is not None:
            self._load()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port)
        self.port = self._tcp.sockets[0].getsockname()[1]
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Udp(self), local_addr=(self.host, self.port)
        )
        self._udp = transport

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            tasks = list(self._conns.values())
            for writer in list(self._conns):
                writer.close()  # the handler's read ends (IncompleteReadError): no cancel
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._tcp.wait_closed()
            self._tcp = None

    # --- persistence (readable zone file) ------------------------------------------------

    @property
    def zone_file(self) -> Path | None:
        return None if self.folder is None else self.folder / "zone.txt"

    def _load(self) -> None:
        path = self.zone_file
        if path is None or not path.exists():
            return
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip() or line.startswith((";", "$")):
                continue
            try:
                rrset = dns.rrset.from_text(*_split_zone_line(line))
            except (dns.exception.DNSException, ValueError):
                continue  # a line a user edited into nonsense: skipped, the rest loads
            key = _key(rrset.name, rrset.rdtype)
            ttl, rdatas = self.records.rrsets.get(key, (rrset.ttl, []))
            rdatas.extend(rrset)
            self.records.rrsets[key] = (ttl, rdatas)

    def _save(self) -> None:
        path = self.zone_file
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(self.records.to_text(), encoding="utf-8")
        os.replace(tmp, path)

    # --- reading (for tests and the quickstart) ------------------------------------------

    def values(self, name: str, rtype: str) -> list[str]:
        found = self.records.rrsets.get((name.rstrip(".").lower(), rtype.upper()))
        if found is None:
            return []
        return sorted(r.to_text() for r in found[1])

    # --- handling ------------------------------------------------------------------------

    def handle(self, wire: bytes) -> bytes | None:
        # parsed once, the TSIG checked on the way (a message without TSIG parses as it is);
        # parsed again without the check only to answer a refused or malformed one
        try:
            message = dns.message.from_wire(wire, keyring=self._keys)
        except dns.message.UnknownTSIGKey:
            return self._refuse(wire, dns.rcode.BADKEY)
        except (dns.tsig.BadSignature, dns.tsig.BadKey, dns.tsig.BadAlgorithm):
            return self._refuse(wire, dns.rcode.BADSIG)
        except dns.tsig.BadTime:
            return self._refuse(wire, dns.rcode.BADTIME)
        except dns.exception.DNSException:
            return self._refuse(wire, None)
        if message.opcode() == dns.opcode.UPDATE:
            assert isinstance(message, dns.update.UpdateMessage)
            return self._update(message)
        if message.opcode() == dns.opcode.QUERY:
            return self._query(message)
        return self._plain(message, dns.rcode.NOTIMP)

    def _refuse(self, wire: bytes, tsig_error: int | None) -> bytes | None:
        """The answer to a message whose TSIG failed (``tsig_error``) or that did not parse:
        NOTAUTH with the TSIG error, FORMERR for a signed message that is malformed past its
        header, nothing for what is not DNS at all."""
        try:
            unsigned = dns.message.from_wire(wire, keyring=False)
        except dns.exception.DNSException:
            return None  # not DNS: dropped, as a server would
        if tsig_error is not None and unsigned.had_tsig:
            return self._tsig_error(unsigned, tsig_error)
        return self._plain(unsigned, dns.rcode.FORMERR)

    def _plain(self, query: dns.message.Message, rcode: int) -> bytes:
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.Rcode.make(rcode))
        return response.to_wire()

    def _tsig_error(self, query: dns.message.Message, error: int) -> bytes:
        self.refused_updates += query.opcode() == dns.opcode.UPDATE
        response = dns.message.make_response(query)
        response.set_rcode(dns.rcode.NOTAUTH)
        keyname = query.keyname
        algorithm = query.keyalgorithm
        assert keyname is not None
        assert algorithm is not None
        response.use_tsig(dns.tsig.Key(keyname, b"\x00" * 32, algorithm), tsig_error=error)
        response.want_tsig_sign = False  # an error TSIG carries no MAC (RFC 8945 §5.3.2)
        return response.to_wire()

    def _update(self, message: dns.update.UpdateMessage) -> bytes:
        if not self._keys or not message.had_tsig:
            self.refused_updates += 1
            return self._plain(message, dns.rcode.REFUSED)
        zone = message.zone[0].name if message.zone else None
        if zone != self.zone:
            self.refused_updates += 1
            return self._plain(message, dns.rcode.NOTAUTH)
        for rr in message.update:
            if not rr.name.is_subdomain(self.zone):
                self.refused_updates += 1
                return self._plain(message, dns.rcode.NOTZONE)
        rrsets = self.records.rrsets
        for rr in message.update:
            name = rr.name.to_text(omit_final_dot=True).lower()
            if rr.deleting == dns.rdataclass.ANY:
                if rr.rdtype == dns.rdatatype.ANY:
                    for key in [k for k in rrsets if k[0] == name]:
                        del rrsets[key]
                else:
                    rrsets.pop(_key(rr.name, rr.rdtype), None)
            elif rr.deleting == dns.rdataclass.NONE:
                key = _key(rr.name, rr.rdtype)
                if key in rrsets:
                    ttl, rdatas = rrsets[key]
                    kept = [r for r in rdatas if r not in set(rr)]
                    if kept:
                        rrsets[key] = (ttl, kept)
                    else:
                        del rrsets[key]
            else:
                key = _key(rr.name, rr.rdtype)
                _, rdatas = rrsets.get(key, (rr.ttl, []))
                for rdata in rr:
                    if rdata not in rdatas:
                        rdatas.append(rdata)
                rrsets[key] = (rr.ttl, rdatas)
        self.updates += 1
        self._save()
        response = dns.message.make_response(message)
        return response.to_wire()

    def _query(self, message: dns.message.Message) -> bytes:
        response = dns.message.make_response(message)
        response.flags |= dns.flags.AA
        if not message.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = message.question[0]
        qname, rdtype = question.name, question.rdtype
        if rdtype == dns.rdatatype.PTR and qname.is_subdomain(dns.name.from_text("in-addr.arpa.")):
            target = self._ptr(qname)
            if target is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
            else:
                response.answer.append(
                    dns.rrset.from_text(qname, 300, "IN", "PTR", target.rstrip(".") + ".")
                )
            return response.to_wire()
        if not qname.is_subdomain(self.zone):
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        name = qname.to_text(omit_final_dot=True).lower()
        found = self.records.rrsets.get((name, dns.rdatatype.to_text(rdtype)))
        if found is not None:
            ttl, rdatas = found
            rrset = dns.rrset.RRset(qname, dns.rdataclass.IN, rdtype)
            for rdata in rdatas:
                rrset.add(rdata, ttl)
            response.answer.append(rrset)
        elif name not in self.records.names() and name != self.records.origin:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()

    def _ptr(self, qname: dns.name.Name) -> str | None:
        if self.ptr_source is None:
            return None
        labels = qname.to_text(omit_final_dot=True).split(".")[:-2]
        try:
            ip = str(ipaddress.ip_address(".".join(reversed(labels))))
        except ValueError:
            return None
        return self.ptr_source(ip)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[writer] = task
        try:
            while True:
                header = await reader.readexactly(2)
                (length,) = struct.unpack("!H", header)
                wire = await reader.readexactly(length)
                answer = self.handle(wire)
                if answer is None:
                    break
                writer.write(struct.pack("!H", len(answer)) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._conns.pop(writer, None)
            writer.close()


def _split_zone_line(line: str) -> tuple[str, int, str, str, str]:
    name, ttl, klass, rtype, rest = line.split(None, 4)
    return name, int(ttl), klass, rtype, rest


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsStandIn) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        answer = self.server.handle(data)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)
