"""Serving the simulator with uvicorn: in a background thread, in the current event loop, or in
the foreground (``reconcile simulator``).

We bind the listening socket ourselves, so port 0 gives a free port whose number is known
before the server starts, and a busy port fails at once with a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

import uvicorn

from providers.simulator.app import API_PATH, SimulatorApp
from providers.simulator.clocks import SimClock
from providers.simulator.faults import FaultInjector
from providers.simulator.persisting import StateFile
from providers.simulator.world import Settings, World
from reconciler.core.errors import UserError

DEFAULT_API_KEY = "simulator"


class SimulatorServeError(UserError):
    """The simulator cannot start (bad address, busy port...)."""


def build_app(
    *,
    state_path: Path | None = None,
    api_key: str = DEFAULT_API_KEY,
    build_seconds: float = 2.0,
    build_failure_rate: float = 0.0,
    resize_seconds: float = 2.0,
    seed: int = 0,
    allow_ips: Sequence[str] | None = None,
    clock: SimClock | None = None,
    persist_interval: float = 0.2,
) -> SimulatorApp:
    """A ready app; loads ``state_path`` when it exists (raises ``SimulatorStateError``).

    ``persist_interval`` 0 writes the state file after every mutation (what the embedded
    simulator uses, so a SIGKILL of the process hosting it loses nothing)."""
    if not 0.0 <= build_failure_rate <= 1.0:
        raise SimulatorServeError(
            f"build failure rate must be between 0 and 1, got {build_failure_rate}"
        )
    if build_seconds < 0 or resize_seconds < 0:
        raise SimulatorServeError("build and resize times must not be negative")
    settings = Settings(
        build_seconds=build_seconds,
        build_failure_rate=build_failure_rate,
        resize_seconds=resize_seconds,
        seed=seed,
    )
    world = World(clock=clock or SimClock(), settings=settings)
    state = StateFile(state_path) if state_path is not None else None
    if state is not None:
        state.load_into(world)
    try:
        return SimulatorApp(
            world,
            api_key=api_key,
            allow_ips=allow_ips,
            state=state,
            faults=FaultInjector(),
            persist_interval=persist_interval,
        )
    except ValueError as exc:
        raise SimulatorServeError(
            f"bad allow-list address: {exc}", hint="use IPv4 addresses such as 127.0.0.1"
        ) from exc


def bind(host: str, port: int) -> socket.socket:
    """A listening IPv4 socket, or a clear :class:`SimulatorServeError`."""
    if not 0 <= port <= 65535:
        raise SimulatorServeError(f"port must be between 0 and 65535, got {port}")
    # proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (with proto 0 it
    # does not, and every small response waits ~40 ms for a delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(2048)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise SimulatorServeError(
            f"cannot listen on {host}:{port}: {reason}",
            hint="choose another --port (0 picks a free one) or stop what is using it",
        ) from exc
    return sock


def _config(app: SimulatorApp) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
        timeout_keep_alive=5,
    )


#: event-loop passes a stop gives connections closed by their client to be seen as closed
_CLOSE_PASSES = 4


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without signal handling: the embedding program owns the signals. Asked to stop
    from its own event loop (:meth:`request_stop`), it stops at once instead of at its next
    0.1 s tick, and with nothing in flight it skips uvicorn's 0.1 s grace before closing: an
    embedded simulator's stop took ~0.19 s of every CLI run (issue 14)."""

    _stop_requested: asyncio.Event | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_stop(self) -> None:
        """Stop serving; call it from the event loop that serves."""
        self.should_exit = True
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def main_loop(self) -> None:
        # uvicorn's loop (a tick every 0.1 s, until should_exit), woken by request_stop
        self._stop_requested = wake = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 0.1)
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # a client that closed its connection just before (the CLI closes its client, then
        # the server): the loop sees that end within a few passes
        for _ in range(_CLOSE_PASSES):
            if not self.server_state.connections:
                break
            await asyncio.sleep(0)
        if self.server_state.connections or self.server_state.tasks:
            await super().shutdown(sockets)  # a grace for what is in flight
            return
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()


def _base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


