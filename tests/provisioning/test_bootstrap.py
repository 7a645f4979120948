"""The bootstrap over SSH against a node stand-in: failures, dropped connections, first boot."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from providers.simulator.standins import StandIns
from reconciler.engine.clocks import SystemClock
from reconciler.node import commands
from reconciler.node.bundle import BundleSettings, render_bundle
from tests.provisioning.conftest import ZONE, provisioner_for

pytestmark = pytest.mark.anyio

NODE = "demo-dallas-001"
BUNDLE = render_bundle(BundleSettings(node=NODE, hostname=f"{NODE}.{ZONE}", domain=ZONE))
TOKEN = "secret-token-" + "b" * 51


def _deadline(seconds: float = 60) -> object:
    return SystemClock().now() + timedelta(seconds=seconds)


async def test_a_failing_install_is_reported_with_its_log_and_rerun_only_when_asked(
    stand_ins: StandIns,
) -> None:
    ip = "198.51.100.31"
    p = provisioner_for(stand_ins)
    target = p.target(ip, await p.pin_host_key(ip))
    node = stand_ins.nodes.nodes[ip]
    broken = node.folder / "stubs" / "apt-get"
    good = broken.read_text()
    broken.write_text(
        good.replace("exit 0", "echo 'E: Unable to locate package postfix' >&2; exit 100")
    )
    failed = await p.bootstrap(target, BUNDLE, TOKEN, deadline=_deadline())
    assert not failed.done
    assert failed.status == "failed 100"
    assert "== packages" in failed.log_tail
    assert "Unable to locate package" in failed.log_tail
    # without a new attempt, nothing runs again
    again = await p.bootstrap(target, BUNDLE, TOKEN, deadline=_deadline())
    assert again.status == "failed 100"
    broken.write_text(good)
    fixed = await p.bootstrap(target, BUNDLE, TOKEN, deadline=_deadline(), rerun_failed=True)
    assert fixed.done


async def test_a_dropped_connection_does_not_stop_the_bootstrap(reachable_dir) -> None:  # type: ignore[no-untyped-def]
    world = StandIns(
        reachable_dir, zone=ZONE, sink_address="probe@sink.test", first_boot_seconds=1.0
    )
    await world.start()
    try:
        ip = "198.51.100.32"
        p = provisioner_for(world)
        target = p.target(ip, await p.pin_host_key(ip))
        # the node is in its first boot (cloud-init holds the package lock): the run waits
        short = await p.bootstrap(target, BUNDLE, TOKEN, deadline=SystemClock().now())
        assert not short.done
        assert short.status == "running"
        # the SSH server goes away and comes back (a dropped connection, a reboot of sshd)
        await world.nodes.restart(ip)
        node = world.nodes.nodes[ip]
        done = await p.bootstrap(target, BUNDLE, TOKEN, deadline=_deadline())
        assert done.done
        log = (node.root / "var/log/stub-commands.log").read_text().splitlines()
        # started once, waited for, never started twice (each run asks cloud-init first)
        assert log.count("cloud-init status --wait") == 1
        assert log.index("cloud-init status --wait") < next(
            i for i, line in enumerate(log) if line.startswith("apt-get")
        )
    finally:
        await world.stop()


async def test_drift_on_the_node_is_reported(stand_ins: StandIns) -> None:
    ip = "198.51.100.33"
    p = provisioner_for(stand_ins)
    target = p.target(ip, await p.pin_host_key(ip))
    assert (await p.bootstrap(target, BUNDLE, TOKEN, deadline=_deadline())).done
    assert await p.drift(target, BUNDLE) is None
    node = stand_ins.nodes.nodes[ip]
    main_cf = node.root / "etc/postfix/main.cf"
    main_cf.write_text(main_cf.read_text() + "relayhost = [evil.example]\n")
    (node.root / "var/lib/stub-systemd/opendkim").unlink()
    problem = await p.drift(target, BUNDLE)
    assert problem is not None
    assert "changed: /etc/postfix/main.cf" in problem
    assert "not running: opendkim" in problem


async def test_the_stand_in_starts_the_agent_the_bundle_enabled(stand_ins: StandIns) -> None:
    started: list[tuple[str, str, str]] = []
    stopped: list[str] = []

    def starter(node: str, url: str, token: str):  # type: ignore[no-untyped-def]
        started.append((node, url, token))

        async def stop() -> None:
            stopped.append(node)

        return stop

    stand_ins.nodes.agent_starter = starter
    ip = "198.51.100.34"
    p = provisioner_for(stand_ins)
    target = p.target(ip, await p.pin_host_key(ip))
    bundle = render_bundle(
        BundleSettings(
            node=NODE,
            hostname=f"{NODE}.{ZONE}",
            domain=ZONE,
            agent_url="http://127.0.0.1:8080",
        )
    )
    assert (await p.bootstrap(target, bundle, TOKEN, deadline=_deadline())).done
    await p.bundle_status(target, bundle)  # one more command: the stand-in looks again
    assert started == [(ip, "http://127.0.0.1:8080", TOKEN)]
    await stand_ins.nodes.aclose()
    assert stopped == [ip]


async def test_the_start_answers_only_after_the_run_holds_the_lock(stand_ins: StandIns) -> None:
    """The race CI found: a status read right after the start must never see the previous
    run's ``failed`` (a rerun reported as failed again) or no status (a second start)."""
    ip = "198.51.100.33"
    p = provisioner_for(stand_ins)
    target = p.target(ip, await p.pin_host_key(ip))
    node = stand_ins.nodes.nodes[ip]
    apt = node.folder / "stubs" / "apt-get"
    good = apt.read_text()
    apt.write_text(good.replace("exit 0", "exit 100"))
    assert (await p.bootstrap(target, BUNDLE, TOKEN, deadline=_deadline())).status == "failed 100"
    apt.write_text(good)
    for _ in range(3):
        # a second start while the first holds the lock starts nothing
        first = await p.remote.run(target, commands.start_command(BUNDLE.version), time_limit=30)
        second = await p.remote.run(target, commands.start_command(BUNDLE.version), time_limit=30)
        assert (first.stdout.strip(), second.stdout.strip()) == ("started", "running")
        assert await p.bundle_status(target, BUNDLE) == "running"
        done = await p.bootstrap(target, BUNDLE, TOKEN, deadline=_deadline())
        assert done.done
        # a finished version is not started again
        again = await p.remote.run(target, commands.start_command(BUNDLE.version), time_limit=30)
        assert again.stdout.strip() == "done"
        assert (await p.reset(target, BUNDLE)) == "reset"


