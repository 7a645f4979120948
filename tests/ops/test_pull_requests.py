"""The pull-request workflow: `reconcile diff`, the comment script of examples/ci/ run against a
real git repository (base and head), the GitHub workflows' trust split, and the pre-commit
hook definition."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reconciler.cli.main import main
from reconciler.core.specdiff import SpecChange, diff_specs, render_value
from reconciler.views.markdown import render_spec_diff
from specs.loading import load_spec_text
from tests.ops.gitrepos import BROKEN_REGIONS, FLEET, REGIONS, TWO_REGIONS, Repo
from tests.ops.tools import ROOT

CI = ROOT / "examples" / "ci"
RECONCILE = str(Path(sys.executable).parent / "reconcile")
THREE_IN_DALLAS = TWO_REGIONS.replace("nodes: 2}", "nodes: 3}")


def _spec(regions: str) -> object:
    return load_spec_text(FLEET + regions).spec


# --- the structural diff ------------------------------------------------------------------------


def test_the_diff_names_each_changed_field() -> None:
    changes = diff_specs(_spec(REGIONS), _spec(THREE_IN_DALLAS))  # type: ignore[arg-type]
    rendered = [c.render() for c in changes]
    assert "~ regions.dallas.nodes: 2 → 3" in rendered
    added = [c for c in changes if c.kind == "added"]
    assert [c.path for c in added] == ["regions.seattle"]
    assert "location_id: 12" in added[0].render()
    back = diff_specs(_spec(THREE_IN_DALLAS), _spec(REGIONS))  # type: ignore[arg-type]
    assert {c.kind for c in back} == {"changed", "removed"}


def test_equal_specs_written_differently_have_no_diff() -> None:
    a = load_spec_text(FLEET + REGIONS).spec
    b = load_spec_text(
        FLEET.replace("monthly_price: 9.99", "monthly_price: 9.990")
        + "regions:\n  dallas:\n    plan: baseline\n    nodes: 2\n    location_id: 13\n"
        + "health: {heartbeat_interval: 30s}\n"  # the default, written out
    ).spec
    assert diff_specs(a, b) == []


def test_lists_and_type_changes_are_whole_values() -> None:
    autoscaled = REGIONS.replace("nodes: 2}", "nodes: {min: 1, max: 3}}")
    changes = diff_specs(_spec(REGIONS), _spec(autoscaled))  # type: ignore[arg-type]
    assert [c.render() for c in changes] == ["~ regions.dallas.nodes: 2 → {min: 1, max: 3}"]
    with_pool = TWO_REGIONS + "ip_pools:\n  shared: {size: 2, regions: [dallas]}\n"
    wider = with_pool.replace("regions: [dallas]", "regions: [dallas, seattle]")
    changes = diff_specs(_spec(with_pool), _spec(wider))  # type: ignore[arg-type]
    assert [c.render() for c in changes] == [
        "~ ip_pools.shared.regions: [dallas] → [dallas, seattle]"
    ]


def test_the_markdown_is_bounded_and_escaped() -> None:
    changes = [SpecChange("changed", f"regions.r{i}.nodes", i, i + 1) for i in range(500)]
    changes.append(SpecChange("added", "metadata.description", None, "a | b <script>"))
    text = render_spec_diff(changes, "main:fleets", "fleets", max_rows=200)
    assert "... and 301 more changes not shown" in text
    assert len(text.splitlines()) < 220
    tail = render_spec_diff(changes[-1:], "a", "b")
    assert "a \\| b &lt;script&gt;" in tail
    assert render_value("x" * 1000).endswith("…")


def _write(folder: Path, regions: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "fleet.yaml").write_text(FLEET)
    (folder / "regions.yaml").write_text(regions)
    return folder


def test_reconcile_diff_command_text_json_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _write(tmp_path / "old", REGIONS)
    new = _write(tmp_path / "new", THREE_IN_DALLAS)
    assert main(["diff", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    assert "~ regions.dallas.nodes: 2 → 3" in out
    assert "2 changes in the desired state." in out
    assert main(["diff", str(old), str(new), "--detailed-exitcode"]) == 2
    capsys.readouterr()
    assert main(["diff", str(old), str(old), "--detailed-exitcode"]) == 0
    assert "No changes in the desired state" in capsys.readouterr().out
    assert main(["diff", str(old), str(new), "-o", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["format_version"] == 1
    assert {"kind": "changed", "path": "regions.dallas.nodes", "old": 2, "new": 3} in document[
        "changes"
    ]


def test_reconcile_diff_reports_a_broken_head_and_tolerates_a_broken_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _write(tmp_path / "good", REGIONS)
    broken = _write(tmp_path / "broken", BROKEN_REGIONS)
    assert main(["diff", str(good), str(broken)]) == 1
    err = capsys.readouterr().err
    assert "regions.yaml:2:" in err
    assert "basline" in err
    assert "Traceback" not in err
    assert main(["diff", str(broken), str(good)]) == 0
    captured = capsys.readouterr()
    assert "compared with an empty spec" in captured.err
    assert "+ regions.dallas" in captured.out
    assert main(["diff", str(good), str(tmp_path / "missing")]) == 1


def test_reconcile_diff_reads_git_revisions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repo(tmp_path / "work")
    repo.commit("base", {"fleets/fleet.yaml": FLEET, "fleets/regions.yaml": REGIONS})
    repo.commit("grow", {"fleets/regions.yaml": THREE_IN_DALLAS})
    (repo.root / "fleets" / "regions.yaml").write_text(BROKEN_REGIONS)  # the working tree
    monkeypatch.chdir(repo.root)
    assert main(["diff", "HEAD~1:fleets", "HEAD:fleets"]) == 0
    out = capsys.readouterr().out
    assert "~ regions.dallas.nodes: 2 → 3" in out
    # the working tree is broken: named as it is, the committed one is read from git's objects
    assert main(["diff", "HEAD:fleets", "fleets"]) == 1
    assert "fleets/regions.yaml:2:" in capsys.readouterr().err
    assert main(["diff", "HEAD~1:fleets/regions.yaml", "HEAD:fleets"]) == 1  # half a spec
    assert main(["diff", "nosuchref:fleets", "HEAD:fleets"]) == 1
    assert "not a commit" in capsys.readouterr().err


# --- the comment script, against a real repository --------------------------------------------


def _checkouts(tmp_path: Path, head_regions: str) -> tuple[Path, Path]:
    repo = Repo(tmp_path / "work")
    base_rev = repo.commit("base", {"fleets/fleet.yaml": FLEET, "fleets/regions.yaml": REGIONS})
    repo.git("checkout", "--quiet", "-b", "pr")
    head_rev = repo.commit("the pull request", {"fleets/regions.yaml": head_regions})
    base = tmp_path / "base"
    head = tmp_path / "head"
    repo.git("worktree", "add", "--quiet", "--detach", str(base), base_rev)
    repo.git("worktree", "add", "--quiet", "--detach", str(head), head_rev)
    return base / "fleets", head / "fleets"


def _comment(tmp_path: Path, base: Path, head: Path, **env: str) -> tuple[int, str]:
    out = tmp_path / "comment.md"
    environ = {
        "PATH": os.environ["PATH"],
        "RECONCILE": RECONCILE,
        "RECONCILER_STATE_DIR": str(tmp_path / "state"),
        "RECONCILER_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
        **env,
    }
    result = subprocess.run(
        ["bash", str(CI / "pr-comment.sh"), str(base), str(head), str(out)],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return result.returncode, out.read_text()


@pytest.mark.e2e
def test_the_pull_request_comment_validates_diffs_and_plans(tmp_path: Path) -> None:
    base, head = _checkouts(tmp_path, THREE_IN_DALLAS)
    code, comment = _comment(tmp_path, base, head)
    assert code == 0, comment
    assert "**validate**: OK" in comment
    assert "| `~` | `regions.dallas.nodes` | `2` | `3` |" in comment
    assert "| `+` | `regions.seattle` |" in comment
    assert "### Fleet `acme`: 4 changes" in comment  # the plan: 3 in dallas, 1 in seattle
    assert "Monthly cost" in comment or "monthly cost" in comment.lower()
    assert len(comment) < 65_536


@pytest.mark.e2e
def test_a_broken_pull_request_gets_its_errors_and_no_plan(tmp_path: Path) -> None:
    base, head = _checkouts(tmp_path, BROKEN_REGIONS)
    code, comment = _comment(tmp_path, base, head)
    assert code == 1
    assert "does not load" in comment
    assert "regions.yaml:2:" in comment
    assert "basline" in comment
    assert "### Fleet" not in comment


def test_the_untrusted_half_needs_no_credentials(tmp_path: Path) -> None:
    base, head = _checkouts(tmp_path, THREE_IN_DALLAS)
    code, comment = _comment(tmp_path, base, head, PLAN="0", RECONCILER_DATABASE_URL="")
    assert code == 0
    assert "| `~` | `regions.dallas.nodes` | `2` | `3` |" in comment
    assert "### Fleet" not in comment


def test_the_github_workflows_keep_untrusted_code_away_from_secrets() -> None:
    check_text = (CI / "github" / "fleet-pr-check.yml").read_text()
    plan_text = (CI / "github" / "fleet-pr-plan.yml").read_text()
    check = yaml.safe_load(check_text)
    plan = yaml.safe_load(plan_text)
    # YAML reads the key `on` as True
    assert set(check[True]) == {"pull_request"}
    assert "secrets." not in check_text
    assert check["permissions"] == {"contents": "read"}
    assert "pull_request_target" not in set(check[True]) | set(plan[True])
    assert set(plan[True]) == {"workflow_run"}
    # the trusted half checks out the default branch only, never the pull request's head
    steps = plan["jobs"]["plan"]["steps"]
    checkouts = [s for s in steps if str(s.get("uses", "")).startswith("actions/checkout")]
    assert checkouts
    for step in checkouts:
        assert step["with"]["ref"] == "${{ github.event.repository.default_branch }}"
    assert "head.sha" not in plan_text
    assert "head_sha" not in plan_text
    # nothing from the artifact is installed or executed: only read as spec data
    for step in steps:
        run = str(step.get("run", ""))
        assert "pip install" not in run or "pr/" not in run
        assert "bash pr/" not in run
        assert "source pr/" not in run
    assert "tr -cd '0-9'" in plan_text  # the PR number from the artifact is digits only
    for text in (check_text, plan_text):
        for step in yaml.safe_load(text)["jobs"][next(iter(yaml.safe_load(text)["jobs"]))]["steps"]:
            if str(step.get("uses", "")).startswith("actions/checkout"):
                assert step["with"]["persist-credentials"] is False


def test_the_pre_commit_hook_validates_the_spec_folder(tmp_path: Path) -> None:
    """Run the hook's entry and args as pre-commit does for a `language: python` hook whose
    package is installed (pass_filenames: false)."""
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "reconcile-validate")
    assert hook["pass_filenames"] is False
    assert hook["language"] == "python"
    entry = hook["entry"].split()
    assert entry[0] == "reconcile"
    good = _write(tmp_path / "good", TWO_REGIONS)
    broken = _write(tmp_path / "broken", BROKEN_REGIONS)
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"]}
    config = yaml.safe_load((CI / "pre-commit-config.yaml").read_text())
    assert config["repos"][0]["hooks"][0]["id"] == hook["id"]
    ok = subprocess.run([*entry, str(good)], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "valid" in ok.stdout
    bad = subprocess.run([*entry, str(broken)], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "basline" in bad.stderr
