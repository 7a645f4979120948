"""Properties: whatever text or data comes in, the loader returns a spec or raises SpecError."""

from __future__ import annotations

import copy
import time
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
        # odd numbers and explicit tags (issue 11)
        "1.0e+99999999",
        "-1e-99999",
        "0x" + "f" * 40,
        "9" * 60,
        "1:2:3",
        "0o777",
        ".nan",
        "!!bool ",
        "!!int ",
        "!!float ",
        "!!timestamp ",
        "!!null ",
        "!!str ",
        "!!binary ",
        "!!python/object:os.system ",
        "!!set ",
        "!!omap ",
        '"\\ud800"',
        "99999999999999999999w",
        "0s",
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


#: scalars written as YAML text, odd on purpose: numbers beyond every range and explicit tags
odd_scalar_texts = st.sampled_from(
    [
        "1.0e+99999999",
        "1.0e-99999999",
        "-0.0e+999",
        "1e25",
        "0x" + "f" * 5000,
        "0x" + "f" * 20,
        "0b" + "1" * 70,
        "9" * 5000,
        "9" * 25,
        "-9223372036854775809",
        "190:20:30",
        ".inf",
        "-.inf",
        ".nan",
        "!!bool 2",
        "!!bool yes",
        '!!int ""',
        "!!int 1.5",
        "!!int 0x10",
        "!!float abc",
        "!!float 1e999999",
        "!!timestamp x",
        "!!timestamp 2001-12-14",
        "!!null 3",
        "!!str 5",
        "!!binary aGVsbG8=",
        "!!set {a}",
        "!!omap [a: 1]",
        "!custom 1",
        "'99999999999999999999w'",
        "99999999999999999999w",
        "0s",
        "1e-300",
        "'1e-300'",
        '"\\ud800"',
        "off",
        "yes",
    ]
)
odd_key_texts = st.sampled_from(["!foo nodes", "!!binary aGVsbG8=", "!!int 3", '"\\udfff"'])


def _scalar_spots(text: str) -> list[tuple[int, int]]:
    """(start, end) of every plain scalar value after ``key: `` on a line of ``text``."""
    spots = []
    offset = 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\n")
        colon = body.find(": ")
        if colon > 0 and body[colon + 2 :].strip() and not body.strip().startswith("#"):
            rest = body[colon + 2 :]
            if not rest.startswith(("{", "[", "|", ">", "&", "*")):
                spots.append((offset + colon + 2, offset + len(body)))
        offset += len(line)
    return spots


@SETTINGS
@given(st.data())
def test_odd_scalars_written_into_the_quickstart(data: st.DataObject) -> None:
    """Numbers beyond every range, explicit tags and tags on keys, written as YAML text into
    the quickstart (where safe_dump would have quoted them): a spec or a SpecError, quickly."""
    text = QUICKSTART_TEXT
    spots = _scalar_spots(text)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        start, end = data.draw(st.sampled_from(spots))
        text = text[:start] + data.draw(odd_scalar_texts) + text[end:]
        spots = _scalar_spots(text)
    if data.draw(st.booleans()):
        lines = text.splitlines(keepends=True)
        index = data.draw(st.integers(min_value=0, max_value=len(lines) - 1))
        line = lines[index]
        stripped = line.lstrip(" ")
        if ": " in stripped and not stripped.startswith(("#", "-")):
            indent = line[: len(line) - len(stripped)]
            lines[index] = indent + data.draw(odd_key_texts) + stripped[stripped.index(":") :]
            text = "".join(lines)
    started = time.monotonic()
    outcome(text)
    assert time.monotonic() - started < 5.0


def test_the_unmutated_quickstart_round_trips() -> None:
    direct = outcome(QUICKSTART_TEXT)
    dumped = outcome(yaml.safe_dump(QUICKSTART))
    assert isinstance(direct, LoadedSpec)
    assert isinstance(dumped, LoadedSpec)
    assert direct.spec_hash == dumped.spec_hash
    assert direct.spec.plans["baseline"].monthly_price == Decimal("9.99")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_validate_never_exits_70(tmp_path_factory: Any, data: st.DataObject) -> None:
    """Through the real entry point: any text is a valid spec (0) or problems (1), never an
    internal error (70) nor a traceback."""
    import contextlib
    import io

    from reconciler.cli.main import main

    text = QUICKSTART_TEXT
    spots = _scalar_spots(text)
    for _ in range(data.draw(st.integers(min_value=0, max_value=3))):
        start, end = data.draw(st.sampled_from(spots))
        text = text[:start] + data.draw(odd_scalar_texts) + text[end:]
        spots = _scalar_spots(text)
    text += data.draw(st.lists(yaml_tokens, max_size=8).map("".join))
    path = tmp_path_factory.mktemp("prop") / "fleet.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", str(path)])
    assert code in (0, 1), err.getvalue()
    assert "Traceback" not in err.getvalue()
