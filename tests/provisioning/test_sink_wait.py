"""Waiting for a test mail at the sink: the SMTP sink in this process wakes the waiter when it
stores the mail (whatever thread and event loop the waiter runs on: the daemon's engine runs
on a loop of its own), a sink read from its folder is looked at every few tens of ms, and a
wait for a mail that never comes ends at its timeout."""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from providers.mail.sink import FolderSink, MailSink
from reconciler.core.mailprobes import probe_message
from reconciler.core.ports import ReceivedMail

pytestmark = pytest.mark.anyio

ADDRESS = "probe@sink.test"


def _message(probe: str) -> bytes:
    return probe_message(
        hostname="n.mail.test", sink_address=ADDRESS, probe=probe, now=datetime.now(UTC)
    )


def _send(sink: MailSink, probe: str) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as smtp:
        smtp.sendmail("x@example.com", [ADDRESS], _message(probe))


async def test_the_wait_ends_when_the_mail_arrives_not_at_a_poll(tmp_path: Path) -> None:
    sink = MailSink(tmp_path / "sink", ADDRESS)
    sink.poll_interval = 30.0  # only the arrival can end the wait within the test
    await sink.start()
    try:
        waiter = asyncio.ensure_future(sink.wait("p-1", within=20.0))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        started = time.monotonic()
        await anyio.to_thread.run_sync(_send, sink, "p-1")
        mail = await asyncio.wait_for(waiter, 10.0)
        assert mail is not None
        assert mail.probe == "p-1"
        assert time.monotonic() - started < 5.0
        assert sink._waiters == {}  # nothing left behind
    finally:
        await sink.stop()


async def test_a_waiter_on_another_threads_loop_is_woken(tmp_path: Path) -> None:
    sink = MailSink(tmp_path / "sink", ADDRESS)
    sink.poll_interval = 30.0
    await sink.start()
    got: list[ReceivedMail | None] = []
    registered = threading.Event()

    def engine_loop() -> None:
        async def wait() -> None:
            task = asyncio.ensure_future(sink.wait("p-2", within=20.0))
            for _ in range(1000):  # until the wait is in place (10 s at most)
                if "p-2" in sink._waiters:
                    break
                await asyncio.sleep(0.01)
            registered.set()
            got.append(await task)

        asyncio.run(wait())

    thread = threading.Thread(target=engine_loop)
    thread.start()
    try:
        assert await anyio.to_thread.run_sync(registered.wait, 10.0)
        await anyio.to_thread.run_sync(_send, sink, "p-2")
        await anyio.to_thread.run_sync(thread.join, 10.0)
        assert not thread.is_alive()
        assert got
        assert got[0] is not None
        assert got[0].probe == "p-2"
    finally:
        await sink.stop()
        thread.join(10.0)


async def test_a_mail_that_never_comes_ends_the_wait_at_its_timeout(tmp_path: Path) -> None:
    sink = MailSink(tmp_path / "sink", ADDRESS)
    await sink.start()
    try:
        started = time.monotonic()
        assert await sink.wait("never", within=0.3) is None
        assert 0.25 < time.monotonic() - started < 5.0
        assert sink._waiters == {}
    finally:
        await sink.stop()


async def test_a_mail_stored_by_another_sink_is_found_in_the_folder(tmp_path: Path) -> None:
    """A sink in another process (the daemon's) writes the folder this process reads."""
    folder = tmp_path / "sink"
    reader = FolderSink(folder, ADDRESS)
    writer = MailSink(folder, ADDRESS)  # not started: it only stores, as the other process
    waiter = asyncio.ensure_future(reader.wait("p-3", within=10.0))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    writer.store("p-3", _message("p-3"), "127.0.0.1")
    mail = await asyncio.wait_for(waiter, 5.0)
    assert mail is not None
    assert mail.probe == "p-3"
    # a mail already there: no wait at all
    assert await reader.wait("p-3", within=0.0) is not None
