"""The wire format of every action, over a real loopback socket (hostwinds-api.md §1, §2)."""

from __future__ import annotations

import re
from decimal import Decimal

import httpx
import pytest

from providers.simulator.serving import SimulatorServer
from tests.simulator.calling import IMAGE, KEY, Call, create

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def error_message(body: object) -> str:
    assert isinstance(body, list)
    assert len(body) == 1
    assert body[0]["result"] == "error"
    return str(body[0]["message"])


# ---- transport and auth --------------------------------------------------------------------


def test_wrong_key_is_not_authorized_with_http_200(call: Call) -> None:
    assert call("get_instances", key="wrong") == [
        {"result": "error", "action": "Authorization", "message": "Not Authorized!"}
    ]


def test_missing_key_is_not_authorized(http: httpx.Client, sim: SimulatorServer) -> None:
    response = http.post(sim.api_url, data={"action": "get_instances"})
    assert response.status_code == 200
    assert response.json()[0]["message"] == "Not Authorized!"


def test_a_json_body_gets_the_auth_error(http: httpx.Client, sim: SimulatorServer) -> None:
    response = http.post(sim.api_url, json={"action": "get_instances", "API": KEY})
    assert response.status_code == 200
    assert response.json() == [
        {"result": "error", "action": "Authorization", "message": "Not Authorized!"}
    ]


def test_unknown_action_is_invalid_action_without_an_action_key(call: Call) -> None:
    assert call("fix_everything") == [
        {"result": "error", "message": "Invalid Action.", "ERROR": "6734"}
    ]
    assert call("")[0]["message"] == "Invalid Action."


@pytest.mark.parametrize(
    "action",
    [
        "get_instance",
        "check_serviceid",
        "terminate",
        "boot",
        "shutdown",
        "reboot",
        "edit_instance",
        "upgrade_instance",
        "check_upgrade_order",
        "check_upgrade_reboot",
        "upgrade_server",
        "confirm_upgrade",
        "revert_upgrade",
        "set_rdns",
        "get_instance_ips",
        "sim_add_ip",
    ],
)
def test_unknown_or_missing_serviceid(call: Call, action: str) -> None:
    for form in ({"serviceid": "1"}, {}, {"serviceid": "abc"}):
        body = call(action, **form)
        assert error_message(body) == "A valid serviceid is required."
        assert body[0]["action"]  # a human-readable name, not the snake_case action


def test_toggle_lock_without_serviceid_has_its_documented_error(call: Call) -> None:
    body = call("toggle_lock")
    assert body == [
        {
            "result": "error",
            "action": "Toggle Lock",
            "message": "Service Id is required.",
            "ERROR": "5529903",
        }
    ]
    assert error_message(call("toggle_lock", serviceid="1")) == "A valid serviceid is required."


def test_an_allow_list_refuses_other_addresses(http: httpx.Client) -> None:
    with SimulatorServer(api_key=KEY, allow_ips=["192.0.2.10"]) as sim:
        response = http.post(sim.api_url, data={"action": "get_locations", "API": KEY})
        assert response.json()[0]["message"] == "Not Authorized!"
    with SimulatorServer(api_key=KEY, allow_ips=["127.0.0.1"]) as sim:
        response = http.post(sim.api_url, data={"action": "get_locations", "API": KEY})
        assert "success" in response.json()


# ---- create and read -------------------------------------------------------------------------


