"""The internal mail sink: an SMTP server (aiosmtpd) that keeps each test mail as a file.

The daemon (or, for the zero-account quickstart, the simulator) runs one; nodes send their
test mail to its address and the Verify step asks ``received(probe)``. Each accepted message is
written to ``<folder>/<probe>.eml`` (atomically; messages without a probe header or over the
size limit are refused at the SMTP level), so a sink in another process is read the same way
(``FolderSink``). It accepts mail only for its own mailbox (no relaying).
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from reconciler.core.mailprobes import probe_of
from reconciler.core.ports import ReceivedMail

__all__ = ["MAX_MESSAGE_BYTES", "FolderSink", "MailSink"]

MAX_MESSAGE_BYTES = 1_000_000


class FolderSink:
    """``MailSinkPort`` reading the files a sink writes (any process)."""

    #: how often ``wait`` looks at the folder (a sink in another process writes it)
    poll_interval = 0.05

    def __init__(self, folder: Path, address: str) -> None:
        self.folder = folder
        self._address = address

    @property
    def address(self) -> str:
        return self._address

    async def received(self, probe: str) -> ReceivedMail | None:
        path = self.folder / f"{probe}.eml"
        if "/" in probe or not path.is_file():
            return None
        raw = path.read_bytes()
        peer_file = path.with_suffix(".peer")
        peer = peer_file.read_text().strip() if peer_file.exists() else ""
        return ReceivedMail(probe, raw, peer)

    async def wait(self, probe: str, within: float) -> ReceivedMail | None:
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        while True:
            mail = await self.received(probe)
            left = end - loop.time()
            if mail is not None or left <= 0:
                return mail
            await self._arrival(probe, min(self.poll_interval, left))

    async def _arrival(self, probe: str, seconds: float) -> None:
        """Returns after ``seconds`` (or sooner, when this sink stored ``probe``)."""
        await asyncio.sleep(seconds)


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook name)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.lower() != self.sink.address.lower():
            return "550 5.1.1 not a mailbox of this sink (no relaying)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or b""
        if len(raw) > MAX_MESSAGE_BYTES:
            return "552 5.3.4 message too big for the sink"
        probe = probe_of(raw)
        if probe is None:
            return "554 5.6.0 no X-Reconciler-Probe header: not a test mail"
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        self.sink.store(probe, raw, str(peer))
        return "250 2.0.0 stored"


class MailSink(FolderSink):
    """An SMTP server on ``host:port`` storing test mails under ``folder``.

    A ``wait`` for a probe is woken when this sink stores it (from whichever thread and event
    loop the waiter runs on: the daemon's engine has a loop of its own); it still looks at the
    folder every half second, for a copy of the message another sink wrote there."""

    poll_interval = 0.5

    def __init__(self, folder: Path, address: str, *, host: str = "127.0.0.1", port: int = 0):
        super().__init__(folder, address)
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        #: probe -> the futures of its waiters, with their loops
        self._waiters: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        self._guard = threading.Lock()

    def store(self, probe: str, raw: bytes, peer: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{probe}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(raw)
        path.with_suffix(".peer").write_text(peer + "\n")
        os.replace(tmp, path)
        with self._guard:
            waiters = self._waiters.pop(probe, [])
        for loop, future in waiters:
            loop.call_soon_threadsafe(_wake, future)

    async def _arrival(self, probe: str, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._guard:
            self._waiters.setdefault(probe, []).append(entry)
        try:
            if await self.received(probe) is None:  # stored before the waiter was in place
                await asyncio.wait({future}, timeout=seconds)
        finally:
            with self._guard:
                left = self._waiters.get(probe)
                if left is not None and entry in left:
                    left.remove(entry)
                    if not left:
                        del self._waiters[probe]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        handler = _Handler(self)
        server = await loop.create_server(
            lambda: SMTP(handler, data_size_limit=MAX_MESSAGE_BYTES, hostname="sink"),
            self.host,
            self.port,
        )
        self._server = server
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
