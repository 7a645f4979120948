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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import NoReturn

from reconciler.core.dnsrecords import (
    RecordSet,
    SpfOverflowError,
    dkim_name,
    dkim_txt,
    dmarc_name,
    dmarc_txt,
    fcrdns_problem,
    spf_part_names,
    spf_records,
)
from reconciler.core.errors import (
    HostKeyMismatchError,
    ProviderError,
    RemoteCommandError,
    TransientError,
)
from reconciler.core.fleet import (
    HostKey,
    IntentStatus,
    NodeStatus,
    ObservedServer,
    PausedBy,
    RecordedIntent,
    RecordedNode,
    StepState,
    StepStatus,
)
from reconciler.core.mailprobes import probe_id, probe_message
from reconciler.core.plans import Change
from reconciler.core.ports import (
    Clock,
    DkimVerifierPort,
    DnsPort,
    MailSinkPort,
    RemoteExecPort,
    RemoteTarget,
    ResolverPort,
)
from reconciler.engine.contexts import (
    ApplyContext,
    ChangeFailedError,
    Waiting,
    error_text,
    with_step,
)
from reconciler.node import commands
from reconciler.node.bundle import Bundle, BundleSettings, PostfixTuning, render_bundle
from specs.provisioning import ProvisioningSpec

__all__ = [
    "PROVISIONING_EXECUTORS",
    "UPKEEP_EXECUTORS",
    "BootstrapResult",
    "ProbeResult",
    "Provisioner",
    "ProvisioningPorts",
    "bundle_settings",
]

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

    async def unpublish(self, node: str, hostname: str, fleet_ips: Iterable[str] = ()) -> None:
        """Decommission: the node's A and DKIM records go, and SPF lists only ``fleet_ips``
        (the IPs that stay), in one RFC 2136 update."""
        wanted, stale = self.domain_records(fleet_ips)
        await self.dns.update(
            replace=wanted,
            delete=[
                (hostname, "A"),
                (dkim_name(node, self.settings.domain), "TXT"),
                *((name, "TXT") for name in stale),
            ],
        )

    async def publish(self, hostname: str, ip: str, fleet_ips: Iterable[str]) -> None:
        """The node's A record with the domain's SPF (every IP of ``fleet_ips`` and ``ip``)
        and DMARC, in one RFC 2136 update; SPF parts no longer needed are deleted."""
        await self.publish_many({hostname: ip}, fleet_ips)

    async def publish_many(self, addresses: Mapping[str, str], fleet_ips: Iterable[str]) -> None:
        """The A records of several nodes (hostname -> IP) with the domain's SPF (every IP of
        ``fleet_ips`` and of ``addresses``) and DMARC, in one RFC 2136 update."""
        wanted, stale = self.domain_records({*fleet_ips, *addresses.values()})
        records = [RecordSet(host, "A", (ip,), self.ttl) for host, ip in sorted(addresses.items())]
        await self.dns.update(replace=[*records, *wanted], delete=[(n, "TXT") for n in stale])

    def domain_records(self, ips: Iterable[str]) -> tuple[list[RecordSet], list[str]]:
        """The domain's SPF (and parts) and DMARC records, and the SPF part names to delete."""
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
        return wanted, stale

    async def sync_domain_records(self, ips: Iterable[str]) -> list[str]:
        """SPF listing ``ips`` and DMARC from the spec; returns the names changed."""
        wanted, stale = self.domain_records(ips)
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
        return await self.remote.scan_host_key(
            ip, self.settings.ssh.port, username=self.settings.ssh.user
        )

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
        # one session: the token's line and the tar on stdin; the bundle unpacked if it is
        # not there, started (token written 0600) if it never ran (or failed, on a new
        # attempt), and a first wait for the run on the node (a run done within the wait, or
        # a version already done, costs no other session)
        wait = self._wait_slice(deadline)
        started, _, rest = (
            await self._run(
                target,
                commands.bootstrap_command(bundle.version, wait, rerun_failed=rerun_failed),
                stdin=f"RECONCILER_NODE_SECRET={token}\n".encode() + bundle.tar(),
                time_limit=wait + COMMAND_TIMEOUT,
                what="uploading and starting the bootstrap",
            )
        ).partition("\n")
        status, public = _status_lines(rest)
        if started.strip() == "done":
            status = "done"
        while status != "done":
            if status.startswith("failed"):
                return await self._failed(target, bundle, status)
            if (deadline - self.clock.now()).total_seconds() <= 0:
                return BootstrapResult(False, status)
            # the node waits for its own run (one session), at most a slice of what is left
            wait = self._wait_slice(deadline)
            status, public = _status_lines(
                await self._run(
                    target,
                    commands.wait_command(bundle.version, wait),
                    time_limit=wait + COMMAND_TIMEOUT,
                    what="waiting for the bootstrap",
                )
            )
        if public is None:
            public = await self.read_dkim(target, bundle.version)
        return BootstrapResult(True, "done", public)

    def _wait_slice(self, deadline: datetime) -> int:
        """Seconds one wait on the node may take: at most 20, within what is left."""
        left = (deadline - self.clock.now()).total_seconds()
        return max(1, min(int(left), 20))

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

    async def read_dkim(self, target: RemoteTarget, version: str) -> str | None:
        """The DKIM public key the node made (its bundle ``version``'s copy)."""
        public = await self._run(
            target, commands.read_dkim_command(version), what="reading the DKIM key"
        )
        return "".join(public.split()) or None

    async def reset(self, target: RemoteTarget, bundle: Bundle) -> str:
        """Make the finished bundle runnable again (drift repair); 'running' if it runs."""
        out = await self._run(
            target, commands.reset_command(bundle.version), what="resetting the bundle"
        )
        return out.strip()

    async def dns_drift(
        self, node: str, hostname: str, ip: str, dkim_public: str | None
    ) -> list[str]:
        """What differs between DNS and what provisioning published for the node: its A
        record and DKIM key on the zone's primary, and forward-confirmed reverse DNS."""
        problems: list[str] = []
        if await self.dns.published(hostname, "A") != (ip,):
            problems.append(f"A {hostname} is not {ip}")
        if dkim_public is not None:
            record = RecordSet(
                dkim_name(node, self.settings.domain), "TXT", (dkim_txt(dkim_public),)
            )
            if await self.dns.published(record.name, "TXT") != tuple(sorted(record.values)):
                problems.append(f"DKIM key {record.name} differs from the node's")
        fcrdns = await self.check_fcrdns(hostname, ip)
        if fcrdns is not None:
            problems.append(f"FCrDNS: {fcrdns}")
        return problems

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

    async def check_probe(self, probe: str, wait: float = 0.0) -> ProbeResult:
        """Whether the test mail ``probe`` arrived (waiting up to ``wait`` seconds for it: the
        sink wakes the wait when it arrives) and its DKIM signature verifies."""
        mail = await (self.sink.wait(probe, wait) if wait > 0 else self.sink.received(probe))
        if mail is None:
            return ProbeResult(False, False, "the test mail has not arrived at the sink yet")
        verdict = await self.dkim.verify(mail.raw)
        return ProbeResult(True, verdict.ok, verdict.reason)


