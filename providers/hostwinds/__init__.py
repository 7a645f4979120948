"""Hostwinds Cloud API adapter (implements ``reconciler.core.ports.CloudPort``)."""

# first: the client's `import httpx` must not load httpx's command-line client (rich, pygments)
from providers.hostwinds import lighthttpx  # noqa: F401  # isort: split
from providers.hostwinds.client import (
    DEFAULT_ENDPOINT,
    ENDPOINT_ENV,
    HostwindsClient,
    client_from_settings,
    is_read_action,
)
from providers.hostwinds.errors import MissingCredentialError

__all__ = [
    "DEFAULT_ENDPOINT",
    "ENDPOINT_ENV",
    "HostwindsClient",
    "MissingCredentialError",
    "client_from_settings",
    "is_read_action",
]
