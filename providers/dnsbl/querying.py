"""A DNS stub client for DNSBL look-ups: many A queries in flight over one UDP socket.

Why not dnspython's ``asyncresolver`` alone: it opens a socket per query, waits for each one
alone (``wait_for`` per query) and builds and parses full ``dns.message`` objects, about
0.5 ms of CPU per query. A DNSBL check is thousands of tiny, identical questions (``A`` of
``<reversed ip>.<zone>``) whose answers are a few ``127.0.0.x`` records, so here:

- one connected UDP socket per resolver carries up to ``max_in_flight`` queries, read straight
  from the selector (every waiting datagram per wake-up, no transport object); answers are
  matched by id **and** question (name, type, class: what ``dns.message.Message.is_response``
  checks), so a late, forged or stray datagram is ignored;
- queries are encoded directly (a 12-byte header and the name's labels) and the common answers
  (A records, NXDOMAIN or NODATA with an SOA for the negative TTL) are read by a small parser;
  anything it does not understand is handed to dnspython (``dns.message.from_wire``), and a
  truncated answer is asked again over TCP with dnspython (``dns.asyncquery.tcp``);
- one sweeper task walks the deadlines (in send order): a lost datagram is sent once more,
  then the query gives up.

Failures are reported as ``QueryFailedError`` with a kind (timeout, servfail, refused, failed);
nothing here ever puts the query name in a message (a DQS key may be inside it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_QUESTION_TAIL = b"\x00\x01\x00\x01"  # type A, class IN
_RD = 0x0100
_QR = 0x8000
_TC = 0x0200
_NOERROR, _SERVFAIL, _NXDOMAIN, _REFUSED = 0, 2, 3, 5


class QueryFailedError(Exception):
    """A query that got no usable answer. ``kind``: timeout, servfail, refused, failed."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Answer:
    rcode: int
    addresses: tuple[str, ...]
    ttl: int  # of the A records, or the negative TTL (SOA) for NXDOMAIN / no data


def encode_name(name: str) -> bytes:
    """``a.b.example`` -> its uncompressed wire form, lower-cased (ASCII names only)."""
    text = name.rstrip(".").lower()
    if not text or len(text) > 253 or not text.isascii():
        raise ValueError("not a DNS name of 1-253 ASCII characters")
    parts = []
    for label in text.split("."):
        if not 1 <= len(label) <= 63:
            raise ValueError("a DNS label has 1-63 characters")
        parts.append(bytes((len(label),)) + label.encode())
    return b"".join(parts) + b"\x00"


def _skip_name(data: bytes, offset: int) -> int:
    for _ in range(128):
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length & 0xC0:
            raise ValueError("bad label type")
        offset += 1 + length
    raise ValueError("name too long")


def parse_answer(data: bytes, question: bytes) -> tuple[int, bool, Answer]:
    """(id, truncated, answer) of an answer to ``question`` (name wire + type + class).
    ``LookupError`` when it answers another question; ``ValueError`` when this parser cannot
    read it (the caller then asks dnspython)."""
    if len(data) < 12:
        raise ValueError("short")
    qid, flags, qdcount, ancount, nscount, _ = _HEADER.unpack_from(data)
    if not flags & _QR or (flags >> 11) & 0xF:
        raise LookupError("not an answer to a query")
    end = 12 + len(question)
    if qdcount != 1 or data[12:end].lower() != question:
        raise LookupError("another question")
    rcode = flags & 0xF
    offset = end
    addresses: list[str] = []
    ttl: int | None = None
    negative: int | None = None
    for index in range(ancount + nscount):
        offset = _skip_name(data, offset)
        rtype, rclass, rttl, rdlength = _RR.unpack_from(data, offset)
        offset += _RR.size
        stop = offset + rdlength
        if stop > len(data):
            raise ValueError("truncated record")
        if index < ancount:
            if rtype == 1 and rclass == 1 and rdlength == 4:
                addresses.append(socket.inet_ntoa(data[offset:stop]))
                ttl = rttl if ttl is None else min(ttl, rttl)
        elif rtype == 6 and rdlength >= 22:
            (minimum,) = struct.unpack_from("!I", data, stop - 4)
            negative = min(rttl, minimum)
        offset = stop
    answer_ttl = (
        ttl if addresses and ttl is not None else (negative if negative is not None else 300)
    )
    return qid, bool(flags & _TC), Answer(rcode, tuple(addresses), int(answer_ttl))