def _status_lines(out: str) -> tuple[str, str | None]:
    """A bundle status line, then (once done) the DKIM public key on the following lines."""
    lines = out.strip().splitlines()
    status = lines[0].strip() if lines else ""
    public = "".join("".join(lines[1:]).split()) if status == "done" else ""
    return status or "uploaded", public or None


# --- the pipeline steps' executors (registered in reconciler.engine.steps.EXECUTORS) -------


@dataclass(frozen=True, slots=True)
class ProvisioningPorts:
    """What the provisioning steps work through, built by the composition root."""

    dns: DnsPort
    resolver: ResolverPort
    remote: RemoteExecPort
    sink: MailSinkPort
    dkim: DkimVerifierPort
    #: the node's heartbeat token (derived from the operator's master secret; never stored)
    token_for: Callable[[str], str]
    #: the daemon's heartbeat URL the agent posts to (None: agent installed, not started)
    agent_url: str | None = None
    poll_interval: float = 2.0
    #: how long one verify attempt waits for the test mail at the sink
    probe_wait: float = 60.0
    #: how long one dns attempt waits for forward-confirmed reverse DNS to show
    fcrdns_wait: float = 30.0
    #: the node's first heartbeat is part of verification (a daemon receives heartbeats)
    require_heartbeat: bool = False


