"""The writer's fence of one apply (design §3c, §5).

``WriterFence`` wraps the caller's check that this process is still the fleet's writer (the
daemon's live leadership check; the CLI's writer-lock renewal) and remembers a loss:

- ``check()`` runs the check; a loss is remembered, and every later check raises at once. The
  engine installs it at the wire (``reconciler.core.fencing``): the cloud adapters run it
  after the rate-limit token is taken and right before each mutating request.
- ``lose(reason)`` is called by whoever learns of the loss first (a failed renewal, the
  daemon's periodic check); it may be called from another thread.
- ``wait_lost()`` returns when the writer knows it lost (``lose``, a failed ``check``, or
  ``held()`` turning false): the applier then cancels the apply in flight, calls waiting for a
  rate-limit token included.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from reconciler.core.errors import LeadershipLostError

__all__ = ["WriterFence"]


class WriterFence:
    def __init__(
        self,
        check: Callable[[], None] | None = None,
        *,
        held: Callable[[], bool] | None = None,
        poll_seconds: float = 0.05,
    ) -> None:
        self._check = check
        self._held = held
        self._poll = poll_seconds
        #: why the writer lost (None: not lost); a plain attribute, safe across threads
        self.lost_reason: str | None = None

    @property
    def lost(self) -> bool:
        if self.lost_reason is None and self._held is not None and not self._held():
            self.lose("leadership lost (no longer held)")
        return self.lost_reason is not None

    def lose(self, reason: str) -> None:
        if self.lost_reason is None:
            self.lost_reason = reason

    def check(self) -> None:
        """Raise ``LeadershipLostError`` unless this process is still the writer."""
        if self.lost:
            raise LeadershipLostError(f"{self.lost_reason}: mutation refused")
        if self._check is None:
            return
        try:
            self._check()
        except LeadershipLostError as exc:
            self.lose(str(exc))
            raise

    async def wait_lost(self) -> str:
        """Return (the reason) once the writer knows it lost."""
        # polled: ``held()`` and ``lose()`` may change from other threads (the daemon's
        # leadership check runs in a worker thread), where an asyncio.Event cannot be set
        while not self.lost:  # noqa: ASYNC110
            await asyncio.sleep(self._poll)
        assert self.lost_reason is not None
        return self.lost_reason
