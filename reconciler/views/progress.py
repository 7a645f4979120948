"""Progress of an apply: a rich progress bar on a terminal, plain lines otherwise, and the
closing report (what was done, what failed).

These classes fit the engine's ``ProgressHooks`` protocol structurally; views never import the
engine, so the report is read through the small protocols below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

from reconciler.core.plans import Change

if TYPE_CHECKING:  # rich is imported by BarProgress only (a dry-run never draws a bar)
    from rich.console import Console
    from rich.progress import TaskID


class OutcomeLike(Protocol):
    @property
    def change(self) -> Change: ...

    @property
    def message(self) -> str: ...


class ReportLike(Protocol):
    @property
    def done(self) -> Sequence[OutcomeLike]: ...

    @property
    def failed(self) -> Sequence[OutcomeLike]: ...

    @property
    def waiting(self) -> Sequence[OutcomeLike]: ...

    @property
    def skipped(self) -> Sequence[OutcomeLike]: ...


def change_label(change: Change) -> str:
    return f"{change.action.marker} {change.action.value} {change.address}"


class PlainProgress:
    """One line per finished change: ``[3/10] ok   + create acme-dallas-003: created; ...``."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self._echo = echo
        self._total = 0
        self._finished = 0
        self._started_at = time.monotonic()

    def on_start(self, total: int) -> None:
        self._total = total
        self._started_at = time.monotonic()
        self._echo(f"applying {total} change{'s' if total != 1 else ''}")

    def on_change_started(self, change: Change) -> None:
        return None

    def on_change_done(self, change: Change, ok: bool, message: str) -> None:
        self._finished += 1
        verdict = "ok  " if ok else "FAIL"
        text = f"[{self._finished}/{self._total}] {verdict} {change_label(change)}"
        if message:
            text += f": {message}"
        self._echo(text)

    def on_finish(self, report: ReportLike) -> None:
        elapsed = time.monotonic() - self._started_at
        self._echo(f"finished in {elapsed:.1f}s")


class BarProgress:
    """A rich progress bar (terminals). Use as a context manager around the run: the bar
    shows from the start of the apply (``on_start``) and stops at its end or on leaving."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[current]}"),
            console=self._console,
            transient=False,
        )
        self._task: TaskID | None = None
        self._running: set[str] = set()
        self._started = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._started:
            self._started = False
            self._progress.stop()

    def _current(self) -> str:
        if not self._running:
            return ""
        names = sorted(self._running)
        more = f" (+{len(names) - 2})" if len(names) > 2 else ""
        return ", ".join(names[:2]) + more

    def on_start(self, total: int) -> None:
        if not self._started:
            self._started = True
            self._progress.start()
        self._task = self._progress.add_task("applying", total=total, current="")

    def on_change_started(self, change: Change) -> None:
        self._running.add(change.address)
        self._update()

    def on_change_done(self, change: Change, ok: bool, message: str) -> None:
        self._running.discard(change.address)
        if not ok:
            self._progress.console.print(f"[red]FAIL[/red] {change_label(change)}: {message}")
        self._update(advance=1)

    def on_finish(self, report: ReportLike) -> None:
        self._running.clear()
        self._update()
        self._stop()

    def _update(self, advance: int = 0) -> None:
        if self._task is None:
            return
        self._progress.update(self._task, advance=advance, current=self._current())


def render_report(report: ReportLike) -> str:
    """The closing lines: counts, then every failure and every change still waiting."""
    lines = [
        f"done: {len(report.done)}, failed: {len(report.failed)}, "
        f"waiting: {len(report.waiting)}, skipped: {len(report.skipped)}"
    ]
    for outcome in report.failed:
        lines.append(f"failed: {change_label(outcome.change)}: {outcome.message}")
    for outcome in report.waiting:
        lines.append(f"waiting: {change_label(outcome.change)}: {outcome.message}")
    for outcome in report.skipped:
        lines.append(f"skipped: {change_label(outcome.change)}: {outcome.message}")
    return "\n".join(lines)
