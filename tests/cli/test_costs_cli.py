"""`reconcile costs`: finance sets constants; plans use them and say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reconciler.cli.main import main

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.yaml"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/state.db"
    monkeypatch.setenv("RECONCILER_DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    return url


def test_set_show_and_history(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["costs", "show"]) == 0
    assert "No cost constants set" in capsys.readouterr().out

    assert (
        main(["costs", "set", "ip_monthly_price", "4.49", "--scope", "pool:shared", "--by", "ann"])
        == 0
    )
    assert (
        main(["costs", "set", "ip_monthly_price", "4.29", "--scope", "pool:shared", "--by", "bob"])
        == 0
    )
    assert (
        main(
            [
                "costs",
                "set",
                "plan_monthly_price",
                "9.49",
                "--scope",
                "plan:baseline",
                "--by",
                "ann",
            ]
        )
        == 0
    )
    capsys.readouterr()

    assert main(["costs", "show", "--history", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    values = {(c["key"], c["scope"]): c["value"] for c in doc["constants"]}
    assert values == {
        ("ip_monthly_price", "pool:shared"): "4.29",
        ("plan_monthly_price", "plan:baseline"): "9.49",
    }
    first = doc["history"][-1]
    latest_ip = next(h for h in doc["history"] if h["key"] == "ip_monthly_price")
    assert (first["key"], first["new"], first["set_by"]) == ("ip_monthly_price", "4.49", "ann")
    assert (latest_ip["old"], latest_ip["new"], latest_ip["set_by"]) == ("4.49", "4.29", "bob")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan_monthly_price", "9.99"], "set per plan"),
        (["ip_monthly_price", "4.99", "--scope", "plan:baseline"], "not for scope"),
        (["ip_monthly_price", "4.99", "--scope", "tenant:x"], "is not 'global'"),
        (["ip_monthly_price", "four"], "not an amount of money"),
        (["ip_monthly_price", "--", "-1"], "between 0 and"),
        (["ip_monthly_price", "NaN"], "between 0 and"),
    ],
)
def test_bad_input_is_refused_with_a_hint(
    db: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["costs", "set", *args]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "hint:" in err
    assert "Traceback" not in err


def test_the_plan_uses_finance_values_and_names_them(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["costs", "set", "ip_monthly_price", "3.99", "--by", "finance"]) == 0
    capsys.readouterr()
    assert main(["--dry-run", "-f", str(QUICKSTART), "--output", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    constants = {c["key"]: c for c in doc["summary"]["constants"]}
    assert constants["ip_monthly_price"]["value"] == "3.99"
    assert "set by finance" in constants["ip_monthly_price"]["source"]
    # 3 baseline nodes at 9.99 + 3.99
    assert doc["summary"]["monthly_cost_after"] == "41.94"
