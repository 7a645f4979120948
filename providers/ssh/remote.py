"""``RemoteExecPort`` over SSH with asyncssh: key authentication only, host keys pinned.

- **Authentication**: the operator's private key file (named outside the spec; the matching
  public key is the one registered with Hostwinds and given at ``add_instance`` as ``keys[]``).
  No password, no agent, no keyboard-interactive.
- **Host keys**: on first contact (right after the server becomes ACTIVE) the caller reads the
  key the node presents (``scan_host_key``) and records it in the store. Every later connection
  trusts exactly that key, and only its algorithm is offered, so a node cannot switch to
  another key type. A different key raises ``HostKeyMismatchError`` (never retried until it
  works; the caller quarantines the node). There is no ``known_hosts=None`` anywhere.
- **Errors**: unreachable, reset, or a timeout -> ``TransientError``; login refused ->
  ``AuthError``; a command's own exit status is returned, not raised.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncssh

from reconciler.core.errors import AuthError, HostKeyMismatchError, TransientError, UserError
from reconciler.core.fleet import HostKey
from reconciler.core.ports import CommandResult, RemoteTarget

__all__ = ["MAX_OUTPUT", "SshRemote", "host_key_of", "load_client_key"]

#: at most this many bytes of a command's stdout / stderr are kept
MAX_OUTPUT = 256 * 1024
#: OpenSSH's default ciphers, AES-GCM first: with AES instructions one AEAD call per packet,
#: where asyncssh's chacha20-poly1305 builds two cipher contexts per packet (~3x the CPU of a
#: short command's session on both ends). Every one is an OpenSSH default, so any sshd agrees.
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
)
#: the host key algorithms a first contact accepts: asyncssh's default plain public keys (no
#: certificates: nothing could vouch for one before a key is pinned)
PLAIN_HOST_KEY_ALGS = [
    alg.decode("ascii") for alg in asyncssh.public_key.get_default_public_key_algs()
]
AUTH_HINT = (
    "the node refused the SSH key: check that the operator's SSH private key matches the "
    "public key registered at Hostwinds and named in provider.ssh_keys"
)


def host_key_of(key: asyncssh.SSHKey) -> HostKey:
    public = key.export_public_key("openssh").decode("ascii").strip()
    return HostKey(
        algorithm=key.get_algorithm(),
        public=" ".join(public.split()[:2]),
        fingerprint=key.get_fingerprint("sha256"),
    )


def load_client_key(path: Path, passphrase: str | None = None) -> asyncssh.SSHKey:
    """The operator's private key (a file named outside the spec)."""
    try:
        return asyncssh.read_private_key(str(path), passphrase)
    except (OSError, asyncssh.KeyImportError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise UserError(
            f"cannot read the SSH private key {path}: {reason}",
            hint="name an OpenSSH private key file (ssh-keygen -t ed25519) in the operator "
            "settings; its public key must be registered at Hostwinds",
        ) from exc


async def _run(
    conn: asyncssh.SSHClientConnection, command: str, stdin: bytes | None, time_limit: float
) -> asyncssh.SSHCompletedProcess:
    if stdin:
        return await conn.run(command, input=stdin, check=False, timeout=time_limit, encoding=None)
    # stdin at end of file at once, as `ssh host cmd </dev/null`
    return await conn.run(
        command, stdin=asyncssh.DEVNULL, check=False, timeout=time_limit, encoding=None
    )


def _clip(data: bytes | str | None) -> str:
    if data is None:
        return ""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_OUTPUT:
        raw = raw[-MAX_OUTPUT:]
    return raw.decode("utf-8", "replace")


class SshRemote:
    """Runs commands on nodes as ``username`` with ``client_key``."""

    def __init__(
        self,
        client_key: asyncssh.SSHKey,
        *,
        connect_timeout: float = 20.0,
        idle_seconds: float = 60.0,
    ) -> None:
        self._client_key = client_key
        self.connect_timeout = connect_timeout
        #: a connection unused this long is closed (a daemon talks to many nodes)
        self.idle_seconds = idle_seconds
        self._connections: dict[
            tuple[str, int, str, str], tuple[asyncssh.SSHClientConnection, float]
        ] = {}
        self._locks: dict[tuple[str, int, str, str], asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"SshRemote(key={self._client_key.get_fingerprint('sha256')})"

    # --- connections: one per node, reused while in use, closed when idle ----------------

    @staticmethod
    def _key(target: RemoteTarget) -> tuple[str, int, str, str]:
        pinned = target.host_key.fingerprint if target.host_key else ""
        return target.host, target.port, target.username, pinned

    async def _connection(
        self, target: RemoteTarget, trusted: asyncssh.SSHKey, pinned: HostKey
    ) -> asyncssh.SSHClientConnection:
        key = self._key(target)
        now = time.monotonic()
        for other, (conn, used) in list(self._connections.items()):
            if other != key and now - used > self.idle_seconds:
                del self._connections[other]
                conn.close()
        cached = self._connections.get(key)
        if cached is not None:
            self._connections[key] = (cached[0], now)
            return cached[0]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._connections.get(key)
            if cached is not None:
                return cached[0]
            conn = await asyncio.wait_for(
                asyncssh.connect(
                    target.host,
                    target.port,
                    username=target.username,
                    known_hosts=([trusted], [], []),
                    server_host_key_algs=[pinned.algorithm],
                    **self._login_options(),
                ),
                self.connect_timeout,
            )
            self._connections[key] = (conn, time.monotonic())
            return conn

    def _login_options(self) -> dict[str, Any]:
        """What every login uses: our ciphers, our key only (no agent, no password, no
        keyboard-interactive), and no ``~/.ssh/config`` of the host."""
        return {
            "encryption_algs": list(CIPHERS),
            "client_keys": [self._client_key],
            "agent_path": None,
            "password": None,
            "kbdint_auth": False,
            "preferred_auth": "publickey",
            "config": None,
        }

    def _drop(self, target: RemoteTarget) -> None:
        cached = self._connections.pop(self._key(target), None)
        if cached is not None:
            cached[0].close()

    async def aclose(self) -> None:
        connections = [conn for conn, _ in self._connections.values()]
        self._connections.clear()
        for conn in connections:
            conn.close()
        for conn in connections:
            await conn.wait_closed()

    async def scan_host_key(self, host: str, port: int, *, username: str | None = None) -> HostKey:
        """The key ``host`` presents on first contact. With ``username``, the same connection
        logs in (key authentication, as every connection does) and is kept for the commands
        that follow over the key it returns: one key exchange per node instead of two. The
        key is accepted on this first contact only (trust on first use, what the caller pins
        and records before it runs anything); the kept connection is reused only for targets
        pinned to exactly that key. A login refused here still returns the key (the commands
        report the refusal)."""
        if username is None:
            return await self._scan(host, port)
        presented: list[asyncssh.SSHKey] = []

        class _FirstContact(asyncssh.SSHClient):
            def validate_host_public_key(
                self, host: str, addr: str, port: int, key: asyncssh.SSHKey
            ) -> bool:
                presented.append(key)
                return True

        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(
                    host,
                    port,
                    username=username,
                    client_factory=_FirstContact,
                    # nothing trusted yet (never ``known_hosts=None``): the key is taken by
                    # ``validate_host_public_key`` above; plain keys only, as a scan sees them
                    known_hosts=([], [], []),
                    x509_trusted_certs=None,
                    server_host_key_algs=PLAIN_HOST_KEY_ALGS,
                    **self._login_options(),
                ),
                self.connect_timeout,
            )
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            if presented:  # the key came in the key exchange; the login failed after it
                return host_key_of(presented[0])
            raise TransientError(f"cannot read the SSH host key of {host}:{port}: {exc}") from exc
        key = host_key_of(presented[0])
        target = RemoteTarget(host, port, username, key)
        self._drop(target)  # a connection kept for this key before (a rerun) gives way
        self._connections[self._key(target)] = (conn, time.monotonic())
        return key

    async def _scan(self, host: str, port: int) -> HostKey:
        try:
            key = await asyncio.wait_for(
                asyncssh.get_server_host_key(host, port), self.connect_timeout
            )
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise TransientError(f"cannot read the SSH host key of {host}:{port}: {exc}") from exc
        if key is None:
            raise TransientError(f"{host}:{port} presented no SSH host key")
        return host_key_of(key)

    async def run(
        self,
        target: RemoteTarget,
        command: str,
        *,
        time_limit: float,
        stdin: bytes | None = None,
    ) -> CommandResult:
        where = f"{target.username}@{target.host}:{target.port}"
        pinned = target.host_key
        if pinned is None:
            raise HostKeyMismatchError(
                f"{where}: no pinned host key; refusing to connect to an unverified node",
                hint="the pipeline pins the key on first contact; run the reconcile again",
            )
        try:
            trusted = asyncssh.import_public_key(pinned.public)
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise HostKeyMismatchError(f"{where}: the pinned host key is unreadable") from exc
        try:
            async with asyncio.timeout(self.connect_timeout + time_limit):
                reused = self._key(target) in self._connections
                conn = await self._connection(target, trusted, pinned)
                try:
                    result = await _run(conn, command, stdin, time_limit)
                except (asyncssh.ChannelOpenError, asyncssh.ConnectionLost, ConnectionError):
                    self._drop(target)
                    if not reused:
                        raise
                    # the kept connection had died (node rebooted, sshd restarted): once more
                    # on a fresh one, which verifies the host key again
                    conn = await self._connection(target, trusted, pinned)
                    try:
                        result = await _run(conn, command, stdin, time_limit)
                    except BaseException:
                        self._drop(target)
                        raise
                except BaseException:
                    self._drop(target)
                    raise
        except asyncssh.HostKeyNotVerifiable as exc:
            presented = await self._presented(target)
            raise HostKeyMismatchError(
                f"{where} presented a host key other than the pinned one "
                f"(pinned {pinned.fingerprint}, presented {presented})",
                hint="a rebuilt server or someone in the middle: the node is quarantined; "
                "check it, then replace it (reconcile node retry) or re-pin it deliberately",
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise AuthError(f"{where}: login refused ({exc.reason})", hint=AUTH_HINT) from exc
        except asyncssh.TimeoutError as exc:
            raise TransientError(f"{where}: command timed out after {time_limit:g} s") from exc
        except TimeoutError as exc:
            raise TransientError(f"{where}: no answer within the timeout") from exc
        except (OSError, asyncssh.Error) as exc:
            raise TransientError(f"{where}: {type(exc).__name__}: {exc}") from exc
        status = result.exit_status
        if status is None:
            status = 255 if result.exit_signal is None else 128 + 9
        return CommandResult(status, _clip(result.stdout), _clip(result.stderr))

    async def _presented(self, target: RemoteTarget) -> str:
        try:
            key = await asyncio.wait_for(
                asyncssh.get_server_host_key(
                    target.host,
                    target.port,
                    server_host_key_algs=[target.host_key.algorithm] if target.host_key else (),
                ),
                self.connect_timeout,
            )
        except (OSError, asyncssh.Error, TimeoutError):
            return "unknown"
        return key.get_fingerprint("sha256") if key is not None else "none"
