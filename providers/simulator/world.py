"""The simulated account: a deterministic state machine driven by a :class:`SimClock`.

Transitions (build, resize, reboot) carry a due time. They are applied lazily by
:meth:`World.settle`, called at the start of every request, through a heap of due times, so
a request costs O(log n) per completed transition and nothing per idle instance.

Every outcome that looks random (build or resize failure) is a pure function of the seed and
the serviceid, so a run is reproducible and a restart from the state file changes nothing.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from providers.simulator.catalogue import (
    BILLING_CYCLES,
    DEFAULT_CATALOGUE,
    HOURLY,
    Catalogue,
)
from providers.simulator.clocks import SimClock, wire_time

FIRST_SERVICEID = 1234567
USERID = 54321
MAX_QTY = 50

#: Address blocks, in allocation order: the two documentation ranges the brief names, then
#: TEST-NET-1 and the benchmarking range 198.18.0.0/15 so a 1,000+ node fleet fits.
IP_BLOCKS: tuple[ipaddress.IPv4Network, ...] = (
    ipaddress.IPv4Network("198.51.100.0/24"),
    ipaddress.IPv4Network("203.0.113.0/24"),
    ipaddress.IPv4Network("192.0.2.0/24"),
    ipaddress.IPv4Network("198.18.0.0/15"),
)

# Messages. [DOC]/[OBS] ones come from hostwinds-api.md; the rest are [GUESS].
MSG_SERVICEID = "A valid serviceid is required."
MSG_LOCATION = "Location Id is invalid."
MSG_SERVICE_ID_REQUIRED = "Service Id is required."  # toggle_lock without serviceid [DOC]
MSG_RID = "A valid rid is required."  # [GUESS]
MSG_TEMPLATE = "Invalid template."  # [GUESS]
MSG_QTY = "Quantity is invalid."  # [GUESS]
MSG_CYCLE = "Invalid billing cycle."  # [GUESS]
MSG_LOCKED = "Service is locked. Unlock it first."  # [GUESS]
MSG_NO_ORDER = "There is no pending upgrade order."  # [GUESS]
MSG_ORDER_PENDING = "An upgrade order is already pending."  # [GUESS]
MSG_SAME_PLAN = "The service is already on this plan."  # [GUESS]
MSG_DISK_DOWN = "Disk cannot be downgraded."  # [GUESS]
MSG_NOT_RESIZED = "The server is not waiting for an upgrade confirmation."  # [GUESS]
MSG_IP = "IP address does not belong to this service."  # [GUESS]
MSG_RDNS = "A valid rdns hostname is required."  # [GUESS]
MSG_NO_IPS = "No IP addresses available."  # [GUESS]


class SimError(Exception):
    """An API-level refusal: becomes ``[{"result": "error", ...}]`` with HTTP 200."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class StateFormatError(Exception):
    """The state file is not one this simulator wrote (or it is damaged)."""


@dataclass(slots=True)
class Settings:
    """Lifecycle knobs; changeable at run time through ``POST /sim/faults``."""

    build_seconds: float = 2.0
    build_failure_rate: float = 0.0
    resize_seconds: float = 2.0
    resize_failure_rate: float = 0.0
    reboot_seconds: float = 0.0
    seed: int = 0


@dataclass(slots=True)
class UpgradeOrder:
    id: int
    orderid: int
    invoiceid: int
    rid: int
    total: str
    duedate: str

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "orderid": self.orderid,
            "invoiceid": self.invoiceid,
            "duedate": self.duedate,
            "total": self.total,
        }

    def dump(self) -> dict[str, Any]:
        return {**self.wire(), "rid": self.rid}

    @classmethod
    def load(cls, data: dict[str, Any]) -> UpgradeOrder:
        return cls(
            id=int(data["id"]),
            orderid=int(data["orderid"]),
            invoiceid=int(data["invoiceid"]),
            rid=int(data["rid"]),
            total=str(data["total"]),
            duedate=str(data["duedate"]),
        )


