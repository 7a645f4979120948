"""Import httpx without its command-line client (issue 14).

``httpx/__init__`` imports ``httpx._main`` (the ``httpx`` console command) for ``httpx.main``;
that module imports click, rich and pygments, ~0.1 s of CPU at every start of the CLI, for a
command we never run. With ``sys.modules["httpx._main"] = None`` for the duration of the first
import, that import raises ``ImportError`` and httpx takes its own fallback, the path it takes
when it is installed without its ``[cli]`` extra: the library is the same, only ``httpx.main``
becomes a stub that says the command-line client is not installed.

The package ``providers.hostwinds`` imports this module before its client, so the first
``import httpx`` of a CLI process goes through here. Once httpx is imported (by anyone) this
does nothing, and the blocking entry is removed again: ``import httpx._main`` still works.
"""

from __future__ import annotations

import sys

MAIN = "httpx._main"


def import_httpx_without_cli() -> None:
    """Import httpx now, without ``httpx._main``, unless it is already imported."""
    if "httpx" in sys.modules or MAIN in sys.modules:
        return
    sys.modules[MAIN] = None  # type: ignore[assignment]  # the documented way to block it
    try:
        import httpx  # noqa: F401
    finally:
        if sys.modules.get(MAIN, MAIN) is None:
            del sys.modules[MAIN]


import_httpx_without_cli()
