"""A private PostgreSQL server that a test starts, stops, restarts and freezes by itself.

``initdb`` and ``postgres`` refuse to run as root, and tests run as root here: the server runs
as uid/gid 65534 through ``setpriv`` (as ourselves when not root), in a temporary folder owned
by that user, listening on 127.0.0.1 on a free port (a Unix socket in the same folder). No
system service is touched and nothing is installed.

``freeze()`` sends SIGSTOP to the postmaster and every backend (a database that accepts TCP
connections in the kernel but never answers: the worst partition), ``thaw()`` SIGCONT.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

SERVICE_UID = SERVICE_GID = 65534


def postgres_binary(name: str) -> str | None:
    """``initdb``/``pg_ctl``/``postgres`` on PATH or in the usual Debian folders."""
    found = shutil.which(name)
    if found:
        return found
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (folder / name).exists():
            return str(folder / name)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_service(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return [
        "setpriv",
        f"--reuid={SERVICE_UID}",
        f"--regid={SERVICE_GID}",
        "--clear-groups",
        "--inh-caps=-all",
        *argv,
    ]


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        os.chown(path, SERVICE_UID, SERVICE_GID)


@dataclass
class PrivatePostgres:
    root: Path
    port: int
    frozen: set[int] = field(default_factory=set)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        subprocess.run(
            _as_service(list(argv)),
            check=True,
            capture_output=True,
            timeout=timeout,
            cwd=self.root,
        )

    def init(self) -> None:
        initdb = postgres_binary("initdb")
        assert initdb is not None
        self._run(
            initdb,
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "max_connections = 60\nshared_buffers = 32MB\n"
            )

    def start(self) -> None:
        pg_ctl = postgres_binary("pg_ctl")
        assert pg_ctl is not None
        self._run(pg_ctl, "-D", str(self.data), "-l", str(self.root / "log"), "-w", "start")
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        self.thaw()
        pg_ctl = postgres_binary("pg_ctl")
        assert pg_ctl is not None
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def pids(self) -> set[int]:
        """The postmaster and all its children."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return set()
        postmaster = int(pid_file.read_text().splitlines()[0])
        found = {postmaster}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == postmaster:
                    found.add(int(entry.name))
        return found

    def freeze(self) -> None:
        for pid in sorted(self.pids()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                self.frozen.add(pid)

    def thaw(self) -> None:
        for pid in sorted(self.frozen):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen.clear()

    def terminate_sessions(self, application: str = "fleet-reconciler") -> int:
        """``pg_terminate_backend`` of every session of that application; how many."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND pid <> pg_backend_pid()",
                (application,),
            ).fetchall()
        return len(rows)

    def client_ports(self, pid: int) -> set[int]:
        """The local TCP ports of process ``pid``'s connections to this server."""
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        ports = set()
        for table in ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                    fields = line.split()
                    local, remote, inode = fields[1], fields[2], fields[9]
                    if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == self.port:
                        ports.add(int(local.rsplit(":", 1)[1], 16))
        return ports

    def terminate_sessions_of(self, pid: int) -> int:
        """``pg_terminate_backend`` of every session of process ``pid`` (found by its client
        ports), and only those; how many."""
        ports = sorted(self.client_ports(pid))
        if not ports:
            return 0
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE client_port = ANY(%s) AND pid <> pg_backend_pid()",
                (ports,),
            ).fetchall()
        return sum(1 for (done,) in rows if done)

    def sessions(self) -> int:
        """How many client sessions the server has (its own excluded)."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE client_port IS NOT NULL "
                "AND pid <> pg_backend_pid()"
            ).fetchone()
        return int(row[0]) if row else 0


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """Start a private server; stop it and remove its folder afterwards, whatever happens."""
    root = Path(tempfile.mkdtemp(prefix="fr-pg-"))
    root.chmod(0o755)
    _chown(root)
    server = PrivatePostgres(root, _free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
