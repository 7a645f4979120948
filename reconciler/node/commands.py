"""The shell commands the Bootstrap step sends to a node (pure; quoted with ``shlex``).

The bundle lives in ``~/.fleet-reconciler/bundles/<version>/`` on the node; ``status`` in that
folder says ``running``, ``done`` or ``failed <rc>``. Uploads are atomic (unpacked into a
temporary folder, then renamed), so a dropped connection never leaves half a bundle that looks
complete.
"""

from __future__ import annotations

import posixpath
import re
import shlex

from reconciler.node.bundle import AGENT_ENV, BUNDLES_DIR

__all__ = [
    "bootstrap_command",
    "bundle_dir",
    "check_command",
    "read_dkim_command",
    "reset_command",
    "start_command",
    "start_with_token_command",
    "status_command",
    "token_command",
    "upload_command",
    "wait_command",
]

_VERSION = re.compile(r"^[0-9a-f]{64}$")


def bundle_dir(version: str) -> str:
    if not _VERSION.fullmatch(version):
        raise ValueError(f"not a bundle version: {version!r}")
    return f'"$HOME"/{BUNDLES_DIR}/{version}'


def status_command(version: str) -> str:
    """Prints the bundle's status (``absent`` when it was never uploaded)."""
    d = bundle_dir(version)
    return f'if [ -d {d} ]; then {_read_status(d, "uploaded")}; echo "$st"; else echo absent; fi'


def _read_status(d: str, missing: str) -> str:
    """Sets ``st`` to the first line of the bundle's ``status`` (``missing`` when there is
    none) with the shell's own ``read``: no process (a ``cat`` in ``$(...)`` costs two)."""
    return (
        f"st={missing}; [ ! -e {d}/status ] || {{ st=; read -r st 2>/dev/null < {d}/status || :; }}"
    )


def _status_then_dkim(d: str, missing: str) -> str:
    """Prints the status (``missing`` when there is none) and, once ``done``, the DKIM public
    key the run made on the following lines (saves a session to read it)."""
    # the shell's own ``read`` and ``printf`` (dkim.pub is one line of base64): no process
    return (
        f'{_read_status(d, missing)}; echo "$st"; if [ "$st" = done ] && [ -r {d}/dkim.pub ]; '
        f'then while IFS= read -r l || [ -n "$l" ]; do printf \'%s\\n\' "$l"; done '
        f"< {d}/dkim.pub; fi; true"
    )


def _unpack(d: str) -> str:
    """Unpacks the bundle's tar from stdin into ``d`` atomically when it is not there (a
    temporary folder renamed into place; ``rm`` only when something that is not a folder is
    in the way, which never happens normally)."""
    return (
        f"if [ ! -d {d} ]; then ( set -e; umask 022; mkdir -p {d}.part; tar -xf - -C {d}.part; "
        f"if [ -e {d} ] || [ -L {d} ]; then rm -rf {d}; fi; mv {d}.part {d} ) || exit 1; fi"
    )


def wait_command(version: str, seconds: int) -> str:
    """Waits on the node (up to ``seconds``) while the bundle runs, then prints its status
    (and the DKIM key once done): one SSH session per wait instead of a poll every few hundred
    milliseconds."""
    d = bundle_dir(version)
    # the status is read with the shell's own ``read`` (no process per look); the first looks
    # come soon (a run that finishes within a few hundred milliseconds, such as a rerun that
    # finds everything in place, is seen at once), then every 0.2 s: ``seconds`` in all
    rounds = max(1, int(seconds) * 5 - 1)
    return (
        f"st=; for p in 0.02 0.05 0.13; do read -r st 2>/dev/null < {d}/status || st=; "
        f'[ "$st" = running ] || break; sleep $p; done; n=0; '
        f'while [ "$st" = running ] && [ $n -lt {rounds} ]; do sleep 0.2; n=$((n+1)); '
        f"read -r st 2>/dev/null < {d}/status || st=; done; " + _status_then_dkim(d, "absent")
    )


def upload_command(version: str) -> str:
    """Reads the bundle's tar on stdin and unpacks it atomically."""
    d = bundle_dir(version)
    return (
        f"set -e; umask 022; mkdir -p {d}.part; tar -xf - -C {d}.part; rm -rf {d}; mv {d}.part {d}"
    )


def start_command(version: str) -> str:
    """Starts run.sh detached (a new session; survives the SSH connection).

    Prints ``done`` (the version finished: nothing started), ``running`` (a run holds the
    lock: nothing started) or ``started``. The lock is taken and ``status`` set to ``running``
    *before* the shell answers, so a status read right after the answer never sees the
    previous run's ``failed`` or a missing status (which would start the bundle twice)."""
    d = bundle_dir(version)
    # the background job is one simple command with every stream redirected, so no process
    # keeps the SSH channel's pipes open once the shell has answered
    return (
        f"cd {d} || exit 1; st=; read -r st 2>/dev/null < status; "
        'if [ "$st" = done ]; then echo done; '
        "elif mkdir lock 2>/dev/null; then echo running > status.tmp && mv status.tmp status "
        "&& { setsid nohup sh ./run.sh locked </dev/null >run.log 2>&1 & echo started; }; "
        "else echo running; fi"
    )


