"""The provider's price list, read through the cloud port and cached (issue 16).

Plans compare each spec plan's ``monthly_price`` with what the provider charges for its
``rid`` (``core.costs.price_warnings``). The list changes rarely, so one read serves every
plan for ``ttl`` (an hour by default): the daemon keeps one cache for its life, a CLI run reads
it once. A failed read never fails a plan: the plan says the prices were not checked, and the
next plan tries again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from reconciler.core.errors import ReconcilerError
from reconciler.core.fleet import PricePlan
from reconciler.core.ports import CloudPort

DEFAULT_TTL = timedelta(hours=1)


class PriceListCache:
    """``get_price_list`` at most once per ``ttl``."""

    def __init__(self, ttl: timedelta = DEFAULT_TTL) -> None:
        self.ttl = ttl
        self._value: tuple[PricePlan, ...] | None = None
        self._at: datetime | None = None
        #: why the last read failed (None after a good read)
        self.error: str | None = None
        self.reads = 0

    async def get(self, cloud: CloudPort, now: datetime) -> tuple[PricePlan, ...] | None:
        """The cached list, read again once it is older than ``ttl``; None when it cannot be
        read (``error`` says why) and nothing is cached."""
        if self._value is not None and self._at is not None and now - self._at < self.ttl:
            return self._value
        self.reads += 1
        try:
            plans = await cloud.price_list()
        except ReconcilerError as exc:
            self.error = exc.message
            return self._value  # an older list is better than none
        self._value = tuple(plans)
        self._at = now
        self.error = None
        return self._value
