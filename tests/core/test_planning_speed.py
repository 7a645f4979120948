"""The planner's shortcuts give the answers of the plain code they stand for (issue 14)."""

from __future__ import annotations

import gc

from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.addresses import parse_node_name
from reconciler.core.collector import collector_paused
from reconciler.core.fleet import Observed, RecordedFleet
from reconciler.core.matching import Matcher
from reconciler.core.planning import plan
from tests.core.factories import NOW, make_spec, node, server

REGIONS = ["dallas", "eu-west", "a1", "x-9-9"]
#: pieces of names: regions (known or not, valid or not), separators, digits, odd characters
PIECES = st.sampled_from(
    [
        *REGIONS,
        "acme",
        "acme-",
        "-",
        "--",
        "0",
        "00",
        "000",
        "001",
        "1234",
        "７",
        "٣",
        "\n",
        "A",
        "_",
    ]
)


@given(tail=st.lists(PIECES, max_size=6).map("".join), prefixed=st.booleans())
def test_the_matchers_name_parsing_is_parse_node_name_on_known_regions(
    tail: str, prefixed: bool
) -> None:
    spec = make_spec({"dallas": 1, "eu-west": 1, "a1": 1})
    matcher = Matcher(spec, Observed((), NOW), RecordedFleet("acme"))
    name = ("acme-" if prefixed else "") + tail
    expected = parse_node_name("acme", name)
    if expected is not None and expected[0] not in matcher.regions:
        expected = None
    assert matcher.parse(name) == expected
    assert matcher.parse(name) == expected  # memoized


def test_planning_pauses_the_collector_and_restores_it() -> None:
    spec = make_spec({"dallas": 2})
    observed = Observed((server("acme-dallas-001", 11),), NOW)
    recorded = RecordedFleet("acme", (node("acme-dallas-001", 11),))
    assert gc.isenabled()
    first = plan(spec, observed, recorded, NOW)
    assert gc.isenabled()
    gc.disable()
    try:
        assert plan(spec, observed, recorded, NOW) == first
        assert not gc.isenabled()  # left off when the caller had it off
    finally:
        gc.enable()


def test_the_collector_pause_nests_and_survives_an_exception() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
    try:
        with collector_paused():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()
