"""Following a real git repository made by the test (design §3e: the spec arrives by git):
commits that add a region, a broken commit, a force-push, a restart, signatures, and the
hostile paths of the mirror. Plus the folder watcher (new, changed and removed files)."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from providers.git.mirror import (
    MAX_FILE_BYTES,
    Credentials,
    GitMirror,
    GitSourceError,
    check_branch,
    check_path,
    check_url,
    redact_url,
)
from reconciler.core.errors import NotFoundError, SpecError, TerminalError, TransientError
from reconciler.daemon.sources import Candidate, FolderSource, GitSource, Rejected
from tests.ops.gitrepos import (
    BROKEN_REGIONS,
    FLEET,
    REGIONS,
    TWO_REGIONS,
    Repo,
    allowed_signers,
    ssh_key,
)

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def _repo(tmp_path: Path) -> tuple[Repo, str]:
    repo = Repo(tmp_path / "work")
    first = repo.commit(
        "dallas with two nodes",
        {"fleets/fleet.yaml": FLEET, "fleets/regions.yaml": REGIONS, "README.md": "# specs\n"},
    )
    return repo, first


def _source(repo: Repo, tmp_path: Path, **kwargs: object) -> GitSource:
    mirror = GitMirror(repo.url, tmp_path / "mirror", branch="main", timeout=30)
    return GitSource(mirror, path="fleets", clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]


def test_follows_commits_refuses_a_broken_one_and_follows_a_force_push(tmp_path: Path) -> None:
    repo, first = _repo(tmp_path)
    source = _source(repo, tmp_path)
    loaded = source.initial()
    assert set(loaded.spec.regions) == {"dallas"}
    assert source.revision == first
    assert source.poll() is None  # nothing new

    # a commit that adds a region: a valid candidate
    second = repo.commit("add seattle", {"fleets/regions.yaml": TWO_REGIONS})
    candidate = source.poll()
    assert isinstance(candidate, Candidate)
    assert candidate.revision == second
    assert set(candidate.loaded.spec.regions) == {"dallas", "seattle"}
    assert candidate.commit is not None
    assert candidate.commit.subject == "add seattle"
    assert candidate.commit.author == "Alice Operator <alice@example.com>"
    source.mark_applied(second, NOW)
    assert source.status().applied == second

    # a broken commit: rejected with the file as it is in the repository, at its commit
    broken = repo.commit("typo", {"fleets/regions.yaml": BROKEN_REGIONS})
    rejected = source.poll()
    assert isinstance(rejected, Rejected)
    assert rejected.revision == broken
    assert f"fleets/regions.yaml@{broken[:12]}:2:" in rejected.error
    assert "unknown plan 'basline'" in rejected.error
    source.mark_failed(broken, rejected.error, NOW)
    status = source.status()
    assert status.applied == second  # the running spec stays
    assert status.attempted == broken
    assert status.attempted_error is not None
    assert "basline" in status.attempted_error
    assert source.poll() is None  # the same bad tip is not judged again and again

    # a force-push that drops the broken commit and adds another: followed
    repo.reset_hard(first)
    third = repo.commit("seattle again, rewritten", {"fleets/regions.yaml": TWO_REGIONS})
    candidate = source.poll()
    assert isinstance(candidate, Candidate)
    assert candidate.revision == third
    source.mark_applied(third, NOW)
    status = source.status()
    assert (status.applied, status.attempted, status.attempted_error) == (third, third, None)


def test_a_restart_starts_from_the_applied_revision_not_a_bad_tip(tmp_path: Path) -> None:
    repo, first = _repo(tmp_path)
    source = _source(repo, tmp_path)
    source.initial()
    second = repo.commit("add seattle", {"fleets/regions.yaml": TWO_REGIONS})
    candidate = source.poll()
    assert isinstance(candidate, Candidate)
    source.mark_applied(second, NOW)
    repo.commit("typo", {"fleets/regions.yaml": BROKEN_REGIONS})
    rejected = source.poll()
    assert isinstance(rejected, Rejected)
    source.mark_failed(rejected.revision, rejected.error, NOW)

    # the daemon restarts on the same mirror: it runs the applied revision
    restarted = _source(repo, tmp_path)
    loaded = restarted.initial()
    assert set(loaded.spec.regions) == {"dallas", "seattle"}
    assert restarted.revision == second
    assert restarted.status().attempted == rejected.revision
    assert restarted.poll() is None  # and does not retry the known-bad tip

    # after a force-push that removes the applied commit, the pin keeps it readable
    repo.reset_hard(first)
    again = _source(repo, tmp_path)
    assert set(again.initial().spec.regions) == {"dallas", "seattle"}


def test_a_first_start_on_a_broken_tip_is_a_clear_error(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "work")
    bad = repo.commit("broken", {"fleets/fleet.yaml": FLEET, "fleets/regions.yaml": BROKEN_REGIONS})
    source = _source(repo, tmp_path)
    with pytest.raises(SpecError) as caught:
        source.initial()
    assert "no earlier revision was applied" in caught.value.message
    assert "basline" in caught.value.message
    assert source.status().attempted == bad


def test_signatures_are_checked_when_asked(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    alice = ssh_key(keys, "alice")
    mallory = ssh_key(keys, "mallory")
    signers = allowed_signers(tmp_path / "allowed_signers", "alice@example.com", alice)
    repo = Repo(tmp_path / "work")
    first = repo.commit(
        "signed", {"fleets/fleet.yaml": FLEET, "fleets/regions.yaml": REGIONS}, sign_key=alice
    )
    mirror = GitMirror(repo.url, tmp_path / "mirror", allowed_signers=signers)
    source = GitSource(mirror, path="fleets", verify_signatures=True, clock=lambda: NOW)
    source.initial()
    assert source.revision == first

    unsigned = repo.commit("unsigned", {"fleets/regions.yaml": TWO_REGIONS})
    rejected = source.poll()
    assert isinstance(rejected, Rejected)
    assert rejected.revision == unsigned
    assert "signature does not verify" in rejected.error

    repo.reset_hard(first)
    forged = repo.commit("by mallory", {"fleets/regions.yaml": TWO_REGIONS}, sign_key=mallory)
    rejected = source.poll()
    assert isinstance(rejected, Rejected)
    assert rejected.revision == forged
    assert "signature does not verify" in rejected.error

    repo.reset_hard(first)
    good = repo.commit("by alice", {"fleets/regions.yaml": TWO_REGIONS}, sign_key=alice)
    candidate = source.poll()
    assert isinstance(candidate, Candidate)
    assert candidate.revision == good
    assert candidate.signature is not None
    assert "alice@example.com" in candidate.signature


def test_the_export_skips_symlinks_and_refuses_huge_files(tmp_path: Path) -> None:
    repo, _ = _repo(tmp_path)
    secret = tmp_path / "secret.yaml"
    secret.write_text("regions: {stolen: {location_id: 1, plan: baseline, nodes: 1}}\n")
    os.symlink(secret, repo.root / "fleets" / "zz-link.yaml")
    linked = repo.commit("a symlink to a file outside", {})
    mirror = GitMirror(repo.url, tmp_path / "mirror")
    tip = mirror.fetch()
    assert tip == linked
    export = mirror.export(tip, "fleets", tmp_path / "out")
    assert sorted(f.path for f in export.files) == ["fleet.yaml", "regions.yaml"]
    assert any("zz-link.yaml" in s and "symlink" in s for s in export.skipped)
    assert not (tmp_path / "out" / "zz-link.yaml").exists()

    big = repo.commit("huge", {"fleets/huge.yaml": "#" * (MAX_FILE_BYTES + 1)})
    mirror.fetch()
    with pytest.raises(TerminalError, match=r"huge\.yaml"):
        mirror.export(big, "fleets", tmp_path / "out2")
    with pytest.raises(TerminalError, match="no file under"):
        mirror.export(big, "nowhere", tmp_path / "out3")


def test_a_missing_branch_and_an_unreachable_remote_are_clear(tmp_path: Path) -> None:
    repo, _ = _repo(tmp_path)
    mirror = GitMirror(repo.url, tmp_path / "mirror", branch="release")
    with pytest.raises(NotFoundError, match="branch 'release' does not exist"):
        mirror.fetch()
    token = "ghp_supersecrettoken1234567890"
    remote = GitMirror(
        f"https://bot:{token}@127.0.0.1:9/acme/fleet.git",
        tmp_path / "mirror2",
        credentials=Credentials(token=token),
        timeout=20,
    )
    with pytest.raises(TransientError) as caught:
        remote.fetch()
    text = caught.value.message + (caught.value.hint or "")
    assert token not in text
    assert "https://***@127.0.0.1:9/acme/fleet.git" in text


def test_credentials_never_reach_the_command_line(tmp_path: Path) -> None:
    """A stand-in git records its argv and environment: the token is only in the env."""
    log = tmp_path / "argv.log"
    fake = tmp_path / "fake-git"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\nenv | grep -c GIT_CONFIG_VALUE >> {log}\n'
        'case "$*" in *rev-parse*) echo 0123456789abcdef0123456789abcdef01234567;; esac\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    token = "tok-0123456789-abcdef"
    mirror = GitMirror(
        "https://git.example/acme.git",
        tmp_path / "mirror",
        credentials=Credentials(token=token),
        git=str(fake),
    )
    assert mirror.fetch() == "0123456789abcdef0123456789abcdef01234567"
    recorded = log.read_text()
    assert "fetch" in recorded
    assert token not in recorded
    assert "Credentials(" in repr(Credentials(token=token))
    assert token not in repr(Credentials(token=token))


def test_a_hanging_git_is_killed_at_the_timeout(tmp_path: Path) -> None:
    fake = tmp_path / "slow-git"
    fake.write_text("#!/bin/sh\nsleep 30 &\nwait\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    mirror = GitMirror("https://git.example/a.git", tmp_path / "m", timeout=0.5, git=str(fake))
    with pytest.raises(TransientError, match=r"no answer within 0\.5s"):
        mirror.fetch()


@pytest.mark.parametrize(
    "url",
    ["ext::sh -c touch% /tmp/pwned", "-uhelper", "http://git.example/a.git", "fd::3", ""],
)
def test_dangerous_urls_are_refused(url: str) -> None:
    with pytest.raises(GitSourceError):
        check_url(url)


@pytest.mark.parametrize("branch", ["", "-x", "a..b", "a b", "a~1", "x.lock", "@{-1}", "a:b"])
def test_bad_branches_are_refused(branch: str) -> None:
    with pytest.raises(GitSourceError):
        check_branch(branch)


@pytest.mark.parametrize("path", ["../etc", "a/../../b", ".git", "a\\b"])
def test_paths_outside_the_repository_are_refused(path: str) -> None:
    with pytest.raises(GitSourceError):
        check_path(path)


def test_urls_are_redacted() -> None:
    assert redact_url("https://u:p@h/x") == "https://***@h/x"
    assert redact_url("ssh://git@h/x") == "ssh://***@h/x"
    assert redact_url("git@github.com:acme/fleet.git") == "git@github.com:acme/fleet.git"
    assert check_path("./fleets/") == "fleets"
    assert check_path("") == ""


# --- the folder on disk ---------------------------------------------------------------------


def test_a_watched_folder_sees_new_changed_and_removed_files(tmp_path: Path) -> None:
    folder = tmp_path / "fleet"
    folder.mkdir()
    (folder / "fleet.yaml").write_text(FLEET)
    (folder / "regions.yaml").write_text(REGIONS)
    source = FolderSource([str(folder)])
    assert set(source.initial().spec.regions) == {"dallas"}
    assert source.poll() is None

    # a NEW file in the folder (the daemon used to watch only the files it had loaded)
    (folder / "seattle.yaml").write_text(
        "regions:\n  seattle: {location_id: 12, plan: baseline, nodes: 1}\n"
    )
    candidate = source.poll()
    assert isinstance(candidate, Candidate)
    assert set(candidate.loaded.spec.regions) == {"dallas", "seattle"}
    source.mark_applied(candidate.revision, NOW)

    # a REMOVED file
    (folder / "seattle.yaml").unlink()
    candidate = source.poll()
    assert isinstance(candidate, Candidate)
    assert set(candidate.loaded.spec.regions) == {"dallas"}
    source.mark_applied(candidate.revision, NOW)

    # a broken change is rejected (once), and the next good change is taken
    (folder / "regions.yaml").write_text(BROKEN_REGIONS)
    rejected = source.poll()
    assert isinstance(rejected, Rejected)
    assert "basline" in rejected.error
    source.mark_failed(rejected.revision, rejected.error, NOW)
    assert source.poll() is None
    assert source.status().attempted_error is not None
    (folder / "regions.yaml").write_text(TWO_REGIONS)
    candidate = source.poll()
    assert isinstance(candidate, Candidate)
    assert set(candidate.loaded.spec.regions) == {"dallas", "seattle"}

    # a touch that changes nothing in the spec is not a new revision
    source.mark_applied(candidate.revision, NOW)
    os.utime(folder / "regions.yaml", None)
    (folder / "notes.txt").write_text("not a spec file")
    assert source.poll() is None


def test_the_daemon_reloads_when_a_new_file_appears_in_its_spec_folder(tmp_path: Path) -> None:
    import asyncio

    from reconciler.daemon.heartbeats import MasterSecret
    from reconciler.daemon.running import Daemon, DaemonSettings
    from specs.loading import load_spec
    from tests.fakes.clocks import FakeClock
    from tests.fakes.cloud import FakeCloud
    from tests.fakes.store import InMemoryStore

    folder = tmp_path / "fleet"
    folder.mkdir()
    (folder / "fleet.yaml").write_text(FLEET)
    (folder / "regions.yaml").write_text(REGIONS)
    clock = FakeClock()
    daemon = Daemon(
        DaemonSettings(paths=(str(folder),), listen=None, poll_interval=1.0),
        load_spec([folder]),
        InMemoryStore(now=clock.now),
        FakeCloud(clock=clock),
        _NoLeadership(),
        MasterSecret("a-master-secret-for-tests"),
        clock=clock,
        monotonic=clock.monotonic,
    )
    (folder / "seattle.yaml").write_text(
        "regions:\n  seattle: {location_id: 12, plan: baseline, nodes: 1}\n"
    )
    asyncio.run(daemon._job_spec_watch())
    assert set(daemon.spec.regions) == {"dallas", "seattle"}
    # on trial until its plan passes the guards (this daemon does not lead: not yet applied)
    assert daemon.source.status().applied != f"files:{daemon.loaded.spec_hash}"
    (folder / "seattle.yaml").write_text("regions: [oops\n")
    asyncio.run(daemon._job_spec_watch())
    assert set(daemon.spec.regions) == {"dallas", "seattle"}  # the broken edit is refused
    assert daemon.source.status().attempted_error


class _NoLeadership:
    def try_acquire(self) -> int | None:
        return None

    def check(self) -> bool:
        return False

    def release(self) -> None:
        return None
