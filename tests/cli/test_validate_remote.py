"""Plan ids and locations the provider does not offer: errors before anything is created
(``reconcile validate --remote``, and every plan that creates or resizes)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reconciler.cli.main import main
from reconciler.core.offers import OfferError
from tests.engine.conftest import PLANS, World, make_spec

VALID = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {name: demo}
plans:
  baseline: {rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}
  big: {rid: 540, vcpu: 4, ram_gb: 8, disk_gb: 150, monthly_price: 39.99}
regions:
  seattle: {location_id: 12, plan: baseline, nodes: 1}
  paris: {location_id: 99, plan: big, nodes: 1}
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HOSTWINDS_API_URL", raising=False)
    monkeypatch.delenv("RECONCILER_DATABASE_URL", raising=False)
    monkeypatch.setenv("RECONCILER_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def test_validate_remote_names_file_line_and_what_is_offered(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = workdir / "fleet.yaml"
    path.write_text(VALID)
    assert main(["validate", str(path)]) == 0  # offline, nothing to say
    capsys.readouterr()
    assert main(["validate", "--remote", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{path}:6:9: plans.big.rid: the provider offers no plan with rid 540 "
        "(rids in the account's price list: 54)",
        f"{path}:9:11: regions.paris.location_id: the provider has no location 99 "
        "(locations: 12 (Seattle), 13 (Dallas), 14 (Amsterdam))",
        "error: 2 problems found",
    ]


def test_validate_remote_of_an_offered_spec(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = workdir / "fleet.yaml"
    path.write_text(
        VALID.replace("rid: 540", "rid: 54").replace("location_id: 99", "location_id: 14")
    )
    assert main(["validate", "--remote", str(path)]) == 0
    assert "and offered by the provider" in capsys.readouterr().out


def test_a_plan_creating_on_an_unoffered_rid_or_location_creates_nothing() -> None:
    world = World()
    plans = {**PLANS, "odd": {**PLANS["baseline"], "rid": 999}}
    spec = make_spec({"seattle": 1, "dallas": 1}, plan={"seattle": "baseline", "dallas": "odd"})
    spec = spec.model_copy(update={"plans": make_spec({}, plans=plans).plans})
    for dry_run in (True, False):
        with pytest.raises(OfferError) as caught:
            world.run(spec, dry_run=dry_run)
        assert "plans.odd.rid: the provider offers no plan with rid 999" in caught.value.message
    assert world.cloud.calls["add_instance"] == 0
    # a fleet that creates nothing asks the provider nothing more
    converged = make_spec({"seattle": 0})
    asyncio.run(world.reconciler(converged).reconcile_once(dry_run=True))
    assert "get_price_list" in world.cloud.calls  # from the refused runs above only
    before = dict(world.cloud.calls)
    asyncio.run(world.reconciler(converged).reconcile_once(dry_run=True))
    assert world.cloud.calls["get_price_list"] == before["get_price_list"]


def test_validate_remote_warns_when_a_plans_size_is_not_the_providers(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = workdir / "fleet.yaml"
    text = VALID.replace("rid: 540", "rid: 54").replace("location_id: 99", "location_id: 14")
    path.write_text(text.replace("disk_gb: 50,", "disk_gb: 50, transfer_tb: 5,"))
    assert main(["validate", "--remote", str(path)]) == 0
    err = capsys.readouterr().err
    assert err == (
        f"warning: {path}:5:56: plans.baseline.transfer_tb: transfer_tb is 5, but the "
        "provider's plan rid 52 (Unmanaged Linux VPS 2GB) has 2 (copy the size from the "
        "price list)\n"
    )
