"""The DNS, SSH and mail adapters against the stand-ins: the hostile paths."""

from __future__ import annotations

import base64
import os
import socket
from pathlib import Path

import anyio
import asyncssh
import pytest

from providers.dns.resolving import DnsResolver
from providers.dns.rfc2136 import Rfc2136Dns, TsigKey, load_tsig_key, parse_tsig_key
from providers.mail.dkimcheck import DkimVerifier
from providers.simulator.standins import StandIns
from providers.ssh.remote import SshRemote, load_client_key
from reconciler.core.dnsrecords import RecordSet
from reconciler.core.errors import (
    AuthError,
    HostKeyMismatchError,
    TerminalError,
    TransientError,
    UserError,
)
from reconciler.core.mailprobes import probe_message
from reconciler.core.ports import RemoteTarget
from tests.provisioning.conftest import ZONE

pytestmark = pytest.mark.anyio

IP = "198.51.100.20"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- DNS ------------------------------------------------------------------------------------


async def test_wrong_tsig_secret_or_key_name_is_refused(stand_ins: StandIns) -> None:
    wrong_secret = TsigKey(stand_ins.tsig.name, "hmac-sha256", base64.b64encode(b"w" * 32).decode())
    with pytest.raises(AuthError, match="TSIG") as info:
        await stand_ins.dns(wrong_secret).replace(RecordSet(f"a.{ZONE}", "A", ("192.0.2.1",)))
    assert wrong_secret.secret not in str(info.value)
    assert info.value.hint
    unknown = TsigKey("nobody-key", "hmac-sha256", stand_ins.tsig.secret)
    with pytest.raises(AuthError):
        await stand_ins.dns(unknown).replace(RecordSet(f"a.{ZONE}", "A", ("192.0.2.1",)))
    assert stand_ins.dns_server.refused_updates == 2
    assert await stand_ins.dns().published(f"a.{ZONE}", "A") == ()


async def test_unsigned_update_and_names_outside_the_zone_are_refused(
    stand_ins: StandIns,
) -> None:
    unsigned = Rfc2136Dns("127.0.0.1", ZONE, port=stand_ins.dns_server.port)
    with pytest.raises(AuthError, match="REFUSED"):
        await unsigned.replace(RecordSet(f"a.{ZONE}", "A", ("192.0.2.1",)))
    with pytest.raises(TerminalError, match="not inside the zone"):
        await stand_ins.dns().replace(RecordSet("evil.example.com", "A", ("192.0.2.1",)))


async def test_replace_is_idempotent_and_delete_of_absent_is_fine(stand_ins: StandIns) -> None:
    dns = stand_ins.dns()
    record = RecordSet(f"n.{ZONE}", "A", ("192.0.2.1",))
    await dns.replace(record)
    await dns.replace(record)
    assert await dns.published(record.name, "A") == ("192.0.2.1",)
    await dns.replace(RecordSet(record.name, "A", ("192.0.2.2",)))
    assert await dns.published(record.name, "A") == ("192.0.2.2",)
    await dns.delete(record.name, "A")
    await dns.delete(record.name, "A")
    assert await dns.published(record.name, "A") == ()
    assert "192.0.2" not in (stand_ins.dns_server.zone_file or Path()).read_text()


async def test_an_unreachable_dns_server_is_transient() -> None:
    key = TsigKey("k", "hmac-sha256", base64.b64encode(b"k" * 32).decode())
    dns = Rfc2136Dns("127.0.0.1", ZONE, port=_free_port(), key=key, timeout=1.0)
    with pytest.raises(TransientError):
        await dns.replace(RecordSet(f"n.{ZONE}", "A", ("192.0.2.1",)))
    resolver = DnsResolver([("127.0.0.1", _free_port())], timeout=0.5)
    with pytest.raises(TransientError):
        await resolver.lookup(f"n.{ZONE}", "A")