def _with_dnspython(data: bytes, question: bytes) -> tuple[int, bool, Answer]:
    """The slow path: dnspython reads what the small parser could not."""
    message = dns.message.from_wire(data, ignore_trailing=True)
    if len(message.question) != 1:
        raise LookupError("another question")
    asked = message.question[0]
    if (
        (asked.name.to_wire() or b"").lower() + _QUESTION_TAIL != question
        or asked.rdtype != dns.rdatatype.A
        or asked.rdclass != dns.rdataclass.IN
    ):
        raise LookupError("another question")
    addresses: list[str] = []
    ttl: int | None = None
    for rrset in message.answer:
        if rrset.rdtype == dns.rdatatype.A and rrset.rdclass == dns.rdataclass.IN:
            addresses.extend(rdata.address for rdata in rrset)
            ttl = rrset.ttl if ttl is None else min(ttl, rrset.ttl)
    negative = 300
    for rrset in message.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset) > 0:
            negative = int(min(rrset.ttl, getattr(rrset[0], "minimum", rrset.ttl)))
    return (
        message.id,
        bool(message.flags & _TC),
        Answer(message.rcode(), tuple(addresses), ttl if addresses and ttl else negative),
    )


class Slots:
    """A counting semaphore for the look-up's hot path: ``asyncio.Semaphore`` scans its
    waiters on every acquire (``locked()``), about a tenth of a look-up's CPU here. A free
    slot is taken without awaiting; a released slot goes straight to the oldest waiter (FIFO,
    no barging), and a waiter cancelled after it was handed a slot gives it back."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, value: int) -> None:
        if value < 1:
            raise ValueError("at least one slot")
        self._free = value
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        return self._free

    async def __aenter__(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot, then cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot changes hands: _free unchanged
                return
        self._free += 1


@dataclass(eq=False, slots=True)
class _Pending:
    #: the waiting coroutine's future (``query_a``), or None with ``callback`` (``submit``)
    future: asyncio.Future[tuple[bool, Answer]] | None
    question: bytes
    wire: bytes
    tries_left: int
    callback: Callable[[tuple[bool, Answer] | QueryFailedError], None] | None = None

    def done(self) -> bool:
        return self.future is not None and self.future.done()

    def resolve(self, outcome: tuple[bool, Answer] | QueryFailedError) -> None:
        if self.future is None:
            assert self.callback is not None
            self.callback(outcome)
        elif not self.future.done():
            if isinstance(outcome, QueryFailedError):
                self.future.set_exception(outcome)
            else:
                self.future.set_result(outcome)


class _Channel:
    """One connected, non-blocking UDP socket read straight from the event loop's selector
    (``add_reader``): each wake-up drains every datagram waiting (up to ``DRAIN``), where an
    asyncio datagram transport reads one per loop iteration; sends go straight to the socket
    (a full send buffer counts as a lost datagram: the sweeper sends it again). Every query
    waits the same ``per_attempt``, so deadlines are kept in send order in a deque that one
    sweeper task walks (cheaper than a timer per query)."""

    DRAIN = 512
    MAX_DATAGRAM = 4096

    def __init__(self, sock: socket.socket, per_attempt: float) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, _Pending] = {}
        self.closed = False
        self.per_attempt = per_attempt
        self.sent = 0
        self._deadlines: deque[tuple[float, int, _Pending]] = deque()
        self._sweeper: asyncio.Task[None] | None = None
        self._ids = b""
        self.loop.add_reader(sock.fileno(), self._readable)

    def new_id(self) -> int:
        while True:
            if len(self._ids) < 2:
                self._ids = os.urandom(1024)  # unpredictable ids, one syscall per 512
            qid = int.from_bytes(self._ids[:2], "big")
            self._ids = self._ids[2:]
            if qid not in self.pending:
                return qid

    def send(self, qid: int, entry: _Pending) -> None:
        # failures are delivered from the loop, never from inside send: a caller that sends
        # its next query from the failure callback does not recurse
        if self.closed:
            self.loop.call_soon(self._fail, qid, QueryFailedError("failed", "socket closed"))
            return
        entry.tries_left -= 1
        try:
            self.sock.send(entry.wire)
        except (BlockingIOError, InterruptedError):
            pass  # the send buffer is full: lost like a dropped datagram, sent again later
        except OSError as exc:
            self.loop.call_soon(self.error_received, exc)
            return
        self.sent += 1
        loop = self.loop
        self._deadlines.append((loop.time() + self.per_attempt, qid, entry))
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        loop = self.loop
        tick = max(0.005, min(0.05, self.per_attempt / 4))
        while self._deadlines and not self.closed:
            now = loop.time()
            while self._deadlines and self._deadlines[0][0] <= now:
                _, qid, entry = self._deadlines.popleft()
                if self.pending.get(qid) is not entry or entry.done():
                    continue  # answered
                if entry.tries_left > 0:
                    self.send(qid, entry)
                else:
                    self._fail(qid, QueryFailedError("timeout", "no answer in time"))
            if self._deadlines:
                await asyncio.sleep(min(tick, max(0.0, self._deadlines[0][0] - now)))

    def _fail(self, qid: int, error: QueryFailedError) -> None:
        entry = self.pending.pop(qid, None)
        if entry is not None:
            entry.resolve(error)

    def _readable(self) -> None:
        recv = self.sock.recv
        for _ in range(self.DRAIN):
            try:
                data = recv(self.MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP port unreachable and the like
                self.error_received(exc)
                return
            self.datagram_received(data)

    def datagram_received(self, data: bytes) -> None:
        if len(data) < 12:
            return
        qid = int.from_bytes(data[:2], "big")
        entry = self.pending.get(qid)
        if entry is None or entry.done():
            return  # late, duplicate or forged: ignored
        try:
            try:
                _, truncated, answer = parse_answer(data, entry.question)
            except (ValueError, IndexError, struct.error):
                _, truncated, answer = _with_dnspython(data, entry.question)
        except (LookupError, dns.exception.DNSException, ValueError):
            return  # not an answer to this question: keep waiting for the real one
        del self.pending[qid]
        entry.resolve((truncated, answer))

    def error_received(self, exc: Exception) -> None:
        # fail what is waiting, at once (the resolver's port is closed, the network is down)
        for qid in list(self.pending):
            self._fail(qid, QueryFailedError("failed", type(exc).__name__))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for qid in list(self.pending):
            self._fail(qid, QueryFailedError("failed", "socket closed"))
        self._deadlines.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()


class StubResolver:
    """Sends recursive A queries to one resolver (``host:port``) over UDP (TCP when
    truncated). Bounded: at most ``max_in_flight`` queries wait for an answer at once (a
    resolver flooded with more drops datagrams, and a drop costs a whole timeout)."""

    def __init__(
        self,
        host: str,
        port: int = 53,
        *,
        timeout: float = 2.0,
        attempts: int = 2,
        max_in_flight: int = 256,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self._slots = Slots(max_in_flight)
        self._channel: _Channel | None = None
        self._opening = asyncio.Lock()
        self._sent = 0

    @property
    def sent(self) -> int:
        """Datagrams sent (first tries and re-sends)."""
        return self._sent + (self._channel.sent if self._channel is not None else 0)

    async def _open(self) -> _Channel:
        if self._channel is not None and not self._channel.closed:
            return self._channel
        async with self._opening:
            if self._channel is None or self._channel.closed:
                per_attempt = self.timeout / self.attempts
                try:
                    sock = await _connected_udp(self.host, self.port)
                except OSError as exc:
                    raise QueryFailedError(
                        "failed", f"cannot reach the resolver: {exc.strerror or exc}"
                    ) from exc
                self._channel = _Channel(sock, per_attempt)
            return self._channel

    async def query_a(self, name: str, wire_name: bytes | None = None) -> Answer:
        """The A records of ``name`` (ASCII, without the trailing dot); ``wire_name`` is its
        ``encode_name`` when the caller has it already."""
        question = (wire_name or encode_name(name)) + _QUESTION_TAIL
        async with self._slots:
            channel = await self._open()
            qid = channel.new_id()
            future: asyncio.Future[tuple[bool, Answer]] = channel.loop.create_future()
            entry = _Pending(
                future, question, _HEADER.pack(qid, _RD, 1, 0, 0, 0) + question, self.attempts
            )
            channel.pending[qid] = entry
            channel.send(qid, entry)
            try:
                truncated, answer = await future
            except QueryFailedError as exc:
                if exc.kind == "timeout":
                    raise QueryFailedError(
                        "timeout", f"no answer within {self.timeout:g}s"
                    ) from None
                raise
            finally:
                if channel.pending.get(qid) is entry:
                    del channel.pending[qid]
        if truncated:
            answer = await self._tcp(name)
        return _checked(answer)

    async def channel(self) -> _Channel:
        """The open channel (for ``submit``)."""
        return await self._open()

    def submit(
        self,
        channel: _Channel,
        wire_name: bytes,
        callback: Callable[[tuple[bool, Answer] | QueryFailedError], None],
    ) -> None:
        """Send one A query without a coroutine or future: ``callback`` gets (truncated,
        answer) or the failure, from the event loop, exactly once. The caller bounds what is
        in flight (``max_in_flight`` is not applied here) and reads a truncated answer again
        with ``tcp`` and ``checked``."""
        question = wire_name + _QUESTION_TAIL
        qid = channel.new_id()
        wire = _HEADER.pack(qid, _RD, 1, 0, 0, 0) + question
        entry = _Pending(None, question, wire, self.attempts, callback)
        channel.pending[qid] = entry
        channel.send(qid, entry)

    def timeout_error(self, exc: QueryFailedError) -> QueryFailedError:
        """A failure as ``query_a`` reports it (a timeout names the whole timeout)."""
        if exc.kind == "timeout":
            return QueryFailedError("timeout", f"no answer within {self.timeout:g}s")
        return exc

    async def tcp(self, name: str) -> Answer:
        return await self._tcp(name)

    async def _tcp(self, name: str) -> Answer:
        query = dns.message.make_query(name + ".", dns.rdatatype.A)
        try:
            response = await dns.asyncquery.tcp(
                query, self.host, port=self.port, timeout=self.timeout
            )
        except dns.exception.Timeout as exc:
            raise QueryFailedError("timeout", f"no TCP answer within {self.timeout:g}s") from exc
        except (OSError, dns.exception.DNSException) as exc:
            raise QueryFailedError("failed", f"TCP: {type(exc).__name__}") from exc
        _, _, answer = _with_dnspython(response.to_wire(), encode_name(name) + _QUESTION_TAIL)
        return answer

    async def aclose(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            self._sent += channel.sent
            channel.close()


async def _connected_udp(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket connected to (host, port), with room for a burst of answers."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"no address for {host}")
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.connect(address)  # UDP: no packet sent, only the peer fixed
    except OSError:
        sock.close()
        raise
    return sock


def _checked(answer: Answer) -> Answer:
    if answer.rcode == _SERVFAIL:
        raise QueryFailedError("servfail", "the resolver answered SERVFAIL")
    if answer.rcode == _REFUSED:
        raise QueryFailedError("refused", "the resolver answered REFUSED")
    if answer.rcode == _NXDOMAIN:
        return Answer(answer.rcode, (), answer.ttl)
    if answer.rcode != _NOERROR:
        raise QueryFailedError(
            "failed", f"the resolver answered {dns.rcode.to_text(dns.rcode.Rcode(answer.rcode))}"
        )
    return answer


def checked(answer: Answer) -> Answer:
    """An answer's rcode read: SERVFAIL, REFUSED and others raise ``QueryFailedError``."""
    return _checked(answer)
