"""fleet-reconciler: declarative manager for a Hostwinds sending fleet."""

from __future__ import annotations

DISTRIBUTION = "fleet-reconciler"


def package_version() -> str:
    """The installed version of fleet-reconciler (``reconcile --version``, the status page)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"
