"""``FakeCloud``: an in-memory ``CloudPort`` with the simulator's semantics, fault hooks and a
controllable clock.

Semantics (kept in step with providers/simulator by the shared contract suite):

- ``create_server`` validates template/rid/location, creates a ``BUILD`` instance with a main IP
  from 198.51.100.0/24 (then 203.0.113.0/24) and returns nothing (no id, like ``add_instance``);
  it becomes ``ACTIVE`` (or ``ERROR`` if a build failure was queued) ``build_seconds`` later on
  the fake clock;
- ``terminate`` removes at once; locked instances refuse changes (``ConflictError``);
- resize is two-step: ``upgrade_instance`` (an order) -> ``upgrade_server`` (``RESIZE``, then
  ``RESIZED`` after ``resize_seconds`` with the new plan) -> ``confirm_upgrade`` /
  ``revert_upgrade`` (``ACTIVE``);
- ``set_rdns`` validates that the IP belongs to the instance;
- errors are the core error types, classified and worded exactly as the Hostwinds client does
  for the simulator's messages (``providers.hostwinds.errors.error_for_api_message``).

Fault hooks: ``fail_next(action, exc)`` (optionally after applying the change, to model "the
call timed out but happened"), ``fail_builds(n)``, ``add_unmanaged(...)``,
``delete_behind_our_back(service_id)``, ``lock(service_id)``, ``suspend(service_id)``. ``calls``
counts calls per Hostwinds action name, mirroring the client's request pattern; ``created``
counts the servers made by ``create_server`` per name (``slot_creates``: since a server of that
name last went away), and ``created_over_live`` lists the names created while a server of that
name already existed (a duplicate bought).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from types import MappingProxyType

from providers.hostwinds.errors import error_for_api_message
from reconciler.core.fencing import check_fence
from reconciler.core.fleet import (
    CreateRequest,
    Location,
    ObservedServer,
    PricePlan,
    ServerStatus,
)
from tests.fakes.clocks import FakeClock

FIRST_SERVICE_ID = 1234567

DEFAULT_PLANS: tuple[PricePlan, ...] = (
    PricePlan(51, "Unmanaged Linux VPS 1GB", 1, Decimal(1), 30, "1000", Decimal("4.99")),
    PricePlan(52, "Unmanaged Linux VPS 2GB", 1, Decimal(2), 50, "2000", Decimal("9.99")),
    PricePlan(53, "Unmanaged Linux VPS 4GB", 2, Decimal(4), 75, "3000", Decimal("19.99")),
    PricePlan(54, "Unmanaged Linux VPS 8GB", 4, Decimal(8), 150, "4000", Decimal("39.99")),
    PricePlan(55, "Unmanaged Linux VPS 16GB", 8, Decimal(16), 300, "5000", Decimal("79.99")),
)
DEFAULT_LOCATIONS: tuple[Location, ...] = (
    Location(12, "Seattle"),
    Location(13, "Dallas"),
    Location(14, "Amsterdam"),
)
BILLING_CYCLES = frozenset(
    {"hourly", "monthly", "quarterly", "semiannually", "annually", "biennially", "triennially"}
)
IP_BLOCKS = (
    ipaddress.IPv4Network("198.51.100.0/24"),
    ipaddress.IPv4Network("203.0.113.0/24"),
    ipaddress.IPv4Network("192.0.2.0/24"),
    ipaddress.IPv4Network("198.18.0.0/15"),
)

# The simulator's messages ([GUESS] ones marked there), so both raise the same errors.
MSG_SERVICEID = "A valid serviceid is required."
MSG_LOCATION = "Location Id is invalid."
MSG_RID = "A valid rid is required."
MSG_TEMPLATE = "Invalid template."
MSG_CYCLE = "Invalid billing cycle."
MSG_LOCKED = "Service is locked. Unlock it first."
MSG_NO_ORDER = "There is no pending upgrade order."
MSG_ORDER_PENDING = "An upgrade order is already pending."
MSG_SAME_PLAN = "The service is already on this plan."
MSG_DISK_DOWN = "Disk cannot be downgraded."
MSG_NOT_RESIZED = "The server is not waiting for an upgrade confirmation."
MSG_IP = "IP address does not belong to this service."
MSG_RDNS = "A valid rdns hostname is required."
MSG_NO_IPS = "No IP addresses available."

#: Port method -> the Hostwinds action it stands for (``fail_next`` accepts either name).
METHOD_ACTIONS: Mapping[str, str] = {
    "list_servers": "get_instances",
    "get_server": "get_instance",
    "find_servers_by_name": "get_instance_ids",
    "create_server": "add_instance",
    "terminate": "terminate",
    "upgrade_instance": "upgrade_instance",
    "upgrade_server": "upgrade_server",
    "confirm_upgrade": "confirm_upgrade",
    "revert_upgrade": "revert_upgrade",
    "set_rdns": "set_rdns",
    "boot_server": "boot",
    "list_ips": "get_instance_ips",
    "price_list": "get_price_list",
    "locations": "get_locations",
}
ACTIONS = frozenset(METHOD_ACTIONS.values())


@dataclass(slots=True)
class FakeInstance:
    """One instance of the fake account (mutable; never handed out: callers get
    ``ObservedServer`` snapshots)."""

    service_id: int
    name: str
    location_id: int
    rid: int
    template: str
    billing_cycle: str
    ssh_keys: tuple[str, ...]
    main_ip: str
    created_at: datetime
    status: ServerStatus = ServerStatus.BUILD
    extra_ips: list[str] = field(default_factory=list)
    due_at: datetime | None = None
    fails: bool = False
    locked: bool = False
    suspended: bool = False
    order_rid: int | None = None
    previous_rid: int | None = None
    rdns: dict[str, str] = field(default_factory=dict)

    @property
    def ips(self) -> tuple[str, ...]:
        return (self.main_ip, *self.extra_ips)


@dataclass(slots=True)
class _Fault:
    exc: BaseException
    applied: bool


class FakeCloud:
    """In-memory ``CloudPort``. Time is ``clock`` (a :class:`FakeClock`); move it with
    :meth:`advance` (or the clock's own ``advance``/``sleep``)."""

    def __init__(
        self,
        *,
        clock: FakeClock | None = None,
        build_seconds: float = 2.0,
        resize_seconds: float = 2.0,
        plans: Iterable[PricePlan] = DEFAULT_PLANS,
        locations: Iterable[Location] = DEFAULT_LOCATIONS,
        templates: Iterable[str] | None = None,
    ) -> None:
        self.clock = clock if clock is not None else FakeClock()
        self.build_seconds = build_seconds
        self.resize_seconds = resize_seconds
        self._plans = {plan.rid: plan for plan in plans}
        self._locations = {loc.location_id: loc for loc in locations}
        self._templates = frozenset(templates) if templates is not None else None
        self._instances: dict[int, FakeInstance] = {}
        self._next_id = FIRST_SERVICE_ID
        self._ip_cursor = 0
        self._assigned: set[str] = set()
        self._faults: dict[str, deque[_Fault]] = {}
        self._failing_builds = 0
        self._calls: Counter[str] = Counter()
        #: servers made by ``create_server`` per name (over the fake's whole life)
        self.created: Counter[str] = Counter()
        #: the same, counted since a server of that name last went away (one slot's creates)
        self.slot_creates: Counter[str] = Counter()
        #: names created while a server of that name existed (each a duplicate bought)
        self.created_over_live: list[str] = []
        self.closed = False

    # --- test controls -------------------------------------------------------------------

    @property
    def calls(self) -> Mapping[str, int]:
        """Calls per Hostwinds action name (``get_instances``, ``add_instance``...)."""
        return MappingProxyType(self._calls)

    @property
    def mutations(self) -> int:
        """How many mutating calls were made (reads excluded)."""
        return sum(n for action, n in self._calls.items() if not action.startswith("get_"))

    def reset_calls(self) -> None:
        self._calls.clear()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def fail_next(
        self, action: str, exc: BaseException, *, times: int = 1, applied: bool = False
    ) -> None:
        """The next ``times`` calls of ``action`` (Hostwinds name like ``add_instance`` or the
        port method name like ``create_server``) raise ``exc``. With ``applied=True`` the change
        is made first and then ``exc`` raised (a mutation that "timed out" but happened)."""
        name = METHOD_ACTIONS.get(action, action)
        if name not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {sorted(ACTIONS)}")
        queue = self._faults.setdefault(name, deque())
        for _ in range(times):
            queue.append(_Fault(exc, applied))

    def fail_builds(self, count: int = 1) -> None:
        """The next ``count`` builds end in ``ERROR`` instead of ``ACTIVE``."""
        self._failing_builds += count

    def add_unmanaged(
        self,
        name: str,
        *,
        location_id: int = 12,
        rid: int = 52,
        status: ServerStatus = ServerStatus.ACTIVE,
        locked: bool = False,
        template: str = "ubuntu-22.04",
        main_ip: str | None = None,
    ) -> int:
        """An instance made behind our back (web portal); returns its serviceid."""
        inst = self._new(
            name=name,
            location_id=location_id,
            rid=rid,
            template=template,
            billing_cycle="monthly",
            ssh_keys=(),
            main_ip=main_ip,
        )
        inst.status = ServerStatus(status)
        inst.locked = locked
        if inst.status is ServerStatus.BUILD:
            inst.due_at = self.clock.now() + timedelta(seconds=self.build_seconds)
        return inst.service_id

    def delete_behind_our_back(self, service_id: int) -> None:
        """Remove an instance whatever its state or lock."""
        inst = self._instances.pop(service_id)
        self.slot_creates.pop(inst.name, None)
        for ip in inst.ips:
            self._assigned.discard(ip)

    def lock(self, service_id: int, locked: bool = True) -> None:
        self._instances[service_id].locked = locked

    def suspend(self, service_id: int, suspended: bool = True) -> None:
        """The provider suspends (or unsuspends) the instance (billing, abuse)."""
        self._instances[service_id].suspended = suspended

    def set_status(self, service_id: int, status: ServerStatus) -> None:
        inst = self._instances[service_id]
        inst.status = status
        inst.due_at = None

    def add_ip(self, service_id: int) -> str:
        """An extra IP on the instance (the simulator's ``sim_add_ip``)."""
        address = self._allocate_ip()
        self._instances[service_id].extra_ips.append(address)
        return address

    def rdns_of(self, ip: str) -> str | None:
        for inst in self._instances.values():
            if ip in inst.rdns:
                return inst.rdns[ip]
        return None

    def snapshot(self) -> list[ObservedServer]:
        """The fleet as ``list_servers`` would return it, without counting a call."""
        self._settle()
        return [self._observed(inst) for inst in self._instances.values()]

    # --- CloudPort -----------------------------------------------------------------------

    async def list_servers(self) -> list[ObservedServer]:
        await self._enter("get_instances")
        return [self._observed(inst) for inst in self._instances.values()]

    async def get_server(self, service_id: int) -> ObservedServer:
        await self._enter("get_instance")
        return self._observed(self._get("get_instance", service_id))

    async def find_servers_by_name(self, name: str) -> list[ObservedServer]:
        await self._enter("get_instance_ids")
        wanted = name.lower()
        ids = [sid for sid, inst in self._instances.items() if wanted in inst.name.lower()]
        found = []
        for sid in ids:
            await self._enter("get_instance")
            inst = self._instances.get(sid)
            if inst is not None and inst.name == name:
                found.append(self._observed(inst))
        return found

    async def create_server(self, request: CreateRequest) -> None:
        action = "add_instance"
        fault = await self._enter(action, defer=True)
        if self._templates is not None and request.template not in self._templates:
            raise error_for_api_message(action, MSG_TEMPLATE)
        if not request.template.strip():
            raise error_for_api_message(action, MSG_TEMPLATE)
        if request.rid not in self._plans:
            raise error_for_api_message(action, MSG_RID)
        if request.location_id not in self._locations:
            raise error_for_api_message(action, MSG_LOCATION)
        if request.billing_cycle not in BILLING_CYCLES:
            raise error_for_api_message(action, MSG_CYCLE)
        if any(other.name == request.name for other in self._instances.values()):
            self.created_over_live.append(request.name)
        self.created[request.name] += 1
        self.slot_creates[request.name] += 1
        inst = self._new(
            name=request.name,
            location_id=request.location_id,
            rid=request.rid,
            template=request.template,
            billing_cycle=request.billing_cycle,
            ssh_keys=tuple(request.ssh_keys),
        )
        inst.due_at = self.clock.now() + timedelta(seconds=self.build_seconds)
        if self._failing_builds > 0:
            self._failing_builds -= 1
            inst.fails = True
        self._raise_deferred(fault)

    async def terminate(self, service_id: int) -> None:
        action = "terminate"
        fault = await self._enter(action, defer=True)
        inst = self._get(action, service_id)
        self._check_unlocked(action, inst)
        self.delete_behind_our_back(service_id)
        self._raise_deferred(fault)

    async def boot_server(self, service_id: int) -> None:
        action = "boot"
        fault = await self._enter(action, defer=True)
        inst = self._get(action, service_id)
        self._check_unlocked(action, inst)
        if inst.status is ServerStatus.SHUTOFF:
            inst.status = ServerStatus.ACTIVE
        self._raise_deferred(fault)

    async def upgrade_instance(self, service_id: int, rid: int) -> None:
        action = "upgrade_instance"
        fault = await self._enter(action, defer=True)
        inst = self._get(action, service_id)
        self._check_unlocked(action, inst)
        new = self._plans.get(rid)
        if new is None:
            raise error_for_api_message(action, MSG_RID)
        if inst.order_rid is not None:
            raise error_for_api_message(action, MSG_ORDER_PENDING)
        self._check_idle(action, inst)
        if rid == inst.rid:
            raise error_for_api_message(action, MSG_SAME_PLAN)
        old = self._plans.get(inst.rid)
        if old is not None and new.disk_gb < old.disk_gb:
            raise error_for_api_message(action, MSG_DISK_DOWN)
        inst.order_rid = rid
        self._raise_deferred(fault)

    async def upgrade_server(self, service_id: int) -> None:
        action = "upgrade_server"
        fault = await self._enter(action, defer=True)
        inst = self._get(action, service_id)
        self._check_unlocked(action, inst)
        if inst.order_rid is None:
            raise error_for_api_message(action, MSG_NO_ORDER)
        self._check_idle(action, inst)
        inst.status = ServerStatus.RESIZE
        inst.due_at = self.clock.now() + timedelta(seconds=self.resize_seconds)
        self._raise_deferred(fault)

    async def confirm_upgrade(self, service_id: int) -> None:
        action = "confirm_upgrade"
        fault = await self._enter(action, defer=True)
        inst = self._get(action, service_id)
        self._check_unlocked(action, inst)
        if inst.status is not ServerStatus.RESIZED:
            raise error_for_api_message(action, MSG_NOT_RESIZED)
        inst.order_rid = None
        inst.previous_rid = None
        inst.status = ServerStatus.ACTIVE
        self._raise_deferred(fault)

    async def revert_upgrade(self, service_id: int) -> None:
        action = "revert_upgrade"
        fault = await self._enter(action, defer=True)
        inst = self._get(action, service_id)
        self._check_unlocked(action, inst)
        failed_resize = inst.status is ServerStatus.ERROR and inst.order_rid is not None
        if inst.status is not ServerStatus.RESIZED and not failed_resize:
            raise error_for_api_message(action, MSG_NOT_RESIZED)
        if inst.previous_rid is not None:
            inst.rid = inst.previous_rid
        inst.order_rid = None
        inst.previous_rid = None
        inst.status = ServerStatus.ACTIVE
        self._raise_deferred(fault)

    async def set_rdns(self, service_id: int, ip: str, hostname: str) -> None:
        action = "set_rdns"
        fault = await self._enter(action, defer=True)
        inst = self._get(action, service_id)
        self._check_unlocked(action, inst)
        if ip not in inst.ips:
            raise error_for_api_message(action, MSG_IP)
        name = hostname.strip().rstrip(".")
        if not name or len(name) > 253 or any(not part for part in name.split(".")):
            raise error_for_api_message(action, MSG_RDNS)
        inst.rdns[ip] = name
        self._raise_deferred(fault)

    async def list_ips(self, service_id: int) -> list[str]:
        await self._enter("get_instance_ips")
        return list(self._get("get_instance_ips", service_id).ips)

    async def price_list(self) -> list[PricePlan]:
        await self._enter("get_price_list")
        return sorted(self._plans.values(), key=lambda p: p.rid)

    async def locations(self) -> list[Location]:
        await self._enter("get_locations")
        return sorted(self._locations.values(), key=lambda loc: loc.location_id)

    async def aclose(self) -> None:
        self.closed = True

    # --- internals -----------------------------------------------------------------------

    async def _enter(self, action: str, *, defer: bool = False) -> _Fault | None:
        """Count the call, yield to the loop, settle due transitions, apply a queued fault.

        A fault with ``applied=True`` on a mutation is returned (``defer``) so the caller
        raises it after making the change."""
        await asyncio.sleep(0)  # the client's rate-limit token
        if not action.startswith(("get_", "check_")):
            check_fence()  # like the client: after the token, right before the request
        self._calls[action] += 1
        self._settle()
        queue = self._faults.get(action)
        if queue:
            fault = queue.popleft()
            if fault.applied and defer:
                return fault
            raise fault.exc
        return None

    @staticmethod
    def _raise_deferred(fault: _Fault | None) -> None:
        if fault is not None:
            raise fault.exc

    def _settle(self) -> None:
        now = self.clock.now()
        for inst in self._instances.values():
            if inst.due_at is None or inst.due_at > now:
                continue
            inst.due_at = None
            fails, inst.fails = inst.fails, False
            if inst.status is ServerStatus.BUILD:
                inst.status = ServerStatus.ERROR if fails else ServerStatus.ACTIVE
            elif inst.status is ServerStatus.RESIZE:
                if fails:
                    inst.status = ServerStatus.ERROR
                else:
                    assert inst.order_rid is not None
                    inst.previous_rid = inst.rid
                    inst.rid = inst.order_rid
                    inst.status = ServerStatus.RESIZED

    def _get(self, action: str, service_id: int) -> FakeInstance:
        inst = self._instances.get(service_id)
        if inst is None:
            raise error_for_api_message(action, MSG_SERVICEID)
        return inst

    @staticmethod
    def _check_unlocked(action: str, inst: FakeInstance) -> None:
        if inst.locked:
            raise error_for_api_message(action, MSG_LOCKED)

    @staticmethod
    def _check_idle(action: str, inst: FakeInstance) -> None:
        if inst.status not in (ServerStatus.ACTIVE, ServerStatus.SHUTOFF):
            raise error_for_api_message(
                action, f"Server is currently {inst.status.value} and cannot be changed."
            )

    def _new(
        self,
        *,
        name: str,
        location_id: int,
        rid: int,
        template: str,
        billing_cycle: str,
        ssh_keys: tuple[str, ...],
        main_ip: str | None = None,
    ) -> FakeInstance:
        if rid not in self._plans:
            raise error_for_api_message("add_instance", MSG_RID)
        if location_id not in self._locations:
            raise error_for_api_message("add_instance", MSG_LOCATION)
        if main_ip is None:
            main_ip = self._allocate_ip()
        else:
            self._assigned.add(main_ip)
        service_id = self._next_id
        self._next_id += 1
        inst = FakeInstance(
            service_id=service_id,
            name=name or f"srv{service_id}",
            location_id=location_id,
            rid=rid,
            template=template,
            billing_cycle=billing_cycle,
            ssh_keys=ssh_keys,
            main_ip=main_ip,
            created_at=self.clock.now().replace(microsecond=0),
        )
        self._instances[service_id] = inst
        return inst

    def _allocate_ip(self) -> str:
        total = sum(block.num_addresses - 3 for block in IP_BLOCKS)
        for _ in range(total):
            index = self._ip_cursor % total
            self._ip_cursor += 1
            address = _address(index)
            if address not in self._assigned:
                self._assigned.add(address)
                return address
        raise error_for_api_message("add_instance", MSG_NO_IPS)

    def _observed(self, inst: FakeInstance) -> ObservedServer:
        plan = self._plans.get(inst.rid)
        return ObservedServer(
            service_id=inst.service_id,
            name=inst.name,
            location_id=inst.location_id,
            status=inst.status,
            main_ip=inst.main_ip,
            ips=inst.ips,
            plan_rid=inst.rid,
            plan_name=plan.name if plan else None,
            vcpu=plan.vcpu if plan else None,
            ram_mb=int(plan.ram_gb * 1024) if plan else None,
            disk_gb=plan.disk_gb if plan else None,
            locked=inst.locked,
            suspended=inst.suspended,
            hostname=f"hwsrv-{inst.service_id}.hostwindsdns.com",
            display_status=inst.status.value.capitalize(),
            created_at=inst.created_at,
        )


def _address(index: int) -> str:
    """The ``index``-th usable address over IP_BLOCKS (skipping network, gateway, broadcast)."""
    for block in IP_BLOCKS:
        usable = block.num_addresses - 3
        if index < usable:
            return str(block.network_address + 2 + index)
        index -= usable
    raise IndexError(index)
