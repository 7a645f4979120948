"""The shell commands the Bootstrap step sends to a node (pure; quoted with ``shlex``).

The bundle lives in ``~/.fleet-reconciler/bundles/<version>/`` on the node; ``status`` in that
folder says ``running``, ``done`` or ``failed <rc>``. Uploads are atomic (unpacked into a
temporary folder, then renamed), so a dropped connection never leaves half a bundle that looks
complete.
"""

from __future__ import annotations

import re
import shlex

from reconciler.node.bundle import AGENT_ENV, BUNDLES_DIR

__all__ = [
    "bundle_dir",
    "check_command",
    "prepare_command",
    "read_dkim_command",
    "reset_command",
    "start_and_wait_command",
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
    return f"if [ -d {d} ]; then cat {d}/status 2>/dev/null || echo uploaded; else echo absent; fi"


def _status_then_dkim(d: str, missing: str) -> str:
    """Prints the status (``missing`` when there is none) and, once ``done``, the DKIM public
    key the run made on the following lines (saves a session to read it)."""
    return (
        f'st=$(cat {d}/status 2>/dev/null || echo {missing}); echo "$st"; '
        f'if [ "$st" = done ]; then cat {d}/dkim.pub 2>/dev/null; fi; true'
    )


def prepare_command(version: str) -> str:
    """Prints the bundle's status (and the DKIM key once done), unpacking the bundle's tar
    from stdin first when the version was never uploaded (then ``uploaded``): one session for
    what ``status_command`` and ``upload_command`` do, the tar read only when needed."""
    d = bundle_dir(version)
    return (
        f"if [ ! -d {d} ]; then ( set -e; umask 022; mkdir -p {d}.part; tar -xf - -C {d}.part; "
        f"rm -rf {d}; mv {d}.part {d} ) || exit 1; fi; " + _status_then_dkim(d, "uploaded")
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
        f'cd {d} || exit 1; if [ "$(cat status 2>/dev/null)" = done ]; then echo done; '
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


def start_with_token_command(version: str) -> str:
    """``token_command`` then ``start_command`` in one session: the first line of stdin
    (``RECONCILER_NODE_SECRET=...``) goes to the agent's environment file (0600; written by
    the shell's own ``printf``, so the token is on no command line), then the run starts."""
    path = shlex.quote(AGENT_ENV)
    return (
        'R="${RECONCILER_NODE_ROOT:-}"; IFS= read -r line || exit 1; '
        f'( set -e; umask 077; mkdir -p "$R$(dirname {path})"; '
        f'printf \'%s\\n\' "$line" > "$R"{path}.tmp; chmod 600 "$R"{path}.tmp; '
        f'mv "$R"{path}.tmp "$R"{path} ) || exit 1; unset line; ' + start_command(version)
    )


def start_and_wait_command(version: str, seconds: int) -> str:
    """``start_with_token_command`` then ``wait_command`` in the same session: the start's
    answer (``started``, ``running`` or ``done``) on the first line, then the status (and the
    DKIM key once done) as ``wait_command`` prints it. A run that finishes within ``seconds``
    costs one session less; a dropped connection still ends only the wait (the run is
    detached)."""
    return f"{start_with_token_command(version)}; {wait_command(version, seconds)}"


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
