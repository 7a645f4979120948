"""Golden tests: the exact text people read. Regenerate with ``UPDATE_GOLDEN=1 pytest``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from spec_texts import ROOT, VALID

from reconciler.cli.main import main
from specs.errors import SpecError
from specs.loading import load_spec_text

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if UPDATE:
        path.write_text(actual)
    assert path.exists(), f"no golden file {path}; run with UPDATE_GOLDEN=1"
    assert actual == path.read_text()


def test_broken_example(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["validate", "examples/broken.yaml"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    check_golden("broken", captured.err)


def test_valid_examples(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert main(["validate", "examples/quickstart.yaml"]) == 0
    assert main(["validate", "examples/production/"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    check_golden("valid", captured.out)


CASES: dict[str, str] = {
    "duplicate-keys": VALID.replace("    rid: 54\n", "    rid: 54\n    vcpu: 2\n    rid: 55\n"),
    "syntax-error": "metadata:\n  name: demo\n plans: {}\n",
    "tabs": "metadata:\n\tname: demo\n",
    "not-a-mapping": "- metadata\n- plans\n",
    "billion-laughs": "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n"
        for i in range(9)
    ),
    "types-and-ranges": VALID.replace("vcpu: 4", "vcpu: four")
    .replace("nodes: 2", "nodes: -2")
    .replace("monthly_price: 9.99", "monthly_price: 9.99999")
    + "health:\n  missed_beats: 0\n  on_unhealthy: restart\nreconcile:\n  interval: 1 minute\n",
    "cross-references": VALID.replace("plan: baseline\n    nodes: 2", "plan: large\n    nodes: 2")
    .replace("[seattle, dallas]", "[seattle, dallas, paris]")
    .replace("size: 3", "size: 9")
    + "    warmup: fast\n    contract: acme\ncosts:\n  monthly_budget: 10\n"
    + "disruption:\n  protected: [web-1]\n",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_small_cases(name: str) -> None:
    try:
        loaded = load_spec_text(CASES[name], source=f"{name}.yaml")
    except SpecError as exc:
        text = "\n".join(exc.render_lines()) + "\n"
    else:  # pragma: no cover - every case is broken on purpose
        text = f"valid: {loaded.spec.name}\n"
    check_golden(name, text)


def test_the_docs_show_the_current_output_of_the_broken_example() -> None:
    docs = (ROOT / "docs" / "spec.md").read_text()
    assert (GOLDEN / "broken.txt").read_text() in docs