@dataclass(slots=True)
class Instance:
    serviceid: int
    srvrname: str
    hostname: str
    location_id: int
    rid: int
    template: str
    billingcycle: str
    ssh_keys: list[str]
    main_ip: str
    extra_ips: list[str]
    password: str
    configkey: str
    server_uuid: str
    volume_uuid: str
    port_uuid: str
    mac_address: str
    created_at: float
    updated_at: float
    status: str = "BUILD"
    vm_state: str = "building"
    task_state: str | None = "spawning"
    power_state: int = 0
    launched_at: float | None = None
    locked: bool = False
    suspended: bool = False
    due_at: float | None = None
    fails: bool = False
    generation: int = 0
    order: UpgradeOrder | None = None
    previous_rid: int | None = None
    rdns: dict[str, str] = field(default_factory=dict)

    @property
    def ips(self) -> list[str]:
        return [self.main_ip, *self.extra_ips]

    def dump(self) -> dict[str, Any]:
        return {
            "serviceid": self.serviceid,
            "srvrname": self.srvrname,
            "hostname": self.hostname,
            "location_id": self.location_id,
            "rid": self.rid,
            "template": self.template,
            "billingcycle": self.billingcycle,
            "ssh_keys": self.ssh_keys,
            "main_ip": self.main_ip,
            "extra_ips": self.extra_ips,
            "password": self.password,
            "configkey": self.configkey,
            "server_uuid": self.server_uuid,
            "volume_uuid": self.volume_uuid,
            "port_uuid": self.port_uuid,
            "mac_address": self.mac_address,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "status": self.status,
            "vm_state": self.vm_state,
            "task_state": self.task_state,
            "power_state": self.power_state,
            "launched_at": self.launched_at,
            "locked": self.locked,
            "suspended": self.suspended,
            "due_at": self.due_at,
            "fails": self.fails,
            "generation": self.generation,
            "order": self.order.dump() if self.order else None,
            "previous_rid": self.previous_rid,
            "rdns": self.rdns,
        }

    @classmethod
    def load(cls, data: dict[str, Any]) -> Instance:
        order = data.get("order")
        return cls(
            serviceid=int(data["serviceid"]),
            srvrname=str(data["srvrname"]),
            hostname=str(data["hostname"]),
            location_id=int(data["location_id"]),
            rid=int(data["rid"]),
            template=str(data["template"]),
            billingcycle=str(data["billingcycle"]),
            ssh_keys=[str(k) for k in data["ssh_keys"]],
            main_ip=str(data["main_ip"]),
            extra_ips=[str(i) for i in data["extra_ips"]],
            password=str(data["password"]),
            configkey=str(data["configkey"]),
            server_uuid=str(data["server_uuid"]),
            volume_uuid=str(data["volume_uuid"]),
            port_uuid=str(data["port_uuid"]),
            mac_address=str(data["mac_address"]),
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            status=str(data["status"]),
            vm_state=str(data["vm_state"]),
            task_state=None if data["task_state"] is None else str(data["task_state"]),
            power_state=int(data["power_state"]),
            launched_at=None if data["launched_at"] is None else float(data["launched_at"]),
            locked=bool(data["locked"]),
            suspended=bool(data["suspended"]),
            due_at=None if data["due_at"] is None else float(data["due_at"]),
            fails=bool(data["fails"]),
            generation=int(data["generation"]),
            order=UpgradeOrder.load(order) if order else None,
            previous_rid=None if data["previous_rid"] is None else int(data["previous_rid"]),
            rdns={str(k): str(v) for k, v in dict(data["rdns"]).items()},
        )

    def set_state(
        self, status: str, vm_state: str, task_state: str | None, power_state: int
    ) -> None:
        self.status = status
        self.vm_state = vm_state
        self.task_state = task_state
        self.power_state = power_state


STATE_FORMAT = "fleet-reconciler-hostwinds-simulator"
STATE_VERSION = 1


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()


def _chance(seed: int, *parts: object) -> float:
    """A deterministic number in [0, 1) from the seed and some labels."""
    return int.from_bytes(_digest(seed, *parts)[:8], "big") / 2**64


