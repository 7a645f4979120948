"""A local mirror of the git repository that holds the fleet specs (``--git``)."""

from providers.git.mirror import (
    CommitInfo,
    Credentials,
    Export,
    GitMirror,
    GitSourceError,
    SignatureRefusedError,
    redact_url,
)

__all__ = [
    "CommitInfo",
    "Credentials",
    "Export",
    "GitMirror",
    "GitSourceError",
    "SignatureRefusedError",
    "redact_url",
]