async def test_the_token_file_is_0600_even_over_a_leftover_with_another_mode(
    stand_ins: StandIns,
) -> None:
    """An interrupted earlier write may leave ``agent.env.tmp`` with a loose mode: the token is
    never written into it (it is removed, and the file made anew under umask 077)."""
    ip = "198.51.100.35"
    p = provisioner_for(stand_ins)
    target = p.target(ip, await p.pin_host_key(ip))
    node = stand_ins.nodes.nodes[ip]
    leftover = node.root / "etc/fleet-reconciler/agent.env.tmp"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_text("RECONCILER_NODE_SECRET=old\n")
    leftover.chmod(0o644)
    if os.geteuid() == 0:  # made as the node's unprivileged user would have made them
        for path in (leftover.parent.parent, leftover.parent, leftover):
            os.chown(path, node.uid, node.uid)
    assert (await p.bootstrap(target, BUNDLE, TOKEN, deadline=_deadline())).done
    env = node.root / "etc/fleet-reconciler/agent.env"
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    assert env.read_text() == f"RECONCILER_NODE_SECRET={TOKEN}\n"
    assert not leftover.exists()


async def test_without_gnu_timeout_and_tail_the_node_still_waits_for_its_run(
    stand_ins: StandIns,
) -> None:
    """The first wait follows the run it started with ``timeout ... tail --pid``; a node whose
    tools cannot (BusyBox, none) waits by looking at ``status`` as before."""
    ip = "198.51.100.36"
    p = provisioner_for(stand_ins)
    target = p.target(ip, await p.pin_host_key(ip))
    node = stand_ins.nodes.nodes[ip]
    tail = node.folder / "stubs" / "tail"  # as BusyBox's: no --pid
    tail.write_text('#!/bin/sh\ncase "$*" in *--pid*) exit 1;; esac\nexec /usr/bin/tail "$@"\n')
    tail.chmod(0o755)
    result = await p.bootstrap(target, BUNDLE, TOKEN, deadline=_deadline())
    assert result.done, result
    assert result.dkim_public
    assert len(node.commands) == 1  # the same session waited for the run to its end
