"""Starting and stopping service processes in user space.

* Services that run code (named, sshd) run as an **unprivileged uid** (65534) when we are root,
  through ``setpriv``; as ourselves otherwise.
* Their folders are made under the temporary directory with modes that uid can use (pytest's
  ``tmp_path`` lives under a 0700 folder of ours); they are removed when the service stops.
* The binaries unpacked by `.ci/services` live in our cache (under a 0700 home when we are root),
  so the ones that run unprivileged are **staged**: the binary and the libraries from the prefix
  that it loads are hard-linked (copied across file systems) into a folder that uid can read.
* ``stop`` kills the whole tree: the process group, every descendant (sshd puts each connection in
  a session of its own), and any process carrying the service's marker in its environment
  (a bootstrap that daemonized with ``setsid``/``nohup``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from tests.services.environment import ServiceEnv

UNPRIVILEGED_UID = 65534
UNPRIVILEGED_GID = 65534
MARKER_VAR = "FLEET_SERVICE_ID"

T = TypeVar("T")


def running_as_root() -> bool:
    return os.geteuid() == 0


def service_ids() -> tuple[int, int]:
    """The uid/gid services run as: 65534 when we are root, ourselves otherwise."""
    if running_as_root():
        return UNPRIVILEGED_UID, UNPRIVILEGED_GID
    return os.getuid(), os.getgid()


def drop_privileges_argv(env: ServiceEnv) -> list[str]:
    """The argv prefix that runs a command as the service uid (empty when we are not root)."""
    if not running_as_root():
        return []
    setpriv = env.require_binary("setpriv")
    uid, gid = service_ids()
    return [
        str(setpriv),
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
    ]


def chown_to_service(path: Path) -> None:
    if running_as_root():
        uid, gid = service_ids()
        os.chown(path, uid, gid)


def service_dir(prefix: str) -> Path:
    """A fresh folder the service uid owns (0755), under the temporary directory."""
    path = Path(tempfile.mkdtemp(prefix=f"fr-{prefix}-"))
    path.chmod(0o755)
    chown_to_service(path)
    return path


def remove_tree(path: Path) -> None:
    if os.environ.get("FLEET_SERVICES_KEEP"):
        return
    shutil.rmtree(path, ignore_errors=True)


# --- ports -------------------------------------------------------------------------------------


def free_port(*, udp: bool = False) -> int:
    """A port free on 127.0.0.1 for TCP (and UDP when asked) at the time of the call.

    Another process may take it before the service binds it: starters retry on another port
    when the bind fails, and check that what answers is their own server.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            if not udp:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dgram:
                try:
                    dgram.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port on 127.0.0.1")


# --- staging binaries for the unprivileged uid -----------------------------------------------

_staging: dict[str, Path] = {}


def _staging_root() -> Path:
    root = _staging.get("root")
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="fr-services-bin-"))
        root.chmod(0o755)
        _staging["root"] = root
        atexit.register(shutil.rmtree, root, True)
    return root


def _accessible_to_service(path: Path) -> bool:
    """Can the service uid read `path` (every parent searchable by 'other' or by that uid)?"""
    if not running_as_root():
        return True
    uid, _ = service_ids()
    for part in [*reversed(path.parents), path]:
        st = part.stat()
        if st.st_uid == uid:
            continue
        needed = 0o005 if part == path else 0o001
        if st.st_mode & needed != needed:
            return False
    return True


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
    target.chmod(0o755)


def stage(env: ServiceEnv, name: str) -> tuple[Path, str]:
    """The binary `name` and an LD_LIBRARY_PATH, both readable by the service uid.

    When the prefix is readable (we are not root, or the cache is elsewhere) this is the binary
    itself and the prefix's library path. Otherwise the binary and the prefix libraries it loads
    (per ``ldd``) are hard-linked into a 0755 folder of this test process, removed at exit.
    """
    binary = env.require_binary(name)
    if _accessible_to_service(binary):
        return binary, env.ld_library_path
    key = f"bin:{name}"
    folder = _staging.get(key)
    if folder is None:
        folder = _staging_root() / name.replace("/", "_")
        libs = folder / "lib"
        libs.mkdir(parents=True)
        _link_or_copy(binary, folder / binary.name)
        for soname, resolved in _prefix_libraries(env, binary):
            if not (libs / soname).exists():
                _link_or_copy(resolved, libs / soname)
        _staging[key] = folder
    return folder / binary.name, str(folder / "lib")


def stage_file(env: ServiceEnv, name: str) -> Path:
    """A single file (e.g. libnss_wrapper.so) readable by the service uid."""
    path = env.require_binary(name)
    if _accessible_to_service(path):
        return path
    key = f"file:{name}"
    staged = _staging.get(key)
    if staged is None:
        folder = _staging_root() / "files"
        folder.mkdir(exist_ok=True)
        staged = folder / path.name
        _link_or_copy(path.resolve(), staged)
        _staging[key] = staged
    return staged