def make_provisioner(
    spec: ProvisioningSpec | None, ports: ProvisioningPorts | None, clock: Clock
) -> Provisioner | None:
    if spec is None or ports is None:
        return None
    return Provisioner(
        spec,
        dns=ports.dns,
        resolver=ports.resolver,
        remote=ports.remote,
        sink=ports.sink,
        dkim=ports.dkim,
        clock=clock,
        poll_interval=ports.poll_interval,
    )


def bundle_settings(spec: ProvisioningSpec, node: str, agent_url: str | None) -> BundleSettings:
    postfix = spec.postfix
    return BundleSettings(
        node=node,
        hostname=spec.hostname(node),
        domain=spec.domain,
        agent_url=agent_url,
        agent_package=spec.agent_package,
        postfix=PostfixTuning(
            default_process_limit=postfix.default_process_limit,
            initial_destination_concurrency=postfix.initial_destination_concurrency,
            default_destination_concurrency_limit=postfix.default_destination_concurrency_limit,
            minimal_backoff_time=int(postfix.minimal_backoff_time.total_seconds()),
            maximal_backoff_time=int(postfix.maximal_backoff_time.total_seconds()),
            submission_networks=tuple(postfix.submission_networks),
        ),
        sysctl=dict(spec.sysctl),
        ssh_port=spec.ssh.port,
        install_timeout=max(60, int(spec.step_timeout.total_seconds()) - 30),
    )


def bundle_version(spec: ProvisioningSpec, node: str, agent_url: str | None) -> str:
    """The content hash of the bundle ``node`` gets from ``spec`` now."""
    return render_bundle(bundle_settings(spec, node, agent_url)).version


class _Executor:
    name = ""

    def done(self, node: RecordedNode) -> bool:
        return node.step_done(self.name)

    @staticmethod
    def provisioner(ctx: ApplyContext) -> tuple[Provisioner, ProvisioningPorts]:
        if ctx.provisioner is None or ctx.provisioning is None:
            raise ChangeFailedError(
                "the spec has a provisioning section but this run has no DNS/SSH/mail "
                "adapters (see docs/provisioning.md for the operator settings)"
            )
        return ctx.provisioner, ctx.provisioning

    def failed(
        self, ctx: ApplyContext, node: RecordedNode, error: str, *, quarantine: str | None = None
    ) -> RecordedNode:
        if quarantine is not None:
            node = replace(node, quarantine=quarantine[:500])
        updated = with_step(node, self.name, StepStatus.FAILED, ctx, error=error)
        ctx.journal.upsert(updated)
        return updated

    def succeeded(
        self, ctx: ApplyContext, node: RecordedNode, *, hold: bool = False
    ) -> RecordedNode:
        """``node`` with the step recorded done, written now, or with ``hold`` written with
        the node's next write (its next step's first one, or the flush that ends the step
        run): for a step whose rerun after a crash repeats nothing that matters."""
        updated = with_step(node, self.name, StepStatus.DONE, ctx)
        if hold:
            ctx.journal.hold(updated)
        else:
            ctx.journal.upsert(updated)
        return updated


def _ip(node: RecordedNode, server: ObservedServer) -> str:
    ip = server.main_ip or node.ip_address
    if not ip:
        raise ChangeFailedError(f"{node.name}: no IP address yet")
    return ip


