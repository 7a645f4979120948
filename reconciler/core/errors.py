"""One error tree, classified by what the caller should do.

Adapters translate library errors at the edge (``raise ... from exc``) into these.
Messages must never contain secrets (API keys, node tokens, root passwords).
"""

from __future__ import annotations

from specs.errors import SpecError, SpecProblem

__all__ = [
    "AuthError",
    "ConflictError",
    "GuardRefusedError",
    "HostKeyMismatchError",
    "LeadershipLostError",
    "LockHeldError",
    "NotFoundError",
    "ProviderError",
    "ReconcilerError",
    "RemoteCommandError",
    "SpecError",
    "SpecProblem",
    "StalePlanError",
    "StoreError",
    "StoreUnavailableError",
    "TerminalError",
    "TransientError",
    "UserError",
]


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
    """Caused by user input (spec, flags, plan files, credentials). Exit 1, no traceback.

    ``SpecError`` (re-exported above from ``specs.errors``, since ``specs`` may not import
    ``reconciler``) is NOT a subclass: catch ``(UserError, SpecError)`` where both are meant.
    """


class ProviderError(ReconcilerError):
    """Base of errors from an outside system (cloud, DNS, SSH, mail).

    ``refused`` is True when the request is *known* not to have happened: the system answered
    with a refusal (an error body, a 4xx, a 429) or the request never reached it (connection
    refused). False: the outcome is unknown (a timeout after sending, a 5xx, a lost answer),
    and a mutation must be resolved by observing (design §3c).
    """

    def __init__(self, message: str, *, hint: str | None = None, refused: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.refused = refused


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


class HostKeyMismatchError(TerminalError):
    """A node presented an SSH host key other than the one pinned on first contact.

    Never retried until it works: the node is quarantined and a high alert raised
    (a changed key means a rebuilt server or someone in the middle)."""


class RemoteCommandError(TerminalError):
    """A command on a node ran and failed (non-zero exit); ``exit_status`` and a bounded
    excerpt of its error output are kept (never the command's secrets)."""

    def __init__(self, message: str, *, exit_status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint, refused=True)
        self.exit_status = exit_status
