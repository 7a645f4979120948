"""The composition root shared by the CLI and the daemon: real adapters from a loaded spec and
the environment.

- ``build_cloud``: provider ``hostwinds`` -> the Hostwinds client (``HOSTWINDS_API_URL``
  overrides the endpoint, the key comes from the variable named by ``provider.api_key_env``);
  provider ``simulator`` -> the client against ``HOSTWINDS_API_URL`` when it is set (key from
  ``provider.api_key_env``, default ``simulator``), else an in-process simulator on a free
  loopback port whose account persists in ``<state_dir>/simulator.json``.
- ``build_store``: the state store (``RECONCILER_DATABASE_URL``, default SQLite under
  ``.reconciler/``).
- ``SystemClock`` and the poll interval that suits the provider.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from providers.dnsbl.checking import (
    DQS_KEY_ENV,
    RESOLVER_ENV,
    DnsblChecker,
    DqsKey,
    system_resolver,
)
from providers.hostwinds.client import ENDPOINT_ENV, HostwindsClient, client_from_settings
from providers.simulator.serving import DEFAULT_API_KEY, AsyncSimulatorServer
from reconciler.core.errors import UserError
from reconciler.core.ports import CloudPort, ReputationStorePort, StorePort
from reconciler.core.reputation import compile_rules
from reconciler.engine.clocks import SystemClock
from reconciler.engine.reconciling import Reconciler, SpecSource
from specs.blocklists import ResolverAddress, parse_resolver
from specs.model import FleetSpec, ProviderType, ReputationPolicy
from state.reputation import SqlReputationStore
from state.store import SqlStore, open_store

__all__ = [
    "SIMULATOR_STATE_FILE",
    "STATE_DIR_ENV",
    "SystemClock",
    "build_blocklist_checker",
    "build_cloud",
    "build_reconciler",
    "build_store",
    "default_state_dir",
    "poll_interval_for",
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


def _client(spec: FleetSpec, environ: Mapping[str, str], endpoint: str) -> HostwindsClient:
    provider = spec.provider
    return client_from_settings(
        endpoint=endpoint,
        api_key_env=provider.api_key_env,
        environ=environ,
        rate_limit=provider.rate_limit,
        timeout=provider.timeout.total_seconds(),
    )


@asynccontextmanager
async def build_cloud(
    loaded: SpecSource,
    *,
    environ: Mapping[str, str] = os.environ,
    state_dir: Path | None = None,
) -> AsyncIterator[CloudPort]:
    """The cloud adapter for ``loaded``'s provider; closed (and the embedded simulator
    stopped, its state saved) on exit."""
    spec = loaded.spec
    provider = spec.provider
    if provider.type is ProviderType.HOSTWINDS:
        client = _client(spec, environ, provider.endpoint)
        try:
            yield client
        finally:
            await client.aclose()
        return
    url = (environ.get(ENDPOINT_ENV) or "").strip()
    if url:
        env = dict(environ)
        if not (env.get(provider.api_key_env) or "").strip():
            env[provider.api_key_env] = DEFAULT_API_KEY
        client = _client(spec, env, url)
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
        )
        try:
            yield client
        finally:
            await client.aclose()
    finally:
        await server.stop()


def build_store(environ: Mapping[str, str] = os.environ, *, url: str | None = None) -> StorePort:
    """The state store: ``url``, else ``RECONCILER_DATABASE_URL``, else SQLite under
    ``.reconciler/`` (created and migrated by itself)."""
    return open_store(url, environ=environ)


def build_reconciler(loaded: SpecSource, cloud: CloudPort, store: StorePort) -> Reconciler:
    return Reconciler(
        loaded, cloud, store, SystemClock(), poll_interval=poll_interval_for(loaded.spec)
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
            raise UserError(str(exc), hint="copy the key from the Spamhaus DQS portal") from None
    return DnsblChecker(
        compile_rules(policy),
        address,
        timeout=policy.timeout.total_seconds(),
        concurrency=policy.concurrency,
        dqs_key=key,
        dqs_allowed=operator_text is not None,
    )


def reputation_store_for(store: StorePort) -> ReputationStorePort | None:
    """The reputation store on the same database (None for a store that is not SQL)."""
    return SqlReputationStore(store) if isinstance(store, SqlStore) else None
