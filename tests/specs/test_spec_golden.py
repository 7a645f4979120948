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
    # issue 11: odd numbers and explicit tags, each a clear error where it is written
    "numbers-and-tags": VALID.replace("nodes: 2", "nodes: 1.0e+99999999")
    .replace("rid: 52", "rid: 0x" + "f" * 5000)
    .replace("vcpu: 4", "vcpu: !!bool 2")
    .replace("monthly_price: 39.99", "monthly_price: !!timestamp x")
    + "provider:\n  timeout: 0s\n  rate_limit: 1.0e-30\n  !foo build_time: 1s\n"
    + "reconcile:\n  interval: 99999999999999999999w\n",
    # issue 11: what apply would fail on, caught while validating
    "fleet-rules": VALID.replace("nodes: 2", "nodes: off\n    protected: [demo-seattle-1]")
    + "  extra:\n    size: 3\n    regions: [dallas]\n"
    + "warmup:\n  schedules:\n    ramp:\n      safety: {max_daily_increase: 10}\n"
    + "      phases:\n        - {days: 1-10, start: 10, end: 500}\n"
    + "        - {days: 11-20, start: 400, end: 300}\n"
    + "disruption:\n  protected: [demo-paris-001, demo-dallas-001]\n",
    # the minimum fleet fits at the global IP price, not at the pools' and contracts' prices
    "budget-via-pool-prices": VALID.replace("size: 3", "size: 3\n    contract: acme")
    + "costs:\n  monthly_budget: 100\n  contracts:\n    acme:\n"
    + "      ip_monthly_price: 25\n      plan_prices: {baseline: 14.99}\n",
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
