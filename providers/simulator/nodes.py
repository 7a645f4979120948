"""Node stand-ins: what a freshly built VPS looks like to the provisioning steps, on loopback.

Each node stand-in is an SSH server (asyncssh) on ``127.0.0.1`` with **its own host key**
(kept in its folder, so it is the same key run after run and a test can change it), accepting
only the operator's public key. The commands a bootstrap sends run:

- as an **unprivileged user** (uid/gid 65534 when this process is root; as itself otherwise;
  if the privileges cannot be dropped the command is refused, never run as root);
- with **stub package tools first on PATH** (``apt-get``, ``systemctl``, ``ufw``, ``sysctl``,
  ``opendkim-genkey``, ``sendmail``, ``cloud-init``...: shell scripts that log what they were
  asked and change nothing outside the node's folder), and ``RECONCILER_NODE_ROOT`` pointing
  at the node's own root folder, where the bundle writes ``etc/postfix/main.cf`` and the rest;
- inside the node's folder (``<state>/nodes/<name>/``), in a new session: on timeout (or when
  the client goes away) the **whole process group is killed**. Commands started detached
  (``setsid``) on purpose, as the bootstrap runner is, bound themselves with ``timeout``.

So a new user can read under ``.reconciler/nodes/<name>/root/`` every file a bootstrap would
write on that node, and ``var/log/stub-commands.log`` lists the package and service commands it
ran. Nothing is installed, no firewall rule or service is touched, nothing runs as root.

The stand-in also plays the node's mail system for the test mail: the stub ``sendmail`` drops
the message into ``var/spool/outbox/``; the stand-in signs it with the node's DKIM key (the key
the stub ``opendkim-genkey`` made inside the node's folder, read where OpenDKIM would read it)
and relays it by SMTP to the sink, as Postfix with the OpenDKIM milter would.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

from reconciler.core.errors import UserError
from reconciler.core.fleet import HostKey
from reconciler.core.ports import CommandResult, RemoteExecPort, RemoteTarget

__all__ = [
    "UNPRIVILEGED_UID",
    "NodeStandIn",
    "NodeStandIns",
    "StandInError",
    "StandInRemote",
    "check_reachable",
]

UNPRIVILEGED_UID = 65534  # nobody / nogroup on Debian and Ubuntu
#: util-linux ``setpriv`` from the system's own folders (never from a PATH we do not control)
SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin")
MAX_COMMAND_SECONDS = 900.0
STUBS_VERSION = "1"


class StandInError(UserError):
    """A node stand-in cannot run safely here (it refuses instead of running as root)."""


def reachable(folder: Path, uid: int) -> bool:
    try:
        check_reachable(folder, uid)
    except StandInError:
        return False
    return True


def check_reachable(folder: Path, uid: int) -> None:
    """The unprivileged user must be able to reach ``folder`` (every parent searchable)."""
    if os.geteuid() != 0:
        return
    for parent in [folder.resolve(), *folder.resolve().parents]:
        mode = parent.stat().st_mode
        owner = parent.stat().st_uid
        if owner == uid:
            continue
        if not mode & stat.S_IXOTH:
            raise StandInError(
                f"node stand-ins run commands as uid {uid}, which cannot reach {folder} "
                f"({parent} is not searchable by other users)",
                hint="put the state folder where an unprivileged user can reach it, e.g. "
                "RECONCILER_STATE_DIR=/var/tmp/fleet-state (nothing runs as root)",
            )


# --- stub tools ---------------------------------------------------------------------------

_STUB_HEADER = """#!/bin/sh
# stand-in stub: logs the call, changes nothing outside the node's folder
ROOT="${RECONCILER_NODE_ROOT:?}"
[ -d "$ROOT/var/log" ] || mkdir -p "$ROOT/var/log"
printf '%s\\n' "${0##*/} $*" >> "$ROOT/var/log/stub-commands.log"
"""

_STUBS: dict[str, str] = {
    "apt-get": "exit 0\n",
    "apt": "exit 0\n",
    "dpkg": "exit 0\n",
    "python3": (
        # python3 -m venv DIR: a venv of stubs (the agent is not really installed)
        'if [ "$1" = -m ] && [ "$2" = venv ]; then mkdir -p "$3/bin"\n'
        "  for t in pip reconcile; do printf '#!/bin/sh\\nexit 0\\n' > \"$3/bin/$t\";"
        ' chmod 755 "$3/bin/$t"; done\nfi\nexit 0\n'
    ),
    "ufw": 'case "$1" in status) echo "Status: active";; esac\nexit 0\n',
    "sysctl": "exit 0\n",
    "hostnamectl": "exit 0\n",
    "chown": "exit 0\n",
    "useradd": "exit 0\n",
    "usermod": "exit 0\n",
    "fail2ban-client": 'case "$1" in ping) echo "Server replied: pong";; esac\nexit 0\n',
    "postfix": "exit 0\n",
    "postmap": "exit 0\n",
    "newaliases": "exit 0\n",
    "cloud-init": (
        # first boot: the stand-in holds a marker while "unattended upgrades" run
        'if [ "$1" = status ]; then\n'
        '  n=0; while [ -e "$ROOT/run/first-boot" ]; do n=$((n+1)); [ $n -gt 600 ] && exit 1;'
        " sleep 0.1; done\n"
        '  echo "status: done"\nfi\nexit 0\n'
    ),
    "systemctl": (
        'mkdir -p "$ROOT/var/lib/stub-systemd"\n'
        'act="$1"; shift; d="$ROOT/var/lib/stub-systemd"\n'
        'for u in "$@"; do case "$u" in --*) continue;; esac\n'
        '  case "$act" in\n'
        '    enable|start|restart|reload|reload-or-restart) echo active > "$d/$u";;\n'
        '    stop|disable) rm -f "$d/$u";;\n'
        '    is-active) [ -e "$d/$u" ] || { echo inactive; exit 3; }; echo active;;\n'
        "  esac\ndone\nexit 0\n"
    ),
    "opendkim-genkey": (
        # opendkim-genkey -b BITS -D DIR -d DOMAIN -s SELECTOR: a real RSA key made here
        "bits=2048; dir=.; sel=default\n"
        'while [ $# -gt 0 ]; do case "$1" in -b) bits="$2"; shift;; -D) dir="$2"; shift;;'
        ' -s) sel="$2"; shift;; esac; shift; done\n'
        # benchmarks measuring the tool's own time give a ready key (RECONCILER_STANDIN_KEY)
        'if [ -n "${RECONCILER_STANDIN_KEY:-}" ]; then\n'
        '  (umask 077; cat "$RECONCILER_STANDIN_KEY" > "$dir/$sel.private") || exit 1\n'
        "else\n"
        '  (umask 077; openssl genrsa -out "$dir/$sel.private" "$bits" 2>/dev/null) || exit 1\n'
        "fi\n"
        'pub=$(openssl rsa -in "$dir/$sel.private" -pubout -outform DER 2>/dev/null'
        ' | base64 | tr -d "\\n")\n'
        'printf \'%s._domainkey IN TXT ( "v=DKIM1; k=rsa; p=%s" )\\n\' "$sel" "$pub"'
        ' > "$dir/$sel.txt"\n'
        "exit 0\n"
    ),
    "sendmail": (
        # a name of its own without a ``date`` process: this shell's pid and a counter past
        # any name in use (the stand-in moves delivered mail to ``sent/`` under its name)
        'o="$ROOT/var/spool/outbox"; [ -d "$o" ] || mkdir -p "$o"\n'
        'n=0; while [ -e "$o/$$.$n.tmp" ] || [ -e "$o/$$.$n.eml" ]'
        ' || [ -e "$o/../sent/$$.$n.eml" ]; do n=$((n+1)); done\n'
        'f="$o/$$.$n"\n'
        'cat > "$f.tmp" && mv "$f.tmp" "$f.eml"\nexit 0\n'
    ),
}


#: ``instant_bundle`` (benchmarks: "stand-ins whose steps take zero time"): ``setsid`` on the
#: node's PATH finishes the bundle's run at once instead of starting ``run.sh``. It does what a
#: finished run leaves behind, with no package tool, script step or key generation: the
#: bundle's files copied into the node's root, the DKIM key in place (the ready key when one
#: is given, its public half read from ``<key>.pub`` when that was precomputed), ``dkim.pub``,
#: the services marked active, ``status`` = done and the lock released. Any other ``setsid``
#: call goes to the real one. The sessions, uploads and mail of the tool are all still real.
#: With the ready key it starts four processes (``cp``, ``mkdir``, ``mv``, ``rmdir``): the
#: rest is the shell's own ``read``/``printf``/``case`` (each process is CPU the benchmark
#: would charge to the machine the tool runs on); it writes no ``started_at``/``finished_at``
#: (the run takes no time).
_INSTANT_SETSID = """\
if [ "${1:-}" != nohup ] || [ "${2:-}" != sh ] || [ "${3:-}" != ./run.sh ]; then
  exec /usr/bin/setsid "$@"