def test_add_instance_answers_invoice_then_add_and_no_serviceid(call: Call) -> None:
    body = call(
        "add_instance",
        template=IMAGE,
        rid="52",
        location_id="12",
        qty="1",
        srvrname="fleet-a-1",
        billingcycle="monthly",
        **{"keys[]": ["ops", "deploy"]},
    )
    assert body == [
        {"result": "success", "action": "Invoice Paid", "message": "Invoice has been paid."},
        {"result": "success", "action": "Add Instance", "message": "Server is being Created!"},
    ]
    assert "serviceid" not in str(body)
    (light,) = call("get_instance_ids", search="fleet-a-1")["success"]
    instance = call("get_instance", serviceid=light["id"])["success"]
    assert instance["ssh_keys"] == ["ops", "deploy"]
    assert instance["status"] == "BUILD"
    assert instance["vm_state"] == "building"
    assert instance["task_state"] == "spawning"


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"rid": "52", "location_id": "99"}, "Location Id is invalid."),
        ({"rid": "52", "location_id": "x"}, "Location Id is invalid."),
        ({"rid": "52"}, "Location Id is invalid."),
        ({"rid": "999", "location_id": "12"}, "A valid rid is required."),
        ({"location_id": "12"}, "A valid rid is required."),
        ({"rid": "52", "location_id": "12", "template": "windows-3.1"}, "Invalid template."),
        ({"rid": "52", "location_id": "12", "qty": "0"}, "Quantity is invalid."),
        ({"rid": "52", "location_id": "12", "billingcycle": "weekly"}, "Invalid billing cycle."),
    ],
)
def test_add_instance_validation(call: Call, form: dict[str, str], message: str) -> None:
    body = call("add_instance", **{"template": IMAGE, **form})
    assert body == [{"result": "error", "action": "Add Instance", "message": message}]
    assert call("get_instances")["success"] == []


def test_add_instance_accepts_an_image_name_and_qty(call: Call) -> None:
    call("add_instance", template="ubuntu-22.04", rid=53, location_id=14, qty=3, srvrname="x")
    instances = call("get_instances")["success"]
    assert len(instances) == 3
    assert {i["template_uuid"] for i in instances} == {IMAGE}
    assert len({i["serviceid"] for i in instances}) == 3


def test_get_instances_returns_full_objects_with_secrets(call: Call) -> None:
    serviceid = create(call, "fleet-seattle-001")
    create(call, "fleet-dallas-001", location_id=13)
    (inst,) = [i for i in call("get_instances")["success"] if i["serviceid"] == serviceid]
    assert inst["srvrname"] == "fleet-seattle-001"
    assert inst["serviceid"] >= 1234567
    assert inst["location_id"] == 12
    assert inst["product_id"] == 52
    assert inst["product_name"]
    assert (inst["cpu"], inst["ram"], inst["disk"]) == (1, 2048, 50)
    assert inst["password"]  # the API leaks secrets; the client must redact them
    assert inst["configkey"]
    assert inst["main_ip"].startswith("198.51.100.")
    assert inst["locked"] == 0
    assert inst["is_suspended"] == 0
    assert inst["power_state"] == 0
    assert TIMESTAMP.match(inst["created_at"])
    assert TIMESTAMP.match(inst["updated_at"])
    for field in ("status", "disp_status", "vm_state", "task_state", "ips", "hostname", "flavor"):
        assert field in inst
    only_dallas = call("get_instances", location_id=13)["success"]
    assert [i["srvrname"] for i in only_dallas] == ["fleet-dallas-001"]
    assert error_message(call("get_instances", location_id=77)) == "Location Id is invalid."


def test_get_instance_ids_light_objects_search_and_paging(call: Call) -> None:
    ids = [create(call, f"page-{n}") for n in range(5)]
    create(call, "other-1")
    everything = call("get_instance_ids")["success"]
    assert len(everything) == 6
    assert set(everything[0]) == {"id", "srvrname", "hostname", "dedicatedip", "ips", "ip_v6"}
    found = call("get_instance_ids", search="page-")["success"]
    assert [f["id"] for f in found] == ids
    page2 = call("get_instance_ids", search="page-", limit=2, page=2)["success"]
    assert [f["id"] for f in page2] == ids[2:4]
    assert call("get_instance_ids", search="nobody")["success"] == []


def test_check_serviceid(call: Call) -> None:
    serviceid = create(call, "check-1")
    assert call("check_serviceid", serviceid=serviceid) == {"success": True}


def test_get_instance_ips_includes_the_main_ip(call: Call) -> None:
    serviceid = create(call, "ips-1")
    main_ip = call("get_instance", serviceid=serviceid)["success"]["main_ip"]
    assert call("get_instance_ips", serviceid=serviceid) == {
        "success": {"IP Addresses": [{"ip": main_ip}]}
    }
    added = call("sim_add_ip", serviceid=serviceid)
    assert added[0]["result"] == "success"
    assert added[0]["action"] == "Sim Add IP"
    extra = added[0]["ip"]
    listed = call("get_instance_ips", serviceid=serviceid)["success"]["IP Addresses"]
    assert [entry["ip"] for entry in listed] == [main_ip, extra]
    assert call("get_instance", serviceid=serviceid)["success"]["ips"] == [extra]


