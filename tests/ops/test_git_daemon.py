"""The daemon following a real git repository made by the test: commits that add a region, a
broken commit, a force-push that would destroy a region (refused by the guard, the previous
spec kept), and a good force-push; the authenticated webhook; and, as processes,
`reconcile daemon --git` against the simulator, woken by the webhook."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from providers.git.mirror import GitMirror
from reconciler.core.plans import Action
from reconciler.daemon.heartbeats import MasterSecret
from reconciler.daemon.http import create_app
from reconciler.daemon.running import Daemon, DaemonSettings
from reconciler.daemon.sources import GitSettings, GitSource, webhook_authentic
from tests.daemon.processes import daemon_env, fleet, instances, simulator, wait_for
from tests.daemon.serving import free_port, serve_in_thread
from tests.fakes.clocks import FakeClock
from tests.fakes.cloud import FakeCloud
from tests.fakes.store import InMemoryStore
from tests.ops.gitrepos import BROKEN_REGIONS, FLEET, REGIONS, TWO_REGIONS, Repo

SECRET = "webhook-secret-0123456789"
#: dallas removed altogether: the mass-delete guard refuses the plan
NO_DALLAS = "regions:\n  seattle: {location_id: 12, plan: baseline, nodes: 1}\n"


class _Leadership:
    def try_acquire(self) -> int | None:
        return 1

    def check(self) -> bool:
        return True

    def release(self) -> None:
        return None


def _daemon(tmp_path: Path, repo: Repo) -> tuple[Daemon, FakeCloud, InMemoryStore]:
    clock = FakeClock(datetime(2026, 5, 1, tzinfo=UTC))
    cloud = FakeCloud(clock=clock, build_seconds=1)
    store = InMemoryStore(now=clock.now)
    mirror = GitMirror(repo.url, tmp_path / "mirror", branch="main")
    source = GitSource(mirror, path="fleets", clock=clock.now)
    loaded = source.initial()
    daemon = Daemon(
        DaemonSettings(
            paths=(),
            listen=("127.0.0.1", 0),
            poll_interval=0.5,
            git=GitSettings(url=repo.url, path="fleets"),
            webhook_secret=SECRET,
        ),
        loaded,
        store,
        cloud,
        _Leadership(),
        MasterSecret("a-master-secret-for-tests"),
        clock=clock,
        monotonic=clock.monotonic,
        source=source,
    )
    return daemon, cloud, store


def _actions(plan: object) -> list[Action]:
    return [c.action for c in plan.changes]  # type: ignore[attr-defined]


def test_the_daemon_follows_the_repository_and_never_runs_a_bad_revision(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "work")
    first = repo.commit("dallas", {"fleets/fleet.yaml": FLEET, "fleets/regions.yaml": REGIONS})
    daemon, cloud, store = _daemon(tmp_path, repo)
    metric = daemon.metrics.registry.get_sample_value

    async def scenario() -> None:
        await daemon.guard.tick()
        plan = await daemon.reconcile_now()
        assert _actions(plan) == [Action.CREATE, Action.CREATE]
        assert daemon.revision == first
        assert metric("reconciler_spec_revision_info", {"source": "git", "revision": first}) == 1

        # a commit that adds a region: planned and applied
        second = repo.commit("add seattle", {"fleets/regions.yaml": TWO_REGIONS})
        await daemon._job_spec_watch()
        assert set(daemon.spec.regions) == {"dallas", "seattle"}
        plan = await daemon.reconcile_now()
        assert [c.region for c in plan.changes if c.action is Action.CREATE] == ["seattle"]
        assert daemon.revision == second

        # a broken commit: refused, the running spec stays, nothing changes
        broken = repo.commit("typo", {"fleets/regions.yaml": BROKEN_REGIONS})
        await daemon._job_spec_watch()
        assert set(daemon.spec.regions) == {"dallas", "seattle"}
        status = daemon.source.status()
        assert status.applied == second
        assert status.attempted == broken
        assert "basline" in (status.attempted_error or "")
        assert metric("reconciler_spec_revision_refused") == 1
        assert (await daemon.reconcile_now()).is_empty
        code, page = daemon.status_page(None, None)
        assert code == 200
        assert 'id="spec-refused"' in page
        assert broken[:12] in page

        # a force-push to a history that removes dallas: the guard refuses the plan, the
        # previous spec comes back, the revision is recorded as attempted with the refusal
        repo.reset_hard(first)
        drop = repo.commit("move everything to seattle", {"fleets/regions.yaml": NO_DALLAS})
        await daemon._job_spec_watch()
        mutations = cloud.mutations
        plan = await daemon.reconcile_now()
        assert plan.blocked
        assert cloud.mutations == mutations  # nothing applied
        assert set(daemon.spec.regions) == {"dallas", "seattle"}
        status = daemon.source.status()
        assert (status.applied, status.attempted) == (second, drop)
        assert "mass_delete" in (status.attempted_error or "")

        # a good force-push: applied
        repo.reset_hard(first)
        good = repo.commit("seattle, rewritten", {"fleets/regions.yaml": TWO_REGIONS})
        await daemon._job_spec_watch()
        plan = await daemon.reconcile_now()
        assert not plan.blocked
        assert daemon.revision == good
        assert metric("reconciler_spec_revision_refused") == 0
        assert daemon.fleet_document()["spec"]["applied_revision"] == good

    asyncio.run(scenario())
    # who acted and which revision: on every run record and journal entry
    first_run = min(store.runs.values(), key=lambda r: r.started_at)
    assert first_run.summary["revision"] == first
    assert first_run.summary["actor"].startswith("daemon ")
    assert first_run.summary["epoch"] == "1"
    creates = [i for i in store.intents.values() if i.kind == "create"]
    assert {i.params["revision"] for i in creates if i.target.startswith("acme-dallas")} == {first}
    seattle = [i for i in creates if i.target == "acme-seattle-001"]
    assert seattle
    assert seattle[0].params["actor"].startswith("daemon ")
    assert seattle[0].params["revision"] != first
    assert {n.name for n in store.load_fleet("acme").nodes} == {
        "acme-dallas-001",
        "acme-dallas-002",
        "acme-seattle-001",
    }


def _sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_the_webhook_is_authenticated(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "work")
    repo.commit("dallas", {"fleets/fleet.yaml": FLEET, "fleets/regions.yaml": REGIONS})
    daemon, _, _ = _daemon(tmp_path, repo)
    app = create_app(daemon, daemon.metrics, daemon.verifier, daemon.batcher)
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    with serve_in_thread(app) as url:
        hook = url + "/v1/git/webhook"
        assert httpx.post(hook, content=body).status_code == 401
        forged = httpx.post(hook, content=body, headers={"X-Hub-Signature-256": _sign(b"x")})
        assert forged.status_code == 401
        good = httpx.post(hook, content=body, headers={"X-Hub-Signature-256": _sign(body)})
        assert good.status_code == 202
        gitlab = httpx.post(hook, content=body, headers={"X-Gitlab-Token": SECRET})
        assert gitlab.status_code == 202
        huge = httpx.post(hook, content=b"x" * (1024 * 1024 + 10))
        assert huge.status_code == 413
        assert httpx.get(hook).status_code == 405
    value = daemon.metrics.registry.get_sample_value
    assert value("reconciler_git_webhooks_total", {"result": "accepted"}) == 2
    assert value("reconciler_git_webhooks_total", {"result": "refused"}) == 2
    assert not webhook_authentic({}, body, SECRET)
    assert not webhook_authentic({"x-hub-signature-256": _sign(body)}, body, "")
    assert webhook_authentic({"x-gitea-signature": _sign(body)[7:]}, body, SECRET)


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_reconcile_daemon_git_as_a_process_woken_by_the_webhook(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "work")
    spec = FLEET.replace("build_time: 1s", "build_time: 300ms") + "reconcile: {interval: 2s}\n"
    first = repo.commit("dallas", {"fleets/fleet.yaml": spec, "fleets/regions.yaml": REGIONS})
    with simulator(tmp_path) as sim:
        env = daemon_env(sim, f"sqlite:///{tmp_path}/state.db", tmp_path / "state")
        env["RECONCILER_GIT_WEBHOOK_SECRET"] = SECRET
        port = free_port()
        from tests.daemon.processes import _spawn

        proc = _spawn(
            "daemon",
            [
                "daemon",
                "--git",
                repo.url,
                "--path",
                "fleets",
                "--git-interval",
                "10m",  # only the webhook can bring the second commit in time
                "--listen",
                f"127.0.0.1:{port}",
                "--log-format",
                "json",
            ],
            env,
            tmp_path,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(
                lambda: fleet(url)["spec"]["applied_revision"] == first, 60, "the first revision"
            )
            wait_for(lambda: len(instances(sim)) == 2, 60, "two servers")
            second = repo.commit("add seattle", {"fleets/regions.yaml": TWO_REGIONS})
            body = b'{"ref": "refs/heads/main"}'
            answer = httpx.post(
                url + "/v1/git/webhook", content=body, headers={"X-Hub-Signature-256": _sign(body)}
            )
            assert answer.status_code == 202
            wait_for(
                lambda: fleet(url)["spec"]["applied_revision"] == second, 60, "the second revision"
            )
            wait_for(lambda: len(instances(sim)) == 3, 60, "three servers")
            broken = repo.commit("typo", {"fleets/regions.yaml": BROKEN_REGIONS})
            httpx.post(
                url + "/v1/git/webhook", content=body, headers={"X-Hub-Signature-256": _sign(body)}
            )
            document = wait_for(
                lambda: (lambda d: d if d["spec"]["attempted_revision"] == broken else None)(
                    fleet(url)
                ),
                60,
                "the broken revision to be refused",
            )
            assert document["spec"]["applied_revision"] == second
            assert "basline" in document["spec"]["attempted_error"]
            metrics = httpx.get(url + "/metrics", timeout=5).text
            assert "reconciler_spec_revision_refused 1.0" in metrics
        finally:
            code = proc.stop()
        log = proc.log()
        assert code == 0, log[-3000:]
        assert SECRET not in log
