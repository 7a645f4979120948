"""Wire models and the envelope rule (hostwinds-api.md §1.1), every observed shape."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import ValidationError

from providers.hostwinds.redacting import MASK, Secret, redact
from providers.hostwinds.wire import (
    ApiFailure,
    ApiSuccess,
    InstanceWire,
    PriceEntryWire,
    Unrecognised,
    instance_values,
    observed_from_entry,
    observed_from_values,
    parse_instance,
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


# --- the fast instance parse (issue 14): the same object as pydantic's, for any entry ------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["12", " 42abc", "-7", "1", "0", "true", "", "  ", "2048", "9" * 25]),
    st.sampled_from(
        [
            "2026-01-02 03:04:05",
            "2026-01-02T03:04:05",
            "2026-01-02",
            "2026-13-02 03:04:05",
            "2026-02-30",
            "2026-01-02 25:00:00",
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05+02:00",
            "2026-1-2 3:04:05",
            " 2026-01-02 03:04:05 ",
            "２０２６-01-02",
        ]
    ),
)
_VALUES = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=3),
    st.lists(st.fixed_dictionaries({"ip": _SCALARS}), max_size=2),
    st.dictionaries(st.text(max_size=3), _SCALARS, max_size=2),
)
_ENTRIES = st.dictionaries(
    st.sampled_from([*InstanceWire.model_fields, "password", "configkey", "other"]),
    _VALUES,
    max_size=12,
)


@given(_ENTRIES)
def test_the_fast_instance_parse_equals_pydantics(entry: dict[str, object]) -> None:
    expected = InstanceWire.model_validate(entry)
    fast = parse_instance(entry)
    assert fast.model_dump() == expected.model_dump()
    if expected.service_id is not None:
        assert fast.to_observed() == expected.to_observed()
        # the listing's path: no model at all
        assert observed_from_values(instance_values(entry)) == expected.to_observed()
    else:
        with pytest.raises(ValueError, match="without serviceid"):
            observed_from_values(instance_values(entry))


_TYPED_ENTRIES = st.fixed_dictionaries(
    {},
    optional={
        "serviceid": st.integers(min_value=-(2**64), max_value=2**64) | _SCALARS,
        "id": st.integers(min_value=0, max_value=2**40) | st.none(),
        "srvrname": st.text(max_size=12) | _SCALARS,
        "location_id": st.integers(min_value=-5, max_value=2**40) | _SCALARS,
        "status": st.sampled_from([*(s.value for s in ServerStatus), "active", " BUILD "])
        | _SCALARS,
        "disp_status": st.text(max_size=12) | st.none(),
        "main_ip": st.sampled_from(["198.51.100.2", " 198.51.100.3 ", ""]) | _SCALARS,
        "ips": _VALUES,
        "ram": st.integers(min_value=-300, max_value=5000) | _SCALARS,
        "cpu": st.integers(min_value=0, max_value=64) | _SCALARS,
        "disk": _SCALARS,
        "product_id": _SCALARS,
        "product_name": _SCALARS,
        "locked": st.sampled_from([0, 1, "0", "1", True, None, 2, "yes", [], [0]]),
        "is_suspended": _VALUES,
        "hostname": _SCALARS,
        "created_at": _SCALARS,
        "name": _SCALARS,
        "password": st.just("root-pw-canary"),
    },
)


@given(_ENTRIES | _TYPED_ENTRIES, st.none() | st.integers(min_value=1, max_value=99))
def test_the_one_pass_listing_conversion_equals_the_two_steps(
    entry: dict[str, object], fallback: int | None
) -> None:
    # the listing's path (issue 14): observed_from_entry against instance_values +
    # observed_from_values, for any entry (plain types as the API sends them, and any other)
    values = instance_values(entry)
    if values.get("serviceid") is None and values.get("id") is None:
        if fallback is None:
            assert observed_from_entry(entry, fallback) is None
            return
        values["serviceid"] = fallback
    assert observed_from_entry(entry, fallback) == observed_from_values(values)


@pytest.mark.parametrize("entry", [None, [], "x", 3])
def test_the_one_pass_conversion_refuses_what_the_two_steps_refuse(entry: object) -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        instance_values(entry)
    with pytest.raises(ValueError, match="not a JSON object"):
        observed_from_entry(entry)


def test_the_one_pass_conversion_of_an_api_instance() -> None:
    server = observed_from_entry(INSTANCE)
    assert server == InstanceWire.model_validate(INSTANCE).to_observed()
    assert server is not None
    assert server.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert server.created_at.tzinfo is UTC
    assert "root-pw-canary" not in repr(server)


@pytest.mark.parametrize("entry", [None, [], "x", 3])
def test_the_fast_instance_parse_refuses_what_pydantic_refuses(entry: object) -> None:
    with pytest.raises(ValidationError):
        InstanceWire.model_validate(entry)
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_instance(entry)


def test_the_fast_parse_drops_the_root_secrets() -> None:
    parsed = parse_instance(INSTANCE)
    assert "root-pw-canary" not in repr(parsed.model_dump())
    assert parsed.created_at == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _strptime_parse(value: str) -> datetime | None:
    """The parse before issue 14: strptime with each API form, then fromisoformat."""
    text = value.strip()
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_DATE_TEXT = st.one_of(
    st.builds(
        lambda d, sep: d.replace(microsecond=0).isoformat(sep=sep),
        st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
        st.sampled_from([" ", "T"]),
    ),
    st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}( [0-9]{2}:[0-9]{2}:[0-9]{2})?", fullmatch=True),
    st.text(alphabet="0123456789-: TZ+", max_size=25),
)


@given(_DATE_TEXT)
def test_the_fast_date_parse_gives_what_strptime_gave(text: str) -> None:
    from providers.hostwinds.wire import _to_datetime

    assume(text.strip())
    assert _to_datetime(text) == _strptime_parse(text)
