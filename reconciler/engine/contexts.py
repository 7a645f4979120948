"""What every action family of the applier works with: the ports, the journal, the snapshot,
the settings, the concurrency limits; and the signals a change ends with."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from reconciler.core.addresses import node_hostname
from reconciler.core.costs import CostResolver, cents
from reconciler.core.fleet import (
    ObservedServer,
    RecordedNode,
    ServerStatus,
    StepState,
    StepStatus,
)
from reconciler.core.plans import Change
from reconciler.core.ports import Clock, CloudPort
from reconciler.engine.journaling import Journal
from reconciler.engine.observing import Snapshot
from reconciler.engine.watching import ServerWatcher
from specs.model import FleetSpec

if TYPE_CHECKING:
    from reconciler.engine.provisioning import Provisioner, ProvisioningPorts

__all__ = [
    "ApplyContext",
    "ApplySettings",
    "ChangeFailedError",
    "Waiting",
    "can_come_up",
    "error_text",
    "node_hostname",
    "with_step",
]


@dataclass(frozen=True, slots=True)
class ApplySettings:
    concurrency: int = 8
    max_unavailable: int = 1
    create_timeout: timedelta = timedelta(minutes=30)
    resize_timeout: timedelta = timedelta(minutes=30)
    adoption_grace: timedelta = timedelta(minutes=5)
    #: seconds between two polls of a server's status
    poll_interval: float = 5.0
    #: how long to look a just-created name up before leaving it to the next run's RESOLVE
    find_timeout: timedelta = timedelta(seconds=60)
    #: nodes in their provisioning steps at once (DNS, SSH, mail: no API calls, so not
    #: bounded by ``concurrency``, which paces the cloud calls)
    remote_concurrency: int = 64

    @classmethod
    def from_spec(cls, spec: FleetSpec, *, poll_interval: float = 5.0) -> ApplySettings:
        r = spec.reconcile
        return cls(
            concurrency=r.concurrency,
            max_unavailable=spec.disruption.max_unavailable,
            create_timeout=r.create_timeout,
            resize_timeout=r.resize_timeout,
            adoption_grace=r.adoption_grace,
            poll_interval=poll_interval,
            find_timeout=min(r.adoption_grace, timedelta(seconds=60)),
        )


class ChangeFailedError(Exception):
    """One change failed; recorded on its outcome, the others go on."""


class Waiting(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """The change is not finished and must not be counted as failed."""


def can_come_up(server: ObservedServer) -> bool:
    """ACTIVE, or transitional towards ACTIVE (BUILD, UNKNOWN...): not failed, not resizing."""
    return server.status not in (
        ServerStatus.ERROR,
        ServerStatus.RESIZE,
        ServerStatus.RESIZED,
        ServerStatus.SHUTOFF,
        ServerStatus.DELETED,
    )


def error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:500]


class AddressBatch:
    """Group commit of A records: SPF lists every node's IP, so DNS updates go one at a time
    (``lock``); whoever takes the lock publishes every address waiting for it in one update,
    so 100 nodes reaching their DNS step together wait for a few updates instead of 100 in a
    row. Each caller gets the outcome of the update that carried its address (a refused
    update fails each of them; nothing is reported done that was not published)."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self.lock = lock
        self.waiting: list[tuple[str, str, asyncio.Future[None]]] = []
        #: updates sent (each carrying one or more addresses)
        self.updates = 0

    async def publish(
        self,
        hostname: str,
        ip: str,
        send: Callable[[dict[str, str]], Awaitable[None]],
    ) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # a caller cancelled before it looked at its outcome must not log "never retrieved"
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.waiting.append((hostname, ip, done))
        async with self.lock:
            if not done.done():
                batch, self.waiting = self.waiting, []
                try:
                    self.updates += 1
                    await send({host: address for host, address, _ in batch})
                except asyncio.CancelledError:
                    # this run stops: the others' addresses go with whoever takes the lock next
                    self.waiting[:0] = [
                        entry for entry in batch if entry[2] is not done and not entry[2].done()
                    ]
                    raise
                except Exception as exc:
                    for _, _, waiter in batch:
                        if not waiter.done():
                            waiter.set_exception(exc)
                else:
                    for _, _, waiter in batch:
                        if not waiter.done():
                            waiter.set_result(None)
        await done


