"""The console script does not look for pydantic plugins (issue 14).

The first validator pydantic builds asks its plugin loader for plugins: the loader imports
``importlib.metadata`` (with ``email``, ``zipfile`` and ``csv``) and reads the entry points of
every installed distribution, ~15 ms of CPU in every ``reconcile validate``, ``schema`` or
dry-run, for the observability plugins this tool does not use. :func:`skip_plugin_discovery`
imports the loader without ``importlib.metadata`` (a stand-in whose ``entry_points`` imports
the real one if ever called) and gives it an empty plugin set, as if it had found none.

An operator who wants pydantic plugins sets ``PYDANTIC_DISABLE_PLUGINS`` (an empty value
disables none, pydantic's own rule): with the variable set, pydantic does as it always does.
Only the console script does this (``reconciler.cli.process_ends_after_command``), never a
program that runs the commands in its own process (tests).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import Any

ENV_VAR = "PYDANTIC_DISABLE_PLUGINS"
LOADER = "pydantic.plugin._loader"
METADATA = "importlib.metadata"


def _entry_points(**params: Any) -> Any:
    return importlib.import_module(METADATA).entry_points(**params)


def skip_plugin_discovery() -> None:
    """Give pydantic's plugin loader an empty plugin set without importing
    ``importlib.metadata``; nothing when the operator set ``PYDANTIC_DISABLE_PLUGINS`` or the
    loader is already imported."""
    if ENV_VAR in os.environ or LOADER in sys.modules:
        return
    stand_in: types.ModuleType | None = None
    if METADATA not in sys.modules:
        stand_in = types.ModuleType(METADATA)
        stand_in.entry_points = _entry_points  # type: ignore[attr-defined]
        sys.modules[METADATA] = stand_in
    try:
        from pydantic.plugin import _loader
    finally:
        if stand_in is not None and sys.modules.get(METADATA) is stand_in:
            del sys.modules[METADATA]
    if getattr(_loader, "_plugins", ()) is None:  # not looked for yet (pydantic 2's cache)
        _loader._plugins = {}