async def publish_address(
    ctx: ApplyContext, provisioner: Provisioner, hostname: str, ip: str
) -> None:
    """The node's A record and its IP in SPF, grouped with every other address waiting for
    the DNS lock into one RFC 2136 update (``AddressBatch``)."""

    async def publish(addresses: dict[str, str]) -> None:
        ips = {n.ip_address for n in ctx.journal.nodes.values() if n.ip_address}
        await provisioner.publish_many(addresses, sorted(ips))

    await ctx.dns_batch.publish(hostname, ip, publish)


class HostKeyStep(_Executor):
    """Pin the SSH host key the node presents on first contact."""

    name = "hostkey"

    def done(self, node: RecordedNode) -> bool:
        return node.host_key is not None

    async def run(
        self, ctx: ApplyContext, change: Change, node: RecordedNode, server: ObservedServer
    ) -> RecordedNode:
        provisioner, _ = self.provisioner(ctx)
        try:
            key = await provisioner.pin_host_key(_ip(node, server))
        except ProviderError as exc:
            self.failed(ctx, node, error_text(exc))
            raise
        # written with the dns step's intent (before anything trusts the key); a crash before
        # it makes the rerun read the key again on first contact, as a crash before any write
        return self.succeeded(
            ctx, replace(node, host_key=key, ip_address=_ip(node, server)), hold=True
        )


class DnsStep(_Executor):
    """A record, the IP in SPF (with DMARC), then FCrDNS verified by real queries."""

    name = "dns"

    async def run(
        self, ctx: ApplyContext, change: Change, node: RecordedNode, server: ObservedServer
    ) -> RecordedNode:
        provisioner, ports = self.provisioner(ctx)
        ip = _ip(node, server)
        hostname = provisioner.settings.hostname(node.name)
        intent = ctx.journal.begin("dns", node.name, {"hostname": hostname, "ip": ip})
        try:
            await publish_address(ctx, provisioner, hostname, ip)
            waited = 0.0
            problem = await provisioner.check_fcrdns(hostname, ip)
            # DNS answers are cheap: look again within a second (the poll interval is 10 s
            # against the real cloud, where it paces API reads)
            pause = min(ports.poll_interval, 1.0)
            while problem is not None and waited < ports.fcrdns_wait:
                await ctx.clock.sleep(pause)
                waited += pause
                problem = await provisioner.check_fcrdns(hostname, ip)
        except (ProviderError, SpfOverflowError) as exc:
            ctx.journal.finish(intent, IntentStatus.FAILED, error=error_text(exc))
            self.failed(ctx, node, error_text(exc))
            raise ChangeFailedError(f"{node.name}: DNS: {error_text(exc)}") from exc
        if problem is not None:
            ctx.journal.finish(intent, IntentStatus.FAILED, error=problem)
            self.failed(ctx, node, problem)
            raise Waiting(f"{node.name}: forward-confirmed reverse DNS not there yet: {problem}")
        # the step and the journal entry in one transaction (the finish writes the node)
        updated = with_step(
            replace(node, hostname=hostname, ip_address=ip), self.name, StepStatus.DONE, ctx
        )
        ctx.journal.finish(intent, IntentStatus.DONE, node=updated)
        return updated


