"""The spec as untrusted input: no crash, no hang, bounded output, for each class of odd input.

Every case goes through the loader (a ``SpecError`` naming the file, never another exception,
within a second) and through ``reconcile validate`` (exit 1, never 70, never a traceback).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from spec_texts import VALID

from reconciler.cli.main import EXIT_BUG, main
from specs.errors import MAX_LINE, SpecError
from specs.loading import load_spec, load_spec_text

SOURCE = "hostile.yaml"


def problems(text: str) -> list[str]:
    started = time.monotonic()
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, source=SOURCE)
    assert time.monotonic() - started < 2.0, "bounded work before any conversion"
    rendered = [p.render() for p in caught.value.problems]
    assert rendered
    for line in rendered:
        assert line.startswith(SOURCE + ":"), line
        assert len(line) <= MAX_LINE
    return rendered


def replaced(old: str, new: str) -> str:
    assert old in VALID
    return VALID.replace(old, new, 1)


#: (name, spec text, a fragment the first problem must hold)
CASES: list[tuple[str, str, str]] = [
    # numbers bounded before conversion
    ("huge exponent", replaced("nodes: 2", "nodes: 1.0e+99999999"), "is out of range"),
    ("tiny exponent", replaced("nodes: 2", "nodes: 1.0e-99999999"), "is out of range"),
    ("long decimal", replaced("monthly_price: 9.99", "monthly_price: 9." + "9" * 34), "range"),
    ("long integer", replaced("nodes: 2", "nodes: " + "9" * 35), "out of range"),
    ("int over the digit limit", replaced("rid: 52", "rid: " + "9" * 5000), "longer than 40"),
    ("hex over the digit limit", replaced("rid: 52", "rid: 0x" + "f" * 5000), "longer than 40"),
    ("int over 64 bits", replaced("rid: 52", "rid: 0x" + "f" * 30), "out of range"),
    ("id over its range", replaced("rid: 52", "rid: 9223372036854775807"), "at most"),
    ("location over its range", replaced("location_id: 12", "location_id: 10000000000"), "at most"),
    ("string of digits", replaced("rid: 52", "rid: '" + "9" * 5000 + "'"), "rid"),
    (
        "huge duration",
        VALID + "reconcile: {interval: 99999999999999999999w}\n",
        "longer than",
    ),
    ("long duration", VALID + "reconcile: {interval: 3651d}\n", "longer than 3650d"),
    ("duration over its range", VALID + "reconcile: {interval: 2d}\n", "within 1s..1d"),
    ("zero timeout", VALID + "provider: {timeout: 0s}\n", "within 1s..5m"),
    ("near-zero rate limit", VALID + "provider: {rate_limit: 1.0e-30}\n", "at least 0.1"),
    ("near-zero rate limit text", VALID + "provider: {rate_limit: '1e-300'}\n", "at least 0.1"),
    (
        "huge warmup day",
        VALID + "warmup:\n  schedules:\n    s:\n      phases:\n"
        "        - {days: 1-99999999999999999999, start: 1, end: 2}\n",
        "pattern",
    ),
    ("huge money", replaced("monthly_price: 9.99", "monthly_price: 1e25"), "too many digits"),
    # explicit scalar tags
    ("!!bool 2", replaced("nodes: 2", "nodes: !!bool 2"), "cannot read '2' as true or false"),
    ("!!timestamp", replaced("nodes: 2", "nodes: !!timestamp x"), "as a date or time"),
    ("!!int empty", replaced("nodes: 2", 'nodes: !!int ""'), "cannot read '' as a whole number"),
    ("!!float word", replaced("nodes: 2", "nodes: !!float abc"), "as a number"),
    ("!!null value", replaced("nodes: 2", "nodes: !!null 3"), "got nothing (null)"),
    ("!!binary", replaced("nodes: 2", "nodes: !!binary aGVsbG8="), "unsupported YAML tag"),
    ("!!python", replaced("nodes: 2", "nodes: !!python/object:os.system x"), "unsupported"),
    ("custom tag", replaced("nodes: 2", "nodes: !two 2"), "unsupported YAML tag"),
    # tags on keys
    ("tag on a key", replaced("    nodes: 2", "    !foo nodes: 2"), "has the unsupported YAML tag"),
    ("binary key", replaced("    nodes: 2", "    ? !!binary aGVsbG8=\n    : 2"), "unsupported"),
    ("python key", replaced("    nodes: 2", "    !!python/name:os.system x: 2"), "unsupported"),
    # invalid Unicode inside the YAML
    ("lone surrogate", replaced("name: demo", 'name: "demo\\ud800"'), "lone surrogate"),
    ("surrogate key", replaced("    nodes: 2", '    "\\udfff": 2'), "lone surrogate"),
]


@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_odd_input_is_a_clear_error(text: str, fragment: str) -> None:
    rendered = problems(text)
    assert any(fragment in line for line in rendered), rendered


@pytest.mark.parametrize(("text", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_odd_input_exits_1_through_the_cli(
    text: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text, encoding="utf-8")
    code = main(["validate", str(path)])
    captured = capsys.readouterr()
    assert code == 1
    assert "Traceback" not in captured.err
    assert fragment in captured.err


def test_a_value_the_parser_refused_is_reported_once() -> None:
    rendered = problems(replaced("nodes: 2", "nodes: !!bool 2"))
    assert len(rendered) == 1, rendered


def test_aliases_are_bounded_by_their_expanded_size() -> None:
    # under 1 MiB of input; 30 aliases of a 100,000-character string expand to 3 MB
    text = 'x: &a "' + "A" * 100_000 + '"\ny: [' + ", ".join(["*a"] * 30) + "]\n" + VALID
    assert len(text) < 1024 * 1024
    rendered = problems(text)
    assert rendered == [
        f"{SOURCE}:1:4: anchors and aliases expand to more than 262,144 characters; "
        "refusing the document (write the values out or use fewer, shorter aliases)"
    ]


def test_a_long_value_quoted_back_is_cut() -> None:
    rendered = problems(replaced("plan: baseline", "plan: " + "x" * 50_000))
    assert any(line.endswith(",080 characters)") for line in rendered), rendered


def test_thousands_of_problems_make_a_bounded_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    regions = "".join(f"  r{i}: {{location_id: 12, plan: nope, nodes: x}}\n" for i in range(2000))
    path = tmp_path / "f.yaml"
    path.write_text(VALID.replace("regions:\n", "regions:\n" + regions))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 102
    assert lines[-2] == "... and 3,900 more problems".replace("3,900", "3900")
    assert lines[-1] == "error: 4000 problems found"


# --- files that are not regular, readable UTF-8 files -----------------------------------


def only_problem(path: Path) -> str:
    started = time.monotonic()
    with pytest.raises(SpecError) as caught:
        load_spec([path])
    assert time.monotonic() - started < 2.0
    [problem] = caught.value.problems
    assert problem.file == str(path)
    return problem.render()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fleet.yaml"
    os.mkfifo(fifo)
    assert only_problem(fifo) == (
        f"{fifo}: cannot read: a named pipe (FIFO), not a regular file "
        "(give a fleet spec file such as fleet.yaml)"
    )


def test_a_fifo_in_a_directory_is_refused_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID)
    os.mkfifo(tmp_path / "b.yaml")
    with pytest.raises(SpecError) as caught:
        load_spec([tmp_path])
    assert [p.file for p in caught.value.problems] == [str(tmp_path / "b.yaml")]


def test_a_symlink_loop_is_named(tmp_path: Path) -> None:
    loop = tmp_path / "fleet.yaml"
    loop.symlink_to(tmp_path / "other.yaml")
    (tmp_path / "other.yaml").symlink_to(loop)
    assert only_problem(loop) == (
        f"{loop}: cannot read: a symbolic link loop (the link points, directly or not, at itself)"
    )


def test_a_symlink_loop_inside_a_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID)
    (tmp_path / "b.yaml").symlink_to(tmp_path / "b.yaml")
    with pytest.raises(SpecError) as caught:
        load_spec([tmp_path])
    [problem] = caught.value.problems
    assert problem.file == str(tmp_path / "b.yaml")
    assert "symbolic link loop" in problem.message


def test_a_dangling_symlink_is_named(tmp_path: Path) -> None:
    link = tmp_path / "fleet.yaml"
    link.symlink_to(tmp_path / "gone.yaml")
    assert "no such file or directory (a dangling symbolic link)" in only_problem(link)


def test_a_mode_000_file_is_refused_even_for_root(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(VALID)
    path.chmod(0)
    try:
        rendered = only_problem(path)
    finally:
        path.chmod(0o600)
    # root opens it anyway; an ordinary user gets EACCES: both are a clear error
    assert rendered.startswith(f"{path}: cannot read: "), rendered
    assert "mode 000" in rendered or "Permission denied" in rendered


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b"metadata:\n  name: d\xffmo\n", "2:10"),
        (b"metadata:\n  name: \xed\xa0\x80\n", "2:9"),  # a surrogate encoded in UTF-8
        (b"\xff\xfe" + "metadata: {}\n".encode("utf-16-le"), "1:1"),
    ],
)
def test_invalid_utf8_names_the_file_and_place(tmp_path: Path, raw: bytes, where: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_bytes(raw)
    assert only_problem(path) == (
        f"{path}:{where}: the file is not valid UTF-8 text (save it as UTF-8)"
    )


@pytest.mark.parametrize(
    "make",
    ["fifo", "loop", "mode000", "utf8", "directory-without-yaml"],
)
def test_file_problems_exit_1_through_the_cli(
    make: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fleet.yaml"
    if make == "fifo":
        os.mkfifo(path)
    elif make == "loop":
        path.symlink_to(path)
    elif make == "mode000":
        path.write_text(VALID)
        path.chmod(0)
    elif make == "utf8":
        path.write_bytes(b"\xc3\x28")
    else:
        path = tmp_path / "empty"
        path.mkdir()
    try:
        for argv in (["validate", str(path)], ["--dry-run", "-f", str(path)]):
            code = main(argv)
            err = capsys.readouterr().err
            assert code == 1, err
            assert code != EXIT_BUG
            assert str(path) in err
            assert "Traceback" not in err
    finally:
        if make == "mode000":
            path.chmod(0o600)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested more than 64 levels deep"),
        ("a: " + '["]", ' * 5000 + "1" + "]" * 5000 + "\n", "nested more than 64 levels deep"),
        (
            "a: [" + ", ".join(["{x: 1}"] * 130_000) + "]\n",
            "the file holds more than 250,000 values",
        ),
        ("k: v\n" * 300_000, "longer than the 1,048,576-character limit"),
    ],
    ids=["deep-flow", "deep-with-quoted-brackets", "too-many-values", "too-long"],
)
def test_size_and_depth_are_refused_before_composing(text: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, source=SOURCE)
    assert time.monotonic() - started < 10.0
    [problem] = caught.value.problems
    assert message in problem.message