class ApplyContext:
    """Shared by the action families of one apply (``creating``, ``steps``, ``destroying``,
    ``resizing``, ``recording``). Built per apply."""

    def __init__(
        self,
        spec: FleetSpec,
        cloud: CloudPort,
        clock: Clock,
        snapshot: Snapshot,
        journal: Journal,
        *,
        settings: ApplySettings,
        spec_hash: str | None = None,
        provisioning: ProvisioningPorts | None = None,
    ) -> None:
        self.spec = spec
        self.spec_hash = spec_hash
        self.fleet = spec.name
        self.cloud = cloud
        self.clock = clock
        self.snapshot = snapshot
        self.journal = journal
        self.settings = settings
        #: at most ``concurrency`` nodes making calls at once (waiting for a build holds none)
        self.slots = asyncio.Semaphore(settings.concurrency)
        #: at most ``remote_concurrency`` nodes in their provisioning steps (DNS, SSH, mail)
        self.remote_slots = asyncio.Semaphore(max(1, settings.remote_concurrency))
        self.watcher = ServerWatcher(cloud, clock, settings.poll_interval)
        #: names created in this run: never twice
        self.created: set[str] = set()
        self._region_budgets: dict[str, asyncio.Semaphore] = {}
        self._costs = CostResolver(spec, snapshot.recorded.cost_overrides)
        #: the provisioning steps' adapters (None: the spec's pipeline stops after rDNS)
        self.provisioning = provisioning
        #: built by the Applier from ``provisioning`` when the spec has the section
        self.provisioner: Provisioner | None = None
        #: SPF lists every node's IP: one update at a time
        self.dns_lock = asyncio.Lock()
        #: nodes' A records published by group commit under ``dns_lock``
        self.dns_batch = AddressBatch(self.dns_lock)

    def now(self) -> datetime:
        return self.clock.now()

    def cost(self, plan: str | None, pool: str | None) -> Decimal:
        """Approximate monthly cost of a node: plan price plus its IPs (core.costs)."""
        return cents(self._costs.node(plan, pool)[0])

    def region_budget(self, region: str) -> asyncio.Semaphore:
        """Resizes roll through a region at most ``max_unavailable`` at a time."""
        budget = self._region_budgets.get(region)
        if budget is None:
            budget = asyncio.Semaphore(max(1, self.settings.max_unavailable))
            self._region_budgets[region] = budget
        return budget

    def node(self, change: Change) -> RecordedNode:
        """The record of the change's node (as this run last wrote it)."""
        node = self.journal.node(change.address)
        if node is None:
            raise ChangeFailedError(f"{change.address}: no record of this node")
        return node

    def owned(self, change: Change, service_id: int) -> ObservedServer | None:
        """The observed server ``service_id``, refusing to touch one that is not this node."""
        server = self.snapshot.server(service_id)
        if server is not None and server.name != change.address:
            raise ChangeFailedError(
                f"{change.address}: server {service_id} is named {server.name!r}, not "
                f"{change.address!r}; refusing to change it"
            )
        return server

    def hostname(self, change: Change) -> str:
        """The reverse-DNS name the plan gave the node (the spec's rule when it gave none)."""
        return change.hostname or node_hostname(self.spec, change.address)

    async def aclose(self) -> None:
        await self.watcher.aclose()


def with_step(
    node: RecordedNode,
    name: str,
    status: StepStatus,
    ctx: ApplyContext,
    *,
    error: str | None = None,
) -> RecordedNode:
    """``node`` with step ``name`` recorded as ``status`` (attempts counted)."""
    previous = node.step(name)
    attempts = 1 if previous is None else previous.attempts + 1
    state = StepState(name, status, attempts, ctx.now(), error[:200] if error else None)
    steps = tuple(sorted((*(s for s in node.steps if s.name != name), state), key=_by_name))
    return replace(node, steps=steps)


def _by_name(state: StepState) -> str:
    return state.name