class BootstrapStep(_Executor):
    """The bundle over SSH; the DKIM public key read back and published."""

    name = "bootstrap"

    def done(self, node: RecordedNode) -> bool:
        return node.step_done(self.name) and node.bundle_version is not None

    async def run(
        self, ctx: ApplyContext, change: Change, node: RecordedNode, server: ObservedServer
    ) -> RecordedNode:
        provisioner, ports = self.provisioner(ctx)
        ip = _ip(node, server)
        bundle = render_bundle(bundle_settings(provisioner.settings, node.name, ports.agent_url))
        previous = node.step(self.name)
        target = provisioner.target(ip, node.host_key)
        deadline = ctx.now() + provisioner.settings.step_timeout
        intent = ctx.journal.begin("bootstrap", node.name, {"ip": ip, "bundle": bundle.short})
        try:
            result = await provisioner.bootstrap(
                target,
                bundle,
                ports.token_for(node.name),
                deadline=deadline,
                rerun_failed=previous is not None and previous.status is StepStatus.FAILED,
            )
            if result.done and result.dkim_public:
                await provisioner.publish_dkim(node.name, result.dkim_public)
        except HostKeyMismatchError as exc:
            ctx.journal.finish(intent, IntentStatus.FAILED, error=error_text(exc))
            self.failed(ctx, node, error_text(exc), quarantine=error_text(exc))
            raise ChangeFailedError(f"{node.name} QUARANTINED: {error_text(exc)}") from exc
        except ProviderError as exc:
            ctx.journal.finish(intent, IntentStatus.FAILED, error=error_text(exc))
            self.failed(ctx, node, error_text(exc))
            raise
        if not result.done:
            if result.status == "running":
                ctx.journal.finish(intent, IntentStatus.FAILED, error="still running")
                raise Waiting(f"{node.name}: bootstrap {bundle.short} still running on the node")
            tail = " | ".join(result.log_tail.strip().splitlines()[-3:])
            why = f"bootstrap {bundle.short} {result.status}: {tail}"[:400]
            ctx.journal.finish(intent, IntentStatus.FAILED, error=why)
            self.failed(ctx, node, why)
            raise ChangeFailedError(f"{node.name}: {why}")
        if not result.dkim_public:
            ctx.journal.finish(intent, IntentStatus.FAILED, error="no DKIM key")
            self.failed(ctx, node, "the node made no DKIM key")
            raise ChangeFailedError(f"{node.name}: the bootstrap left no DKIM public key")
        updated = with_step(
            replace(node, bundle_version=bundle.version, agent_url=ports.agent_url),
            self.name,
            StepStatus.DONE,
            ctx,
        )
        ctx.journal.finish(intent, IntentStatus.DONE, node=updated)
        return updated


class VerifyStep(_Executor):
    """A test mail through the node to the sink; its DKIM signature against DNS."""

    name = "verify"

    async def run(
        self, ctx: ApplyContext, change: Change, node: RecordedNode, server: ObservedServer
    ) -> RecordedNode:
        provisioner, ports = self.provisioner(ctx)
        ip = _ip(node, server)
        previous = node.step(self.name)
        attempt = 1 if previous is None else previous.attempts + 1
        probe = probe_id(node.name, node.bundle_version or "0" * 12, attempt)
        hostname = provisioner.settings.hostname(node.name)
        try:
            result = await provisioner.check_probe(probe)
            if not result.arrived:  # not sent by an earlier, interrupted attempt
                await provisioner.send_probe(provisioner.target(ip, node.host_key), hostname, probe)
                result = await provisioner.check_probe(probe, wait=ports.probe_wait)
        except HostKeyMismatchError as exc:
            self.failed(ctx, node, error_text(exc), quarantine=error_text(exc))
            raise ChangeFailedError(f"{node.name} QUARANTINED: {error_text(exc)}") from exc
        except ProviderError as exc:
            self.failed(ctx, node, error_text(exc))
            raise
        if not result.arrived:
            why = f"test mail {probe} did not reach the sink within {ports.probe_wait:g} s"
            self.failed(ctx, node, why)
            raise ChangeFailedError(f"{node.name}: {why}")
        if not result.dkim_ok:
            why = f"test mail {probe}: {result.reason}"
            self.failed(ctx, node, why)
            raise ChangeFailedError(f"{node.name}: {why}")
        # written with the node's next write (the rotation step's entry): a crash before it
        # makes the rerun find the test mail at the sink again, nothing is sent twice
        return self.succeeded(ctx, node, hold=True)


class HeartbeatStep(_Executor):
    """Reached only when no daemon receives heartbeats in this run: recorded as not checked."""

    name = "heartbeat"

    def done(self, node: RecordedNode) -> bool:
        return node.last_heartbeat is not None or node.step_done(self.name)

    async def run(
        self, ctx: ApplyContext, change: Change, node: RecordedNode, server: ObservedServer
    ) -> RecordedNode:
        _, ports = self.provisioner(ctx)
        if ports.require_heartbeat:
            # the daemon records the first beat; its plan then moves the node on
            raise Waiting(f"{node.name}: waiting for the node's first heartbeat")
        return self.succeeded(ctx, node, hold=True)  # nothing ran: recorded with the next write


