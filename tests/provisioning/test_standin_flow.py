"""One node through every provisioning unit against the stand-ins (DNS, SSH node, sink)."""

from __future__ import annotations

import base64
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from providers.simulator.standins import StandIns
from reconciler.core.errors import HostKeyMismatchError
from reconciler.engine.clocks import SystemClock
from reconciler.engine.provisioning import ProbeResult, Provisioner
from reconciler.node.bundle import BundleSettings, render_bundle
from tests.provisioning.conftest import ZONE, provisioner_for

pytestmark = pytest.mark.anyio

IP = "198.51.100.10"
NODE = "demo-seattle-001"
HOST = f"{NODE}.{ZONE}"
TOKEN = "t0ken-" + "a" * 58


def _bundle() -> object:
    return render_bundle(BundleSettings(node=NODE, hostname=HOST, domain=ZONE))


async def test_a_node_goes_through_dns_bootstrap_and_verify(stand_ins: StandIns) -> None:
    p = provisioner_for(stand_ins)
    # DNS: A record, then FCrDNS fails until the PTR exists (Hostwinds' set_rdns)
    await p.publish_address(HOST, IP)
    assert "no PTR" in (await p.check_fcrdns(HOST, IP) or "")
    stand_ins.ptrs[IP] = HOST  # type: ignore[attr-defined]
    assert await p.check_fcrdns(HOST, IP) is None
    # SSH: pin, then bootstrap
    key = await p.pin_host_key(IP)
    target = p.target(IP, key)
    bundle = render_bundle(BundleSettings(node=NODE, hostname=HOST, domain=ZONE))
    deadline = SystemClock().now() + timedelta(seconds=120)
    result = await p.bootstrap(target, bundle, TOKEN, deadline=deadline)
    assert result.done, result
    assert result.dkim_public
    assert len(result.dkim_public) > 300
    node = stand_ins.nodes.by_name(IP)
    assert node is not None
    # one session: the token's line and the tar on stdin, unpack, start and a wait of up to
    # 20 s on the node, which brings the DKIM key back with ``done`` (a run longer than
    # that: one more wait session each, which starts nothing)
    assert len(node.commands) >= 1, node.commands
    assert "run.sh" in node.commands[0]
    assert not any("run.sh" in c for c in node.commands[1:])
    main_cf = (node.root / "etc/postfix/main.cf").read_text()
    assert "default_destination_concurrency_limit = 5" in main_cf
    assert "default_process_limit = 200" in main_cf
    # the token: 0600, never in the bundle folder or the command log
    env = node.root / "etc/fleet-reconciler/agent.env"
    assert oct(env.stat().st_mode & 0o777) == "0o600"
    assert TOKEN in env.read_text()
    assert all(TOKEN not in c for c in node.commands)
    log = (node.root / "var/log/stub-commands.log").read_text()
    for expected in ("apt-get -q -y", "ufw allow 25/tcp", "ufw allow 587/tcp"):
        assert expected in log
    # the private key stays on the node: only the public half came back
    assert "PRIVATE" not in result.dkim_public
    if os.geteuid() == 0:
        assert (node.root / "etc/postfix/main.cf").stat().st_uid == 65534
    # a rerun of the finished version does nothing: no tool runs again
    before = len(node.commands)
    run_log = (node.home / f".fleet-reconciler/bundles/{bundle.version}/run.log").read_text()
    again = await p.bootstrap(target, bundle, TOKEN, deadline=deadline)
    assert again.done
    assert again.dkim_public == result.dkim_public
    assert len(node.commands) - before == 1  # the status says done and carries the key
    assert (node.root / "var/log/stub-commands.log").read_text() == log
    assert (node.home / f".fleet-reconciler/bundles/{bundle.version}/run.log").read_text() == (
        run_log
    )
    # publish DKIM, send the probe, verify against the key DNS serves
    await p.publish_dkim(NODE, result.dkim_public)
    await p.send_probe(target, HOST, "probe-1")
    checked = await _arrival(p, "probe-1")
    assert checked.arrived
    assert checked.dkim_ok, checked
    # a probe never sent has not arrived
    assert not (await p.check_probe("probe-2")).arrived


