"""The provisioning steps of a node, run through the ports (design §3b).

Each method is one idempotent unit of a node's pipeline; running it again after it succeeded
changes nothing (DNS updates replace whole RRsets, a bundle whose version finished on the node
is not run again, a probe already received is not sent again). The pipeline (which step a node
needs next, attempts, deadlines) is decided by the planner; this module only executes.

- ``publish_address``: the node's A record (RFC 2136 through ``DnsPort``).
- ``check_fcrdns``: PTR of the IP -> hostname -> A -> the IP, by real queries (``ResolverPort``).
- ``pin_host_key``: the SSH host key the node presents on first contact.
- ``bootstrap``: upload the bundle (content-hash version), write the agent's token (stdin,
  0600), start ``run.sh`` detached, wait for ``status`` = done; then read the DKIM public key
  the node generated and publish it as the node's selector.
- ``send_probe`` / ``check_probe``: a test mail through the node's Postfix to the sink, and
  its DKIM signature verified against the key DNS serves.
- ``sync_domain_records``: SPF (every sending IP, within the DNS limits) and DMARC.
- ``unpublish``: the node's A and DKIM records (decommission).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from reconciler.core.dnsrecords import (
    RecordSet,
    dkim_name,
    dkim_txt,
    dmarc_name,
    dmarc_txt,
    fcrdns_problem,
    spf_part_names,
    spf_records,
)
from reconciler.core.errors import RemoteCommandError, TransientError
from reconciler.core.mailprobes import probe_message
from reconciler.core.ports import (
    Clock,
    DkimVerifierPort,
    DnsPort,
    HostKey,
    MailSinkPort,
    RemoteExecPort,
    RemoteTarget,
    ResolverPort,
)
from reconciler.node import commands
from reconciler.node.bundle import Bundle
from specs.provisioning import ProvisioningSpec

__all__ = ["BootstrapResult", "ProbeResult", "Provisioner"]

#: how long one short remote command may take
COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    done: bool  # the bundle's status is "done"
    status: str  # running | done | failed <rc> | absent
    dkim_public: str | None = None
    log_tail: str = ""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    arrived: bool
    dkim_ok: bool
    reason: str


class Provisioner:
    def __init__(
        self,
        settings: ProvisioningSpec,
        *,
        dns: DnsPort,
        resolver: ResolverPort,
        remote: RemoteExecPort,
        sink: MailSinkPort,
        dkim: DkimVerifierPort,
        clock: Clock,
        poll_interval: float = 2.0,
    ) -> None:
        self.settings = settings
        self.dns = dns
        self.resolver = resolver
        self.remote = remote
        self.sink = sink
        self.dkim = dkim
        self.clock = clock
        self.poll_interval = poll_interval

    @property
    def ttl(self) -> int:
        return int(self.settings.dns.ttl.total_seconds())

    def target(self, ip: str, host_key: HostKey | None) -> RemoteTarget:
        return RemoteTarget(ip, self.settings.ssh.port, self.settings.ssh.user, host_key)

    # --- DNS -----------------------------------------------------------------------------

    async def publish_address(self, hostname: str, ip: str) -> None:
        await self.dns.replace(RecordSet(hostname, "A", (ip,), self.ttl))

    async def check_fcrdns(self, hostname: str, ip: str) -> str | None:
        """None when forward-confirmed reverse DNS holds, else the problem."""
        ptrs = await self.resolver.reverse(ip)
        forward = await self.resolver.lookup(hostname, "A")
        return fcrdns_problem(ip, hostname, ptrs, forward)

    async def publish_dkim(self, node: str, public_key: str) -> None:
        name = dkim_name(node, self.settings.domain)
        await self.dns.replace(RecordSet(name, "TXT", (dkim_txt(public_key),), self.ttl))

    async def unpublish(self, node: str, hostname: str) -> None:
        await self.dns.delete(hostname, "A")
        await self.dns.delete(dkim_name(node, self.settings.domain), "TXT")

    async def sync_domain_records(self, ips: Iterable[str]) -> list[str]:
        """SPF listing ``ips`` and DMARC from the spec; returns the names changed."""
        settings = self.settings
        wanted: list[RecordSet] = []
        stale: list[str] = []
        if settings.spf.manage:
            records = spf_records(
                settings.domain,
                ips,
                extra=settings.spf.extra,
                all_qualifier=settings.spf.all,
                ttl=self.ttl,
            )
            wanted.extend(records)
            used = {r.name for r in records}
            stale = [n for n in spf_part_names(settings.domain) if n not in used]
        if settings.dmarc.manage:
            d = settings.dmarc
            text = dmarc_txt(
                d.policy,
                subdomain_policy=d.subdomain_policy,
                percent=d.percent,
                rua=d.rua,
                ruf=d.ruf,
                adkim=d.adkim,
                aspf=d.aspf,
            )
            wanted.append(RecordSet(dmarc_name(settings.domain), "TXT", (text,), self.ttl))
        changed: list[str] = []
        for record in wanted:
            if await self.dns.published(record.name, record.rtype) != tuple(sorted(record.values)):
                await self.dns.replace(record)
                changed.append(record.name)
        for name in stale:
            if await self.dns.published(name, "TXT"):
                await self.dns.delete(name, "TXT")
                changed.append(name)
        return changed

    # --- SSH -----------------------------------------------------------------------------

    async def pin_host_key(self, ip: str) -> HostKey:
        return await self.remote.scan_host_key(ip, self.settings.ssh.port)

    async def _run(
        self,
        target: RemoteTarget,
        command: str,
        *,
        stdin: bytes | None = None,
        time_limit: float = COMMAND_TIMEOUT,
        what: str,
    ) -> str:
        result = await self.remote.run(target, command, time_limit=time_limit, stdin=stdin)
        if result.exit_status != 0:
            excerpt = " ".join(result.stderr.split())[-300:]
            raise RemoteCommandError(
                f"{target.host}: {what} failed (exit {result.exit_status}): {excerpt}",
                exit_status=result.exit_status,
            )
        return result.stdout

    async def bundle_status(self, target: RemoteTarget, bundle: Bundle) -> str:
        out = await self._run(
            target, commands.status_command(bundle.version), what="reading the bundle status"
        )
        return out.strip() or "uploaded"

    async def bootstrap(
        self,
        target: RemoteTarget,
        bundle: Bundle,
        token: str,
        *,
        deadline: datetime,
        rerun_failed: bool = False,
    ) -> BootstrapResult:
        """Bring the node to ``bundle`` (idempotent; waits until done, failed or deadline).

        A version the node finished is not run again; one that is running (started by an
        earlier, interrupted attempt) is waited for, not started twice; a failed one is run
        again only when ``rerun_failed`` (a new attempt of the step)."""
        status = await self.bundle_status(target, bundle)
        if status == "absent":
            await self._run(
                target,
                commands.upload_command(bundle.version),
                stdin=bundle.tar(),
                what="uploading the bundle",
            )
            status = "uploaded"
        if status.startswith("failed") and not rerun_failed:
            return await self._failed(target, bundle, status)
        if status == "uploaded" or status.startswith("failed"):
            await self._run(
                target,
                commands.token_command(),
                stdin=f"RECONCILER_NODE_SECRET={token}\n".encode(),
                what="writing the agent's token",
            )
            await self._run(
                target, commands.start_command(bundle.version), what="starting the bootstrap"
            )
            status = "running"
        while status != "done":
            if status.startswith("failed"):
                return await self._failed(target, bundle, status)
            if self.clock.now() >= deadline:
                return BootstrapResult(False, status)
            await self.clock.sleep(self.poll_interval)
            status = await self.bundle_status(target, bundle)
        public = await self._run(
            target, commands.read_dkim_command(bundle.version), what="reading the DKIM key"
        )
        return BootstrapResult(True, "done", "".join(public.split()) or None)

    async def _failed(self, target: RemoteTarget, bundle: Bundle, status: str) -> BootstrapResult:
        try:
            log = await self._run(
                target, commands.install_log_command(bundle.version), what="reading the log"
            )
        except (TransientError, RemoteCommandError):
            log = ""
        return BootstrapResult(False, status, log_tail=log[-2000:])

    async def drift(self, target: RemoteTarget, bundle: Bundle) -> str | None:
        """None when the node is as its bundle left it, else what differs."""
        result = await self.remote.run(
            target, commands.check_command(bundle.version), time_limit=COMMAND_TIMEOUT
        )
        if result.exit_status == 0:
            return None
        lines = [line for line in result.stdout.splitlines() if line.strip()][:10]
        return "; ".join(lines) or f"check failed (exit {result.exit_status})"

    # --- verification --------------------------------------------------------------------

    async def send_probe(self, target: RemoteTarget, hostname: str, probe: str) -> None:
        message = probe_message(
            hostname=hostname, sink_address=self.sink.address, probe=probe, now=self.clock.now()
        )
        await self._run(
            target,
            f"sendmail -oi -f {shlex.quote('postmaster@' + hostname)} "
            f"{shlex.quote(self.sink.address)}",
            stdin=message,
            what="sending the test mail",
        )

    async def check_probe(self, probe: str) -> ProbeResult:
        mail = await self.sink.received(probe)
        if mail is None:
            return ProbeResult(False, False, "the test mail has not arrived at the sink yet")
        verdict = await self.dkim.verify(mail.raw)
        return ProbeResult(True, verdict.ok, verdict.reason)
