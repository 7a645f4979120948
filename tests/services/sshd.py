"""A real OpenSSH ``sshd`` on 127.0.0.1, as an unprivileged uid, for SSH and bootstrap tests.

``start_sshd()`` (or the ``sshd_server`` fixture) gives an sshd that:

* listens on a free loopback port, with its own host key (ed25519, made by ``ssh-keygen``);
* accepts only public keys: a client key pair is generated for the test (``client_key``), and
  ``known_hosts`` pins the host key (``[127.0.0.1]:PORT ssh-ed25519 ...``);
* runs as uid 65534 when we are root (``setpriv``; as ourselves otherwise), with nss_wrapper
  (``LD_PRELOAD=libnss_wrapper.so``) giving it a passwd of its own: one user (``user``, default
  ``fleet``; may be called ``root`` to look like a fresh VPS, it still has uid 65534) whose shell
  is ``/bin/sh`` and whose home is ``<folder>/home``; ``AuthorizedKeysFile`` is in that home;
* gives every session ``PATH=<folder>/stubs:/usr/local/bin:/usr/bin:/bin``: the stubs folder
  comes first and has stand-ins for ``apt-get``, ``dpkg``, ``systemctl``, ``ufw`` ... that log
  their arguments and succeed (``stub_calls()`` reads the log; ``add_stub`` adds or replaces
  one). Nothing the session runs can install a package or start a service on the host.

The session's environment also carries ``FLEET_SERVICE_ID``: ``stop()`` kills every process
that has it, so a bootstrap that daemonized itself (``setsid``, ``nohup``) dies with the server.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.services.environment import ServiceEnv
from tests.services.processes import (
    MARKER_VAR,
    ServiceProcess,
    ServiceStartError,
    chown_to_service,
    drop_privileges_argv,
    free_port,
    remove_tree,
    service_dir,
    service_ids,
    stage,
    stage_file,
    wait_until,
)

START_TIMEOUT = 30.0

# Commands a bootstrap may call that would change a real machine: stubs log and succeed.
DEFAULT_STUBS = (
    "apt",
    "apt-get",
    "apt-mark",
    "dpkg",
    "dpkg-reconfigure",
    "systemctl",
    "service",
    "update-rc.d",
    "ufw",
    "iptables",
    "nft",
    "sysctl",
    "useradd",
    "usermod",
    "groupadd",
    "chpasswd",
    "hostnamectl",
    "timedatectl",
    "postfix",
    "postmap",
    "newaliases",
    "fail2ban-client",
    "reboot",
    "shutdown",
)

_STUB_BODY = """#!/bin/sh
# Stub from tests/services/sshd.py: logs its name and arguments, then {action}.
printf '%s\\0' "$#" "{name}" "$@" >> '{log}'
{tail}
"""


@dataclass(frozen=True)
class StubCall:
    tool: str
    args: tuple[str, ...]


@dataclass
class SshdServer:
    env: ServiceEnv
    folder: Path
    port: int
    user: str
    uid: int
    gid: int
    process: ServiceProcess | None = None
    host: str = "127.0.0.1"
    host_public_key: str = ""
    extra_config: list[str] = field(default_factory=list)

    # --- paths -------------------------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def stubs(self) -> Path:
        return self.folder / "stubs"

    @property
    def stub_log(self) -> Path:
        return self.folder / "log" / "stubs.log"

    @property
    def client_key(self) -> Path:
        """The client's private key (ed25519, no passphrase, owned by us, 0600)."""
        return self.folder / "client" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.folder / "client" / "known_hosts"

    @property
    def session_path(self) -> str:
        return f"{self.stubs}:/usr/local/bin:/usr/bin:/bin"

    def log(self) -> str:
        with contextlib.suppress(FileNotFoundError):
            return (self.folder / "log" / "sshd.log").read_text(errors="replace")
        return ""

    # --- stubs -------------------------------------------------------------------------------

    def add_stub(self, name: str, script: str | None = None, *, exit_code: int = 0) -> Path:
        """Put `name` first on the session's PATH: logs its call, then runs `script` (sh code,
        with "$@" the arguments) or exits with `exit_code`."""
        if "/" in name or not name:
            raise ValueError(f"bad stub name {name!r}")
        tail = script if script is not None else f"exit {exit_code}"
        action = "runs its script" if script is not None else f"exits {exit_code}"
        path = self.stubs / name
        path.write_text(_STUB_BODY.format(name=name, log=self.stub_log, tail=tail, action=action))
        path.chmod(0o755)
        return path

    def stub_calls(self) -> list[StubCall]:
        """Every stub call so far, in order."""
        try:
            data = self.stub_log.read_bytes()
        except FileNotFoundError:
            return []
        fields = data.split(b"\0")
        calls: list[StubCall] = []
        i = 0
        while i < len(fields) - 1:
            count = int(fields[i])
            tool = fields[i + 1].decode(errors="replace")
            args = tuple(f.decode(errors="replace") for f in fields[i + 2 : i + 2 + count])
            calls.append(StubCall(tool, args))
            i += 2 + count
        return calls

    # --- client side -------------------------------------------------------------------------

    def asyncssh_options(self) -> dict[str, object]:
        """Keyword arguments for ``asyncssh.connect`` (host key pinned, our client key)."""
        return {
            "host": self.host,
            "port": self.port,
            "username": self.user,
            "client_keys": [str(self.client_key)],
            "known_hosts": str(self.known_hosts),
            "agent_path": None,
            "config": [],
        }

    def ssh_argv(self, *command: str) -> list[str]:
        """argv for OpenSSH's client running `command` on this server (strict host key check)."""
        ssh = self.env.require_command("ssh")
        return [
            str(ssh),
            "-F",
            "/dev/null",
            "-i",
            str(self.client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-p",
            str(self.port),
            f"{self.user}@{self.host}",
            "--",
            *command,
        ]

    # --- life cycle --------------------------------------------------------------------------

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


def _keygen(env: ServiceEnv, path: Path, comment: str) -> str:
    keygen = env.require_command("ssh-keygen")
    subprocess.run(
        [str(keygen), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        env=env.tool_env(),
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


def _prepare(env: ServiceEnv, user: str, extra_config: list[str]) -> SshdServer:
    uid, gid = service_ids()
    folder = service_dir("sshd")
    server = SshdServer(
        env=env,
        folder=folder,
        port=free_port(),
        user=user,
        uid=uid,
        gid=gid,
        extra_config=extra_config,
    )
    etc = folder / "etc"
    etc.mkdir(mode=0o755)  # ours (read-only for the service uid)
    server.stubs.mkdir(mode=0o755)  # ours: the session cannot change its stubs
    for sub in ("home", "log"):
        (folder / sub).mkdir(mode=0o755)
        chown_to_service(folder / sub)
    (server.home / ".ssh").mkdir(mode=0o700)
    chown_to_service(server.home / ".ssh")
    client = folder / "client"
    client.mkdir(mode=0o700)  # ours only: the service uid cannot read the client's key

    host_key = etc / "ssh_host_ed25519_key"
    host_pub = _keygen(env, host_key, "fleet-test-host")
    chown_to_service(host_key)
    server.host_public_key = host_pub
    key_type, key_data = host_pub.split()[:2]
    server.known_hosts.write_text(f"[{server.host}]:{server.port} {key_type} {key_data}\n")

    client_pub = _keygen(env, server.client_key, "fleet-test-client")
    authorized = server.home / ".ssh" / "authorized_keys"
    authorized.write_text(client_pub + "\n")
    authorized.chmod(0o600)
    chown_to_service(authorized)

    (etc / "passwd").write_text(f"{user}:x:{uid}:{gid}:fleet node stand-in:{server.home}:/bin/sh\n")
    (etc / "group").write_text(f"{user}:x:{gid}:\n")
    server.stub_log.touch()
    server.stub_log.chmod(0o644)
    chown_to_service(server.stub_log)
    for name in DEFAULT_STUBS:
        server.add_stub(name)
    server.add_stub("sudo", 'exec "$@"')  # the stand-in user runs it as itself
    return server


def _write_config(server: SshdServer, marker: str) -> Path:
    etc = server.folder / "etc"
    lines = [
        f"Port {server.port}",
        f"ListenAddress {server.host}",
        f"HostKey {etc / 'ssh_host_ed25519_key'}",
        f"PidFile {server.folder / 'log' / 'sshd.pid'}",
        f"AuthorizedKeysFile {server.home / '.ssh' / 'authorized_keys'}",
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "UsePAM no",
        "StrictModes yes",
        f"AllowUsers {server.user}",
        "PermitUserEnvironment no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "X11Forwarding no",
        "PrintMotd no",
        "UseDNS no",
        "LogLevel VERBOSE",
        "MaxStartups 100:30:200",
        "Subsystem sftp internal-sftp",
        f"SetEnv PATH={server.session_path} {MARKER_VAR}={marker}",
        *server.extra_config,
    ]
    conf = etc / "sshd_config"
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o644)
    return conf


def _start(server: SshdServer) -> None:
    env = server.env
    sshd, libs = stage(env, "sshd")
    nss_wrapper = stage_file(env, "libnss_wrapper.so")
    etc = server.folder / "etc"
    marker = secrets.token_hex(8)
    conf = _write_config(server, marker)
    run_env = {
        "PATH": "/usr/bin:/bin",
        "LD_PRELOAD": str(nss_wrapper),
        "NSS_WRAPPER_PASSWD": str(etc / "passwd"),
        "NSS_WRAPPER_GROUP": str(etc / "group"),
    }
    if libs:
        run_env["LD_LIBRARY_PATH"] = libs
    # sshd -t as the service uid: a bad option or an unreadable key fails here, clearly.
    check = subprocess.run(
        [*drop_privileges_argv(env), str(sshd), "-t", "-f", str(conf)],
        env=run_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if check.returncode != 0:
        raise ServiceStartError(f"sshd -t refused {conf}: {check.stdout}{check.stderr}")
    server.process = ServiceProcess(
        "sshd",
        # sshd must be started by its absolute path: it re-executes itself per connection.
        [*drop_privileges_argv(env), str(sshd), "-D", "-e", "-f", str(conf)],
        env=run_env,
        cwd=server.folder,
        log_path=server.folder / "log" / "sshd.log",
        marker=marker,
    )
    process = server.process
    wait_until(
        lambda: _listening(server) and "Server listening" in process.log(),
        timeout=START_TIMEOUT,
        what=f"sshd on 127.0.0.1:{server.port}",
        process=process,
    )


def _listening(server: SshdServer) -> bool:
    try:
        with socket.create_connection((server.host, server.port), timeout=1) as conn:
            conn.settimeout(1)
            return conn.recv(64).startswith(b"SSH-2.0-OpenSSH")
    except OSError:
        return False


@contextlib.contextmanager
def start_sshd(
    env: ServiceEnv, *, user: str = "fleet", extra_config: list[str] | None = None
) -> Iterator[SshdServer]:
    """sshd on a free loopback port; stopped (whole tree) and its folder removed on exit."""
    env.require_binary("sshd")
    env.require_binary("libnss_wrapper.so")
    last_error: Exception | None = None
    for _ in range(3):
        server = _prepare(env, user, list(extra_config or []))
        try:
            _start(server)
        except ServiceStartError as exc:
            last_error = exc
            server.stop()
            remove_tree(server.folder)
            if "Address already in use" in str(exc):
                continue
            raise
        except BaseException:
            server.stop()
            remove_tree(server.folder)
            raise
        try:
            yield server
        finally:
            server.stop()
            remove_tree(server.folder)
        return
    raise ServiceStartError(f"sshd did not start on a free port three times: {last_error}")