async def _arrival(p: Provisioner, probe: str) -> ProbeResult:
    """Mail is delivered after the command returns (as Postfix queues it): poll, bounded."""
    for _ in range(200):
        result = await p.check_probe(probe)
        if result.arrived:
            return result
        await anyio.sleep(0.05)
    return result


async def test_a_changed_host_key_is_refused(stand_ins: StandIns) -> None:
    p = provisioner_for(stand_ins)
    key = await p.pin_host_key(IP)
    target = p.target(IP, key)
    assert (await stand_ins.remote().run(target, "true", time_limit=10)).exit_status == 0
    node = stand_ins.nodes.nodes[IP]
    node.rekey()
    await stand_ins.nodes.restart(IP)
    with pytest.raises(HostKeyMismatchError) as info:
        await stand_ins.remote().run(target, "true", time_limit=10)
    assert key.fingerprint in str(info.value)
    assert len(node.commands) == 1  # nothing ran on the impostor


def _ready_key(folder: Path) -> Path:
    """A ready DKIM key and its public half (base64 DER), as benchmarks/provisioning.py
    prepares them, readable by the stand-ins' unprivileged user."""
    key = folder / "ready-dkim.key"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    (folder / "ready-dkim.key.pub").write_text(base64.b64encode(der).decode())
    for path in (key, folder / "ready-dkim.key.pub"):
        path.chmod(0o644)
    return key


@pytest.mark.parametrize("ready", [False, True], ids=["own-key", "ready-key"])
async def test_instant_bundle_finishes_the_run_at_once_over_real_sessions(
    stand_ins: StandIns, reachable_dir: Path, ready: bool
) -> None:
    """The benchmarks' "steps take zero time" stand-ins: the same SSH sessions, no
    package tool or install step runs, yet the node holds the bundle's files, its own DKIM key
    (whose public half came back) and signs the test mail verifiably; with the benchmark's
    ready key, that key is the node's."""
    stand_ins.nodes.instant_bundle = True
    if ready:
        stand_ins.nodes.ready_key = _ready_key(reachable_dir)
    p = provisioner_for(stand_ins)
    stand_ins.ptrs[IP] = HOST  # type: ignore[attr-defined]
    target = p.target(IP, await p.pin_host_key(IP))
    deadline = SystemClock().now() + timedelta(seconds=60)
    result = await p.bootstrap(target, _bundle(), TOKEN, deadline=deadline)  # type: ignore[arg-type]
    assert result.done, result
    assert result.dkim_public
    assert len(result.dkim_public) > 300
    node = stand_ins.nodes.by_name(IP)
    assert node is not None
    assert len(node.commands) == 1, node.commands  # upload, start and wait in one session
    assert "default_process_limit = 200" in (node.root / "etc/postfix/main.cf").read_text()
    log = (node.root / "var/log/stub-commands.log").read_text()
    assert "apt-get" not in log  # install.sh never ran
    assert TOKEN in (node.root / "etc/fleet-reconciler/agent.env").read_text()
    await p.publish_dkim(NODE, result.dkim_public)
    await p.send_probe(target, HOST, "probe-i")
    checked = await _arrival(p, "probe-i")
    assert checked.arrived
    assert checked.dkim_ok, checked
    assert "setsid nohup sh ./run.sh locked" in log  # what the option's setsid stood in for
    version = (node.root / "etc/fleet-reconciler/bundle-version").read_text()
    assert version == _bundle().version + "\n"  # type: ignore[attr-defined]
    assert (node.root / "var/lib/stub-systemd/postfix").read_text() == "active\n"
    if ready:
        assert result.dkim_public == (reachable_dir / "ready-dkim.key.pub").read_text()
        keyfile = node.root / "etc/opendkim/keys" / f"{NODE}.private"
        assert keyfile.read_bytes() == (reachable_dir / "ready-dkim.key").read_bytes()
        assert oct(keyfile.stat().st_mode & 0o777) == "0o600"
