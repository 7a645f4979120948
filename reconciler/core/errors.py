"""One error tree, classified by what the caller should do.

Adapters translate library errors at the edge (``raise ... from exc``) into these.
Messages must never contain secrets (API keys, node tokens, root passwords).
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error the project raises on purpose."""

    #: Optional hint shown to the user after the message.
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class UserError(ReconcilerError):
    """Caused by user input (spec, flags, plan files, credentials). Exit 1, no traceback."""


class SpecError(UserError):
    """The spec is invalid. Carries every problem found, each with file:line:column."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(p.render() for p in problems) if problems else "invalid spec")


class SpecProblem:
    """One problem in a spec file: where, which field, what is wrong, a hint."""

    __slots__ = ("column", "field", "file", "hint", "line", "message")

    def __init__(
        self,
        file: str,
        line: int,
        column: int,
        field: str,
        message: str,
        hint: str | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.field}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def __repr__(self) -> str:
        return f"SpecProblem({self.render()!r})"


class ProviderError(ReconcilerError):
    """Base of errors from an outside system (cloud, DNS, SSH, mail)."""


class TransientError(ProviderError):
    """Retry later: timeouts, 5xx, 429, connection resets."""


class TerminalError(ProviderError):
    """Record and stop: the request was understood and refused."""


class NotFoundError(TerminalError):
    """The target does not exist (e.g. 'A valid serviceid is required.')."""


class ConflictError(TerminalError):
    """The target is in a state that forbids the action (locked, upgrade pending...)."""


class AuthError(TerminalError):
    """Credentials refused ('Not Authorized!'), or missing."""


class StoreError(ReconcilerError):
    """The state store failed."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached (transient)."""


class LockHeldError(UserError):
    """Another writer holds the reconcile lock."""


class LeadershipLostError(ReconcilerError):
    """This process lost leadership (or was fenced); stop all mutations at once."""


class StalePlanError(UserError):
    """A saved plan no longer matches what it was computed from."""


class GuardRefusedError(UserError):
    """A safety guard refused the plan (mass delete, budget...)."""
