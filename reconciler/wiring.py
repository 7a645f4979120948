"""The composition root shared by the CLI and the daemon: real adapters from a loaded spec and
the environment.

- ``build_cloud``: provider ``hostwinds`` -> the Hostwinds client; provider ``simulator`` ->
  the client against ``HOSTWINDS_API_URL`` when it is set (key default ``simulator``), else an
  in-process simulator on a free loopback port whose account persists in
  ``<state_dir>/simulator.json``. Where the API key goes and which variable holds it are the
  operator's choice (``provider_credentials``): a spec edit alone never moves a credential.
- ``build_store``: the state store (``RECONCILER_DATABASE_URL``, default SQLite under
  ``.reconciler/``).
- ``SystemClock`` and the poll interval that suits the provider.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from providers.hostwinds.client import ENDPOINT_ENV, HostwindsClient, client_from_settings
from reconciler.core.errors import UserError
from reconciler.core.ports import CloudPort, ReputationStorePort, StorePort
from reconciler.engine.clocks import SystemClock
from reconciler.engine.pricing import PriceListCache
from reconciler.engine.provisioning import ProvisioningPorts
from reconciler.engine.reconciling import Reconciler, SpecSource
from specs.model import DEFAULT_ENDPOINT, FleetSpec, ProviderType, ReputationPolicy
from state.store import SqlStore, open_store

# The adapters that only some commands use (SSH, DNS, DNSBL, mail, the simulator's server and
# stand-ins, the reputation store) are imported by the functions that build them: a dry-run
# or `reconcile status` does not pay for asyncssh, dnspython or aiosmtpd (issue 14).
if TYPE_CHECKING:
    from providers.dnsbl.checking import DnsblChecker
    from providers.simulator.nodes import AgentStarter
    from providers.simulator.serving import AsyncSimulatorServer

__all__ = [
    "ALLOWED_ENDPOINTS_ENV",
    "KEY_ENV_ENV",
    "SIMULATOR_STATE_FILE",
    "STATE_DIR_ENV",
    "SystemClock",
    "build_blocklist_checker",
    "build_cloud",
    "build_provisioning",
    "build_reconciler",
    "build_store",
    "default_state_dir",
    "poll_interval_for",
    "provider_credentials",
    "reputation_store_for",
]

#: where the embedded defaults live (SQLite database, simulator account)
STATE_DIR_ENV = "RECONCILER_STATE_DIR"
SIMULATOR_STATE_FILE = "simulator.json"


def default_state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$RECONCILER_STATE_DIR``, else ``.reconciler/`` in the working directory."""
    return Path(environ.get(STATE_DIR_ENV) or ".reconciler")


def poll_interval_for(spec: FleetSpec) -> float:
    """Seconds between two status polls: a quarter of a simulated build (0.1 to 2 s), or 10 s
    against the real cloud (builds take minutes there)."""
    if spec.provider.type is ProviderType.SIMULATOR:
        return min(2.0, max(0.1, spec.provider.build_time.total_seconds() / 4))
    return 10.0


#: the operator's name of the variable holding the API key (default HOSTWINDS_API_KEY)
KEY_ENV_ENV = "RECONCILER_API_KEY_ENV"
DEFAULT_KEY_ENV = "HOSTWINDS_API_KEY"
#: endpoints other than Hostwinds' official one that the operator allows a spec to name
ALLOWED_ENDPOINTS_ENV = "RECONCILER_ALLOWED_ENDPOINTS"


def _normal_url(url: str) -> str:
    return url.strip().rstrip("/").lower()