class _SimulatorHost:
    """What both ways of serving share: the app, the address to bind, the URL once up."""

    def __init__(
        self,
        *,
        state_path: Path | None = None,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        build_seconds: float = 2.0,
        build_failure_rate: float = 0.0,
        resize_seconds: float = 2.0,
        seed: int = 0,
        allow_ips: Sequence[str] | None = None,
        clock: SimClock | None = None,
        persist_interval: float = 0.2,
    ) -> None:
        self._host = host
        self._port = port
        self.app = build_app(
            state_path=state_path,
            api_key=api_key,
            build_seconds=build_seconds,
            build_failure_rate=build_failure_rate,
            resize_seconds=resize_seconds,
            seed=seed,
            allow_ips=allow_ips,
            clock=clock,
            persist_interval=persist_interval,
        )
        self._socket: socket.socket | None = None
        self._server: _EmbeddedServer | None = None
        self._url: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(url={self._url!r})"

    @property
    def world(self) -> World:
        """The live world (read it under ``server.app.lock`` while the server runs)."""
        return self.app.world

    @property
    def clock(self) -> SimClock:
        return self.app.world.clock

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the simulator is not running; call start() first")
        return self._url

    @property
    def api_url(self) -> str:
        return self.url + API_PATH


class SimulatorServer(_SimulatorHost):
    """The simulator on a loopback port, served from a background thread.

    Keyword arguments: see :func:`build_app`, plus ``host`` and ``port`` (0: a free one).

    ::

        with SimulatorServer(state_path=tmp / "sim.json", build_seconds=0) as sim:
            client = HostwindsClient(api_url=sim.api_url, api_key="simulator")
    """

    _thread: threading.Thread | None = None
    _failure: BaseException | None = None

    def start(self, timeout: float = 10.0) -> str:
        """Serve in a thread; returns the base URL once the port accepts connections."""
        if self._thread is not None:
            return self.url
        sock = bind(self._host, self._port)
        server = _EmbeddedServer(_config(self.app))
        self._socket, self._server = sock, server
        self.app.closing.clear()

        def run() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # surfaced by start()
                self._failure = exc

        thread = threading.Thread(target=run, name="hostwinds-simulator", daemon=True)
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise SimulatorServeError(
                    f"the simulator did not start: {self._failure or 'timed out'}"
                )
            time.sleep(0.005)
        self._url = _base_url(sock)
        return self._url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (idempotent) and write the state one last time."""
        self.app.closing.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()
        self._thread = self._server = self._socket = None
        self._url = None
        self.app.flush_changes()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class AsyncSimulatorServer(_SimulatorHost):
    """The same, served as a task in the running event loop (``async with``)."""

    _task: asyncio.Task[None] | None = None

    async def start(self, startup_seconds: float = 10.0) -> str:
        if self._task is not None:
            return self.url
        sock = bind(self._host, self._port)
        server = _EmbeddedServer(_config(self.app))
        self._socket, self._server = sock, server
        self.app.closing.clear()
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        deadline = time.monotonic() + startup_seconds
        while not server.started:
            if self._task.done() or time.monotonic() > deadline:
                await self.stop()
                raise SimulatorServeError("the simulator did not start")
            await asyncio.sleep(0.005)
        self._url = _base_url(sock)
        return self._url

    async def stop(self) -> None:
        self.app.closing.set()
        if self._server is not None:
            self._server.request_stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await self._task
        if self._socket is not None:
            self._socket.close()
        self._task = self._server = self._socket = None
        self._url = None
        self.app.flush_changes()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def serve_foreground(
    app: SimulatorApp, sock: socket.socket, announce: Callable[[], None] | None = None
) -> None:
    """Serve until SIGINT/SIGTERM, then return normally (used by ``reconcile simulator``).

    The signal handlers go in before ``announce`` runs, so a signal sent as soon as the URL is
    printed still stops the server cleanly (exit status 0) instead of killing it.
    """
    server = _EmbeddedServer(_config(app))

    def stop(signum: int, frame: FrameType | None) -> None:
        if server.should_exit and signum == signal.SIGINT:
            server.force_exit = True
        server.should_exit = True
        app.closing.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if announce is not None:
            announce()
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        app.closing.set()
        sock.close()
        app.flush_changes()
