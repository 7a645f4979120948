"""Warmup arithmetic: how many emails a node's IP may send on a given day of its warmup.

Rule (documented in docs/planning.md): inside a phase covering days ``first..last`` the limit
ramps linearly from ``start`` on ``first`` to ``end`` on ``last``::

    limit(day) = start + (end - start) * (day - first) // (last - first)

(a one-day phase is simply ``end``), always within ``[min(start, end), max(start, end)]``. After
the last phase the limit stays at the schedule's final ``end``. Before day 1 (not started) it is
0. When the schedule's safety rules set ``max_daily_increase``, a day's limit is further capped at
the previous day's limit plus that increase.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from specs.model import WarmupPhase, WarmupSchedule

_DAY = timedelta(days=1)


def _ramp(phase: WarmupPhase, day: int) -> int:
    first, last = phase.first_day, phase.last_day
    if last == first:
        return phase.end
    value = phase.start + (phase.end - phase.start) * (day - first) // (last - first)
    low, high = min(phase.start, phase.end), max(phase.start, phase.end)
    return max(low, min(high, value))


def _uncapped(schedule: WarmupSchedule, day: int) -> int:
    for phase in schedule.phases:
        if phase.first_day <= day <= phase.last_day:
            return _ramp(phase, day)
    return schedule.final_limit


def daily_limit(schedule: WarmupSchedule, day: int) -> int:
    """Emails/day allowed on ``day`` (1-based) of the warmup; 0 before day 1."""
    if day < 1:
        return 0
    increase = schedule.safety.max_daily_increase
    if increase is None:
        return _uncapped(schedule, day)
    # the cap depends on the previous day: walk the schedule (bounded by its length + 1)
    last = min(day, schedule.days + 1)
    limit = _uncapped(schedule, 1)
    for current in range(2, last + 1):
        limit = min(_uncapped(schedule, current), limit + increase)
    if day > last:
        # after the schedule the target stays constant; keep climbing towards it
        steps = day - last
        limit = min(schedule.final_limit, limit + increase * steps)
    return limit


def warmup_day(started_at: datetime | None, now: datetime) -> int:
    """Day of the warmup at ``now``: 1 on the day it started, 0 when not started."""
    if started_at is None:
        return 0
    elapsed = now - started_at
    if elapsed < timedelta(0):
        return 1
    return elapsed // _DAY + 1


def warmup_complete(schedule: WarmupSchedule, started_at: datetime | None, now: datetime) -> bool:
    """True once the node has gone past the schedule's last day."""
    return warmup_day(started_at, now) > schedule.days
