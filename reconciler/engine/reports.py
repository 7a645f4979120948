"""What an apply reports: each change's outcome, and the progress hooks the views implement."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from reconciler.core.plans import Change


class OutcomeStatus(StrEnum):
    DONE = "done"
    FAILED = "failed"
    WAITING = "waiting"  # nothing wrong, but not finished (e.g. a create intent within grace)
    SKIPPED = "skipped"  # not attempted (an earlier change of the same node failed)


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    change: Change
    status: OutcomeStatus
    message: str = ""


@dataclass(frozen=True, slots=True)
class ApplyReport:
    outcomes: tuple[ChangeOutcome, ...] = ()

    def _with(self, status: OutcomeStatus) -> tuple[ChangeOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status is status)

    @property
    def done(self) -> tuple[ChangeOutcome, ...]:
        return self._with(OutcomeStatus.DONE)

    @property
    def failed(self) -> tuple[ChangeOutcome, ...]:
        return self._with(OutcomeStatus.FAILED)

    @property
    def waiting(self) -> tuple[ChangeOutcome, ...]:
        return self._with(OutcomeStatus.WAITING)

    @property
    def skipped(self) -> tuple[ChangeOutcome, ...]:
        return self._with(OutcomeStatus.SKIPPED)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped

    @property
    def outcome(self) -> str:
        """The run outcome as recorded: ok, partial or failed."""
        if self.ok:
            return "ok"
        return "partial" if self.done else "failed"

    def summary(self) -> dict[str, str]:
        return {
            "done": str(len(self.done)),
            "failed": str(len(self.failed)),
            "waiting": str(len(self.waiting)),
            "skipped": str(len(self.skipped)),
        }


class ProgressHooks(Protocol):
    def on_start(self, total: int) -> None: ...

    def on_change_started(self, change: Change) -> None: ...

    def on_change_done(self, change: Change, ok: bool, message: str) -> None: ...

    def on_finish(self, report: ApplyReport) -> None: ...


class SilentProgress:
    """Progress hooks that do nothing."""

    def on_start(self, total: int) -> None:
        return None

    def on_change_started(self, change: Change) -> None:
        return None

    def on_change_done(self, change: Change, ok: bool, message: str) -> None:
        return None

    def on_finish(self, report: ApplyReport) -> None:
        return None