def test_tsig_key_files(tmp_path: Path) -> None:
    secret = base64.b64encode(b"s" * 32).decode()
    bind = f'key "fleet." {{\n  algorithm hmac-sha256;\n  secret "{secret}";\n}};\n'
    key = parse_tsig_key(bind)
    assert (key.name, key.algorithm, key.secret) == ("fleet", "hmac-sha256", secret)
    assert secret not in repr(key)
    assert secret not in str(key)
    assert parse_tsig_key(f"fleet:hmac-sha512:{secret}").algorithm == "hmac-sha512"
    for bad, match in [
        ("nonsense", "not a TSIG key"),
        (f"fleet:md5:{secret}", "unsupported"),
        ("fleet:hmac-sha256:c2hvcnQ=", "at least 16 bytes"),
    ]:
        with pytest.raises(UserError, match=match) as info:
            parse_tsig_key(bad)
        assert info.value.hint
    with pytest.raises(UserError, match="cannot read"):
        load_tsig_key(tmp_path / "absent.key")


# --- SSH ------------------------------------------------------------------------------------


async def test_ssh_refuses_an_unpinned_target_and_a_wrong_client_key(stand_ins: StandIns) -> None:
    remote = stand_ins.remote()
    key = await remote.scan_host_key(IP, 22)
    with pytest.raises(HostKeyMismatchError, match="no pinned host key"):
        await remote.run(RemoteTarget(IP, 22, "root", None), "true", time_limit=5)
    stranger = stand_ins.remote(asyncssh.generate_private_key("ssh-ed25519"))
    with pytest.raises(AuthError, match="login refused") as info:
        await stranger.run(RemoteTarget(IP, 22, "root", key), "true", time_limit=5)
    assert info.value.hint
    node = stand_ins.nodes.nodes[IP]
    assert node.commands == []


async def test_first_contact_with_a_user_keeps_its_connection_for_the_pinned_key(
    stand_ins: StandIns,
) -> None:
    """One key exchange per node: the connection that read the key logs in and serves the
    commands run over that key; a plain scan and a target pinned to another key do not."""
    remote = stand_ins.remote()
    key = await remote.scan_host_key(IP, 22, username="root")
    node = stand_ins.nodes.nodes[IP]
    assert key.fingerprint == node.host_key().get_fingerprint("sha256")
    for _ in range(2):
        result = await remote.run(RemoteTarget(IP, 22, "root", key), "true", time_limit=5)
        assert result.exit_status == 0
    assert node.connections == 1
    assert key == await remote.scan_host_key(IP, 22)  # a plain scan: a connection of its own
    assert node.connections == 2
    # the node is rebuilt with another key: the kept connection goes with the old machine,
    # and the next command, on a new connection, refuses the key it now presents
    node.rekey()
    await stand_ins.nodes.restart(IP)
    with pytest.raises(HostKeyMismatchError):
        await remote.run(RemoteTarget(IP, 22, "root", key), "true", time_limit=5)
    assert node.commands == ["true", "true"]


async def test_first_contact_returns_the_key_even_when_the_login_is_refused(
    stand_ins: StandIns,
) -> None:
    stranger = stand_ins.remote(asyncssh.generate_private_key("ssh-ed25519"))
    key = await stranger.scan_host_key(IP, 22, username="root")
    assert key == await stand_ins.remote().scan_host_key(IP, 22)
    with pytest.raises(AuthError, match="login refused"):
        await stranger.run(RemoteTarget(IP, 22, "root", key), "true", time_limit=5)
    assert stand_ins.nodes.nodes[IP].commands == []


async def test_ssh_to_nowhere_is_transient() -> None:
    remote = SshRemote(asyncssh.generate_private_key("ssh-ed25519"), connect_timeout=2)
    with pytest.raises(TransientError):
        await remote.scan_host_key("127.0.0.1", _free_port())


