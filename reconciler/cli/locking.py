"""`reconcile unlock`: break a fleet's writer lock, after saying who holds it.

A run killed on another host leaves its lock until the lease runs out (a killed process on
this host, or a PostgreSQL holder whose session is gone, is taken over at once by the next
run by itself). An operator who knows the holder is gone breaks the lock: the holder is
fenced (its next write or renewal is refused) and the next run takes the lock.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

import click

from reconciler.cli.options import fleet_options
from reconciler.core.errors import UserError
from reconciler.core.ports import LockHolder


class UnlockRefusedError(UserError):
    """The lock could not be broken: not confirmed, or it changed meanwhile."""


def describe(holder: LockHolder, now: datetime) -> list[str]:
    """Who holds the lock: host, pid, since, epoch, lease, and whether it is alive."""
    since = (
        f"{holder.acquired_at:%Y-%m-%d %H:%M:%S} UTC ({_ago(now - holder.acquired_at)} ago)"
        if holder.acquired_at is not None
        else "unknown"
    )
    until = f"{holder.expires_at:%H:%M:%S} UTC" if holder.expires_at is not None else "unknown"
    alive = {
        True: "alive (its process runs on this host, or its database session is open)",
        False: "gone (the next run takes the lock over by itself)",
        None: "unknown (another host: its lease runs out by itself)",
    }[holder.alive]
    return [
        f"the writer lock {holder.name!r} is held by {holder.owner}",
        f"  host:   {holder.host}",
        f"  pid:    {holder.pid if holder.pid is not None else 'unknown'}",
        f"  since:  {since}",
        f"  epoch:  {holder.epoch}",
        f"  lease:  until {until} (renewed while the run goes on)",
        f"  holder: {alive}",
    ]


def _ago(delta: object) -> str:
    seconds = int(getattr(delta, "total_seconds", lambda: 0)())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


@click.command("unlock")
@fleet_options
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def unlock(files: tuple[str, ...], fleet: str | None, yes: bool) -> int:
    """Break the fleet's writer lock (left by a run killed on another host), after saying who
    holds it; the holder is fenced and the next run takes the lock."""
    from reconciler.cli.auditing import _fleet_name
    from reconciler.engine.reconciling import lock_name
    from reconciler.wiring import build_store

    name = lock_name(_fleet_name(files, fleet))
    store = build_store(dict(os.environ))
    try:
        now = datetime.now(UTC)
        holder = store.lock_holder(name, now)
        if holder is None:
            click.echo(f"the writer lock {name!r} is free: nothing to break")
            return 0
        for line in describe(holder, now):
            click.echo(line)
        if holder.alive:
            click.echo(
                "warning: the holder looks alive; breaking the lock stops it at its next write "
                "(fenced), and a second run may start meanwhile",
                err=True,
            )
        if not yes:
            if not (sys.stdin.isatty() and sys.stdout.isatty()):
                raise UnlockRefusedError(
                    f"breaking the writer lock {name!r} needs a confirmation and there is no "
                    "terminal to ask",
                    hint="re-run with --yes once you are sure the holder is gone",
                )
            if not click.confirm(f"Break the writer lock {name!r}?", default=False):
                raise UnlockRefusedError(
                    "not confirmed: the lock is left as it is",
                    hint="re-run with --yes to skip the question",
                )
        if not store.break_lock(name, holder.epoch):
            raise UnlockRefusedError(
                f"the writer lock {name!r} changed since it was shown (released, renewed under "
                "a new epoch, or taken over): nothing was broken",
                hint="run `reconcile unlock` again to see who holds it now",
            )
    finally:
        store.close()
    click.echo(
        f"broke the writer lock {name!r} (held by {holder.owner}, epoch {holder.epoch}); "
        "the next run takes it"
    )
    return 0
