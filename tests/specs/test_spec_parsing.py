"""The safe YAML layer: positions, duplicate keys, alias bombs, refusals."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from specs.errors import SpecError, SpecProblem
from specs.loading import load_spec
from specs.parsing import MAX_DEPTH, Position, parse_text


def only_problem(text: str) -> SpecProblem:
    parsed = parse_text(text, "t.yaml")
    assert len(parsed.problems) == 1, parsed.problems
    return parsed.problems[0]


def test_positions_of_keys_and_values_are_recorded() -> None:
    parsed = parse_text("a:\n  b: 1\n  c: [x, y]\n", "t.yaml")
    assert parsed.problems == []
    spots = parsed.source_map.spots
    assert spots[("a", "b")].key == Position("t.yaml", 2, 3)
    assert spots[("a", "b")].value == Position("t.yaml", 2, 6)
    assert spots[("a", "c", 1)].value == Position("t.yaml", 3, 10)
    assert spots[("a", "c", 1)].key is None


def test_duplicate_key_names_both_lines() -> None:
    problem = only_problem("plans:\n  a: 1\n  b: 2\n  a: 3\n")
    assert problem.render() == (
        "t.yaml:4:3: plans.a: duplicate key 'a': already defined at line 2, column 3 "
        "(YAML would silently keep only the last one; remove or rename one of them)"
    )


def test_duplicate_key_at_top_level() -> None:
    problem = only_problem("metadata: {name: a}\nmetadata: {name: b}\n")
    assert (problem.line, problem.column, problem.field) == (2, 1, "metadata")
    assert "line 1, column 1" in problem.message


def test_billion_laughs_is_refused_quickly() -> None:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 10):
        name, prev = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    text = "\n".join(lines) + "\n"
    started = time.perf_counter()
    parsed = parse_text(text, "bomb.yaml")
    elapsed = time.perf_counter() - started
    # Liveness, not speed: expanding the 10**10 values would never finish (nor fit in memory);
    # refusing takes milliseconds. A tight bound here failed on a loaded 2-core machine.
    assert elapsed < 30.0
    assert parsed.data is None
    assert len(parsed.problems) == 1
    assert "aliases expand to more than 10,000 values" in parsed.problems[0].message


def test_alias_budget_is_configurable_and_small_aliases_work() -> None:
    text = "base: &b {x: 1}\none: *b\ntwo: *b\n"
    assert parse_text(text, "t.yaml").data == {"base": {"x": 1}, "one": {"x": 1}, "two": {"x": 1}}
    refused = parse_text(text, "t.yaml", max_alias_nodes=3)
    assert refused.data is None
    assert "more than 3 values" in refused.problems[0].message


def test_recursive_alias_is_a_problem_not_a_crash() -> None:
    problem = only_problem("a: &a [1, *a]\n")
    assert "refers to the mapping or list that contains it" in problem.message
    assert problem.field == "a[1]"


def test_merge_keys_apply_and_explicit_keys_win() -> None:
    parsed = parse_text("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  y: 3\n", "t.yaml")
    assert parsed.problems == []
    assert parsed.data == {"base": {"x": 1, "y": 2}, "use": {"x": 1, "y": 3}}
    assert parsed.source_map.spots[("use", "y")].key == Position("t.yaml", 4, 3)
    assert parsed.source_map.spots[("use", "x")].key == Position("t.yaml", 1, 11)


def test_merging_a_scalar_is_a_problem() -> None:
    problem = only_problem("a: &a 1\nb:\n  <<: *a\n")
    assert "merges only mappings" in problem.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a:\n\tb: 1\n", "YAML does not allow tabs for indentation; use spaces"),
        ("a: [1, 2\n", "this is not valid YAML"),
        ("a: 1\n---\nb: 2\n", "put each document in its own file"),
        ("a: *nowhere\n", "define the anchor (&name) before using the alias (*name)"),
        ("a: &x 1\nb: &x 2\n", "give each anchor a distinct name"),
    ],
)
def test_syntax_errors_carry_the_yaml_mark_and_a_hint(text: str, expected: str) -> None:
    parsed = parse_text(text, "t.yaml")
    assert parsed.data is None
    (problem,) = parsed.problems
    assert problem.hint == expected
    assert problem.line >= 1
    assert problem.column >= 1


def test_tab_problem_points_at_the_tab() -> None:
    problem = only_problem("a:\n\tb: 1\n")
    assert (problem.line, problem.column) == (2, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
        ("- 1\n- 2\n", "the top level must be a mapping of sections, found a list"),
        ("just text\n", "the top level must be a mapping of sections, found a single value"),
    ],
)
def test_empty_and_non_mapping_documents(text: str, message: str) -> None:
    parsed = parse_text(text, "t.yaml")
    assert parsed.data is None
    assert parsed.problems[0].message == message


@pytest.mark.parametrize(
    "text",
    ["a: !custom 1\n", "a: !!set {x, y}\n", "a: !!omap [{x: 1}]\n", "a: !!python/name:os.system\n"],
)
def test_tags_other_than_plain_values_are_refused(text: str) -> None:
    problem = only_problem(text)
    assert problem.message.startswith("unsupported YAML tag")
    assert problem.field == "a"


def test_complex_keys_are_refused() -> None:
    problem = only_problem("? [a, b]\n: 1\n")
    assert problem.message == "a mapping key must be a plain name, not a list or mapping"


def test_floats_are_read_as_decimals_from_their_text() -> None:
    parsed = parse_text("price: 9.99\nsum: 0.1\nbig: 1_000.50\nint: 3\n", "t.yaml")
    assert parsed.data == {
        "price": Decimal("9.99"),
        "sum": Decimal("0.1"),
        "big": Decimal("1000.50"),
        "int": 3,
    }
    assert isinstance(parsed.data["price"], Decimal)


def test_keys_stay_as_written() -> None:
    parsed = parse_text("yes: 1\n12: 2\nnull: 3\n", "t.yaml")
    assert parsed.data == {"yes": 1, "12": 2, "null": 3}


def test_deep_nesting_is_refused() -> None:
    text = "a: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n"
    parsed = parse_text(text, "t.yaml")
    assert parsed.data is None
    assert "nested" in parsed.problems[0].message


def test_size_cap(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * 2000 + "\n")
    with pytest.raises(SpecError) as caught:
        load_spec([big], max_bytes=1000)
    (problem,) = caught.value.problems
    assert problem.render() == (
        f"{big}: the file is larger than the 1,000-byte limit "
        "(split the fleet into several files in one directory)"
    )


def test_non_utf8_file(tmp_path: Path) -> None:
    bad = tmp_path / "latin.yaml"
    bad.write_bytes(b"metadata:\n  name: caf\xe9\n")
    with pytest.raises(SpecError) as caught:
        load_spec([bad])
    (problem,) = caught.value.problems
    assert (problem.line, problem.column) == (2, 12)
    assert problem.message == "the file is not valid UTF-8 text"


def test_control_characters_are_refused() -> None:
    problem = only_problem("a: b\x07c\n")
    assert (problem.line, problem.column) == (1, 5)
    assert "special character" in problem.message