def _prefix_libraries(env: ServiceEnv, binary: Path) -> list[tuple[str, Path]]:
    prefix = env.values.get("FLEET_SERVICES_PREFIX", "")
    result = subprocess.run(
        ["ldd", str(binary)],
        env=env.tool_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    found: list[tuple[str, Path]] = []
    for line in result.stdout.splitlines():
        soname, arrow, rest = line.strip().partition(" => ")
        if not arrow:
            continue
        if rest.startswith("not found"):
            raise RuntimeError(f"{binary}: library {soname} not found (run .ci/services)")
        path = Path(rest.split(" (", 1)[0])
        if prefix and str(path).startswith(prefix):
            found.append((soname, path.resolve()))
    return found


# --- processes ---------------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # a zombie is dead already (its parent reaps it)
        return None
    # Field 22 (starttime), counted after the parenthesised command name.
    return fields[19]


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def _descendants(roots: Iterable[int]) -> set[int]:
    children = _children_map()
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    return seen


def _with_marker(marker: str) -> set[int]:
    needle = f"{MARKER_VAR}={marker}".encode()
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.add(int(entry))
    return found


class ServiceProcess:
    """A service started in a new session; `stop()` kills everything it started."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        cwd: Path,
        log_path: Path,
        marker: str | None = None,
        stdout_path: Path | None = None,
    ) -> None:
        self.name = name
        self.marker = marker or secrets.token_hex(8)
        self.log_path = log_path
        self.argv = list(argv)
        full_env = dict(env)
        full_env[MARKER_VAR] = self.marker
        with (
            log_path.open("ab") as log,
            (stdout_path or log_path).open("ab") as out,
        ):
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                env=full_env,
                cwd=str(cwd),
                start_new_session=True,
            )
        self._known: dict[int, str | None] = {self.popen.pid: _start_time(self.popen.pid)}

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _remember(self, pids: Iterable[int]) -> None:
        for pid in pids:
            if pid not in self._known:
                self._known[pid] = _start_time(pid)

    def _victims(self) -> set[int]:
        """Known processes still alive (same start time: never a recycled pid), their
        descendants, and the processes carrying our marker."""

        def still_ours() -> set[int]:
            return {
                pid
                for pid, started in self._known.items()
                if started is not None and _start_time(pid) == started
            }

        self._remember(_descendants(still_ours()))
        self._remember(_with_marker(self.marker))
        return still_ours()

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM the group, wait `grace` s, then SIGSTOP + SIGKILL every process left."""
        self._victims()  # learn the tree before the parent dies and its children are re-parented
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        for _ in range(10):
            victims = self._victims() - {os.getpid()}
            if not victims:
                break
            for pid in victims:  # freeze first, so none forks while we kill
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            victims = self._victims() - {os.getpid()}
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(5)
            time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def remaining(self) -> set[int]:
        """Processes of this service still alive (for tests of `stop`)."""
        return self._victims() - {os.getpid()}


def run_to_completion(
    name: str,
    argv: Sequence[str],
    *,
    env: dict[str, str],
    folder: Path,
    timeout: float,
) -> tuple[int, str, str]:
    """Run a one-shot program (e.g. headless Chromium) in a session of its own; on exit or
    timeout, kill whatever it left behind. Returns (exit code, stdout, stderr)."""
    out, err = folder / f"{name}.stdout", folder / f"{name}.stderr"
    process = ServiceProcess(name, argv, env=env, cwd=folder, log_path=err, stdout_path=out)
    try:
        code = process.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        process.stop(grace=1.0)
        log = err.read_text(errors="replace")[-3000:]
        raise TimeoutError(f"{name} did not finish within {timeout:.0f} s: {log}") from None
    process.stop(grace=1.0)  # helpers (zygotes, crash handlers) may outlive the main process
    return code, out.read_text(errors="replace"), err.read_text(errors="replace")


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    process: ServiceProcess | None = None,
    step: float = 0.05,
) -> T:
    """Poll `predicate` until it returns a truthy value; fail with the service log if it dies."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if process is not None and not process.alive():
            raise ServiceStartError(
                f"{process.name} exited with {process.popen.returncode} while waiting for {what}:\n"
                f"{process.log()[-4000:]}"
            )
        if time.monotonic() > deadline:
            log = f":\n{process.log()[-4000:]}" if process is not None else ""
            raise ServiceStartError(f"timed out after {timeout:.0f} s waiting for {what}{log}")
        time.sleep(step)


class ServiceStartError(RuntimeError):
    """A service did not come up (its log is in the message)."""