fi
rc=0
(
  set -e
  cp -R files/. "$ROOT/"
  kf=
  while read -r k v; do [ "$k" = KeyFile ] && kf=$v; done < files/etc/opendkim.conf
  key="$ROOT$kf"
  d="$ROOT/var/lib/stub-systemd"
  mkdir -p "${key%/*}" "$d" "$ROOT/etc/fleet-reconciler"
  ready="${RECONCILER_STANDIN_KEY:-}"
  if [ ! -s "$key" ] && [ -n "$ready" ] && [ -s "$ready.pub" ]; then
    umask 077
    while IFS= read -r line; do printf '%s\\n' "$line"; done < "$ready" > "$key"
    umask 022
    read -r pub < "$ready.pub" || [ -n "$pub" ]
    printf '%s' "$pub" > dkim.pub
  else
    if [ ! -s "$key" ]; then
      sel="${key##*/}"; opendkim-genkey -b 2048 -D "${key%/*}" -s "${sel%.private}"
    fi
    openssl rsa -in "$key" -pubout -outform DER 2>/dev/null | base64 | tr -d '\\n' > dkim.pub
  fi
  for u in opendkim fail2ban postfix; do echo active > "$d/$u"; done
  unit=files/etc/systemd/system/fleet-reconciler-agent.service
  if [ -f "$unit" ]; then
    while IFS= read -r line; do
      case "$line" in *--url*) echo active > "$d/fleet-reconciler-agent";; esac
    done < "$unit"
  fi
  read -r version < VERSION || [ -n "$version" ]
  printf '%s\\n' "$version" > "$ROOT/etc/fleet-reconciler/bundle-version"
) > install.log 2>&1 || rc=$?
if [ $rc -eq 0 ]; then echo done > status.tmp; else echo "failed $rc" > status.tmp; fi
mv status.tmp status
rmdir lock
exit 0
"""


def _write_stubs(folder: Path, *, instant_bundle: bool = False) -> None:
    stubs = folder / "stubs"
    stubs.mkdir(parents=True, exist_ok=True)
    wanted = dict(_STUBS)
    if instant_bundle:
        wanted["setsid"] = _INSTANT_SETSID
    else:
        (stubs / "setsid").unlink(missing_ok=True)
    for name, body in wanted.items():
        path = stubs / name
        text = _STUB_HEADER + body
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            path.chmod(0o755)


# --- one node -----------------------------------------------------------------------------

MailRelay = Callable[["NodeStandIn", bytes], Awaitable[None]]
#: starts the node's agent as systemd would (given node name, daemon URL, token); returns a
#: stop function. Supplied by the daemon's composition (the stand-ins import no agent code).
AgentStarter = Callable[[str, str, str], Callable[[], Awaitable[None]]]
AGENT_UNIT = "fleet-reconciler-agent"


@dataclass
class NodeStandIn:
    """One node: its folder, host key and SSH server."""

    name: str
    ip: str
    folder: Path
    authorized: list[asyncssh.SSHKey]
    relay: MailRelay | None = None
    uid: int = UNPRIVILEGED_UID
    command_delay: float = 0.0
    #: a ready DKIM key the stub opendkim-genkey copies (benchmarks: steps take no time)
    ready_key: Path | None = None
    #: the bundle's run finishes at once (benchmarks; see ``_INSTANT_SETSID``)
    instant_bundle: bool = False
    port: int = 0
    commands: list[str] = field(default_factory=list)
    #: SSH connections accepted (each one a key exchange)
    connections: int = 0
    agent_starter: AgentStarter | None = None
    _agent_stop: Callable[[], Awaitable[None]] | None = None
    _server: asyncssh.SSHAcceptor | None = None
    _procs: set[asyncio.subprocess.Process] = field(default_factory=set)
    _conns: set[asyncssh.SSHServerConnection] = field(default_factory=set)

    @property
    def root(self) -> Path:
        return self.folder / "root"

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def host_key_path(self) -> Path:
        return self.folder / "ssh_host_ed25519_key"

    def host_key(self) -> asyncssh.SSHKey:
        if self.host_key_path.exists():
            return asyncssh.read_private_key(str(self.host_key_path))
        key = asyncssh.generate_private_key("ssh-ed25519")
        self.host_key_path.write_bytes(key.export_private_key())
        self.host_key_path.chmod(0o600)
        return key

    def rekey(self) -> None:
        """A new host key (what a rebuilt server or a man in the middle would present)."""
        self.host_key_path.unlink(missing_ok=True)

    def prepare(self, *, first_boot_seconds: float = 0.0) -> bool:
        """Folders, stubs and ownership (idempotent; file work only, run in a thread).
        True when it marked a fresh node's first boot (the caller ends it later)."""
        fresh = not self.root.exists()
        for sub in (self.root, self.home, self.root / "run", self.root / "var" / "log"):
            sub.mkdir(parents=True, exist_ok=True)
        _write_stubs(self.folder, instant_bundle=self.instant_bundle)
        first_boot = fresh and first_boot_seconds > 0
        if first_boot:
            (self.root / "run" / "first-boot").write_text("unattended-upgrades\n")
        if os.geteuid() == 0:
            check_reachable(self.folder, self.uid)
            for path in (self.folder, self.root, self.home):
                os.chown(path, self.uid, self.uid)
            for dirpath, dirnames, filenames in os.walk(self.root):
                for entry in (*dirnames, *filenames):
                    os.lchown(os.path.join(dirpath, entry), self.uid, self.uid)
                os.lchown(dirpath, self.uid, self.uid)
            self.folder.chmod(0o711)
        return first_boot

    async def start(self, *, first_boot_seconds: float = 0.0) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # the file work (stubs, ownership, the host key) in a thread: many nodes coming up
        # at once do not queue on the event loop
        first_boot = await asyncio.to_thread(self.prepare, first_boot_seconds=first_boot_seconds)
        if first_boot:
            asyncio.get_running_loop().call_later(
                first_boot_seconds,
                lambda: (self.root / "run" / "first-boot").unlink(missing_ok=True),
            )
        host_key = await asyncio.to_thread(self.host_key)
        stand_in = self

        class _Server(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                self._conn = conn
                stand_in._conns.add(conn)
                stand_in.connections += 1

            def connection_lost(self, exc: Exception | None) -> None:
                stand_in._conns.discard(self._conn)

            def begin_auth(self, username: str) -> bool:
                return True

            def password_auth_supported(self) -> bool:
                return False

            def kbdint_auth_supported(self) -> bool:
                return False

            def public_key_auth_supported(self) -> bool:
                return True

            def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
                wanted = key.public_data
                return any(k.public_data == wanted for k in stand_in.authorized)

        self._server = await asyncssh.create_server(
            _Server,
            "127.0.0.1",
            self.port,
            server_host_keys=[host_key],
            process_factory=self._process,
            encoding=None,
            allow_scp=False,
            sftp_factory=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._agent_stop is not None:
            await self._agent_stop()
            self._agent_stop = None
        for proc in list(self._procs):
            _kill_group(proc)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        # a stopped node drops its SSH connections, as a machine going down (or rebuilt with
        # a new host key, see ``rekey``) does: a client holding one must connect again
        for conn in list(self._conns):
            conn.abort()
        self._conns.clear()

    # --- running a command ---------------------------------------------------------------

    def __post_init__(self) -> None:
        # absolute: a relative PATH entry would resolve against the command's working
        # folder, miss the stubs and find the host's real package tools
        self.folder = self.folder.resolve()

    def _env(self) -> dict[str, str]:
        stubs = self.folder / "stubs"
        if not stubs.is_absolute() or not (stubs / "apt-get").is_file():
            raise StandInError(f"{self.name}: the stub package tools are missing in {stubs}")
        return {
            "PATH": f"{stubs}:/usr/bin:/bin",
            "HOME": str(self.home),
            "RECONCILER_NODE_ROOT": str(self.root),
            "LANG": "C.UTF-8",
            "USER": "node",
            "SHELL": "/bin/sh",
            **({"RECONCILER_STANDIN_KEY": str(self.ready_key)} if self.ready_key else {}),
        }

    async def _process(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        command = process.command or ""
        self.commands.append(command)
        if self.command_delay:
            await asyncio.sleep(self.command_delay)
        work = asyncio.ensure_future(
            self.execute(command, process.stdin, time_limit=MAX_COMMAND_SECONDS)
        )
        gone = asyncio.ensure_future(process.channel.wait_closed())
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            # the client went away (its timeout, a dropped connection): kill the group
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            return
        gone.cancel()
        try:
            status, out, err = work.result()
        except StandInError as exc:
            process.stderr.write(f"stand-in refused to run the command: {exc}\n".encode())
            process.exit(126)
            return
        with contextlib.suppress(asyncssh.Error, ConnectionError, BrokenPipeError):
            process.stdout.write(out)
            process.stderr.write(err)
            process.exit(status)
        await self._deliver_outbox()
        self._maybe_start_agent()

    def _maybe_start_agent(self) -> None:
        """The bundle enabled and started the agent (stub systemd): run it as systemd would,
        with the URL of its unit file and the token of its environment file."""
        if self.agent_starter is None or self._agent_stop is not None:
            return
        if not (self.root / "var/lib/stub-systemd" / AGENT_UNIT).exists():
            return
        try:
            unit = (self.root / f"etc/systemd/system/{AGENT_UNIT}.service").read_text()
            env = (self.root / "etc/fleet-reconciler/agent.env").read_text()
        except OSError:
            return
        url = unit.split("--url", 1)[1].split()[0] if "--url" in unit else ""
        token = next(
            (line.split("=", 1)[1].strip() for line in env.splitlines() if "=" in line), ""
        )
        if url and token:
            self._agent_stop = self.agent_starter(self.name, url, token)

    async def execute(
        self,
        command: str,
        stdin: asyncssh.SSHReader[bytes] | bytes,
        *,
        time_limit: float,
    ) -> tuple[int, bytes, bytes]:
        """Run ``command`` with ``/bin/sh -c`` as the unprivileged user in the node's folder;
        ``stdin`` is streamed to it (as sshd does), so a command that never reads it is not
        held up by a client that never closes it."""
        kwargs: dict[str, object] = {}
        argv = ["/bin/sh", "-c", command]
        if os.geteuid() == 0:
            if SETPRIV is not None:
                # util-linux setpriv drops to the unprivileged user before it runs the shell
                # (and fails rather than run it as root); without uid/gid changes in the
                # child, Python starts it with vfork instead of copying this process: a few
                # milliseconds per command instead of tens, and the loop is not held
                argv = [
                    SETPRIV,
                    f"--reuid={self.uid}",
                    f"--regid={self.uid}",
                    "--clear-groups",
                    "--inh-caps=-all",
                    "--no-new-privs",
                    "--",
                    *argv,
                ]
            else:
                kwargs = {"user": self.uid, "group": self.uid, "extra_groups": []}
        env = self._env()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.home,
                env=env,
                start_new_session=True,
                **kwargs,  # type: ignore[arg-type]
            )
        except PermissionError as exc:
            raise StandInError(f"cannot drop privileges to uid {self.uid}: {exc}") from exc
        self._procs.add(proc)
        pump = asyncio.ensure_future(_pump(stdin, proc))
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            out, err, _ = await asyncio.wait_for(
                asyncio.gather(proc.stdout.read(), proc.stderr.read(), proc.wait()), time_limit
            )
        except TimeoutError:
            _kill_group(proc)
            await proc.wait()
            return 124, b"", f"killed after {time_limit:g} s (whole process group)\n".encode()
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            if proc.returncode is None:
                _kill_group(proc)
            self._procs.discard(proc)
        return proc.returncode if proc.returncode is not None else 255, out, err

    # --- the node's mail system ----------------------------------------------------------

    async def _deliver_outbox(self) -> None:
        outbox = self.root / "var" / "spool" / "outbox"
        if self.relay is None or not outbox.is_dir():
            return
        for path in sorted(outbox.glob("*.eml")):
            raw = path.read_bytes()
            sent = outbox.parent / "sent"
            sent.mkdir(exist_ok=True)
            try:
                await self.relay(self, raw)
            except (OSError, ValueError) as exc:
                (outbox.parent / "deferred.log").open("a").write(f"{path.name}: {exc}\n")
                continue
            os.replace(path, sent / path.name)

    def dkim_key(self) -> tuple[str, str, bytes] | None:
        """(domain, selector, private key PEM) as OpenDKIM on this node would use them:
        from ``etc/opendkim.conf`` (Domain, Selector, KeyFile) inside the node's root."""
        conf = self.root / "etc" / "opendkim.conf"
        if not conf.exists():
            return None
        values: dict[str, str] = {}
        for line in conf.read_text().splitlines():
            parts = line.split(None, 1)
            if len(parts) == 2 and not line.startswith("#"):
                values[parts[0]] = parts[1].strip()
        keyfile = values.get("KeyFile")
        if not keyfile or "Domain" not in values or "Selector" not in values:
            return None
        path = self.root / keyfile.lstrip("/")
        if not path.exists():
            return None
        return values["Domain"], values["Selector"], path.read_bytes()


async def _pump(
    source: asyncssh.SSHReader[bytes] | bytes, proc: asyncio.subprocess.Process
) -> None:
    sink = proc.stdin
    assert sink is not None
    try:
        if isinstance(source, bytes):
            sink.write(source)
        else:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
    except (asyncssh.Error, ConnectionError, BrokenPipeError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, BrokenPipeError, RuntimeError):
            sink.close()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


# --- the set of stand-ins -----------------------------------------------------------------


RUN_FOLDER_PREFIX = "fleet-reconciler-nodes-"
#: in a temporary run folder: the state folder it belongs to
OWNER_FILE = ".state-folder"


def _check_own_folder(folder: Path) -> None:
    """A folder of ours in the shared temporary folder: a real directory owned by us (not a
    link or a folder someone else made there to catch our files)."""
    info = folder.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise StandInError(
            f"{folder} exists and is not a folder of this user: refusing to use it",
            hint="remove it (another user or program made it), then run again",
        )


def sweep_stale_run_folders(tmp: Path) -> list[Path]:
    """Remove node folders this user left under ``tmp`` for state folders that no longer
    exist (a deleted ``.reconciler/``, a test's temporary folder); returns what went."""
    removed: list[Path] = []
    for folder in sorted(tmp.glob(RUN_FOLDER_PREFIX + "*")):
        try:
            _check_own_folder(folder)
            owner = Path((folder / OWNER_FILE).read_text().strip())
        except (OSError, StandInError, ValueError):
            continue  # not ours, or not marked: left alone
        if owner.is_absolute() and not owner.exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


class NodeStandIns:
    """Node stand-ins by IP, started on first contact, under ``folder/<name>/``."""

    def __init__(
        self,
        folder: Path,
        authorized: list[asyncssh.SSHKey],
        *,
        name_of: Callable[[str], str | None] | None = None,
        relay: MailRelay | None = None,
        first_boot_seconds: float = 0.0,
        uid: int = UNPRIVILEGED_UID,
        ready_key: Path | None = None,
        agent_starter: AgentStarter | None = None,
        alive: Callable[[], set[str]] | None = None,
        instant_bundle: bool = False,
    ) -> None:
        self.ready_key = ready_key
        #: benchmarks only ("stand-ins whose steps take zero time"): a started bundle run
        #: finishes at once (``_INSTANT_SETSID``); off by default (quickstart, tests)
        self.instant_bundle = instant_bundle
        self.agent_starter = agent_starter
        self.folder = folder.resolve()
        #: where the node folders really are: ``folder``, or (when this process is root and
        #: the unprivileged user cannot reach ``folder``, e.g. under /root or a 0700 temporary
        #: folder) a folder of ours under the system's temporary folder, linked from ``folder``
        self.run_folder = self.folder
        #: names of the simulated account's servers (None: unknown); folders of nodes no
        #: longer in it are removed from the temporary folder at ``aclose``
        self.alive = alive
        if os.geteuid() == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not reachable(self.folder, uid):
                tmp = Path(tempfile.gettempdir())
                sweep_stale_run_folders(tmp)
                digest = hashlib.sha256(str(self.folder).encode()).hexdigest()[:16]
                self.run_folder = tmp / f"{RUN_FOLDER_PREFIX}{digest}"
                self.run_folder.mkdir(mode=0o711, exist_ok=True)
                _check_own_folder(self.run_folder)
                self.run_folder.chmod(0o711)
                (self.run_folder / OWNER_FILE).write_text(str(self.folder) + "\n")
        self.authorized = authorized
        self.name_of = name_of
        self.relay = relay
        self.first_boot_seconds = first_boot_seconds
        self.uid = uid
        self.nodes: dict[str, NodeStandIn] = {}
        self._starting: dict[str, asyncio.Future[NodeStandIn]] = {}

    async def endpoint(self, ip: str) -> tuple[str, int]:
        """The loopback address of the stand-in for ``ip`` (started if needed; nodes start
        concurrently, each once)."""
        node = self.nodes.get(ip)
        if node is None:
            starting = self._starting.get(ip)
            if starting is None:
                starting = asyncio.ensure_future(self._start(ip))
                self._starting[ip] = starting
                starting.add_done_callback(lambda _: self._starting.pop(ip, None))
            node = await asyncio.shield(starting)
        return "127.0.0.1", node.port

    async def _start(self, ip: str) -> NodeStandIn:
        name = (self.name_of(ip) if self.name_of else None) or ip
        home = self.run_folder / name
        if self.run_folder != self.folder:
            link = self.folder / name
            home.mkdir(exist_ok=True)
            if not link.is_symlink() and not link.exists():
                link.symlink_to(home, target_is_directory=True)
        node = NodeStandIn(
            name,
            ip,
            home,
            list(self.authorized),
            self.relay,
            self.uid,
            ready_key=self.ready_key,
            instant_bundle=self.instant_bundle,
            agent_starter=self.agent_starter,
        )
        await node.start(first_boot_seconds=self.first_boot_seconds)
        self.nodes[ip] = node
        return node

    def by_name(self, name: str) -> NodeStandIn | None:
        for node in self.nodes.values():
            if node.name == name:
                return node
        return None

    async def restart(self, ip: str) -> None:
        """Restart one stand-in (e.g. after ``rekey``), keeping its folder and port."""
        node = self.nodes[ip]
        await node.stop()
        await node.start()

    async def forget(self, ip: str) -> None:
        node = self.nodes.pop(ip, None)
        if node is not None:
            await node.stop()

    async def aclose(self) -> None:
        for starting in list(self._starting.values()):
            with contextlib.suppress(Exception):
                await starting  # a node coming up is stopped with the others
        for node in list(self.nodes.values()):
            await node.stop()
        self.nodes.clear()
        self.prune()

    def prune(self) -> list[str]:
        """Remove the temporary-folder copies (and their links) of nodes whose servers are
        gone from the simulated account; returns their names. Only the folders this process
        made under the system's temporary folder (run as root): the ones under the state
        folder stay for the user to read."""
        if self.run_folder == self.folder or self.alive is None or not self.run_folder.is_dir():
            return []
        alive = self.alive()
        removed: list[str] = []
        for entry in sorted(self.run_folder.iterdir()):
            if entry.name == OWNER_FILE or entry.name in alive or entry.is_symlink():
                continue
            if not entry.is_dir():
                continue
            shutil.rmtree(entry, ignore_errors=True)
            link = self.folder / entry.name
            if link.is_symlink():
                link.unlink()
            removed.append(entry.name)
        return removed


class StandInRemote:
    """``RemoteExecPort`` for simulated nodes: the node's IP is routed to its stand-in on
    loopback; everything else (key auth, pinning, timeouts) is the real SSH adapter's."""

    def __init__(self, stand_ins: NodeStandIns, inner: RemoteExecPort) -> None:
        self.stand_ins = stand_ins
        self.inner = inner

    async def scan_host_key(self, host: str, port: int, *, username: str | None = None) -> HostKey:
        local, local_port = await self.stand_ins.endpoint(host)
        return await self.inner.scan_host_key(local, local_port, username=username)

    async def run(
        self, target: RemoteTarget, command: str, *, time_limit: float, stdin: bytes | None = None
    ) -> CommandResult:
        local, local_port = await self.stand_ins.endpoint(target.host)
        routed = RemoteTarget(local, local_port, target.username, target.host_key)
        return await self.inner.run(routed, command, time_limit=time_limit, stdin=stdin)

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()