class World:
    """All instances of the simulated account, and the operations the API offers on them."""

    def __init__(
        self,
        *,
        clock: SimClock | None = None,
        settings: Settings | None = None,
        catalogue: Catalogue = DEFAULT_CATALOGUE,
    ) -> None:
        self.clock = clock or SimClock()
        self.settings = settings or Settings()
        self.catalogue = catalogue
        self.instances: dict[int, Instance] = {}
        self.next_serviceid = FIRST_SERVICEID
        self.next_order = 1
        self.ip_cursor = 0
        self._assigned: set[str] = set()
        self._due: list[tuple[float, int, int]] = []  # (due_at, serviceid, generation)

    def reset(self) -> None:
        """Back to an empty account: no instances, counters and clock offset at their start."""
        self.instances = {}
        self.next_serviceid = FIRST_SERVICEID
        self.next_order = 1
        self.ip_cursor = 0
        self._assigned = set()
        self._due = []
        self.clock.set_offset(0.0)

    # ---- time ---------------------------------------------------------------------------

    def settle(self) -> int:
        """Complete every transition that is due; returns how many completed."""
        now = self.clock.now()
        done = 0
        while self._due and self._due[0][0] <= now:
            due_at, serviceid, generation = heapq.heappop(self._due)
            inst = self.instances.get(serviceid)
            if inst is None or inst.generation != generation or inst.due_at is None:
                continue
            self._complete(inst, due_at)
            done += 1
        return done

    def _schedule(self, inst: Instance, seconds: float, *, fails: bool = False) -> None:
        inst.generation += 1
        inst.due_at = self.clock.now() + max(0.0, seconds)
        inst.fails = fails
        heapq.heappush(self._due, (inst.due_at, inst.serviceid, inst.generation))

    def _complete(self, inst: Instance, at: float) -> None:
        inst.due_at = None
        inst.updated_at = at
        fails, inst.fails = inst.fails, False
        if inst.status == "BUILD":
            if fails:
                inst.set_state("ERROR", "error", None, 0)
            else:
                inst.set_state("ACTIVE", "active", None, 1)
                inst.launched_at = at
        elif inst.status == "RESIZE":
            if fails:
                inst.set_state("ERROR", "error", None, 0)
            else:
                assert inst.order is not None
                inst.previous_rid = inst.rid
                inst.rid = inst.order.rid
                inst.set_state("RESIZED", "resized", None, 1)
        elif inst.status == "REBOOT":
            inst.set_state("ACTIVE", "active", None, 1)

    # ---- addresses ----------------------------------------------------------------------

    def _address(self, index: int) -> str | None:
        for block in IP_BLOCKS:
            usable = block.num_addresses - 3  # skip network, .1 (gateway) and broadcast
            if index < usable:
                return str(block.network_address + 2 + index)
            index -= usable
        return None

    def _allocate_ip(self) -> str:
        total = sum(b.num_addresses - 3 for b in IP_BLOCKS)
        for _ in range(total):
            address = self._address(self.ip_cursor)
            self.ip_cursor = (self.ip_cursor + 1) % total
            if address is not None and address not in self._assigned:
                self._assigned.add(address)
                return address
        raise SimError(MSG_NO_IPS)

    def _release(self, inst: Instance) -> None:
        for address in inst.ips:
            self._assigned.discard(address)

    # ---- lookups ------------------------------------------------------------------------

    def get(self, serviceid: int | None) -> Instance:
        self.settle()
        inst = self.instances.get(serviceid) if serviceid is not None else None
        if inst is None:
            raise SimError(MSG_SERVICEID)
        return inst

    def listing(self, location_id: int | None = None) -> list[Instance]:
        self.settle()
        if location_id is None:
            return list(self.instances.values())
        return [i for i in self.instances.values() if i.location_id == location_id]

    def counts_by_status(self) -> dict[str, int]:
        self.settle()
        return dict(Counter(i.status for i in self.instances.values()))

    # ---- create / delete ----------------------------------------------------------------

    def add_instance(
        self,
        *,
        template: str,
        rid: int | None,
        location_id: int | None,
        qty: int = 1,
        keys: list[str] | None = None,
        srvrname: str | None = None,
        billingcycle: str = "monthly",
    ) -> list[Instance]:
        if not template or self.catalogue.image(template) is None:
            raise SimError(MSG_TEMPLATE)
        if rid is None or self.catalogue.plan(rid) is None:
            raise SimError(MSG_RID)
        if location_id is None or self.catalogue.location(location_id) is None:
            raise SimError(MSG_LOCATION)
        if not 1 <= qty <= MAX_QTY:
            raise SimError(MSG_QTY)
        if billingcycle not in BILLING_CYCLES and billingcycle != HOURLY:
            raise SimError(MSG_CYCLE)
        created = []
        for _ in range(qty):
            inst = self._new_instance(
                template=template,
                rid=rid,
                location_id=location_id,
                keys=list(keys or []),
                srvrname=srvrname,
                billingcycle=billingcycle,
            )
            fails = _chance(self.settings.seed, "build", inst.serviceid) < (
                self.settings.build_failure_rate
            )
            self._schedule(inst, self.settings.build_seconds, fails=fails)
            created.append(inst)
        return created

    def _new_instance(
        self,
        *,
        template: str,
        rid: int,
        location_id: int,
        keys: list[str],
        srvrname: str | None,
        billingcycle: str,
        main_ip: str | None = None,
    ) -> Instance:
        serviceid = self.next_serviceid
        self.next_serviceid += 1
        if main_ip is None:
            main_ip = self._allocate_ip()
        else:
            self._assigned.add(main_ip)
        now = self.clock.now()
        seed = self.settings.seed
        digest = _digest(seed, "instance", serviceid)
        image = self.catalogue.image(template)
        inst = Instance(
            serviceid=serviceid,
            srvrname=srvrname or f"srv{serviceid}",
            hostname=f"hwsrv-{serviceid}.hostwindsdns.com",
            location_id=location_id,
            rid=rid,
            template=image.uuid if image else template,
            billingcycle=billingcycle,
            ssh_keys=keys,
            main_ip=main_ip,
            extra_ips=[],
            password=_digest(seed, "password", serviceid).hex()[:20],
            configkey=_digest(seed, "configkey", serviceid).hex()[:32],
            server_uuid=str(uuid.UUID(bytes=digest[:16], version=4)),
            volume_uuid=str(uuid.UUID(bytes=digest[16:32], version=4)),
            port_uuid=str(uuid.UUID(bytes=_digest(seed, "port", serviceid)[:16], version=4)),
            mac_address="fa:16:3e:" + ":".join(f"{b:02x}" for b in digest[:3]),
            created_at=now,
            updated_at=now,
        )
        self.instances[serviceid] = inst
        return inst

    def seed_instance(
        self,
        *,
        srvrname: str,
        rid: int = 52,
        location_id: int = 12,
        status: str = "ACTIVE",
        template: str | None = None,
        main_ip: str | None = None,
        locked: bool = False,
    ) -> Instance:
        """Create an instance directly (as if made in the web portal, behind our back)."""
        if self.catalogue.plan(rid) is None:
            raise SimError(MSG_RID)
        if self.catalogue.location(location_id) is None:
            raise SimError(MSG_LOCATION)
        states = {
            "ACTIVE": ("active", None, 1),
            "BUILD": ("building", "spawning", 0),
            "SHUTOFF": ("stopped", None, 4),
            "ERROR": ("error", None, 0),
        }
        if status.upper() not in states:
            raise SimError(f"status must be one of {', '.join(states)}")
        if main_ip is not None:
            try:
                ipaddress.IPv4Address(main_ip)
            except ValueError as exc:
                raise SimError(f"main_ip is not an IPv4 address: {main_ip!r}") from exc
            if main_ip in self._assigned:
                raise SimError(f"main_ip {main_ip} is already assigned")
        inst = self._new_instance(
            template=template or self.catalogue.images[0].uuid,
            rid=rid,
            location_id=location_id,
            keys=[],
            srvrname=srvrname,
            billingcycle="monthly",
            main_ip=main_ip,
        )
        status = status.upper()
        vm_state, task_state, power = states[status]
        inst.set_state(status, vm_state, task_state, power)
        inst.locked = locked
        if status == "BUILD":
            self._schedule(inst, self.settings.build_seconds)
        elif status == "ACTIVE":
            inst.launched_at = inst.created_at
        return inst

    def remove(self, serviceid: int) -> Instance:
        """Delete an instance whatever its state or lock (the admin 'behind our back' path)."""
        inst = self.get(serviceid)
        del self.instances[serviceid]
        self._release(inst)
        return inst

    def terminate(self, serviceid: int | None) -> None:
        inst = self.get(serviceid)
        self._check_unlocked(inst)
        self.remove(inst.serviceid)

    # ---- power --------------------------------------------------------------------------

    def _check_unlocked(self, inst: Instance) -> None:
        if inst.locked:
            raise SimError(MSG_LOCKED)

    def _check_idle(self, inst: Instance) -> None:
        if inst.status not in ("ACTIVE", "SHUTOFF"):
            raise SimError(f"Server is currently {inst.status} and cannot be changed.")

    def _changeable(self, serviceid: int | None) -> Instance:
        """The instance, if it exists, is not locked and is idle (ACTIVE or SHUTOFF)."""
        inst = self.get(serviceid)
        self._check_unlocked(inst)
        self._check_idle(inst)
        return inst

    def boot(self, serviceid: int | None) -> Instance:
        inst = self._changeable(serviceid)
        inst.set_state("ACTIVE", "active", None, 1)
        inst.updated_at = self.clock.now()
        return inst

    def shutdown(self, serviceid: int | None) -> Instance:
        inst = self._changeable(serviceid)
        inst.set_state("SHUTOFF", "stopped", None, 4)
        inst.updated_at = self.clock.now()
        return inst

    def reboot(self, serviceid: int | None) -> Instance:
        inst = self._changeable(serviceid)
        inst.set_state("REBOOT", "active", "rebooting", 1)
        inst.updated_at = self.clock.now()
        self._schedule(inst, self.settings.reboot_seconds)
        return inst

    def edit(self, serviceid: int | None, srvrname: str) -> Instance:
        inst = self.get(serviceid)
        self._check_unlocked(inst)
        if not srvrname.strip():
            raise SimError("A valid srvrname is required.")  # [GUESS]
        inst.srvrname = srvrname
        inst.updated_at = self.clock.now()
        return inst

    def toggle_lock(self, serviceid: int | None) -> bool:
        if serviceid is None:
            raise SimError(MSG_SERVICE_ID_REQUIRED, "5529903")
        inst = self.get(serviceid)
        inst.locked = not inst.locked
        inst.updated_at = self.clock.now()
        return inst.locked

    # ---- resize -------------------------------------------------------------------------

    def upgrade_instance(self, serviceid: int | None, rid: int | None) -> UpgradeOrder:
        inst = self.get(serviceid)
        self._check_unlocked(inst)
        new = self.catalogue.plan(rid) if rid is not None else None
        if new is None:
            raise SimError(MSG_RID)
        if inst.order is not None:
            raise SimError(MSG_ORDER_PENDING)
        self._check_idle(inst)
        old = self.catalogue.plan(inst.rid)
        if new.rid == inst.rid:
            raise SimError(MSG_SAME_PLAN)
        if old is not None and new.disk_gb < old.disk_gb:
            raise SimError(MSG_DISK_DOWN)
        difference = new.monthly - (old.monthly if old else Decimal(0))
        number = self.next_order
        self.next_order += 1
        now = self.clock.now()
        inst.order = UpgradeOrder(
            id=number,
            orderid=500 + number,
            invoiceid=400 + number,
            rid=new.rid,
            total=str(max(difference, Decimal(0)).quantize(Decimal("0.01"))),
            duedate=wire_time(now)[:10],
        )
        inst.updated_at = now
        return inst.order

    def check_upgrade_order(self, serviceid: int | None) -> UpgradeOrder | None:
        return self.get(serviceid).order

    def check_upgrade_reboot(self, serviceid: int | None) -> bool:
        inst = self.get(serviceid)
        if inst.order is None:
            return False
        old, new = self.catalogue.plan(inst.rid), self.catalogue.plan(inst.order.rid)
        if old is None or new is None:
            return True
        return (old.cpu, old.ram_gb) != (new.cpu, new.ram_gb)

    def upgrade_server(self, serviceid: int | None) -> Instance:
        inst = self.get(serviceid)
        self._check_unlocked(inst)
        if inst.order is None:
            raise SimError(MSG_NO_ORDER)
        self._check_idle(inst)
        inst.set_state("RESIZE", "active", "resize_migrating", 1)
        inst.updated_at = self.clock.now()
        fails = _chance(self.settings.seed, "resize", inst.serviceid, inst.order.id) < (
            self.settings.resize_failure_rate
        )
        self._schedule(inst, self.settings.resize_seconds, fails=fails)
        return inst

    def confirm_upgrade(self, serviceid: int | None) -> Instance:
        inst = self.get(serviceid)
        self._check_unlocked(inst)
        if inst.status != "RESIZED":
            raise SimError(MSG_NOT_RESIZED)
        inst.order = None
        inst.previous_rid = None
        inst.set_state("ACTIVE", "active", None, 1)
        inst.updated_at = self.clock.now()
        return inst

    def revert_upgrade(self, serviceid: int | None) -> Instance:
        inst = self.get(serviceid)
        self._check_unlocked(inst)
        failed_resize = inst.status == "ERROR" and inst.order is not None
        if inst.status != "RESIZED" and not failed_resize:
            raise SimError(MSG_NOT_RESIZED)
        if inst.previous_rid is not None:
            inst.rid = inst.previous_rid
        inst.order = None
        inst.previous_rid = None
        inst.set_state("ACTIVE", "active", None, 1)
        inst.updated_at = self.clock.now()
        return inst

    # ---- addresses and rDNS -------------------------------------------------------------

    def set_rdns(self, serviceid: int | None, ip: str, rdns: str) -> None:
        inst = self.get(serviceid)
        self._check_unlocked(inst)
        if ip not in inst.ips:
            raise SimError(MSG_IP)
        name = rdns.strip().rstrip(".")
        if not name or len(name) > 253 or any(not part for part in name.split(".")):
            raise SimError(MSG_RDNS)
        inst.rdns[ip] = name
        inst.updated_at = self.clock.now()

    def add_ip(self, serviceid: int | None) -> str:
        inst = self.get(serviceid)
        self._check_unlocked(inst)
        address = self._allocate_ip()
        inst.extra_ips.append(address)
        inst.updated_at = self.clock.now()
        return address

    # ---- persistence --------------------------------------------------------------------

    def dump(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "clock_offset": self.clock.offset,
            "next_serviceid": self.next_serviceid,
            "next_order": self.next_order,
            "ip_cursor": self.ip_cursor,
            "instances": [inst.dump() for inst in self.instances.values()],
        }

    def restore(self, data: object) -> None:
        """Replace this world's content with a dump. Raises :class:`StateFormatError`."""
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise StateFormatError("not a Hostwinds simulator state file")
        if data.get("version") != STATE_VERSION:
            raise StateFormatError(
                f"unsupported state version {data.get('version')!r} (expected {STATE_VERSION})"
            )
        try:
            instances = [Instance.load(item) for item in data["instances"]]
            next_serviceid = int(data["next_serviceid"])
            next_order = int(data["next_order"])
            ip_cursor = int(data["ip_cursor"])
            offset = float(data["clock_offset"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateFormatError(f"damaged state: {type(exc).__name__}: {exc}") from exc
        self.instances = {inst.serviceid: inst for inst in instances}
        self.next_serviceid = max([next_serviceid, *(i + 1 for i in self.instances)])
        self.next_order = next_order
        self.ip_cursor = ip_cursor
        self._assigned = {ip for inst in instances for ip in inst.ips}
        self._due = [
            (inst.due_at, inst.serviceid, inst.generation)
            for inst in instances
            if inst.due_at is not None
        ]
        heapq.heapify(self._due)
        self.clock.set_offset(max(self.clock.offset, offset))