def _mark(
    ctx: ApplyContext,
    node: RecordedNode,
    name: str,
    status: StepStatus,
    *,
    error: str | None = None,
    count: bool = True,
) -> RecordedNode:
    """``node`` with step ``name`` recorded; ``count``: a new attempt (else the attempt that
    was recorded at its start ends)."""
    previous = node.step(name)
    attempts = (previous.attempts if previous is not None else 0) + (1 if count else 0)
    state = StepState(name, status, max(1, attempts), ctx.now(), error[:200] if error else None)
    steps = tuple(sorted((*(s for s in node.steps if s.name != name), state), key=lambda s: s.name))
    return replace(node, steps=steps)


class RebootstrapStep(_Executor):
    """A node in service onto a changed bundle version (core.upkeep: rolling, within the
    disruption budget): out of rotation (``maintenance``) before anything runs, the new bundle
    run and checked, the DKIM key published again, then back into rotation. Out of attempts
    (``provisioning.step_attempts``), the node is quarantined: never back unverified."""

    name = "rebootstrap"

    def done(self, node: RecordedNode) -> bool:
        return False  # the executor compares versions itself

    async def run(
        self, ctx: ApplyContext, change: Change, node: RecordedNode, server: ObservedServer
    ) -> RecordedNode:
        provisioner, ports = self.provisioner(ctx)
        settings = provisioner.settings
        ip = _ip(node, server)
        agent_url = ports.agent_url or node.agent_url
        bundle = render_bundle(bundle_settings(settings, node.name, agent_url))
        back = change.status or NodeStatus.WARMING
        previous = node.step(self.name)
        attempts = 1 + (previous.attempts if previous is not None else 0)
        # out of rotation first, recorded before anything runs on the node
        held = _mark(
            ctx,
            ctx.journal.with_status(node, NodeStatus.MAINTENANCE),
            self.name,
            StepStatus.FAILED,
            error=f"in progress: updating to {bundle.short}",
        )
        ctx.journal.upsert(held)
        old = (node.bundle_version or "none")[:12]
        intent = ctx.journal.begin(
            "rebootstrap", node.name, {"ip": ip, "from": old, "to": bundle.short}
        )
        target = provisioner.target(ip, node.host_key)
        problem: str | None = None
        try:
            result = await provisioner.bootstrap(
                target,
                bundle,
                ports.token_for(node.name),
                deadline=ctx.now() + settings.step_timeout,
                rerun_failed=True,
            )
            if result.done:
                problem = await provisioner.drift(target, bundle)
                if problem is None and result.dkim_public:
                    await provisioner.publish_dkim(node.name, result.dkim_public)
        except HostKeyMismatchError as exc:
            ctx.journal.finish(intent, IntentStatus.FAILED, error=error_text(exc))
            self._give_up(ctx, held, error_text(exc), quarantine=True)
            raise ChangeFailedError(f"{node.name} QUARANTINED: {error_text(exc)}") from exc
        except ProviderError as exc:
            ctx.journal.finish(intent, IntentStatus.FAILED, error=error_text(exc))
            self._give_up(ctx, held, error_text(exc), quarantine=attempts >= settings.step_attempts)
            raise ChangeFailedError(f"{node.name}: re-bootstrap: {error_text(exc)}") from exc
        if not result.done and result.status == "running":
            ctx.journal.finish(intent, IntentStatus.FAILED, error="still running")
            raise Waiting(
                f"{node.name}: re-bootstrap {bundle.short} still running (in maintenance)"
            )
        if not result.done or problem is not None:
            tail = " | ".join(result.log_tail.strip().splitlines()[-3:])
            why = (
                f"re-bootstrap {bundle.short} {result.status}: {tail}"
                if not result.done
                else f"re-bootstrap {bundle.short} done but the check failed: {problem}"
            )[:400]
            ctx.journal.finish(intent, IntentStatus.FAILED, error=why)
            out = self._give_up(ctx, held, why, quarantine=attempts >= settings.step_attempts)
            state = "QUARANTINED" if out.quarantine else "stays in maintenance, retried"
            raise ChangeFailedError(f"{node.name} {state}: {why}")
        updated = replace(
            ctx.journal.with_status(held, back), bundle_version=bundle.version, agent_url=agent_url
        )
        updated = _mark(ctx, updated, self.name, StepStatus.DONE, count=False)
        ctx.journal.finish(intent, IntentStatus.DONE, node=updated)
        return updated

    def _give_up(
        self, ctx: ApplyContext, node: RecordedNode, error: str, *, quarantine: bool
    ) -> RecordedNode:
        updated = _mark(ctx, node, self.name, StepStatus.FAILED, error=error, count=False)
        if quarantine:
            updated = replace(updated, quarantine=f"re-bootstrap failed: {error}"[:500])
        ctx.journal.upsert(updated)
        return updated


