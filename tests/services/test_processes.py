"""One-shot programs and services leave nothing behind, even on timeout."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.services.processes import ServiceProcess, run_to_completion


def test_a_timed_out_program_is_killed_with_its_children(tmp_path: Path) -> None:
    marker_file = tmp_path / "pids"
    script = (
        f"sleep 300 & echo $! > {marker_file}; setsid sleep 301 & echo $! >> {marker_file}; wait"
    )

    with pytest.raises(TimeoutError, match="did not finish within 1 s"):
        run_to_completion(
            "stuck",
            ["/bin/sh", "-c", script],
            env={"PATH": "/usr/bin:/bin"},
            folder=tmp_path,
            timeout=1.0,
        )

    children = [int(pid) for pid in marker_file.read_text().split()]
    assert len(children) == 2
    for pid in children:  # gone, or a zombie waiting for its (re)parent to reap it
        stat = Path(f"/proc/{pid}/stat")
        assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_finished_program_returns_its_output(tmp_path: Path) -> None:
    code, out, err = run_to_completion(
        "echo",
        ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
        env={},
        folder=tmp_path,
        timeout=30,
    )
    assert (code, out, err) == (3, "out\n", "err\n")


def test_stop_kills_a_process_that_left_the_group_but_kept_the_marker(tmp_path: Path) -> None:
    process = ServiceProcess(
        "escaper",
        ["/bin/sh", "-c", "setsid sh -c 'sleep 300' & exec sleep 300"],
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        log_path=tmp_path / "log",
    )
    try:
        for _ in range(100):
            if len(process.remaining()) >= 2:
                break
            time.sleep(0.05)
        assert len(process.remaining()) >= 2
    finally:
        process.stop(grace=0.5)
    assert not process.remaining()
    assert not process.alive()
