"""Mapping Hostwinds answers and transport failures into ``reconciler.core.errors``.

Rule of thumb: ``TransientError`` means "try again later / observe to find out",
``TerminalError`` (and its ``NotFoundError`` / ``ConflictError`` / ``AuthError`` children)
means the API understood the request and refused it. Messages name the action and the API's
own message, never the key or the request body.
"""

from __future__ import annotations

from typing import Final

from reconciler.core.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    ProviderError,
    TerminalError,
    TransientError,
    UserError,
)

AUTH_HINT: Final = (
    "check the API key, and that this machine's public IPv4 address is on the key's allow-list "
    "(IPv6 egress is refused); keys expire after about a year "
    "(https://clients.hostwinds.com/cloud/api_keys.php)"
)
LOCATION_HINT: Final = (
    "the location_id of the region is not one Hostwinds knows; list them with get_locations "
    "and fix the region's location_id in the spec"
)
MAX_MESSAGE: Final = 300


class MissingCredentialError(UserError):
    """The environment variable that should hold the API key is unset or empty."""


def _clip(message: str) -> str:
    message = " ".join(message.split())
    if len(message) > MAX_MESSAGE:
        return message[: MAX_MESSAGE - 3] + "..."
    return message


_CONFLICT_MARKERS: Final = (
    "locked",
    "pending upgrade",
    "one pending",
    "already pending",
    "upgrade order",
    "not in a state",
    "is not resized",
    "not resized",
    "in progress",
    "already",
    "not waiting",
    "cannot be changed",
    "is currently",
)
_TRANSIENT_MARKERS: Final = (
    "try again",
    "temporarily",
    "temporary",
    "unavailable",
    "timed out",
    "timeout",
    "maintenance",
    "too many requests",
    "rate limit",
    "busy",
    "internal error",
    "unexpected error",
    "internal server error",
)


def error_for_api_message(action: str, message: str, code: str | None = None) -> ProviderError:
    """The error for a ``"result": "error"`` body of ``action`` carrying ``message``.

    ``code`` (the undocumented ``ERROR`` field) is informational only: it goes into the text,
    never into the decision.
    """
    text = _clip(message) or "unspecified error"
    shown = f"{action} failed: {text}"
    if code:
        shown += f" (ERROR {_clip(code)})"
    lowered = text.lower()
    # an error body is an answer: the request was refused, it did not happen (design §3c)
    if "not authorized" in lowered:
        return AuthError(shown, hint=AUTH_HINT, refused=True)
    if "valid serviceid is required" in lowered or "service id is required" in lowered:
        return NotFoundError(shown, refused=True)
    if "invalid action" in lowered:
        return TerminalError(
            shown,
            hint="the endpoint does not know this action; is it the Cloud API URL?",
            refused=True,
        )
    if "location id is invalid" in lowered:
        return TerminalError(shown, hint=LOCATION_HINT, refused=True)
    if any(marker in lowered for marker in _TRANSIENT_MARKERS):
        return TransientError(shown, refused=True)
    if any(marker in lowered for marker in _CONFLICT_MARKERS):
        return ConflictError(shown, refused=True)
    return TerminalError(shown, refused=True)


def error_for_http_status(action: str, status: int, *, mutation: bool) -> ProviderError:
    """The error for a non-2xx answer whose body is not a Hostwinds error envelope.

    A 429 or another 4xx is a refusal (the request did not happen); a 5xx leaves the outcome
    of a mutation unknown."""
    if status == 429:
        return TransientError(
            f"{action} failed: HTTP 429 (rate limited): refused, nothing happened; retry later",
            refused=True,
        )
    if status >= 500:
        return TransientError(_unknown_outcome(action, f"HTTP {status}", mutation=mutation))
    if status in (401, 403):
        return AuthError(f"{action} failed: HTTP {status}", hint=AUTH_HINT, refused=True)
    if status == 404:
        return TerminalError(
            f"{action} failed: HTTP 404",
            hint="check the endpoint URL (…/cloud/api.php)",
            refused=True,
        )
    return TerminalError(f"{action} failed: HTTP {status}", refused=status < 500)


def transport_error(action: str, what: str, *, mutation: bool, reached: bool) -> TransientError:
    """A transport failure: timeout, connection refused/reset, a body that is not JSON."""
    if not reached:
        return TransientError(
            f"{action} failed: {what} (the request did not reach the server)", refused=True
        )
    return TransientError(_unknown_outcome(action, what, mutation=mutation))


def _unknown_outcome(action: str, what: str, *, mutation: bool) -> str:
    if mutation:
        return (
            f"{action} failed: {what}; the outcome is unknown and the call was not repeated "
            "(observe the servers to find out)"
        )
    return f"{action} failed: {what}"
