"""Progress output: plain lines, the rich bar, and the closing report."""

from __future__ import annotations

import io

from rich.console import Console

from reconciler.core.plans import Action, Change
from reconciler.engine.applying import ApplyReport, ChangeOutcome, OutcomeStatus
from reconciler.views.progress import BarProgress, PlainProgress, render_report

CREATE = Change(Action.CREATE, "acme-dallas-001", "dallas", "dallas: 0 nodes, spec wants 1")
DESTROY = Change(Action.DESTROY, "acme-dallas-002", "dallas", "surplus")


def report() -> ApplyReport:
    return ApplyReport(
        outcomes=(
            ChangeOutcome(CREATE, OutcomeStatus.DONE, "created"),
            ChangeOutcome(DESTROY, OutcomeStatus.FAILED, "terminate: read timeout"),
        )
    )


def test_plain_progress_prints_one_line_per_change() -> None:
    lines: list[str] = []
    progress = PlainProgress(lines.append)
    progress.on_start(2)
    progress.on_change_started(CREATE)
    progress.on_change_done(CREATE, True, "created")
    progress.on_change_done(DESTROY, False, "terminate: read timeout")
    progress.on_finish(report())
    assert lines[0] == "applying 2 changes"
    assert lines[1] == "[1/2] ok   + create acme-dallas-001: created"
    assert lines[2] == "[2/2] FAIL - destroy acme-dallas-002: terminate: read timeout"
    assert lines[3].startswith("finished in ")


def test_bar_progress_draws_on_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with BarProgress(console) as bar:
        bar.on_start(2)
        bar.on_change_started(CREATE)
        bar.on_change_done(CREATE, True, "created")
        bar.on_change_started(DESTROY)
        bar.on_change_done(DESTROY, False, "terminate: read timeout")
        bar.on_finish(report())
    text = out.getvalue()
    assert "applying" in text
    assert "2/2" in text
    assert "FAIL" in text


def test_the_closing_report_lists_failures() -> None:
    text = render_report(report())
    assert text.splitlines() == [
        "done: 1, failed: 1, waiting: 0, skipped: 0",
        "failed: - destroy acme-dallas-002: terminate: read timeout",
    ]
