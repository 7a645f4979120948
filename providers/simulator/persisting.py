"""The ``--state`` file: loaded at start, rewritten atomically (tmp + ``os.replace``) on change."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from providers.simulator.world import StateFormatError, World
from reconciler.core.errors import UserError


class SimulatorStateError(UserError):
    """The state file cannot be read or written."""


class StateFile:
    """Saves a :class:`World` to one JSON file. Mutations call :meth:`save`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.saves = 0
        self.seconds_saving = 0.0

    def load_into(self, world: World) -> bool:
        """Restore ``world`` from the file; False when there is no file yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise SimulatorStateError(
                f"cannot read simulator state {self.path}: {exc.strerror or exc}",
                hint="check the path and its permissions",
            ) from exc
        if not text.strip():
            return False
        try:
            data = json.loads(text)
        except ValueError as exc:
            line = getattr(exc, "lineno", "?")
            raise SimulatorStateError(
                f"simulator state {self.path} is not valid JSON (line {line})",
                hint="move the file away to start with an empty account",
            ) from exc
        try:
            world.restore(data)
        except StateFormatError as exc:
            raise SimulatorStateError(
                f"simulator state {self.path}: {exc}",
                hint="is this a state file written by `reconcile simulator`? "
                "Move it away to start with an empty account",
            ) from exc
        return True

    def save(self, world: World) -> None:
        started = time.perf_counter()
        payload = json.dumps(world.dump(), separators=(",", ":"))
        directory = self.path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(payload)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise SimulatorStateError(
                f"cannot write simulator state {self.path}: {exc.strerror or exc}"
            ) from exc
        self.saves += 1
        self.seconds_saving += time.perf_counter() - started
