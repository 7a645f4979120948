"""One API action in, one wire body out: the simulator's ``action=`` dispatch, free of HTTP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from providers.simulator import rendering
from providers.simulator.world import MSG_LOCATION, SimError, World

Form = dict[str, list[str]]
Body = dict[str, Any] | list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Outcome:
    body: Body
    mutated: bool


def _text(form: Form, name: str, default: str = "") -> str:
    values = form.get(name)
    return values[-1] if values else default


def _int(form: Form, name: str) -> int | None:
    text = _text(form, name).strip()
    try:
        return int(text)
    except ValueError:
        return None


def _serviceid(form: Form) -> int | None:
    return _int(form, "serviceid")


def _location(world: World, form: Form) -> int | None:
    """The optional ``location_id`` filter; a present but unknown id is an error."""
    if not _text(form, "location_id").strip():
        return None
    location_id = _int(form, "location_id")
    if location_id is None or world.catalogue.location(location_id) is None:
        raise SimError(MSG_LOCATION)
    return location_id


# ---- getters -----------------------------------------------------------------------------


def get_instances(world: World, form: Form) -> Body:
    location_id = _location(world, form)
    return rendering.success(
        [rendering.instance(i, world.catalogue) for i in world.listing(location_id)]
    )


def get_instance(world: World, form: Form) -> Body:
    return rendering.success(rendering.instance(world.get(_serviceid(form)), world.catalogue))


def get_instance_ids(world: World, form: Form) -> Body:
    found = sorted(world.listing(_location(world, form)), key=lambda i: i.serviceid)
    search = _text(form, "search").strip().lower()
    if search:
        found = [
            i
            for i in found
            if search in i.srvrname.lower()
            or search in i.hostname.lower()
            or any(search in ip for ip in i.ips)
            or search == str(i.serviceid)
        ]
    limit = _int(form, "limit")
    if limit is not None and limit > 0:
        page = max(_int(form, "page") or 1, 1)
        found = found[(page - 1) * limit : page * limit]
    return rendering.success([rendering.light(i) for i in found])


def check_serviceid(world: World, form: Form) -> Body:
    world.get(_serviceid(form))
    return rendering.success(True)


def get_instance_ips(world: World, form: Form) -> Body:
    inst = world.get(_serviceid(form))
    return rendering.success({"IP Addresses": [{"ip": ip} for ip in inst.ips]})


def check_upgrade_order(world: World, form: Form) -> Body:
    order = world.check_upgrade_order(_serviceid(form))
    return rendering.success(order.wire() if order else False)


def check_upgrade_reboot(world: World, form: Form) -> Body:
    return rendering.success(world.check_upgrade_reboot(_serviceid(form)))


def get_price_list(world: World, form: Form) -> Body:
    current = None
    if _text(form, "serviceid").strip():
        current = world.get(_serviceid(form)).rid
    return rendering.success(world.catalogue.price_list(current_rid=current))


def get_locations(world: World, form: Form) -> Body:
    return rendering.success([loc.wire() for loc in world.catalogue.locations])


def get_public_images(world: World, form: Form) -> Body:
    return rendering.success([image.wire() for image in world.catalogue.images])


# ---- commands ----------------------------------------------------------------------------


def add_instance(world: World, form: Form) -> Body:
    qty_text = _text(form, "qty").strip()
    qty = _int(form, "qty") if qty_text else 1
    world.add_instance(
        template=_text(form, "template").strip(),
        rid=_int(form, "rid"),
        location_id=_int(form, "location_id"),
        qty=qty if qty is not None else 0,
        keys=[k for k in form.get("keys[]", []) + form.get("keys", []) if k],
        srvrname=_text(form, "srvrname").strip() or None,
        billingcycle=_text(form, "billingcycle", "monthly").strip().lower() or "monthly",
    )
    return [
        {"result": "success", "action": "Invoice Paid", "message": "Invoice has been paid."},
        {"result": "success", "action": "Add Instance", "message": "Server is being Created!"},
    ]


def terminate(world: World, form: Form) -> Body:
    world.terminate(_serviceid(form))
    return rendering.command("terminate", "Instance deleted")


def boot(world: World, form: Form) -> Body:
    inst = world.boot(_serviceid(form))
    return rendering.command("boot", f"Instance Server#{inst.serviceid} has been started!")


def shutdown(world: World, form: Form) -> Body:
    inst = world.shutdown(_serviceid(form))
    return rendering.command("shutdown", f"Instance Server#{inst.serviceid} has been shut down!")


def reboot(world: World, form: Form) -> Body:
    world.reboot(_serviceid(form))
    return rendering.command("reboot", "Instance rebooted")


def edit_instance(world: World, form: Form) -> Body:
    world.edit(_serviceid(form), _text(form, "srvrname"))
    return rendering.command("edit_instance", "Instance server name has been updated")


def toggle_lock(world: World, form: Form) -> Body:
    locked = world.toggle_lock(_serviceid(form) if _text(form, "serviceid").strip() else None)
    message = "Service has been locked." if locked else "Service has been unlocked."
    return rendering.command("toggle_lock", message)


def upgrade_instance(world: World, form: Form) -> Body:
    world.upgrade_instance(_serviceid(form), _int(form, "rid"))
    return rendering.command("upgrade_instance", "Service has been upgraded!")


def upgrade_server(world: World, form: Form) -> Body:
    inst = world.upgrade_server(_serviceid(form))
    return rendering.command("upgrade_server", f"Server Server#{inst.serviceid} is being upgraded.")


def confirm_upgrade(world: World, form: Form) -> Body:
    world.confirm_upgrade(_serviceid(form))
    return rendering.command("confirm_upgrade", "Upgrade Confirmed!")


def revert_upgrade(world: World, form: Form) -> Body:
    world.revert_upgrade(_serviceid(form))
    return rendering.command("revert_upgrade", "Upgrade Reverted!")


def set_rdns(world: World, form: Form) -> Body:
    rdns = _text(form, "rdns") or _text(form, "rdata")
    world.set_rdns(_serviceid(form), _text(form, "ip").strip(), rdns)
    return rendering.command("set_rdns", "rDNS record updated.")


def sim_add_ip(world: World, form: Form) -> Body:
    """SIMULATOR ONLY: the real API has no documented action to add an IP."""
    address = world.add_ip(_serviceid(form))
    return rendering.command("sim_add_ip", f"IP {address} added (simulator only).", ip=address)


Handler = Callable[[World, Form], Body]

GETTERS: dict[str, Handler] = {
    "get_instances": get_instances,
    "get_instance": get_instance,
    "get_instance_ids": get_instance_ids,
    "check_serviceid": check_serviceid,
    "get_instance_ips": get_instance_ips,
    "check_upgrade_order": check_upgrade_order,
    "check_upgrade_reboot": check_upgrade_reboot,
    "get_price_list": get_price_list,
    "get_locations": get_locations,
    "get_public_images": get_public_images,
}
COMMANDS: dict[str, Handler] = {
    "add_instance": add_instance,
    "terminate": terminate,
    "boot": boot,
    "shutdown": shutdown,
    "reboot": reboot,
    "edit_instance": edit_instance,
    "toggle_lock": toggle_lock,
    "upgrade_instance": upgrade_instance,
    "upgrade_server": upgrade_server,
    "confirm_upgrade": confirm_upgrade,
    "revert_upgrade": revert_upgrade,
    "set_rdns": set_rdns,
    "sim_add_ip": sim_add_ip,
}
ACTIONS: frozenset[str] = frozenset(GETTERS) | frozenset(COMMANDS)


def handle(world: World, action: str, form: Form) -> Outcome:
    """Run one (authorised) action against the world."""
    handler = GETTERS.get(action)
    mutating = False
    if handler is None:
        handler = COMMANDS.get(action)
        mutating = True
    if handler is None:
        return Outcome(rendering.INVALID_ACTION, mutated=False)
    world.settle()
    try:
        body = handler(world, form)
    except SimError as exc:
        return Outcome(rendering.error(action, exc.message, exc.code), mutated=False)
    return Outcome(body, mutated=mutating)
