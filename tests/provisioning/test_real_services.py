"""The provisioning adapters against the real counterparts: BIND 9 (RFC 2136 + TSIG, FCrDNS
by real queries, the DKIM key it serves checked by dkimpy), OpenSSH's sshd (key-only, pinned
host key, the bootstrap as an unprivileged user with stub tools) and Postfix's postconf.

The services come from the shared test-services fixtures (``tests/services``, started by
``.ci/services``): skipped locally when the binaries are missing, failing in CI."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest

pytest.importorskip("tests.services.plugin", reason="shared test-services fixtures not present")

from providers.dns.resolving import DnsResolver
from providers.dns.rfc2136 import Rfc2136Dns, TsigKey
from providers.mail.dkimcheck import DkimVerifier
from providers.ssh.remote import SshRemote, load_client_key
from reconciler.core.dnsrecords import RecordSet, dkim_txt
from reconciler.core.errors import AuthError, HostKeyMismatchError
from reconciler.core.mailprobes import probe_message
from reconciler.core.ports import RemoteTarget
from reconciler.engine.clocks import SystemClock
from reconciler.engine.provisioning import Provisioner
from reconciler.node.bundle import BundleSettings, render_bundle
from tests.provisioning.conftest import spec_settings

pytestmark = pytest.mark.anyio

ZONE = "mail.test"
IP = "198.51.100.7"
HOST = f"n1.{ZONE}"


def _bind(request: pytest.FixtureRequest) -> Any:
    from tests.services.bind import reverse_zone_text, zone_text

    server = request.getfixturevalue("bind_server")
    server.set_zone(ZONE, zone_text(ZONE), allow_update=True)
    server.set_zone("100.51.198.in-addr.arpa", reverse_zone_text("198.51.100.0/24", {IP: HOST}))
    return server


def _dns(server: Any, secret: str | None = None) -> Rfc2136Dns:
    key = server.tsig_key
    tsig = TsigKey(key.name.rstrip("."), key.algorithm, secret or key.secret)
    host, port = server.address
    return Rfc2136Dns(host, ZONE, port=port, key=tsig, timeout=5.0)


async def test_rfc2136_tsig_and_fcrdns_against_bind(request: pytest.FixtureRequest) -> None:
    server = _bind(request)
    dns = _dns(server)
    resolver = DnsResolver([server.address], timeout=5.0)
    await dns.update(
        replace=[
            RecordSet(HOST, "A", (IP,)),
            RecordSet(ZONE, "TXT", ("v=spf1 ip4:198.51.100.7 -all",)),
        ]
    )
    assert await resolver.lookup(HOST, "A") == (IP,)
    assert await resolver.reverse(IP) == (HOST,)
    provisioner = Provisioner(
        spec_settings(),
        dns=dns,
        resolver=resolver,
        remote=None,  # type: ignore[arg-type]
        sink=None,  # type: ignore[arg-type]
        dkim=None,  # type: ignore[arg-type]
        clock=SystemClock(),
    )
    assert await provisioner.check_fcrdns(HOST, IP) is None
    assert "PTR of 198.51.100.8" not in (await provisioner.check_fcrdns("n2.mail.test", IP) or "")
    # a wrong TSIG secret is refused with a hint; nothing changes
    wrong = base64.b64encode(b"w" * 32).decode()
    with pytest.raises(AuthError) as info:
        await _dns(server, wrong).replace(RecordSet(HOST, "A", ("198.51.100.9",)))
    assert info.value.hint
    assert await resolver.lookup(HOST, "A") == (IP,)
    await dns.delete(HOST, "A")
    assert await resolver.lookup(HOST, "A") == ()
    problem = await provisioner.check_fcrdns(HOST, IP)
    assert problem is not None
    assert "no address record" in problem


async def test_dkim_verified_against_the_key_bind_serves(request: pytest.FixtureRequest) -> None:
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    server = _bind(request)
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = base64.b64encode(
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    await _dns(server).replace(RecordSet(f"n1._domainkey.{ZONE}", "TXT", (dkim_txt(public),)))
    message = probe_message(
        hostname=HOST, sink_address="probe@sink.test", probe="p-1", now=datetime.now(UTC)
    )
    signed = dkim.sign(message, b"n1", ZONE.encode(), pem) + message
    verifier = DkimVerifier(DnsResolver([server.address], timeout=5.0))
    assert (await verifier.verify(signed)).ok
    assert not (await verifier.verify(signed.replace(b"Test mail", b"Tost mail"))).ok


def _target(sshd: Any, key: Any) -> RemoteTarget:
    return RemoteTarget(sshd.host, sshd.port, sshd.user, key)


async def test_ssh_pins_and_refuses_a_changed_host_key(request: pytest.FixtureRequest) -> None:
    sshd = request.getfixturevalue("sshd_server")
    remote = SshRemote(load_client_key(sshd.client_key), connect_timeout=10)
    try:
        key = await remote.scan_host_key(sshd.host, sshd.port)
        assert key.public.split()[1] in sshd.host_public_key
        result = await remote.run(_target(sshd, key), "id -u; command -v apt-get", time_limit=20)
        assert result.exit_status == 0
        uid, apt = result.stdout.split()
        assert uid != "0"
        assert apt.startswith(str(sshd.stubs))  # never the host's package manager
        other = asyncssh.generate_private_key(key.algorithm)
        forged = type(key)(
            key.algorithm,
            other.export_public_key().decode().strip(),
            other.get_fingerprint(),
        )
        with pytest.raises(HostKeyMismatchError, match="other than the pinned one"):
            await SshRemote(load_client_key(sshd.client_key)).run(
                _target(sshd, forged), "true", time_limit=10
            )
        stranger = SshRemote(asyncssh.generate_private_key("ssh-ed25519"))
        with pytest.raises(AuthError):
            await stranger.run(_target(sshd, key), "true", time_limit=10)
    finally:
        await remote.aclose()


def test_postconf_checks_the_rendered_folder(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    postconf = request.getfixturevalue("postconf_bin")
    env = request.getfixturevalue("services_env")
    bundle = render_bundle(BundleSettings(node="n1", hostname=HOST, domain=ZONE))
    for name in ("main.cf", "master.cf"):
        (tmp_path / name).write_text(bundle.file(f"/etc/postfix/{name}").content)
    result = subprocess.run(
        [str(postconf), "-c", str(tmp_path), "-n"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env.tool_env(),
    )
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower(), result.stderr
    assert "default_process_limit = 200" in result.stdout
    assert "default_destination_concurrency_limit = 5" in result.stdout


class _Rooted:
    """Every command with ``RECONCILER_NODE_ROOT`` set (sshd_config's first SetEnv wins, and
    the fixture's sets PATH): the node's files land in the test's folder."""

    def __init__(self, inner: SshRemote, root: Path) -> None:
        self.inner = inner
        self.root = root

    async def scan_host_key(self, host: str, port: int, *, username: str | None = None) -> Any:
        return await self.inner.scan_host_key(host, port, username=username)

    async def run(
        self, target: RemoteTarget, command: str, *, time_limit: float, stdin: bytes | None = None
    ) -> Any:
        prefixed = f"export RECONCILER_NODE_ROOT={self.root}; {command}"
        return await self.inner.run(target, prefixed, time_limit=time_limit, stdin=stdin)


async def test_the_bootstrap_over_openssh(request: pytest.FixtureRequest) -> None:
    """The real bundle, run detached over OpenSSH's sshd as an unprivileged user, with the
    stand-ins' stub package tools first on PATH and every path under a folder of the test."""
    from providers.simulator.nodes import _write_stubs

    root = Path(tempfile.mkdtemp(prefix="fr-node-root-", dir="/tmp"))
    os.chmod(root, 0o777)
    try:
        sshd = request.getfixturevalue("sshd_server")
        _write_stubs(sshd.folder)  # our stubs (apt-get, systemctl, opendkim-genkey, ...)
        remote = SshRemote(load_client_key(sshd.client_key), connect_timeout=10)
        try:
            provisioner = Provisioner(
                spec_settings(),
                dns=None,  # type: ignore[arg-type]
                resolver=None,  # type: ignore[arg-type]
                remote=_Rooted(remote, root),
                sink=None,  # type: ignore[arg-type]
                dkim=None,  # type: ignore[arg-type]
                clock=SystemClock(),
                poll_interval=0.1,
            )
            key = await remote.scan_host_key(sshd.host, sshd.port)
            target = RemoteTarget(sshd.host, sshd.port, sshd.user, key)
            bundle = render_bundle(BundleSettings(node="n1", hostname=HOST, domain=ZONE))
            deadline = datetime.now(UTC) + timedelta(seconds=120)
            result = await provisioner.bootstrap(target, bundle, "tok" * 20, deadline=deadline)
            assert result.done, result
            assert result.dkim_public
            main_cf = (root / "etc/postfix/main.cf").read_text()
            assert "myhostname = n1.mail.test" in main_cf
            env_file = root / "etc/fleet-reconciler/agent.env"
            assert oct(env_file.stat().st_mode & 0o777) == "0o600"
            log = (root / "var/log/stub-commands.log").read_text()
            assert "apt-get" in log
            assert "ufw allow 587/tcp" in log
            again = await provisioner.bootstrap(target, bundle, "tok" * 20, deadline=deadline)
            assert again.done  # a finished version: nothing runs again
            assert log == (root / "var/log/stub-commands.log").read_text()
            assert await provisioner.drift(target, bundle) is None
        finally:
            await remote.aclose()
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_dns_drift_found_and_repaired_against_bind(request: pytest.FixtureRequest) -> None:
    """The drift check's DNS part (docs/provisioning.md, "Drift checks") against BIND: the
    A record and DKIM key on the primary, FCrDNS by real queries; republishing repairs it."""
    server = _bind(request)
    dns = _dns(server)
    resolver = DnsResolver([server.address], timeout=5.0)
    provisioner = Provisioner(
        spec_settings(),
        dns=dns,
        resolver=resolver,
        remote=None,  # type: ignore[arg-type]
        sink=None,  # type: ignore[arg-type]
        dkim=None,  # type: ignore[arg-type]
        clock=SystemClock(),
    )
    public = base64.b64encode(b"k" * 270).decode()
    await provisioner.publish(HOST, IP, [IP])
    await provisioner.publish_dkim("n1", public)
    assert await provisioner.dns_drift("n1", HOST, IP, public) == []
    # someone removes the A record and replaces the DKIM key behind our back
    await dns.delete(HOST, "A")
    await dns.replace(RecordSet(f"n1._domainkey.{ZONE}", "TXT", (dkim_txt("AAAA"),)))
    problems = await provisioner.dns_drift("n1", HOST, IP, public)
    assert f"A {HOST} is not {IP}" in problems
    assert f"DKIM key n1._domainkey.{ZONE} differs from the node's" in problems
    assert any(p.startswith("FCrDNS:") for p in problems)
    await provisioner.publish(HOST, IP, [IP])
    await provisioner.publish_dkim("n1", public)
    assert await provisioner.dns_drift("n1", HOST, IP, public) == []


async def test_drift_repair_and_rebootstrap_over_openssh(request: pytest.FixtureRequest) -> None:
    """Over OpenSSH's sshd (unprivileged, stub tools): check.sh finds a changed file, the
    reset makes the finished bundle run again and repairs it, and a new bundle version (a new
    Postfix tuning) replaces the old one on the node."""
    from providers.simulator.nodes import _write_stubs
    from reconciler.node.bundle import PostfixTuning

    root = Path(tempfile.mkdtemp(prefix="fr-node-root-", dir="/tmp"))
    os.chmod(root, 0o777)
    try:
        sshd = request.getfixturevalue("sshd_server")
        _write_stubs(sshd.folder)
        remote = SshRemote(load_client_key(sshd.client_key), connect_timeout=10)
        try:
            provisioner = Provisioner(
                spec_settings(),
                dns=None,  # type: ignore[arg-type]
                resolver=None,  # type: ignore[arg-type]
                remote=_Rooted(remote, root),
                sink=None,  # type: ignore[arg-type]
                dkim=None,  # type: ignore[arg-type]
                clock=SystemClock(),
                poll_interval=0.1,
            )
            key = await remote.scan_host_key(sshd.host, sshd.port)
            target = RemoteTarget(sshd.host, sshd.port, sshd.user, key)
            bundle = render_bundle(BundleSettings(node="n1", hostname=HOST, domain=ZONE))
            deadline = datetime.now(UTC) + timedelta(seconds=120)
            assert (await provisioner.bootstrap(target, bundle, "t" * 64, deadline=deadline)).done
            main_cf = root / "etc/postfix/main.cf"
            good = main_cf.read_text()
            main_cf.write_text(good + "relayhost = [evil.example]\n")
            found = await provisioner.drift(target, bundle)
            assert found is not None
            assert "changed: /etc/postfix/main.cf" in found
            assert await provisioner.reset(target, bundle) == "reset"
            again = await provisioner.bootstrap(
                target, bundle, "t" * 64, deadline=deadline, rerun_failed=True
            )
            assert again.done
            assert main_cf.read_text() == good
            assert await provisioner.drift(target, bundle) is None
            # a new Postfix tuning: a new version, run beside the old one's folder
            tuned = render_bundle(
                BundleSettings(
                    node="n1",
                    hostname=HOST,
                    domain=ZONE,
                    postfix=PostfixTuning(default_process_limit=120),
                )
            )
            assert tuned.version != bundle.version
            update = await provisioner.bootstrap(target, tuned, "t" * 64, deadline=deadline)
            assert update.done
            assert update.dkim_public == again.dkim_public  # the node keeps its DKIM key
            assert "default_process_limit = 120" in main_cf.read_text()
            assert await provisioner.drift(target, tuned) is None
        finally:
            await remote.aclose()
    finally:
        shutil.rmtree(root, ignore_errors=True)
