"""The errors the spec layer raises: every problem found, each with file:line:column.

``specs`` imports nothing of the rest of the project, so these live here;
``reconciler.core.errors`` re-exports them so the rest of the code has one error tree to import.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: The longest line one problem renders to (a value quoted back is cut, never the whole line
#: lost), and the most problems a report lists.
MAX_LINE = 1000
MAX_LISTED = 100


def _one_line(text: str) -> str:
    """Control characters (a newline in a key...) are escaped: one problem, one line."""
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    if len(text) > MAX_LINE:
        suffix = f"... ({len(text):,} characters)"
        text = text[: MAX_LINE - len(suffix)] + suffix
    return text


@dataclass(frozen=True, slots=True)
class SpecProblem:
    """One problem in a spec file: where, which field, what is wrong, and a hint.

    ``line`` and ``column`` are 1-based; ``line == 0`` means the problem is about the whole
    file (unreadable, missing...). ``field`` is a dotted path (``regions.dallas.plan``), empty
    when the problem is not about one field.
    """

    file: str
    line: int
    column: int
    field: str
    message: str
    hint: str | None = None

    def render(self) -> str:
        """``file:line:column: field.path: what is wrong (hint)``."""
        where = f"{self.file}:{self.line}:{self.column}" if self.line > 0 else self.file
        text = (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )
        if self.hint:
            text += f" ({self.hint})"
        return _one_line(text)

    def sort_key(self) -> tuple[str, int, int, str, str]:
        return (self.file, self.line, self.column, self.field, self.message)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def render_report(
    problems: Iterable[SpecProblem], warnings: Iterable[SpecProblem] = ()
) -> list[str]:
    """The lines ``reconcile validate`` prints: warnings, errors, then a count."""
    warning_list = list(warnings)
    problem_list = list(problems)
    lines = [f"warning: {w.render()}" for w in warning_list[:MAX_LISTED]]
    if len(warning_list) > MAX_LISTED:
        lines.append(f"warning: ... and {_plural(len(warning_list) - MAX_LISTED, 'more warning')}")
    lines += [p.render() for p in problem_list[:MAX_LISTED]]
    if len(problem_list) > MAX_LISTED:
        lines.append(f"... and {_plural(len(problem_list) - MAX_LISTED, 'more problem')}")
    if problem_list:
        summary = f"error: {_plural(len(problem_list), 'problem')} found"
        if warning_list:
            summary += f" (and {_plural(len(warning_list), 'warning')})"
        lines.append(summary)
    elif warning_list:
        lines.append(_plural(len(warning_list), "warning"))
    return lines


class SpecError(Exception):
    """The spec is invalid. Carries every problem found (and the warnings, for display).

    The CLI turns it into the problems on stderr and exit code 1, never a traceback.
    """

    hint: str | None = None

    def __init__(
        self, problems: Iterable[SpecProblem], *, warnings: Iterable[SpecProblem] = ()
    ) -> None:
        self.problems: list[SpecProblem] = list(problems)
        self.warnings: list[SpecProblem] = list(warnings)
        self.message = (
            "\n".join(render_report(self.problems)[:-1]) if self.problems else "invalid spec"
        )
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def render_lines(self) -> list[str]:
        return render_report(self.problems, self.warnings)
