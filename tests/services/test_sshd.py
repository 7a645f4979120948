"""The sshd fixture: key-only logins, an unprivileged uid, stub tools first on PATH."""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncssh
import pytest

from tests.services.environment import ServiceEnv
from tests.services.processes import UNPRIVILEGED_UID, running_as_root
from tests.services.sshd import SshdServer, StubCall, start_sshd


def run(server: SshdServer, command: str, **options: object) -> asyncssh.SSHCompletedProcess:
    async def go() -> asyncssh.SSHCompletedProcess:
        async with asyncssh.connect(**{**server.asyncssh_options(), **options}) as conn:
            return await conn.run(command, check=False, timeout=60)

    return asyncio.run(go())


def expected_uid() -> int:
    return UNPRIVILEGED_UID if running_as_root() else os.getuid()


def test_a_command_runs_unprivileged_in_its_folder_with_stubs_first(
    sshd_server: SshdServer,
) -> None:
    result = run(
        sshd_server,
        'id -u; id -g; pwd; echo "$PATH"; command -v apt-get; '
        "apt-get install -y postfix; echo apt=$?; "
        "if test -w /etc; then echo etc-writable; else echo etc-read-only; fi",
    )

    assert result.exit_status == 0, result.stderr
    lines = str(result.stdout).splitlines()
    assert lines[0] == str(expected_uid())
    assert Path(lines[2]) == sshd_server.home
    assert lines[3].split(":")[0] == str(sshd_server.stubs)
    assert lines[4] == str(sshd_server.stubs / "apt-get")
    assert lines[5] == "apt=0"
    if running_as_root():
        assert lines[6] == "etc-read-only"
    assert sshd_server.stub_calls() == [StubCall("apt-get", ("install", "-y", "postfix"))]


def test_sshd_itself_runs_as_the_unprivileged_uid(sshd_server: SshdServer) -> None:
    assert sshd_server.process is not None
    status = Path(f"/proc/{sshd_server.process.pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert {int(u) for u in uids} == {expected_uid()}


def test_stubs_can_be_replaced_and_record_every_argument(sshd_server: SshdServer) -> None:
    sshd_server.add_stub("dpkg-query", exit_code=1)  # "not installed"
    sshd_server.add_stub("opendkim-genkey", 'echo "fake key for $2"')

    result = run(
        sshd_server,
        "dpkg-query -W postfix; echo q=$?; opendkim-genkey -s node1; "
        "systemctl restart 'postfix@-' && ufw allow 25/tcp",
    )

    assert result.exit_status == 0, result.stderr
    assert "q=1" in str(result.stdout)
    assert "fake key for node1" in str(result.stdout)
    assert sshd_server.stub_calls() == [
        StubCall("dpkg-query", ("-W", "postfix")),
        StubCall("opendkim-genkey", ("-s", "node1")),
        StubCall("systemctl", ("restart", "postfix@-")),
        StubCall("ufw", ("allow", "25/tcp")),
    ]


def test_openssh_client_with_a_pinned_host_key(sshd_server: SshdServer) -> None:
    ok = subprocess.run(
        sshd_server.ssh_argv("echo", "hello"), capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "hello\n"

    sshd_server.known_hosts.write_text(
        f"[127.0.0.1]:{sshd_server.port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIHv5N1QoN0d0M7x8Qv8oVJgk2+7mF3QGxq9hXb2VdW3a\n"
    )
    changed = subprocess.run(
        sshd_server.ssh_argv("echo", "hello"), capture_output=True, text=True, timeout=60
    )
    assert changed.returncode != 0
    assert "host key" in changed.stderr.lower()


def test_only_the_test_key_gets_in(sshd_server: SshdServer) -> None:
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    with pytest.raises(asyncssh.PermissionDenied):
        run(sshd_server, "true", client_keys=[stranger])
    with pytest.raises(asyncssh.PermissionDenied):
        run(sshd_server, "true", client_keys=[], password="anything")
    with pytest.raises(asyncssh.PermissionDenied):
        run(sshd_server, "true", username="someone-else")


def test_a_user_named_root_is_still_unprivileged(
    sshd_factory: Callable[..., SshdServer],
) -> None:
    server = sshd_factory(user="root")

    result = run(server, "id -u; echo $HOME")

    assert result.exit_status == 0, result.stderr
    uid, home = str(result.stdout).split()
    assert int(uid) == expected_uid()
    assert Path(home) == server.home


def test_stop_kills_sessions_and_what_they_daemonized(services_env: ServiceEnv) -> None:
    with start_sshd(services_env) as server:
        result = run(
            server,
            "setsid sleep 300 < /dev/null > /dev/null 2>&1 & nohup sleep 301 > /dev/null 2>&1 & "
            "echo started",
        )
        assert "started" in str(result.stdout)
        assert server.process is not None
        process = server.process
        sleepers = [
            pid
            for pid in process.remaining()
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\0")
        ]
        assert len(sleepers) == 2
        folder = server.folder
    assert not process.remaining()
    assert not folder.exists()


def test_a_port_taken_before_sshd_binds_it_is_retried(
    services_env: ServiceEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import tests.services.sshd as sshd_module

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        taken = int(squatter.getsockname()[1])
        handed_out: list[int] = []
        real_free_port = sshd_module.free_port

        def first_a_taken_port(*, udp: bool = False) -> int:
            port = taken if not handed_out else real_free_port(udp=udp)
            handed_out.append(port)
            return port

        monkeypatch.setattr(sshd_module, "free_port", first_a_taken_port)
        with start_sshd(services_env) as server:
            assert handed_out[0] == taken
            assert server.port != taken
            assert run(server, "echo up").stdout == "up\n"