def provider_credentials(spec: FleetSpec, environ: Mapping[str, str]) -> tuple[str, str]:
    """(endpoint, name of the variable holding the API key) for ``spec``'s provider.

    The spec is untrusted input (pull requests): it may not choose where the key goes nor
    which secret of the environment is sent.

    - The key variable is the operator's: ``$RECONCILER_API_KEY_ENV``, else
      ``HOSTWINDS_API_KEY``. A spec that writes another ``provider.api_key_env`` is refused.
    - The endpoint is ``$HOSTWINDS_API_URL`` (the operator's) when set, else the spec's
      ``provider.endpoint`` if it is Hostwinds' official endpoint or one the operator listed
      in ``$RECONCILER_ALLOWED_ENDPOINTS`` (comma-separated URLs); any other is refused
      before a single request.
    """
    provider = spec.provider
    key_env = (environ.get(KEY_ENV_ENV) or "").strip() or DEFAULT_KEY_ENV
    if "api_key_env" in provider.model_fields_set and provider.api_key_env != key_env:
        raise UserError(
            f"provider.api_key_env in the spec names {provider.api_key_env}, but the API key "
            f"is read from {key_env}: a spec cannot choose which secret of the environment is "
            "sent",
            hint=f"if {provider.api_key_env} is meant to hold the key, the operator sets "
            f"{KEY_ENV_ENV}={provider.api_key_env} (outside the spec); else remove "
            "provider.api_key_env from the spec",
        )
    operator_url = (environ.get(ENDPOINT_ENV) or "").strip()
    if operator_url:
        return operator_url, key_env
    endpoint = provider.endpoint
    allowed = {
        _normal_url(item)
        for item in (environ.get(ALLOWED_ENDPOINTS_ENV) or "").split(",")
        if item.strip()
    }
    if _normal_url(endpoint) != _normal_url(DEFAULT_ENDPOINT) and _normal_url(endpoint) not in (
        allowed
    ):
        raise UserError(
            f"provider.endpoint in the spec is {_shown_url(endpoint)}, not the official "
            "Hostwinds endpoint, and the operator has not allowed it: a spec cannot send the "
            "API key to a new host",
            hint=f"the operator allows it outside the spec with {ALLOWED_ENDPOINTS_ENV}="
            f"<url> (or points the client elsewhere with {ENDPOINT_ENV}); else remove "
            "provider.endpoint from the spec",
        )
    return endpoint, key_env


def _shown_url(url: str) -> str:
    """scheme://host[:port]/path of ``url``, without user info or query (never a secret)."""
    parsed = urlsplit(url)
    host = parsed.hostname or "?"
    port = f":{parsed.port}" if parsed.port else ""
    return repr(f"{parsed.scheme}://{host}{port}{parsed.path}"[:200])


def _client(
    spec: FleetSpec,
    environ: Mapping[str, str],
    endpoint: str,
    key_env: str,
    *,
    lists_once: bool = False,
) -> HostwindsClient:
    provider = spec.provider
    return client_from_settings(
        endpoint=endpoint,
        api_key_env=key_env,
        environ=environ,
        rate_limit=provider.rate_limit,
        timeout=provider.timeout.total_seconds(),
        remember_listing=not lists_once,
    )


@asynccontextmanager
async def build_cloud(
    loaded: SpecSource,
    *,
    environ: Mapping[str, str] = os.environ,
    state_dir: Path | None = None,
    lists_once: bool = False,
) -> AsyncIterator[CloudPort]:
    """The cloud adapter for ``loaded``'s provider; closed (and the embedded simulator
    stopped, its state saved) on exit. ``lists_once``: the caller lists the account once
    (a dry-run), so the client neither digests nor keeps the listing to recognise it again."""
    spec = loaded.spec
    provider = spec.provider
    if provider.type is ProviderType.HOSTWINDS:
        endpoint, key_env = provider_credentials(spec, environ)
        client = _client(spec, environ, endpoint, key_env, lists_once=lists_once)
        try:
            yield client
        finally:
            await client.aclose()
        return
    from providers.simulator.serving import DEFAULT_API_KEY, AsyncSimulatorServer

    url = (environ.get(ENDPOINT_ENV) or "").strip()
    if url:
        endpoint, key_env = provider_credentials(spec, environ)
        env = dict(environ)
        if not (env.get(key_env) or "").strip():
            env[key_env] = DEFAULT_API_KEY
        client = _client(spec, env, endpoint, key_env, lists_once=lists_once)
        try:
            yield client
        finally:
            await client.aclose()
        return
    directory = state_dir if state_dir is not None else default_state_dir(environ)
    directory.mkdir(parents=True, exist_ok=True)
    server = AsyncSimulatorServer(
        state_path=directory / SIMULATOR_STATE_FILE,
        build_seconds=provider.build_time.total_seconds(),
        build_failure_rate=provider.build_failure_rate,
        # write the simulated account after every mutation: the simulator lives in this
        # process, so a SIGKILL of a run must not lose servers it already "paid" for
        persist_interval=0.0,
    )
    await server.start()
    try:
        client = HostwindsClient(
            server.api_url,
            DEFAULT_API_KEY,
            rate_limit=provider.rate_limit,
            timeout=provider.timeout.total_seconds(),
            remember_listing=not lists_once,
        )
        _EMBEDDED[id(client)] = server
        try:
            yield client
        finally:
            _EMBEDDED.pop(id(client), None)
            await client.aclose()
    finally:
        await server.stop()


