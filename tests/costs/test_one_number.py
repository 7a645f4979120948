"""One number everywhere (issue 16): after every kind of change (create, resize, destroy, a
constant change, an override by scope), the plan, `reconcile status`, the metrics, /v1/fleet
and the status page give the same monthly cost, to the cent.

The daemon runs in-process on a real SQLite store (the store's cost refresh is the code under
test), FakeCloud and a fake clock; `reconcile status` and `reconcile costs set` run through the
CLI against the same database file."""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from reconciler.cli.main import main
from reconciler.daemon.heartbeats import MasterSecret
from reconciler.daemon.running import Daemon, DaemonSettings
from reconciler.daemon.statuspage import StatusTokens
from reconciler.engine.reconciling import Reconciler
from specs.loading import load_spec
from state.leadership import leadership_for
from state.store import SqlStore, open_store
from tests.fakes.clocks import FakeClock
from tests.fakes.cloud import FakeCloud

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: acme}}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
  large: {{rid: 53, vcpu: 2, ram_gb: 4, disk_gb: 75, monthly_price: 19.99}}
regions:
  dallas: {{location_id: 13, plan: {plan}, nodes: {nodes}}}
ip_pools:
  shared: {{size: {nodes}, regions: [dallas], contract: deal}}
costs:
  ip_monthly_price: 4.99
  contracts:
    deal: {{ip_monthly_price: 4.49}}
disruption: {{max_unavailable: 3}}
health: {{heartbeat_interval: 30s, missed_beats: 3, replace_after: 2m}}
"""


class _Leadership:
    epoch = 0

    def try_acquire(self) -> int | None:
        self.epoch += 1
        return self.epoch

    def check(self) -> bool:
        return True

    def release(self) -> None:
        return None


class World:
    def __init__(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, leads: bool = True
    ) -> None:
        #: the daemon holds the real (file) leadership beside the database: a CLI writer is
        #: then refused the fleet's lock, as in production
        self.leads = leads
        self.spec_path = tmp_path / "fleet.yaml"
        self.url = f"sqlite:///{tmp_path}/state.db"
        monkeypatch.setenv("RECONCILER_DATABASE_URL", self.url)
        monkeypatch.chdir(tmp_path)
        self.clock = FakeClock()
        self.cloud = FakeCloud(clock=self.clock, build_seconds=5)
        self.store = open_store(self.url)
        assert isinstance(self.store, SqlStore)
        self.daemon: Daemon | None = None
        self.write(plan="baseline", nodes=2)

    def write(self, *, plan: str, nodes: int) -> None:
        self.spec_path.write_text(SPEC.format(plan=plan, nodes=nodes))
        loaded = load_spec([self.spec_path])
        if self.daemon is None:
            self.daemon = Daemon(
                DaemonSettings(
                    paths=(str(self.spec_path),),
                    listen=("127.0.0.1", 0),
                    poll_interval=1.0,
                    status_tokens=StatusTokens(),
                ),
                loaded,
                self.store,
                self.cloud,
                (leadership_for(self.url, "acme", "test-daemon") if self.leads else _Leadership()),
                MasterSecret("a-master-secret-for-tests"),
                clock=self.clock,
                monotonic=self.clock.monotonic,
            )
            asyncio.run(self._start())
        else:
            self.daemon.loaded = loaded

    async def _start(self) -> None:
        assert self.daemon is not None
        await self.daemon.guard.tick()
        await self.daemon._refresh(initial=True)

    def converge(self) -> None:
        """Daemon reconciles until the plan is empty (builds take a few fake seconds)."""
        assert self.daemon is not None

        async def go() -> None:
            assert self.daemon is not None
            changes: list[str] = []
            for _ in range(30):
                plan = await self.daemon.reconcile_now()
                assert plan is not None
                if plan.is_empty:
                    return
                changes = [f"{c.action.value} {c.address}: {c.reason}" for c in plan.changes]
                self.clock.advance(10)
            raise AssertionError(f"the fleet did not converge: {changes}")

        asyncio.run(go())

    def figures(self) -> dict[str, Decimal]:
        """The fleet's monthly cost as each view gives it."""
        daemon = self.daemon
        assert daemon is not None

        async def sweep_and_plan() -> Decimal:
            assert daemon is not None
            await daemon._job_sweep()
            engine = Reconciler(daemon.loaded, self.cloud, self.store, self.clock)
            plan = engine.plan(await engine.observe())
            return plan.summary.monthly_cost_before

        plan_before = asyncio.run(sweep_and_plan())
        capsys_free = self._status_cli()
        fleet = daemon.fleet_for(None, None)  # loopback, no cost token configured
        code, page = daemon.status_page(None, None)
        assert code == 200
        shown = re.search(r'id="monthly-cost">\$([0-9.]+)<', page)
        assert shown is not None, "the status page shows no monthly cost"
        metric = re.search(
            r"^reconciler_monthly_cost_usd ([0-9.e+]+)$", daemon.metrics.render().decode(), re.M
        )
        assert metric is not None
        nodes = {n.name: n.approximate_cost for n in self.store.load_fleet("acme").nodes}
        assert all(cost is not None for cost in nodes.values())
        return {
            "plan": plan_before,
            "status": Decimal(capsys_free["monthly_cost"]),
            "status_rows": sum(
                (Decimal(n["monthly_cost"]) for n in capsys_free["nodes"]), Decimal(0)
            ),
            "v1_fleet": Decimal(fleet["monthly_cost"]),
            "v1_fleet_rows": sum((Decimal(n["monthly_cost"]) for n in fleet["nodes"]), Decimal(0)),
            "status_page": Decimal(shown.group(1)),
            "metrics": Decimal(str(round(float(metric.group(1)), 2))),
            "recorded": sum((c for c in nodes.values() if c is not None), Decimal(0)),
        }

    def _status_cli(self) -> dict[str, object]:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["status", "-f", str(self.spec_path), "-o", "json"]) == 0
        document: dict[str, object] = json.loads(out.getvalue())
        return document

    def daemon_notices(self) -> None:
        """The daemon's next sweep sees the changed constants and asks for a reconcile,
        whose end refreshes the recorded costs."""
        daemon = self.daemon
        assert daemon is not None
        asyncio.run(daemon._refresh())
        assert daemon._costs_due
        self.converge()

    def agree(self, expected: str) -> None:
        figures = self.figures()
        assert set(figures.values()) == {Decimal(expected)}, figures


