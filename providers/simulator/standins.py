"""The stand-ins a zero-account run provisions against, started together under one folder:

```
<state>/dns/zone.txt          the records published (readable zone file)
<state>/dns/tsig.key          the stand-in's TSIG key (0600; the operator's key in real life)
<state>/sink/<probe>.eml      test mails received
<state>/nodes/<name>/root/    each node's files as the bootstrap wrote them
<state>/nodes/<name>/root/var/log/stub-commands.log   package and service commands it ran
<state>/ssh/id_ed25519        the operator's SSH key for the simulated account (0600)
```

Reverse DNS comes from the simulated Hostwinds account (``set_rdns``), through ``ptr_source``;
mail from a node to the sink's domain is routed to the sink stand-in.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import asyncssh

from providers.dns.resolving import DnsResolver
from providers.dns.rfc2136 import Rfc2136Dns, TsigKey, load_tsig_key
from providers.mail.dkimcheck import DkimVerifier
from providers.mail.sink import MailSink
from providers.simulator.dnsserver import DnsStandIn
from providers.simulator.mailrelay import smtp_relay
from providers.simulator.nodes import AgentStarter, NodeStandIns, StandInRemote
from providers.ssh.remote import SshRemote

__all__ = ["StandIns", "ensure_client_key", "ensure_tsig_key"]

TSIG_KEY_NAME = "fleet-reconciler-standin"


def ensure_tsig_key(path: Path) -> TsigKey:
    """The stand-in's TSIG key, made once (0600) in BIND's format."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = base64.b64encode(secrets.token_bytes(32)).decode()
        text = f'key "{TSIG_KEY_NAME}" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n'
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    return load_tsig_key(path)


def ensure_client_key(path: Path) -> asyncssh.SSHKey:
    """The operator's SSH key of the simulated account, made once (0600)."""
    if path.exists():
        return asyncssh.read_private_key(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="fleet-reconciler simulator")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.export_private_key())
    return key


class StandIns:
    """DNS, sink and node stand-ins for one fleet, under ``folder``."""

    def __init__(
        self,
        folder: Path,
        *,
        zone: str,
        sink_address: str,
        ptr_source: Callable[[str], str | None] | None = None,
        name_of: Callable[[str], str | None] | None = None,
        first_boot_seconds: float = 0.0,
        agent_starter: AgentStarter | None = None,
        alive: Callable[[], set[str]] | None = None,
    ) -> None:
        self.folder = folder
        self.zone = zone
        self.sink_address = sink_address
        self.tsig = ensure_tsig_key(folder / "dns" / "tsig.key")
        self.client_key = ensure_client_key(folder / "ssh" / "id_ed25519")
        self.dns_server = DnsStandIn(
            zone,
            keys={self.tsig.name: (self.tsig.algorithm, self.tsig.secret)},
            folder=folder / "dns",
            ptr_source=ptr_source,
        )
        self.sink = MailSink(folder / "sink", sink_address)
        sink_domain = sink_address.rpartition("@")[2].lower()

        def route(domain: str) -> tuple[str, int] | None:
            return (self.sink.host, self.sink.port) if domain.lower() == sink_domain else None

        self._remotes: list[StandInRemote] = []
        self.nodes = NodeStandIns(
            folder / "nodes",
            [self.client_key],
            name_of=name_of,
            relay=smtp_relay(route),
            first_boot_seconds=first_boot_seconds,
            agent_starter=agent_starter,
            alive=alive,
        )

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        await self.dns_server.start()
        await self.sink.start()

    async def stop(self) -> None:
        for remote in self._remotes:
            await remote.aclose()
        self._remotes.clear()
        await self.nodes.aclose()
        await self.sink.stop()
        await self.dns_server.stop()

    # --- the adapters a run uses against these stand-ins ---------------------------------

    def dns(self, key: TsigKey | None = None) -> Rfc2136Dns:
        return Rfc2136Dns(
            "127.0.0.1", self.zone, port=self.dns_server.port, key=key or self.tsig, timeout=5.0
        )

    def resolver(self) -> DnsResolver:
        return DnsResolver([("127.0.0.1", self.dns_server.port)], timeout=5.0)

    def remote(self, client_key: asyncssh.SSHKey | None = None) -> StandInRemote:
        """An SSH adapter routed to the node stand-ins (its connections close on ``stop``)."""
        remote = StandInRemote(self.nodes, SshRemote(client_key or self.client_key))
        self._remotes.append(remote)
        return remote

    def dkim(self) -> DkimVerifier:
        return DkimVerifier(self.resolver())