#: the embedded simulator behind a client build_cloud yielded (its world feeds the stand-ins)
_EMBEDDED: dict[int, AsyncSimulatorServer] = {}

#: operator settings of the provisioning steps (secrets and endpoints stay outside the spec)
TSIG_KEY_ENV = "RECONCILER_TSIG_KEY_FILE"
SSH_KEY_ENV = "RECONCILER_SSH_KEY_FILE"
DNS_SERVER_ENV = "RECONCILER_DNS_SERVER"
SINK_LISTEN_ENV = "RECONCILER_SINK_LISTEN"
AGENT_URL_ENV = "RECONCILER_AGENT_URL"
MASTER_SECRET_ENV = "RECONCILER_NODE_MASTER_SECRET"  # noqa: S105 (a variable name)
MASTER_SECRET_FILE = "node-master.secret"  # noqa: S105 (a file name)
#: operator settings of the blocklist checks: the recursive resolver DNSBL queries go through
#: (before the spec's reputation.resolver) and the Spamhaus DQS key (a secret inside a DNS
#: name: sent only through the operator's resolver, never one the spec alone names)
RESOLVER_ENV = "RECONCILER_DNSBL_RESOLVER"
DQS_KEY_ENV = "RECONCILER_DQS_KEY"


def _master_secret(environ: Mapping[str, str], directory: Path, simulated: bool) -> bytes:
    """The node tokens' master secret: the operator's (environment), or for the simulator
    one made once under the state folder (0600)."""
    value = (environ.get(MASTER_SECRET_ENV) or "").strip()
    if value:
        return value.encode()
    if not simulated:
        raise UserError(
            f"the node master secret is not set: environment variable {MASTER_SECRET_ENV} "
            "is empty (each node's heartbeat token is derived from it)",
            hint=f"export {MASTER_SECRET_ENV}=\"$(python3 -c 'import secrets; "
            "print(secrets.token_hex(32))')\"",
        )
    path = directory / MASTER_SECRET_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip().encode()


def node_token(master: bytes, node: str) -> str:
    """``hex(HMAC-SHA256(master, node))``: the same derivation as the daemon's
    (``reconciler.daemon.heartbeats.derive_node_secret``, pinned equal by a test)."""
    return hmac.new(master, node.encode(), hashlib.sha256).hexdigest()


