"""Run as root with a state folder the unprivileged user cannot reach, the node stand-ins
live under the system's temporary folder: those folders are cleaned up (a destroyed node's at
the end of the run, a deleted state folder's at the next start), and a folder someone else
put there under our name is refused, never used or removed."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import asyncssh
import pytest

from providers.simulator.nodes import (
    OWNER_FILE,
    RUN_FOLDER_PREFIX,
    NodeStandIns,
    StandInError,
    sweep_stale_run_folders,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the temporary run folders are made as root"
)


def _run_folder(state: Path) -> Path:
    digest = hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"{RUN_FOLDER_PREFIX}{digest}"


@pytest.fixture
def private_state() -> object:
    folder = Path(tempfile.mkdtemp(prefix="fr-private-"))  # 0700: uid 65534 cannot reach it
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(_run_folder(folder / "nodes"), ignore_errors=True)


@pytest.mark.anyio
async def test_destroyed_nodes_and_deleted_state_folders_are_cleaned_up(
    private_state: Path,
) -> None:
    names = {"127.0.0.2": "t-seattle-001", "127.0.0.3": "t-seattle-002"}
    alive = set(names.values())
    stand_ins = NodeStandIns(
        private_state / "nodes",
        [asyncssh.generate_private_key("ssh-ed25519")],
        name_of=names.get,
        alive=lambda: set(alive),
    )
    run = stand_ins.run_folder
    assert run == _run_folder(private_state / "nodes")
    assert (run / OWNER_FILE).read_text().strip() == str((private_state / "nodes").resolve())
    for ip in names:
        await stand_ins.endpoint(ip)
    for name in names.values():
        assert (run / name / "stubs" / "apt-get").is_file()
        assert (private_state / "nodes" / name).is_symlink()
    alive.discard("t-seattle-002")  # terminated in the simulated account
    await stand_ins.aclose()
    assert (run / "t-seattle-001").is_dir()
    assert not (run / "t-seattle-002").exists()
    assert not (private_state / "nodes" / "t-seattle-002").is_symlink()
    # the user deletes the state folder: the next start (any state folder) sweeps its nodes
    shutil.rmtree(private_state)
    assert run.is_dir()
    removed = sweep_stale_run_folders(Path(tempfile.gettempdir()))
    assert run in removed
    assert not run.exists()


def test_a_folder_under_our_name_that_is_not_ours_is_refused_and_kept(
    private_state: Path,
) -> None:
    run = _run_folder(private_state / "nodes")
    target = Path(tempfile.mkdtemp(prefix="fr-elsewhere-"))
    try:
        run.symlink_to(target, target_is_directory=True)  # someone's trap in /tmp
        with pytest.raises(StandInError, match="not a folder of this user"):
            NodeStandIns(private_state / "nodes", [asyncssh.generate_private_key("ssh-ed25519")])
        assert run.is_symlink()
        assert target.is_dir()
        run.unlink()
        # another user's folder with our prefix and a marker naming a missing folder: kept
        run.mkdir()
        (run / OWNER_FILE).write_text("/nonexistent/state\n")
        os.chown(run, 65534, 65534)
        assert run not in sweep_stale_run_folders(Path(tempfile.gettempdir()))
        assert run.is_dir()
    finally:
        if run.is_symlink():
            run.unlink()
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
