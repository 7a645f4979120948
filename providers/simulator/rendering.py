"""Turning world objects into the Hostwinds wire shapes (hostwinds-api.md §1.1, §2.8)."""

from __future__ import annotations

from typing import Any

from providers.simulator.catalogue import HOURLY, Catalogue
from providers.simulator.clocks import wire_time
from providers.simulator.world import USERID, Instance

#: ``disp_status`` strings [GUESS]; only ``status`` values are evidenced.
DISPLAY_STATUS: dict[str, str] = {
    "ACTIVE": "Active",
    "BUILD": "Building",
    "ERROR": "Error",
    "SHUTOFF": "Shut Off",
    "REBOOT": "Rebooting",
    "RESIZE": "Resizing",
    "RESIZED": "Awaiting Upgrade Confirmation",
}

#: The display names commands put in ``action`` (only some are evidenced; see docs).
HUMAN_NAMES: dict[str, str] = {
    "get_instances": "Get Instances",
    "get_instance": "Get Instance",
    "get_instance_ids": "Get Instance IDs",
    "check_serviceid": "Check Service ID",
    "add_instance": "Add Instance",
    "terminate": "Terminate",
    "boot": "Boot",
    "shutdown": "Shutdown",
    "reboot": "Reboot",
    "edit_instance": "Edit Instance",
    "toggle_lock": "Toggle Lock",
    "upgrade_instance": "Upgrade Instance",
    "check_upgrade_order": "Check Upgrade Order",
    "check_upgrade_reboot": "Check Upgrade Reboot",
    "upgrade_server": "Upgrade Server",
    "confirm_upgrade": "Confirm Upgrade",
    "revert_upgrade": "Revert Upgrade",
    "set_rdns": "Set rDNS",
    "get_instance_ips": "Get Instance IPs",
    "get_price_list": "Get Price List",
    "get_locations": "Get Locations",
    "get_public_images": "Get Public Images",
    "sim_add_ip": "Sim Add IP",
}


def success(payload: object) -> dict[str, Any]:
    """The getter envelope."""
    return {"success": payload}


def command(action: str, message: str, **extra: object) -> list[dict[str, Any]]:
    """The command envelope: a list with one status object."""
    return [
        {
            "result": "success",
            "action": HUMAN_NAMES.get(action, action),
            "message": message,
            **extra,
        }
    ]


def error(action: str | None, message: str, code: str | None = None) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"result": "error"}
    if action is not None:
        body["action"] = HUMAN_NAMES.get(action, action)
    body["message"] = message
    if code is not None:
        body["ERROR"] = code
    return [body]


NOT_AUTHORIZED: list[dict[str, Any]] = [
    {"result": "error", "action": "Authorization", "message": "Not Authorized!"}
]
INVALID_ACTION: list[dict[str, Any]] = [
    {"result": "error", "message": "Invalid Action.", "ERROR": "6734"}
]


def instance(inst: Instance, catalogue: Catalogue) -> dict[str, Any]:
    """The full Instance object, secrets (``password``, ``configkey``) included, as the API does."""
    plan = catalogue.plan(inst.rid)
    order_plan = catalogue.plan(inst.order.rid) if inst.order else None
    image = catalogue.image(inst.template)
    ram_mb = plan.ram_mb if plan else 0
    cpu = plan.cpu if plan else 0
    disk = plan.disk_gb if plan else 0
    larger = plan is not None and plan.monthly < catalogue.top_price
    created = wire_time(inst.created_at)
    octets = inst.serviceid % 65536
    return {
        "serviceid": inst.serviceid,
        "id": inst.serviceid,
        "userid": USERID,
        "location_id": inst.location_id,
        "server_uuid": inst.server_uuid,
        "volume_uuid": inst.volume_uuid,
        "password": inst.password,
        "port_uuid": inst.port_uuid,
        "main_ip": inst.main_ip,
        "private_ip": f"10.{octets // 256 % 256}.{octets % 256}.{inst.serviceid % 251 + 2}",
        "ips": list(inst.extra_ips) or None,
        "upgrade_available": 1 if larger else 0,
        "is_suspended": 1 if inst.suspended else 0,
        "configkey": inst.configkey,
        "ssh_keys": list(inst.ssh_keys),
        "hourly": 1 if inst.billingcycle == HOURLY else 0,
        "bandwidth": str(plan.bandwidth_gb) if plan else "0",
        "bandwidth_used": "0",
        "pswd_changed": 0,
        "srvrname": inst.srvrname,
        "hostname": inst.hostname,
        "template_uuid": inst.template,
        "app_id": None,
        "locked": 1 if inst.locked else 0,
        "product_id": inst.rid,
        "product_name": plan.name if plan else "",
        "billingcycle": inst.billingcycle,
        "disk_type": "ssd",
        "upgrade_ram": order_plan.ram_mb if order_plan else None,
        "upgrade_cpu": order_plan.cpu if order_plan else None,
        "upgrade_disk": order_plan.disk_gb if order_plan else None,
        "mac_address": inst.mac_address,
        "status": inst.status,
        "disp_status": DISPLAY_STATUS.get(inst.status, inst.status.capitalize()),
        "image": {"uuid": inst.template, "name": image.name if image else inst.template},
        "ip_v6": None,
        "flavor": {
            "id": str(inst.rid),
            "name": plan.name if plan else "",
            "ram": ram_mb,
            "vcpus": cpu,
            "disk": disk,
        },
        "vm_state": inst.vm_state,
        "task_state": inst.task_state,
        "image_ref": inst.template,
        "ram": ram_mb,
        "cpu": cpu,
        "disk": disk,
        "created_at": created,
        "launched_at": wire_time(inst.launched_at) if inst.launched_at is not None else None,
        "updated_at": wire_time(inst.updated_at),
        "name": inst.srvrname,
        "power_state": inst.power_state,
        "host": f"sim-compute-{inst.location_id}-{inst.serviceid % 7 + 1}",
    }


def light(inst: Instance) -> dict[str, Any]:
    """A ``get_instance_ids`` entry."""
    return {
        "id": inst.serviceid,
        "srvrname": inst.srvrname,
        "hostname": inst.hostname,
        "dedicatedip": inst.main_ip,
        "ips": list(inst.extra_ips) or None,
        "ip_v6": None,
    }