def test_every_view_gives_the_same_monthly_cost_after_every_kind_of_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch)
    try:
        # create: 2 x (9.99 + 4.49 contract IP)
        world.converge()
        world.agree("28.96")
        # resize to large: 2 x (19.99 + 4.49)
        world.write(plan="large", nodes=2)
        world.converge()
        world.agree("48.96")
        # scale up
        world.write(plan="large", nodes=3)
        world.converge()
        world.agree("73.44")
        # destroy one (1 of 3: under the mass-delete threshold)
        world.write(plan="large", nodes=2)
        world.converge()
        world.agree("48.96")

        # finance changes the global IP price while the daemon leads: `costs set -f` cannot
        # take the fleet's lock and says so; the daemon's sweep notices and refreshes. A store
        # value beats the spec's contract price.
        out = _cli(["costs", "set", "ip_monthly_price", "5.00", "-f", str(world.spec_path)])
        assert "not refreshed now" in out
        assert "daemon" in out
        world.daemon_notices()
        world.agree("49.98")
        # a store override for the contract (4 decimals: 19.99 + 3.3333 = 23.3233 -> 23.32)
        _cli(["costs", "set", "ip_monthly_price", "3.3333", "--scope", "contract:deal"])
        world.daemon_notices()
        world.agree("46.64")  # 2 x 23.32, rounded per node as recorded
        # an override by pool beats the contract: 19.99 + 4.005 = 23.995 -> 24.00 (half up)
        _cli(["costs", "set", "ip_monthly_price", "4.005", "--scope", "pool:shared"])
        world.daemon_notices()
        world.agree("48.00")
        # a plan price by finance: 18.50 + 4.005 = 22.505 -> 22.51
        _cli(["costs", "set", "plan_monthly_price", "18.50", "--scope", "plan:large"])
        world.daemon_notices()
        world.agree("45.02")
    finally:
        world.store.close()


def _cli(argv: list[str]) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


def test_costs_set_with_the_spec_refreshes_at_once_and_splits_vps_and_ip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, leads=False)
    try:
        world.converge()
        ips = world.store.ip_addresses("acme")
        assert {row["approximate_cost"] for row in ips} == {"4.49"}  # the contract's price
        assert set(world.store.vps_costs("acme").values()) == {Decimal("9.99")}
        assert (
            main(
                [
                    "costs",
                    "set",
                    "ip_monthly_price",
                    "3.00",
                    "--scope",
                    "contract:deal",
                    "-f",
                    str(world.spec_path),
                ]
            )
            == 0
        )
        assert {row["approximate_cost"] for row in world.store.ip_addresses("acme")} == {"3.00"}
        assert set(world.store.vps_costs("acme").values()) == {Decimal("9.99")}
    finally:
        world.store.close()


def test_fleet_document_hides_costs_without_the_cost_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch)
    try:
        world.converge()
        daemon = world.daemon
        assert daemon is not None
        asyncio.run(daemon._job_sweep())
        daemon.settings = daemon.settings.__class__(
            **{**daemon.settings.__dict__, "status_tokens": StatusTokens("s" * 24, "c" * 24)}
        )
        hidden = daemon.fleet_for(None, None)
        assert "monthly_cost" not in hidden
        assert all("monthly_cost" not in n for n in hidden["nodes"])
        assert all("monthly_cost" not in g for g in hidden["groups"])
        assert "cost token" in hidden["costs"]
        assert "monthly_cost" not in daemon.fleet_for("Bearer " + "s" * 24, None)
        assert "monthly_cost" not in daemon.fleet_for("Bearer " + "c" * 23, None)
        shown = daemon.fleet_for("Bearer " + "c" * 24, None)
        assert shown["monthly_cost"] == "28.96"
        assert daemon.fleet_for(None, "c" * 24)["monthly_cost"] == "28.96"
    finally:
        world.store.close()
