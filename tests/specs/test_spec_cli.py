"""`reconcile validate` and `reconcile schema` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from spec_texts import EXAMPLES, ROOT, VALID

from reconciler.cli.main import main
from reconciler.core.errors import SpecError as CoreSpecError
from reconciler.core.errors import SpecProblem as CoreSpecProblem
from specs.errors import SpecError, SpecProblem
from specs.schema import SCHEMA_DIALECT, json_schema


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_core_errors_re_export_the_spec_errors() -> None:
    assert CoreSpecError is SpecError
    assert CoreSpecProblem is SpecProblem


def test_validate_valid_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", str(EXAMPLES / "quickstart.yaml"))
    assert code == 0
    assert err == ""
    assert (
        out
        == f'{EXAMPLES / "quickstart.yaml"}: valid (fleet "demo", 2 regions, 3 nodes min, 1 pool)\n'
    )


def test_validate_defaults_to_fleet_yaml(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "validate")
    assert code == 1
    assert err.splitlines()[0].startswith("fleet.yaml: no such file or directory")
    (tmp_path / "fleet.yaml").write_text(VALID)
    code, out, err = run(capsys, "validate")
    assert (code, err) == (0, "")
    assert out.startswith("fleet.yaml: valid")


def test_validate_reports_every_problem_and_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(VALID.replace("vcpu: 4", "vcpu: 0").replace("plan: baseline", "plan: x", 1))
    code, out, err = run(capsys, "validate", str(path))
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert lines[-1] == "error: 2 problems found"
    assert all(line.startswith(f"{path}:") for line in lines[:-1])
    assert "Traceback" not in err


def test_validate_prints_warnings_but_passes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(VALID + "costs:\n  monthly_budget: 50\n")
    code, out, err = run(capsys, "validate", str(path))
    assert code == 0
    assert err.startswith(f"warning: {path}:32:19: costs.monthly_budget: at its maximum size")
    assert "valid" in out


def test_warnings_are_shown_with_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    path.write_text(VALID + "costs:\n  monthly_budget: 50\nreconcile:\n  interval: 0s\n")
    code, _, err = run(capsys, "validate", str(path))
    assert code == 1
    lines = err.splitlines()
    assert lines[0].startswith("warning: ")
    assert lines[-1] == "error: 1 problem found (and 1 warning)"


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\x00\x01\x02",
        b"a: [",
        b"- x",
        b"\xff\xfe",
        b"a: &a [*a]",
        b"metadata: !!python/object:x {}",
    ],
)
def test_no_traceback_for_any_bad_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    code, _, err = run(capsys, "validate", str(path))
    assert code == 1
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith("error: ")


def test_schema_prints_sorted_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "schema")
    assert (code, err) == (0, "")
    document = json.loads(out)
    assert out == json.dumps(document, indent=2, sort_keys=True) + "\n"
    assert document["$schema"] == SCHEMA_DIALECT
    assert document["$id"].endswith(".json")
    assert "fleet spec" in document["title"]
    assert "required" not in document  # each file of a split spec is valid on its own


def test_schema_output_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "fleet.schema.json"
    code, out, _err = run(capsys, "schema", "--output", str(target))
    assert code == 0
    assert out == ""
    assert json.loads(target.read_text()) == json_schema()


def test_schema_output_to_an_impossible_place(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "schema", "--output", str(tmp_path / "no" / "such" / "dir.json"))
    assert code == 1
    assert "Traceback" not in err


def test_committed_schema_matches_the_model() -> None:
    committed = ROOT / "docs" / "fleet.schema.json"
    assert json.loads(committed.read_text()) == json_schema(), (
        "docs/fleet.schema.json is stale: run `reconcile schema --output docs/fleet.schema.json`"
    )


def _yaml_documents() -> list[tuple[str, Any]]:
    files = [EXAMPLES / "quickstart.yaml", *sorted((EXAMPLES / "production").glob("*.yaml"))]
    merged: dict[str, Any] = {}
    for path in files[1:]:
        for key, value in yaml.safe_load(path.read_text()).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key].update(value)
            else:
                merged[key] = value
    return [("quickstart", yaml.safe_load(files[0].read_text())), ("production", merged)]


@pytest.mark.parametrize(("name", "document"), _yaml_documents())
def test_schema_validates_the_examples(name: str, document: Any) -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    jsonschema.Draft202012Validator.check_schema(json_schema())
    errors = [e.message for e in validator.iter_errors(document)]
    assert errors == [], name


@pytest.mark.parametrize(
    "path", sorted((EXAMPLES / "production").glob("*.yaml")), ids=lambda p: p.name
)
def test_schema_accepts_each_file_of_a_split_spec(path: Path) -> None:
    """An editor checks one file at a time: each file of examples/production/ on its own,
    and each names the schema on its first line."""
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=../../docs/fleet.schema.json\n")
    validator = jsonschema.Draft202012Validator(json_schema())
    assert [e.message for e in validator.iter_errors(yaml.safe_load(text))] == []


def test_schema_still_checks_what_a_split_file_holds() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    regions_only = {"regions": {"seattle": {"location_id": 12, "plan": "baseline"}}}
    assert [e.message for e in validator.iter_errors(regions_only)] == [
        "'nodes' is a required property"
    ]


def test_schema_refuses_what_validation_refuses() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    document = yaml.safe_load(VALID)
    document["scaling"] = {"target_utilisation": 0.8}
    document["health"] = {"heartbeat_interval": "30 seconds"}
    document["regions"]["Bad"] = document["regions"].pop("dallas")
    assert len(list(validator.iter_errors(document))) >= 3