class DriftStep(_Executor):
    """A scheduled check of a node in service (core.upkeep) against what provisioning left:

    - the SSH host key (every command runs over the pinned key): a different key quarantines
      the node at once, out of rotation;
    - its DNS: the A record and DKIM key on the zone's primary, SPF and DMARC of the domain,
      forward-confirmed reverse DNS by real queries: republished (and the PTR set again
      through the API); still wrong: quarantined, out of rotation;
    - the bootstrap's own check (``check.sh``: files and services): out of rotation while
      the bundle runs again; still wrong: quarantined.

    What it found and what it did go into the ``drift`` step's record and the journal."""

    name = "drift"

    def done(self, node: RecordedNode) -> bool:
        return False

    async def run(
        self, ctx: ApplyContext, change: Change, node: RecordedNode, server: ObservedServer
    ) -> RecordedNode:
        provisioner, ports = self.provisioner(ctx)
        settings = provisioner.settings
        ip = _ip(node, server)
        hostname = settings.hostname(node.name)
        # the node's own bundle: this run's agent URL, or the one the node was bootstrapped with
        agent_url = ports.agent_url or node.agent_url
        bundle = render_bundle(bundle_settings(settings, node.name, agent_url))
        target = provisioner.target(ip, node.host_key)
        intent = ctx.journal.begin("drift", node.name, {"ip": ip, "bundle": bundle.short})
        found: list[str] = []
        # the bundle this run renders is the node's unless neither this run nor the node's
        # record knows its agent URL (core.upkeep plans no check of an outdated node)
        own = node.bundle_version == bundle.version
        if not own:
            found.append("bootstrap files not checked (this run's bundle differs: agent URL?)")
        try:
            # over the pinned host key: a different key raises here, before anything else
            dkim = await provisioner.read_dkim(target, node.bundle_version or bundle.version)
            files = await provisioner.drift(target, bundle) if own else None
            dns_problems = await provisioner.dns_drift(node.name, hostname, ip, dkim)
            async with ctx.dns_lock:
                ips = {n.ip_address for n in ctx.journal.nodes.values() if n.ip_address}
                domain = await provisioner.sync_domain_records(sorted(ips | {ip}))
            found.extend(f"repaired {name}" for name in domain)
            if dns_problems:
                found.extend(dns_problems)
                await self._repair_dns(ctx, provisioner, ports, node, server, hostname, dkim)
                left = await provisioner.dns_drift(node.name, hostname, ip, dkim)
                if left:
                    why = "DNS drift not repaired: " + "; ".join(left)
                    return self._quarantine(ctx, node, intent, why, found)
                found.append("DNS republished")
            if files is not None:
                found.append(f"bootstrap check: {files}")
                node = ctx.journal.with_status(node, NodeStatus.MAINTENANCE)
                ctx.journal.upsert(node)
                if await provisioner.reset(target, bundle) != "running":
                    result = await provisioner.bootstrap(
                        target,
                        bundle,
                        ports.token_for(node.name),
                        deadline=ctx.now() + settings.step_timeout,
                        rerun_failed=True,
                    )
                    left_files = (
                        await provisioner.drift(target, bundle)
                        if result.done
                        else (f"bootstrap {result.status}")
                    )
                else:
                    left_files = "the bootstrap is running (started by someone else)"
                if left_files is not None:
                    return self._quarantine(
                        ctx, node, intent, f"bootstrap drift not repaired: {left_files}", found
                    )
                found.append("bootstrap run again")
                node = ctx.journal.with_status(node, change.status or NodeStatus.WARMING)
        except HostKeyMismatchError as exc:
            return self._quarantine(ctx, node, intent, error_text(exc), found)
        except (ProviderError, SpfOverflowError) as exc:
            ctx.journal.finish(intent, IntentStatus.FAILED, error=error_text(exc))
            failed = _mark(ctx, node, self.name, StepStatus.FAILED, error=error_text(exc))
            ctx.journal.upsert(failed)
            raise ChangeFailedError(f"{node.name}: drift check: {error_text(exc)}") from exc
        report = "; ".join(found)[:200] or None
        updated = _mark(ctx, node, self.name, StepStatus.DONE, error=report)
        ctx.journal.finish(intent, IntentStatus.DONE, node=updated)
        return updated

    async def _repair_dns(
        self,
        ctx: ApplyContext,
        provisioner: Provisioner,
        ports: ProvisioningPorts,
        node: RecordedNode,
        server: ObservedServer,
        hostname: str,
        dkim: str | None,
    ) -> None:
        ip = _ip(node, server)
        async with ctx.dns_lock:
            ips = {n.ip_address for n in ctx.journal.nodes.values() if n.ip_address}
            await provisioner.publish(hostname, ip, sorted(ips | {ip}))
        if dkim is not None:
            await provisioner.publish_dkim(node.name, dkim)
        if await provisioner.check_fcrdns(hostname, ip) is not None:
            # the PTR (Hostwinds set_rdns), journaled like the rdns step
            rdns = ctx.journal.begin(
                "set_rdns", node.name, {"service_id": str(server.service_id), "ip": ip}
            )
            async with ctx.slots:
                ctx.journal.mutating()
                try:
                    await ctx.cloud.set_rdns(server.service_id, ip, hostname)
                except ProviderError as exc:
                    ctx.journal.finish(rdns, IntentStatus.FAILED, error=error_text(exc))
                    raise
            ctx.journal.finish(rdns, IntentStatus.DONE)
        waited = 0.0
        while await provisioner.check_fcrdns(hostname, ip) is not None:
            if waited >= ports.fcrdns_wait:
                break
            await ctx.clock.sleep(ports.poll_interval)
            waited += ports.poll_interval

    def _quarantine(
        self,
        ctx: ApplyContext,
        node: RecordedNode,
        intent: RecordedIntent,
        why: str,
        found: list[str],
    ) -> NoReturn:
        updated = replace(node, quarantine=f"drift: {why}"[:500])
        if node.status.in_rotation:
            updated = replace(
                ctx.journal.with_status(updated, NodeStatus.PAUSED), paused_by=PausedBy.QUARANTINE
            )
        updated = _mark(ctx, updated, self.name, StepStatus.FAILED, error=why)
        ctx.journal.upsert(updated)
        ctx.journal.finish(intent, IntentStatus.FAILED, error=why)
        raise ChangeFailedError(
            f"{node.name} QUARANTINED (out of rotation): {why}"
            + (f" (found: {'; '.join(found)})" if found else "")
        )


PROVISIONING_EXECUTORS = (HostKeyStep(), DnsStep(), BootstrapStep(), VerifyStep(), HeartbeatStep())
#: upkeep of nodes in service (core.upkeep): not pipeline steps, planned by their own rule
UPKEEP_EXECUTORS = (RebootstrapStep(), DriftStep())