def _host_port(value: str, default_port: int, what: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    if port and not port.isdigit():
        raise UserError(f"{what}: {value!r} is not host or host:port")
    return host, int(port) if port else default_port


@asynccontextmanager
async def build_provisioning(
    loaded: SpecSource,
    cloud: CloudPort,
    *,
    environ: Mapping[str, str] = os.environ,
    state_dir: Path | None = None,
    agent_starter: AgentStarter | None = None,
) -> AsyncIterator[ProvisioningPorts | None]:
    """The provisioning steps' adapters, or None when the spec has no ``provisioning:``.

    - The embedded simulator: the stand-ins (DNS, nodes, sink) under the state folder, fed
      by the simulated account (reverse DNS, server names).
    - Otherwise: RFC 2136 to ``dns.server`` (``RECONCILER_DNS_SERVER`` overrides) with the
      TSIG key in ``RECONCILER_TSIG_KEY_FILE``; SSH with the key in
      ``RECONCILER_SSH_KEY_FILE``; the system resolver; a sink listening on
      ``RECONCILER_SINK_LISTEN`` (host:port) for the spec's sink address.
    """
    spec = loaded.spec
    settings = spec.provisioning
    if settings is None:
        yield None
        return
    directory = state_dir if state_dir is not None else default_state_dir(environ)
    directory.mkdir(parents=True, exist_ok=True)
    agent_url = (environ.get(AGENT_URL_ENV) or "").strip() or None
    from providers.dns.resolving import DnsResolver
    from providers.dns.rfc2136 import Rfc2136Dns, load_tsig_key
    from providers.mail.dkimcheck import DkimVerifier
    from providers.mail.sink import MailSink
    from providers.simulator.standins import StandIns
    from providers.ssh.remote import SshRemote, load_client_key

    server = _EMBEDDED.get(id(cloud))
    if server is not None:
        master = _master_secret(environ, directory, simulated=True)
        world = server.world

        def ptr(ip: str) -> str | None:
            for inst in list(world.instances.values()):
                if ip in inst.rdns:
                    return inst.rdns[ip]
            return None

        def name_of(ip: str) -> str | None:
            for inst in list(world.instances.values()):
                if inst.main_ip == ip:
                    return inst.srvrname
            return None

        def alive() -> set[str]:
            return {inst.srvrname for inst in list(world.instances.values())}

        stand_ins = StandIns(
            directory,
            zone=settings.zone,
            sink_address=settings.sink,
            ptr_source=ptr,
            name_of=name_of,
            agent_starter=agent_starter,
            alive=alive,
        )
        await stand_ins.start()
        try:
            yield ProvisioningPorts(
                dns=stand_ins.dns(),
                resolver=stand_ins.resolver(),
                remote=stand_ins.remote(),
                sink=stand_ins.sink,
                dkim=stand_ins.dkim(),
                token_for=lambda node: node_token(master, node),
                agent_url=agent_url,
                poll_interval=0.05,
                probe_wait=20.0,
                fcrdns_wait=5.0,
            )
        finally:
            await stand_ins.stop()
        return
    master = _master_secret(environ, directory, simulated=False)
    dns_server = (environ.get(DNS_SERVER_ENV) or "").strip() or settings.dns.server
    if not dns_server:
        raise UserError(
            "provisioning needs the DNS server of the zone: set provisioning.dns.server "
            f"in the spec or {DNS_SERVER_ENV}",
            hint="the zone's primary that accepts RFC 2136 updates, e.g. 192.0.2.53:53",
        )
    host, port = _host_port(dns_server, 53, "DNS server")
    tsig_path = (environ.get(TSIG_KEY_ENV) or "").strip()
    if not tsig_path:
        raise UserError(
            f"provisioning needs a TSIG key file: environment variable {TSIG_KEY_ENV} is empty",
            hint="tsig-keygen fleet-reconciler > /etc/fleet-reconciler/tsig.key; allow the "
            "key to update the zone (BIND: update-policy); never put the key in the spec",
        )
    ssh_path = (environ.get(SSH_KEY_ENV) or "").strip()
    if not ssh_path:
        raise UserError(
            f"provisioning needs the SSH private key: environment variable {SSH_KEY_ENV} is empty",
            hint="the private half of the key registered at Hostwinds (provider.ssh_keys)",
        )
    listen = (environ.get(SINK_LISTEN_ENV) or "").strip()
    if not listen:
        raise UserError(
            f"provisioning needs the test-mail sink: environment variable {SINK_LISTEN_ENV} "
            "is empty",
            hint=f"host:port where this process receives the mail sent to {settings.sink} "
            "(its MX must point here)",
        )
    sink_host, sink_port = _host_port(listen, 25, "sink address")
    sink = MailSink(directory / "sink", settings.sink, host=sink_host, port=sink_port)
    resolver = DnsResolver()
    remote = SshRemote(load_client_key(Path(ssh_path)))
    key = load_tsig_key(Path(tsig_path))
    await sink.start()
    try:
        yield ProvisioningPorts(
            dns=Rfc2136Dns(host, settings.zone, port=port, key=key),
            resolver=resolver,
            remote=remote,
            sink=sink,
            dkim=DkimVerifier(resolver),
            token_for=lambda node: node_token(master, node),
            agent_url=agent_url,
        )
    finally:
        await remote.aclose()
        await sink.stop()


def build_store(environ: Mapping[str, str] = os.environ, *, url: str | None = None) -> StorePort:
    """The state store: ``url``, else ``RECONCILER_DATABASE_URL``, else SQLite under
    ``.reconciler/`` (created and migrated by itself)."""
    return open_store(url, environ=environ)


def build_reconciler(
    loaded: SpecSource,
    cloud: CloudPort,
    store: StorePort,
    provisioning: ProvisioningPorts | None = None,
) -> Reconciler:
    return Reconciler(
        loaded,
        cloud,
        store,
        SystemClock(),
        poll_interval=poll_interval_for(loaded.spec),
        provisioning=provisioning,
        prices=PriceListCache(),  # plans warn when a spec price is not the provider's
    )


def build_blocklist_checker(
    policy: ReputationPolicy,
    environ: Mapping[str, str] = os.environ,
    *,
    resolver: str | None = None,
    system_fallback: bool = True,
) -> DnsblChecker | None:
    """The DNSBL checker for ``policy``. The resolver is, in order: ``resolver`` (the CLI's
    ``--resolver``), ``$RECONCILER_DNSBL_RESOLVER`` (both the operator's choice), the spec's
    ``reputation.resolver``, the system's (/etc/resolv.conf) only with ``system_fallback``
    (the one-off CLI look-up; the daemon never queries a resolver nobody named, and gets None).
    A Spamhaus DQS key
    (``$RECONCILER_DQS_KEY``) is used only through a resolver the operator chose: a spec edit
    alone can never send it anywhere new (design §3e)."""
    from providers.dnsbl.checking import DnsblChecker, DqsKey, system_resolver
    from reconciler.core.reputation import compile_rules
    from specs.blocklists import ResolverAddress, parse_resolver

    operator_text = resolver or environ.get(RESOLVER_ENV) or None
    address: ResolverAddress | None
    if operator_text is not None:
        try:
            address = parse_resolver(operator_text)
        except ValueError as exc:
            where = "--resolver" if resolver else RESOLVER_ENV
            raise UserError(f"{where}: {exc}", hint="e.g. 127.0.0.1:53") from None
    elif policy.resolver is not None:
        address = parse_resolver(policy.resolver)
    elif system_fallback:
        address = system_resolver()
    else:
        return None
    key: DqsKey | None = None
    key_text = environ.get(DQS_KEY_ENV, "")
    if key_text:
        try:
            key = DqsKey(key_text)
        except ValueError as exc:
            raise UserError(
                f"{DQS_KEY_ENV}: {exc}", hint="copy the key from the Spamhaus DQS portal"
            ) from None
    return DnsblChecker(
        compile_rules(policy),
        address,
        timeout=policy.timeout.total_seconds(),
        concurrency=policy.concurrency,
        dqs_key=key,
        dqs_allowed=operator_text is not None,
        dqs_setting=DQS_KEY_ENV,
        resolver_setting=f"{RESOLVER_ENV} or --resolver",
    )


def reputation_store_for(store: StorePort) -> ReputationStorePort | None:
    """The reputation store on the same database (None for a store that is not SQL)."""
    from state.reputation import SqlReputationStore

    return SqlReputationStore(store) if isinstance(store, SqlStore) else None
