"""Fault injection: what can go wrong between a client and the API, switchable at run time.

Every random choice comes from one ``random.Random`` seeded from the settings, so a given
sequence of requests meets the same faults on every run.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Rate = Annotated[float, Field(ge=0.0, le=1.0)]


class FaultSettings(BaseModel):
    """The transport faults. All off by default.

    Like the other simulator models, its validator is built on first use (``defer_build``):
    a CLI run with the embedded simulator never configures faults (issue 14)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    latency_ms: Annotated[float, Field(ge=0, le=600_000)] = 0.0
    http_5xx_rate: Rate = 0.0
    http_5xx_status: Annotated[int, Field(ge=500, le=599)] = 503
    error_in_200_rate: Rate = 0.0
    hang_rate: Rate = 0.0
    hang_seconds: Annotated[float, Field(ge=0, le=3600)] = 30.0
    rate_limit_rps: Annotated[float, Field(gt=0)] | None = None
    malformed_json_rate: Rate = 0.0
    lost_response_rate: Rate = 0.0
    actions: list[str] | None = None
    seed: int = 0


class LifecycleUpdate(BaseModel):
    """Lifecycle knobs that ``POST /sim/faults`` may also change (slow or failing builds)."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    build_seconds: Annotated[float, Field(ge=0, le=86_400)] | None = None
    build_failure_rate: Rate | None = None
    resize_seconds: Annotated[float, Field(ge=0, le=86_400)] | None = None
    resize_failure_rate: Rate | None = None
    reboot_seconds: Annotated[float, Field(ge=0, le=86_400)] | None = None


LIFECYCLE_FIELDS = frozenset(LifecycleUpdate.model_fields)
FAULT_FIELDS = frozenset(FaultSettings.model_fields)
#: the defaults, made without building the validator (every default is valid by definition;
#: ``FaultSettings()`` equals it, a test says so)
NO_FAULTS = FaultSettings.model_construct()


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do to one request. Checked in this order by the app."""

    rate_limited: bool = False
    delay: float = 0.0
    hang: float = 0.0
    http_5xx: int | None = None
    error_in_200: bool = False
    malformed_json: bool = False
    lost_response: bool = False


NO_FAULT = Decision()


class FaultInjector:
    """Holds the current :class:`FaultSettings` and decides, request by request."""

    def __init__(
        self,
        settings: FaultSettings | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self.settings = NO_FAULTS
        self._random = random.Random(0)  # noqa: S311 - reproducible faults, not security
        self._tokens = 0.0
        self._refilled = monotonic()
        self.configure(settings or NO_FAULTS)

    def configure(self, settings: FaultSettings) -> None:
        with self._lock:
            self.settings = settings
            self._random = random.Random(settings.seed)  # noqa: S311
            self._tokens = settings.rate_limit_rps or 0.0
            self._refilled = self._monotonic()

    def _roll(self, rate: float) -> bool:
        # Always draw, so one fault's rate does not shift the others' sequence.
        return self._random.random() < rate

    def _take_token(self, rps: float) -> bool:
        now = self._monotonic()
        self._tokens = min(rps, self._tokens + (now - self._refilled) * rps)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def decide(self, action: str) -> Decision:
        with self._lock:
            s = self.settings
            if s.actions is not None and action not in s.actions:
                return NO_FAULT
            if s.rate_limit_rps is not None and not self._take_token(s.rate_limit_rps):
                return Decision(rate_limited=True)
            hang = self._roll(s.hang_rate)
            fail = self._roll(s.http_5xx_rate)
            error = self._roll(s.error_in_200_rate)
            malformed = self._roll(s.malformed_json_rate)
            lost = self._roll(s.lost_response_rate)
            return Decision(
                delay=s.latency_ms / 1000.0,
                hang=s.hang_seconds if hang else 0.0,
                http_5xx=s.http_5xx_status if fail else None,
                error_in_200=error,
                malformed_json=malformed,
                lost_response=lost,
            )
