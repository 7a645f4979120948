"""Properties: whatever text or data comes in, the loader returns a spec or raises SpecError."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spec_texts import EXAMPLES

from specs.errors import SpecError, SpecProblem
from specs.loading import LoadedSpec, load_spec_text

QUICKSTART_TEXT = (EXAMPLES / "quickstart.yaml").read_text()
QUICKSTART: dict[str, Any] = yaml.safe_load(QUICKSTART_TEXT)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_error(exc: SpecError) -> None:
    assert exc.problems, "a SpecError always carries at least one problem"
    for problem in exc.problems:
        assert isinstance(problem, SpecProblem)
        assert problem.file == "prop.yaml"
        assert problem.line >= 1
        assert problem.column >= 1
        assert "\n" not in problem.render()


def outcome(text: str) -> LoadedSpec | SpecError:
    """Load ``text``; anything but a LoadedSpec or a SpecError fails the test."""
    try:
        loaded = load_spec_text(text, source="prop.yaml")
    except SpecError as exc:
        check_error(exc)
        return exc
    assert isinstance(loaded, LoadedSpec)
    assert len(loaded.spec_hash) == 64
    return loaded


yaml_tokens = st.sampled_from(
    [
        "a",
        "b",
        ":",
        ": ",
        "- ",
        "\n",
        "  ",
        "\t",
        "[",
        "]",
        "{",
        "}",
        ",",
        "&x ",
        "*x",
        "<<: ",
        "!!",
        "!tag ",
        "'",
        '"',
        "#",
        "---",
        "...",
        "? ",
        "|",
        ">",
        "%YAML 1.1",
        "1",
        "-1",
        "1.5",
        ".inf",
        "null",
        "yes",
        "~",
        "metadata",
        "plans",
        "regions",
        "name: demo",
        "\\",
        "\x00",
        "é",
        "\u2028",
        "\ufeff",
        "&a [*a]",
        "nodes: {min: 1, max: 0}",
    ]
)


@SETTINGS
@given(st.lists(yaml_tokens, max_size=40).map("".join))
def test_yaml_like_text(text: str) -> None:
    outcome(text)


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    outcome(text)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["30s", "5m", "0s", "demo", "baseline", "standard", "9.99", "hostwinds"])
)
keys = st.text(max_size=10) | st.sampled_from(
    ["metadata", "plans", "regions", "ip_pools", "name", "nodes", "min", "max", "plan", "rid"]
)
data = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=25,
)


@SETTINGS
@given(st.dictionaries(keys, data, max_size=6))
def test_arbitrary_data_dumped_to_yaml(document: dict[str, Any]) -> None:
    outcome(yaml.safe_dump(document, allow_unicode=True))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


ALL_PATHS = _paths(QUICKSTART)
replacements = scalars | st.lists(scalars, max_size=3) | st.dictionaries(keys, scalars, max_size=3)


@st.composite
def mutated_quickstart(draw: st.DrawFn) -> dict[str, Any]:
    document = copy.deepcopy(QUICKSTART)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(document)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = document
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        action = draw(st.sampled_from(["delete", "replace", "retype", "rename"]))
        if action == "delete":
            del parent[last]
        elif action == "replace":
            parent[last] = draw(replacements)
        elif action == "retype":
            value = parent[last]
            parent[last] = (
                str(value) if not isinstance(value, str) else [value] if draw(st.booleans()) else 7
            )
        elif isinstance(parent, dict):
            parent[draw(keys)] = parent.pop(last)
    return document


@SETTINGS
@given(mutated_quickstart())
def test_mutations_of_the_quickstart(document: dict[str, Any]) -> None:
    outcome(yaml.safe_dump(document, allow_unicode=True))


def test_the_unmutated_quickstart_round_trips() -> None:
    direct = outcome(QUICKSTART_TEXT)
    dumped = outcome(yaml.safe_dump(QUICKSTART))
    assert isinstance(direct, LoadedSpec)
    assert isinstance(dumped, LoadedSpec)
    assert direct.spec_hash == dumped.spec_hash
    assert direct.spec.plans["baseline"].monthly_price == Decimal("9.99")