def token_command() -> str:
    """Writes stdin (``RECONCILER_NODE_SECRET=...``) to the agent's environment file, 0600.
    The token travels on stdin only: never on a command line, in the bundle or in a log."""
    path = shlex.quote(AGENT_ENV)
    return (
        'R="${RECONCILER_NODE_ROOT:-}"; set -e; umask 077; '
        f'mkdir -p "$R$(dirname {path})"; cat > "$R"{path}.tmp; '
        f'chmod 600 "$R"{path}.tmp; mv "$R"{path}.tmp "$R"{path}'
    )


def _write_token() -> str:
    """Writes ``$line`` (``RECONCILER_NODE_SECRET=...``, read from stdin) to the agent's
    environment file with the shell's own ``printf`` (the token is on no command line). The
    file is made under umask 077, so it is 0600 from its creation; a leftover of an
    interrupted write (which may have another mode) is removed first."""
    path = shlex.quote(AGENT_ENV)
    tmp = shlex.quote(AGENT_ENV + ".tmp")
    folder = shlex.quote(posixpath.dirname(AGENT_ENV))
    return (
        f'( set -e; umask 077; [ -d "$R"{folder} ] || mkdir -p "$R"{folder}; '
        f'if [ -e "$R"{tmp} ] || [ -L "$R"{tmp} ]; then rm -f "$R"{tmp}; fi; '
        f'printf \'%s\\n\' "$line" > "$R"{tmp}; mv "$R"{tmp} "$R"{path} ) || exit 1; unset line'
    )


def start_with_token_command(version: str) -> str:
    """``token_command`` then ``start_command`` in one session: the first line of stdin
    (``RECONCILER_NODE_SECRET=...``) goes to the agent's environment file (0600), then the
    run starts."""
    return (
        'R="${RECONCILER_NODE_ROOT:-}"; IFS= read -r line || exit 1; '
        f"{_write_token()}; {start_command(version)}"
    )


def bootstrap_command(version: str, seconds: int, *, rerun_failed: bool) -> str:
    """The whole bootstrap of a node in one session (stdin: the token's line, then the
    bundle's tar): the token line is read first (by the shell's own ``read``, which takes no
    byte past its newline), the bundle unpacked atomically when the version was never
    uploaded, and its status read; a version never run (``uploaded``), or one that failed when
    ``rerun_failed`` (a new attempt of the step), gets the token written (0600) and ``run.sh``
    started detached, as ``start_with_token_command``; then, whatever the status, the node
    waits for the run (up to ``seconds``; a finished or failed version returns at once): a
    run it started here is waited for as its child, any other as ``wait_command`` does.

    Prints the start's answer on the first line (``started``, ``running``, ``done``, or
    ``skipped`` when nothing was to be started), then the status (and the DKIM key once done)
    as ``wait_command`` does. A fresh node's bootstrap costs one session, and a run that
    finishes within ``seconds`` no other."""
    d = bundle_dir(version)
    failed = "go=1" if rerun_failed else "go="
    # a run this shell started is its child (``$!``): GNU ``tail --pid`` under ``timeout``
    # returns within 20 ms of its end (two processes for the whole wait, where the looks at
    # ``status`` cost a ``sleep`` each and see the end up to 0.2 s late); ``timeout`` stays
    # in the session's process group (``--foreground``), so a dropped session ends it too.
    # Then the status as ``wait_command`` prints it: its loop returns at once once the run
    # ended, waits as before where these tools are missing, and is skipped when the wait
    # here used up its ``seconds`` (exit 124)
    seconds = max(1, int(seconds))
    return (
        'R="${RECONCILER_NODE_ROOT:-}"; IFS= read -r line || exit 1; '
        f"{_unpack(d)}; {_read_status(d, 'uploaded')}; go=; "
        f'case "$st" in uploaded|"") go=1;; failed*) {failed};; esac; '
        f'if [ -n "$go" ]; then {_write_token()}; {start_command(version)}; '
        "else unset line; echo skipped; fi; w=; p=$!; "
        f'if [ -n "$p" ]; then timeout --foreground {seconds} tail -s 0.02 --pid="$p" '
        "-f /dev/null </dev/null >/dev/null 2>&1; w=$?; fi; "
        f'if [ "$w" = 124 ]; then {_status_then_dkim(d, "absent")}; '
        f"else {wait_command(version, seconds)}; fi"
    )


def read_dkim_command(version: str) -> str:
    return f"cat {bundle_dir(version)}/dkim.pub"


def check_command(version: str) -> str:
    return f"sh {bundle_dir(version)}/check.sh"


def install_log_command(version: str, lines: int = 20) -> str:
    return f"tail -n {int(lines)} {bundle_dir(version)}/install.log 2>/dev/null"


def reset_command(version: str) -> str:
    """Makes a finished (or failed) run of the bundle runnable again (drift repair): its
    ``status`` goes, so the next start runs ``install.sh`` once more. A running one is left
    alone (its ``lock`` is held)."""
    d = bundle_dir(version)
    return f"[ -d {d}/lock ] && echo running || {{ rm -f {d}/status; echo reset; }}"