# ---- catalogue -------------------------------------------------------------------------------


def test_price_list_has_string_prices_keyed_by_rid(call: Call) -> None:
    plans = call("get_price_list")["success"]
    assert set(plans) >= {"51", "52", "53", "54", "55"}
    baseline = plans["52"]
    assert baseline["rid"] == "52"
    assert (baseline["cpu"], baseline["ram"], baseline["disk"]) == ("1", "2", "50")
    assert baseline["bandwidth"] == "2000"
    assert baseline["monthly"] == "9.99"
    assert plans["51"]["monthly"] == "4.99"
    for plan in plans.values():
        assert isinstance(plan["monthly"], str)
        Decimal(plan["monthly"])
        Decimal(plan["annually"])
    serviceid = create(call, "plan-1", rid=53)
    current = call("get_price_list", serviceid=serviceid)["success"]
    assert [rid for rid, plan in current.items() if plan["current"] == 1] == ["53"]


def test_locations_and_images(call: Call) -> None:
    locations = call("get_locations")["success"]
    assert {(loc["id"], loc["name"]) for loc in locations} == {
        (12, "Seattle"),
        (13, "Dallas"),
        (14, "Amsterdam"),
    }
    images = call("get_public_images")["success"]
    assert IMAGE in {image["uuid"] for image in images}
    assert {"uuid", "name", "type", "category", "version", "min_disk"} <= set(images[0])


# ---- commands --------------------------------------------------------------------------------


def active(call: Call, sim: SimulatorServer, name: str, *, rid: int = 52) -> int:
    serviceid = create(call, name, rid=rid)
    sim.clock.advance(10)
    assert call("get_instance", serviceid=serviceid)["success"]["status"] == "ACTIVE"
    return serviceid


def test_power_commands(call: Call, sim: SimulatorServer) -> None:
    serviceid = active(call, sim, "power-1")
    assert error_message(call("reboot", serviceid=create(call, "busy"))).startswith(
        "Server is currently BUILD"
    )
    assert call("shutdown", serviceid=serviceid) == [
        {
            "result": "success",
            "action": "Shutdown",
            "message": f"Instance Server#{serviceid} has been shut down!",
        }
    ]
    inst = call("get_instance", serviceid=serviceid)["success"]
    assert (inst["status"], inst["vm_state"], inst["power_state"]) == ("SHUTOFF", "stopped", 4)
    assert call("boot", serviceid=serviceid)[0]["message"] == (
        f"Instance Server#{serviceid} has been started!"
    )
    assert call("reboot", serviceid=serviceid) == [
        {"result": "success", "action": "Reboot", "message": "Instance rebooted"}
    ]
    assert call("get_instance", serviceid=serviceid)["success"]["status"] == "ACTIVE"


def test_edit_instance_renames(call: Call, sim: SimulatorServer) -> None:
    serviceid = active(call, sim, "old-name")
    assert call("edit_instance", serviceid=serviceid, srvrname="new-name") == [
        {
            "result": "success",
            "action": "Edit Instance",
            "message": "Instance server name has been updated",
        }
    ]
    assert call("get_instance", serviceid=serviceid)["success"]["srvrname"] == "new-name"


def test_a_locked_instance_refuses_changes_and_terminate(call: Call, sim: SimulatorServer) -> None:
    serviceid = active(call, sim, "locked-1")
    assert call("toggle_lock", serviceid=serviceid)[0]["message"] == "Service has been locked."
    assert call("get_instance", serviceid=serviceid)["success"]["locked"] == 1
    for action in ("terminate", "shutdown", "reboot", "upgrade_instance", "set_rdns"):
        assert "locked" in error_message(call(action, serviceid=serviceid, rid=53)).lower()
    assert call("toggle_lock", serviceid=serviceid)[0]["message"] == "Service has been unlocked."
    assert call("terminate", serviceid=serviceid) == [
        {"result": "success", "action": "Terminate", "message": "Instance deleted"}
    ]
    assert error_message(call("get_instance", serviceid=serviceid)) == (
        "A valid serviceid is required."
    )
    assert call("get_instances")["success"] == []


