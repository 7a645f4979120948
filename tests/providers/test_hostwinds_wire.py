"""Wire models and the envelope rule (hostwinds-api.md §1.1), every observed shape."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from providers.hostwinds.redacting import MASK, Secret, redact
from providers.hostwinds.wire import (
    ApiFailure,
    ApiSuccess,
    InstanceWire,
    PriceEntryWire,
    Unrecognised,
    parse_ips,
    parse_locations,
    read_envelope,
)
from reconciler.core.fleet import Location, ServerStatus

INSTANCE = {
    "serviceid": 1234567,
    "userid": 54321,
    "location_id": 12,
    "password": "root-pw-canary",
    "configkey": "configkey-canary",
    "main_ip": "198.51.100.2",
    "ips": ["198.51.100.9"],
    "is_suspended": 0,
    "srvrname": "mail-sea-1",
    "hostname": "hwsrv-1234567.hostwindsdns.com",
    "locked": "1",
    "product_id": 52,
    "product_name": "Unmanaged Linux VPS 2GB",
    "status": "active",
    "disp_status": "Active",
    "ram": 2048,
    "cpu": 1,
    "disk": 50,
    "created_at": "2026-01-02 03:04:05",
    "flavor": True,
}


def test_instance_maps_every_field_and_drops_the_secrets() -> None:
    wire = InstanceWire.model_validate(INSTANCE)
    server = wire.to_observed()
    assert server.service_id == 1234567
    assert server.name == "mail-sea-1"
    assert server.location_id == 12
    assert server.status is ServerStatus.ACTIVE  # case-insensitive
    assert server.main_ip == "198.51.100.2"
    assert server.ips == ("198.51.100.2", "198.51.100.9")
    assert (server.plan_rid, server.plan_name) == (52, "Unmanaged Linux VPS 2GB")
    assert (server.vcpu, server.ram_mb, server.disk_gb) == (1, 2048, 50)
    assert server.locked is True
    assert server.suspended is False
    assert server.display_status == "Active"
    assert server.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    dumped = repr(wire) + repr(server) + str(wire.model_dump())
    assert "canary" not in dumped
    assert not hasattr(wire, "password")
    assert not hasattr(wire, "configkey")


def test_instance_tolerates_strings_nulls_and_the_id_spelling() -> None:
    wire = InstanceWire.model_validate(
        {"id": "77", "srvrname": "x", "status": None, "ips": None, "ram": "4", "locked": "0"}
    )
    server = wire.to_observed()
    assert server.service_id == 77
    assert server.status is ServerStatus.UNKNOWN
    assert server.status.is_transitional
    assert server.ips == ()
    assert server.ram_mb == 4096  # a small figure is GB
    assert server.locked is False
    assert server.location_id == 0


@pytest.mark.parametrize(
    ("body", "getter", "expected"),
    [
        ({"success": {"a": 1}}, True, ApiSuccess({"a": 1})),
        ({"success": True}, True, ApiSuccess(True)),
        ({"success": []}, True, ApiSuccess([])),
        (
            [{"result": "success", "action": "Set rDNS", "message": "rDNS record updated."}],
            False,
            ApiSuccess(
                [{"result": "success", "action": "Set rDNS", "message": "rDNS record updated."}]
            ),
        ),
        (
            [{"result": "error", "message": "Invalid Action.", "ERROR": "6734"}],
            True,
            ApiFailure("Invalid Action.", "6734"),
        ),
        (
            {"result": "error", "action": "Authorization", "message": "Not Authorized!"},
            True,
            ApiFailure("Not Authorized!", None),
        ),
        (
            [{"result": "error", "action": "Authorization", "message": "Not Authorized!"}],
            False,
            ApiFailure("Not Authorized!", None),
        ),
        ({"detail": "Too many"}, True, Unrecognised()),
        ("hello", False, Unrecognised()),
        (["a", "b"], True, Unrecognised()),
    ],
)
def test_envelope_rule(body: object, getter: bool, expected: object) -> None:
    assert read_envelope(body, getter=getter) == expected


@pytest.mark.parametrize(
    "payload",
    [
        {"IP Addresses": [{"ip": "198.51.100.2"}, {"ip": "198.51.100.9"}]},
        [{"ip": "198.51.100.2", "type": "v4", "primary": 1}, {"ip": "198.51.100.9"}],
        ["198.51.100.2", "198.51.100.9"],
        [{"main_ip": "198.51.100.2", "ips": ["198.51.100.9"]}],
        {"main_ip": "198.51.100.2", "ips": [{"ip": "198.51.100.9"}]},
    ],
)
def test_ip_shapes(payload: object) -> None:
    assert parse_ips(payload) == ["198.51.100.2", "198.51.100.9"]


@pytest.mark.parametrize(
    "payload",
    [
        [{"id": 12, "name": "Seattle"}, {"id": "13", "name": "Dallas"}],
        {"12": "Seattle", "13": "Dallas"},
        {"12": {"location": "Seattle"}, "13": {"location_id": 13, "city": "Dallas"}},
        [{"location_id": 13, "location_name": "Dallas"}, {"location_id": 12, "title": "Seattle"}],
    ],
)
def test_location_shapes(payload: object) -> None:
    assert parse_locations(payload) == [Location(12, "Seattle"), Location(13, "Dallas")]


def test_price_entry_uses_rid_and_decimal_strings() -> None:
    entry = PriceEntryWire.model_validate(
        {
            "id": "9",
            "rid": "52",
            "name": "Unmanaged Linux VPS 2GB",
            "ram": "2",
            "cpu": "1",
            "disk": "50",
            "bandwidth": "2000",
            "monthly": "9.99",
            "pricing": {"ram": []},
        }
    )
    plan = entry.to_plan("9")
    assert plan is not None
    assert plan.rid == 52
    assert plan.monthly == Decimal("9.99")
    assert isinstance(plan.monthly, Decimal)
    assert (plan.vcpu, plan.ram_gb, plan.disk_gb, plan.bandwidth) == (1, Decimal(2), 50, "2000")
    assert PriceEntryWire.model_validate({"name": "no price"}).to_plan() is None


def test_secret_never_shows_itself() -> None:
    secret = Secret("canary-key")
    assert repr(secret) == str(secret) == f"{secret}" == MASK
    assert secret.reveal() == "canary-key"
    with pytest.raises(TypeError):
        secret.__reduce__()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(
    value=json_values,
    key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=8, max_size=16),
)
def test_redact_removes_secret_fields_and_the_key_everywhere(value: object, key: str) -> None:
    # a key spelled like a field name would (rightly) mask that field's name too
    assume(key not in ("password", "configkey"))
    wrapped = {"API": key, "password": key, "nested": [value, {"configkey": "x", "v": key}]}
    cleaned = redact(wrapped, (key,))
    assert key not in repr(cleaned)
    assert isinstance(cleaned, dict)
    assert cleaned["API"] == MASK
    assert cleaned["password"] == MASK