async def test_commands_run_unprivileged_and_a_timeout_kills_the_process_group(
    stand_ins: StandIns,
) -> None:
    remote = stand_ins.remote()
    target = RemoteTarget(IP, 22, "root", await remote.scan_host_key(IP, 22))
    result = await remote.run(target, "id -u; touch /etc/fleet-reconciler-test", time_limit=10)
    expected_uid = "65534" if os.geteuid() == 0 else str(os.geteuid())
    assert result.stdout.split()[0] == expected_uid
    assert not await anyio.Path("/etc/fleet-reconciler-test").exists()
    marker = f"fr-sleep-{os.getpid()}"
    with pytest.raises(TransientError, match="timed out"):
        await remote.run(target, f"sh -c 'exec -a {marker} sleep 30' & sleep 30", time_limit=1)
    for _ in range(100):
        found = (await anyio.run_process(["pgrep", "-f", marker], check=False)).stdout.decode()
        if not found:
            break
        await anyio.sleep(0.05)
    assert found == ""


def test_client_key_file_errors(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("not a key")
    with pytest.raises(UserError, match="cannot read the SSH private key") as info:
        load_client_key(tmp_path / "key")
    assert info.value.hint
    with pytest.raises(UserError):
        load_client_key(tmp_path / "absent")


# --- mail -----------------------------------------------------------------------------------


async def test_the_sink_refuses_relaying_and_mail_without_a_probe(stand_ins: StandIns) -> None:
    import smtplib

    sink = stand_ins.sink
    message = probe_message(
        hostname=f"n.{ZONE}", sink_address=sink.address, probe="p-1", now=_now()
    )

    def send(rcpt: str, raw: bytes) -> None:
        with smtplib.SMTP(sink.host, sink.port, timeout=5) as smtp:
            smtp.sendmail("x@example.com", [rcpt], raw)

    with pytest.raises(smtplib.SMTPRecipientsRefused):
        await anyio.to_thread.run_sync(send, "victim@example.org", message)
    with pytest.raises(smtplib.SMTPDataError):
        await anyio.to_thread.run_sync(send, sink.address, b"Subject: hi\r\n\r\nno probe\r\n")
    await anyio.to_thread.run_sync(send, sink.address, message)
    received = await sink.received("p-1")
    assert received is not None
    assert received.peer == "127.0.0.1"
    assert await sink.received("../p-1") is None


async def test_dkim_verdicts(stand_ins: StandIns) -> None:
    verifier = DkimVerifier(stand_ins.resolver())
    message = probe_message(
        hostname=f"n.{ZONE}", sink_address="probe@sink.test", probe="p-2", now=_now()
    )
    unsigned = await verifier.verify(message)
    assert not unsigned.ok
    assert "no DKIM-Signature" in unsigned.reason
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

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
    signed = dkim.sign(message, b"sel", ZONE.encode(), pem, include_headers=[b"From", b"Subject"])
    signed += message
    missing = await verifier.verify(signed)
    assert not missing.ok
    assert "no DKIM key published" in missing.reason
    await stand_ins.dns().replace(
        RecordSet(f"sel._domainkey.{ZONE}", "TXT", (f"v=DKIM1; k=rsa; p={public}",))
    )
    assert (await verifier.verify(signed)).ok
    tampered = signed.replace(b"Test mail from", b"Tast mail from")
    assert not (await verifier.verify(tampered)).ok


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime(2026, 1, 1, tzinfo=UTC)


async def test_stub_tools_come_first_even_with_a_relative_state_folder(
    reachable_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(reachable_dir)
    world = StandIns(Path("relative-state"), zone=ZONE, sink_address="probe@sink.test")
    await world.start()
    try:
        remote = world.remote()
        target = RemoteTarget(IP, 22, "root", await remote.scan_host_key(IP, 22))
        result = await remote.run(
            target,
            "command -v apt-get; command -v systemctl; echo $RECONCILER_NODE_ROOT",
            time_limit=10,
        )
        apt, systemctl, root = result.stdout.split()
        stubs = reachable_dir / "relative-state" / "nodes" / IP / "stubs"
        assert apt == str(stubs / "apt-get")
        assert systemctl == str(stubs / "systemctl")
        assert Path(root).is_absolute()
    finally:
        await world.stop()