def test_set_rdns(call: Call, sim: SimulatorServer) -> None:
    serviceid = active(call, sim, "rdns-1")
    ip = call("get_instance", serviceid=serviceid)["success"]["main_ip"]
    assert call("set_rdns", serviceid=serviceid, ip=ip, rdns="mx1.example.com") == [
        {"result": "success", "action": "Set rDNS", "message": "rDNS record updated."}
    ]
    assert call("set_rdns", serviceid=serviceid, ip=ip, rdata="mx2.example.com")[0]["result"] == (
        "success"
    )
    assert sim.world.instances[serviceid].rdns == {ip: "mx2.example.com"}
    assert error_message(call("set_rdns", serviceid=serviceid, ip="192.0.2.250", rdns="a.b")) == (
        "IP address does not belong to this service."
    )
    assert "rdns" in error_message(call("set_rdns", serviceid=serviceid, ip=ip)).lower()


def test_the_two_step_resize_confirmed(call: Call, sim: SimulatorServer) -> None:
    serviceid = active(call, sim, "resize-1")
    assert call("check_upgrade_order", serviceid=serviceid) == {"success": False}
    assert error_message(call("upgrade_server", serviceid=serviceid)) == (
        "There is no pending upgrade order."
    )
    assert call("upgrade_instance", serviceid=serviceid, rid=53) == [
        {"result": "success", "action": "Upgrade Instance", "message": "Service has been upgraded!"}
    ]
    assert error_message(call("upgrade_instance", serviceid=serviceid, rid=54)) == (
        "An upgrade order is already pending."
    )
    order = call("check_upgrade_order", serviceid=serviceid)["success"]
    assert set(order) == {"id", "orderid", "invoiceid", "duedate", "total"}
    assert order["total"] == "10.00"
    assert call("check_upgrade_reboot", serviceid=serviceid) == {"success": True}
    assert call("upgrade_server", serviceid=serviceid)[0]["message"] == (
        f"Server Server#{serviceid} is being upgraded."
    )
    assert call("get_instance", serviceid=serviceid)["success"]["status"] == "RESIZE"
    assert error_message(call("confirm_upgrade", serviceid=serviceid)).startswith("The server is")
    sim.clock.advance(20)
    inst = call("get_instance", serviceid=serviceid)["success"]
    assert (inst["status"], inst["vm_state"]) == ("RESIZED", "resized")
    assert call("confirm_upgrade", serviceid=serviceid) == [
        {"result": "success", "action": "Confirm Upgrade", "message": "Upgrade Confirmed!"}
    ]
    inst = call("get_instance", serviceid=serviceid)["success"]
    assert (inst["status"], inst["product_id"], inst["cpu"], inst["ram"]) == (
        "ACTIVE",
        53,
        2,
        4096,
    )
    assert call("check_upgrade_order", serviceid=serviceid) == {"success": False}


def test_the_two_step_resize_reverted(call: Call, sim: SimulatorServer) -> None:
    serviceid = active(call, sim, "resize-2")
    call("upgrade_instance", serviceid=serviceid, rid=54)
    call("upgrade_server", serviceid=serviceid)
    sim.clock.advance(20)
    assert call("get_instance", serviceid=serviceid)["success"]["product_id"] == 54
    assert call("revert_upgrade", serviceid=serviceid) == [
        {"result": "success", "action": "Revert Upgrade", "message": "Upgrade Reverted!"}
    ]
    inst = call("get_instance", serviceid=serviceid)["success"]
    assert (inst["status"], inst["product_id"]) == ("ACTIVE", 52)


@pytest.mark.parametrize(
    ("rid", "message"),
    [
        ("52", "The service is already on this plan."),
        ("51", "Disk cannot be downgraded."),
        ("7", "A valid rid is required."),
        ("", "A valid rid is required."),
    ],
)
def test_upgrade_instance_refusals(
    call: Call, sim: SimulatorServer, rid: str, message: str
) -> None:
    serviceid = active(call, sim, f"refuse-{rid}")
    assert error_message(call("upgrade_instance", serviceid=serviceid, rid=rid)) == message
