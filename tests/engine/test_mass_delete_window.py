"""The mass-delete guard counts against the fleet's recent size (issue 9): a shrink in steps
inside ``disruption.mass_delete_window`` (10 -> 5 -> 3 within a day) is still a mass delete;
the recent size is the most nodes open at once in the store's node history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reconciler.core.errors import GuardRefusedError
from reconciler.core.fleet import peak_count
from reconciler.core.planning import PlanOptions
from tests.engine.conftest import World, make_spec

ALLOW = PlanOptions(allow_mass_destroy=True)


def _mass_delete(world: World, counts: dict[str, int], **sections: object) -> str | None:
    plan = world.plan(make_spec(counts, **sections))  # type: ignore[arg-type]
    found = [w for w in plan.warnings if w.guard == "mass_delete"]
    return found[0].message if found else None


def _shrink_to_five(world: World, **sections: object) -> None:
    world.converge(make_spec({"dallas": 10}, **sections))  # type: ignore[arg-type]
    world.clock.advance(3600)
    # 10 -> 5 is at the 50 % threshold: an operator allows it
    assert _mass_delete(world, {"dallas": 5}, **sections) is not None
    five = make_spec({"dallas": 5}, **sections)  # type: ignore[arg-type]
    world.converge(five, runs=20, options=ALLOW, allow_blocked=True)
    assert len(world.store.load_fleet("acme").nodes) == 5


def test_a_shrink_in_two_steps_within_the_window_is_a_mass_delete(world: World) -> None:
    _shrink_to_five(world)
    world.clock.advance(3600)
    # 5 -> 3 is 40 % of today's fleet, but 70 % of the 10 it had an hour ago
    message = _mass_delete(world, {"dallas": 3})
    assert message is not None
    assert "shrinks the fleet to 3 nodes from the 10 it had within the last 1d (70% in steps" in (
        message
    )
    with pytest.raises(GuardRefusedError):
        world.run(make_spec({"dallas": 3}))
    assert len(world.store.load_fleet("acme").nodes) == 5
    # the operator may still allow it
    world.converge(make_spec({"dallas": 3}), runs=20, options=ALLOW, allow_blocked=True)
    assert len(world.store.load_fleet("acme").nodes) == 3
    world.assert_sound(make_spec({"dallas": 3}))


def test_after_the_window_the_second_step_is_judged_on_the_current_size(world: World) -> None:
    _shrink_to_five(world)
    world.clock.advance(25 * 3600)  # the 10 are older than the 24h window
    assert _mass_delete(world, {"dallas": 3}) is None
    world.converge(make_spec({"dallas": 3}), runs=20)
    assert len(world.store.load_fleet("acme").nodes) == 3


def test_the_window_is_configurable_and_zero_judges_the_current_size(world: World) -> None:
    short = {"disruption": {"mass_delete_window": "30m"}}
    _shrink_to_five(world, **short)
    world.clock.advance(3600)  # an hour: outside a 30m window
    assert _mass_delete(world, {"dallas": 3}, **short) is None
    assert _mass_delete(world, {"dallas": 3}, disruption={"mass_delete_window": "0s"}) is None
    message = _mass_delete(world, {"dallas": 3}, disruption={"mass_delete_window": "2h"})
    assert message is not None
    assert "within the last 2h" in message


def test_growing_back_then_shrinking_a_little_passes(world: World) -> None:
    """A scale-down that keeps more than the threshold of the recent peak is no mass delete."""
    world.converge(make_spec({"dallas": 6}))
    world.clock.advance(600)
    world.converge(make_spec({"dallas": 10}))
    world.clock.advance(600)
    assert _mass_delete(world, {"dallas": 6}) is None  # 40 % of the peak
    world.converge(make_spec({"dallas": 6}), runs=20)
    world.clock.advance(600)
    # 6 -> 5: 50 % of the peak of 10 within the day
    assert _mass_delete(world, {"dallas": 5}) is not None


def test_replacements_do_not_make_a_scale_down_a_mass_delete(world: World) -> None:
    """Failed builds replaced (a record closed, a new one opened) do not raise the recent size
    beyond the most nodes open at once."""
    world.converge(make_spec({"dallas": 4}))
    world.cloud.fail_builds(2)
    world.converge(make_spec({"dallas": 6}))
    world.clock.advance(600)
    assert world.store.peak_fleet_size("acme", world.clock.now() - timedelta(days=1)) == 6
    assert _mass_delete(world, {"dallas": 4}) is None  # 6 -> 4: 33 %


def test_the_spec_bounds_the_window() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        make_spec({"dallas": 1}, disruption={"mass_delete_window": "8d"})
    assert make_spec({"dallas": 1}).disruption.mass_delete_window == timedelta(hours=24)


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_peak_count() -> None:
    spans = [(_at(0), None)] * 5 + [(_at(0), _at(2))] * 5
    assert peak_count(spans, _at(1)) == 10
    assert peak_count(spans, _at(3)) == 5
    # a node closed at the instant its replacement opens is not counted twice
    assert peak_count([(_at(0), _at(1)), (_at(1), None)], _at(0)) == 1
    assert peak_count([], _at(0)) == 0
