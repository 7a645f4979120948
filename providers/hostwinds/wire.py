"""Pydantic models of Hostwinds Cloud API payloads, and the envelope rule.

Every model ignores unknown fields, and none declares ``password`` or ``configkey``: the root
secrets that ``get_instance``/``get_instances`` return are dropped while parsing and never reach
an object. The models are lenient about types (the API sends numbers as strings, flags as
0/1/"0"/"1", ``null`` for empty lists) because evidence about exact shapes is thin
(docs/hostwinds-client.md, "Evidence notes").
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, cast

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from reconciler.core.fleet import Location, ObservedServer, PricePlan, ServerStatus

# --- lenient scalar types ---------------------------------------------------------------


#: Integers outside a signed 64-bit range are nonsense from the wire: treated as absent.
INT_LIMIT = 2**63


_INT_PREFIX = re.compile(r"\s*(-?\d{1,20})(?!\d)")
_IPS_SPLIT = re.compile(r"[,\s]+")
#: the API's own date forms, parsed without strptime (which costs ~100 us a call)
_PLAIN_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[ T][0-9]{2}:[0-9]{2}:[0-9]{2})?")


def _to_int(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return int(value) if isinstance(value, bool) else None
    number: int | None = None
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        number = int(value) if math.isfinite(value) else None
    elif isinstance(value, str):
        match = _INT_PREFIX.match(value)
        number = int(match.group(1)) if match else None
    if number is None or not -INT_LIMIT < number < INT_LIMIT:
        return None
    return number


def _to_bool(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _to_str(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float):
        return str(value)
    return None


def _to_ips(value: object) -> list[str]:
    """``ips`` comes as null, a list of strings, a list of ``{"ip": ...}``, or a comma list."""
    out: list[str] = []
    items: list[object]
    if value is None:
        items = []
    elif isinstance(value, str):
        items = [part for part in _IPS_SPLIT.split(value) if part]
    elif isinstance(value, list):
        items = list(value)
    elif isinstance(value, Mapping):
        items = list(value.values())
    else:
        items = []
    for item in items:
        if isinstance(item, Mapping):
            item = item.get("ip") or item.get("address")
        if isinstance(item, str) and item.strip():
            out.append(item.strip())
    return out


def _to_datetime(value: object) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if _PLAIN_DATE.fullmatch(text):  # what the API sends: the same value strptime gives
        # with the offset in the text: aware at once (``.replace(tzinfo=UTC)`` costs ~0.8 us
        # on Python 3.11, seven times the parse)
        try:
            return datetime.fromisoformat(
                text + ("+00:00" if len(text) > 10 else " 00:00:00+00:00")
            )
        except ValueError:
            return None  # e.g. month 13: strptime and fromisoformat refuse it alike
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


LooseInt = Annotated[int | None, BeforeValidator(_to_int)]
LooseBool = Annotated[bool, BeforeValidator(_to_bool)]
LooseStr = Annotated[str | None, BeforeValidator(_to_str)]
LooseIps = Annotated[list[str], BeforeValidator(_to_ips)]
LooseDatetime = Annotated[datetime | None, BeforeValidator(_to_datetime)]


def decimal_from(value: object) -> Decimal | None:
    """Prices and sizes arrive as strings ("9.99", "2 GB"); never go through float."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(str(value)) if math.isfinite(value) and abs(value) < 1e15 else None
    if isinstance(value, str):
        match = re.match(r"\s*\$?\s*(-?\d{1,15}(?:\.\d{1,10})?)(?![\d.])", value.replace(",", ""))
        if not match:
            return None
        try:
            return Decimal(match.group(1))
        except InvalidOperation:
            return None
    return None


# --- payload models ---------------------------------------------------------------------


class _Wire(BaseModel):
    # validators are built on first use: the listing never validates through a model (issue 14)
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True, defer_build=True)


#: Below this, an instance's ``ram`` is taken as GB, otherwise MB (OpenStack flavors use MB).
RAM_GB_THRESHOLD = 256


class InstanceWire(_Wire):
    """An Instance object (hostwinds-api.md §2.8). No ``password``, no ``configkey``."""

    serviceid: LooseInt = None
    id: LooseInt = None
    srvrname: LooseStr = None
    name: LooseStr = None
    location_id: LooseInt = None
    status: LooseStr = None
    disp_status: LooseStr = None
    main_ip: LooseStr = None
    ips: LooseIps = Field(default_factory=list)
    product_id: LooseInt = None
    product_name: LooseStr = None
    cpu: LooseInt = None
    ram: LooseInt = None
    disk: LooseInt = None
    locked: LooseBool = False
    is_suspended: LooseBool = False
    hostname: LooseStr = None
    created_at: LooseDatetime = None

    @property
    def service_id(self) -> int | None:
        return self.serviceid if self.serviceid is not None else self.id

    def to_observed(self) -> ObservedServer:
        return observed_from_values(self.__dict__)


def observed_from_values(values: Mapping[str, Any]) -> ObservedServer:
    """The :class:`ObservedServer` of an instance's converted fields (an ``InstanceWire``'s
    ``__dict__``, or :func:`instance_values` of an entry: absent fields take the model's
    defaults). Raises ``ValueError`` when it carries no service id."""
    get = values.get
    service_id = get("serviceid")
    if service_id is None:
        service_id = get("id")
    if service_id is None:
        raise ValueError("instance without serviceid")
    main_ip = get("main_ip")
    ips: list[str] = [main_ip] if main_ip else []
    for ip in get("ips") or ():
        if ip not in ips:
            ips.append(ip)
    ram_mb = get("ram")
    if ram_mb is not None and 0 < ram_mb < RAM_GB_THRESHOLD:
        ram_mb *= 1024
    location_id = get("location_id")
    return ObservedServer(
        service_id=service_id,
        name=get("srvrname") or "",
        location_id=location_id if location_id is not None else 0,
        status=ServerStatus.parse(get("status")),
        main_ip=main_ip,
        ips=tuple(ips),
        plan_rid=get("product_id"),
        plan_name=get("product_name"),
        vcpu=get("cpu"),
        ram_mb=ram_mb,
        disk_gb=get("disk"),
        locked=get("locked", False),
        suspended=get("is_suspended", False),
        hostname=get("hostname"),
        display_status=get("disp_status"),
        created_at=get("created_at"),
    )


#: ``ServerStatus.parse`` of the status texts the API sends as they are (upper case)
_STATUS_OF_TEXT: dict[str, ServerStatus] = {status.value: status for status in ServerStatus}


def observed_from_entry(entry: object, fallback_id: int | None = None) -> ObservedServer | None:
    """``observed_from_values(instance_values(entry))`` in one pass, about three times faster
    (the listing converts every server of the account: issue 14): each field the observed
    server uses is taken as it is when it already has its type (an int in range, a string,
    ``null``) and goes through its lenient converter otherwise. ``fallback_id`` stands for an
    absent service id; None when there is neither. Raises ``ValueError`` for what
    :func:`instance_values` refuses (a property test pins the two paths equal)."""
    if type(entry) is not dict:
        values = instance_values(entry)
        if values.get("serviceid") is None and values.get("id") is None:
            if fallback_id is None:
                return None
            values["serviceid"] = fallback_id
        return observed_from_values(values)
    get = entry.get
    limit = INT_LIMIT
    v = get("serviceid")
    service_id = v if type(v) is int and -limit < v < limit else _to_int(v)
    if service_id is None:
        v = get("id")
        service_id = v if type(v) is int and -limit < v < limit else _to_int(v)
        if service_id is None:
            if fallback_id is None:
                return None
            service_id = fallback_id
    v = get("main_ip")
    main_ip = (v.strip() or None) if type(v) is str else _to_str(v)
    v = get("ips")
    if v is None:
        ips: tuple[str, ...] = (main_ip,) if main_ip else ()
    else:
        listed: list[str] = [main_ip] if main_ip else []
        for ip in _to_ips(v):
            if ip not in listed:
                listed.append(ip)
        ips = tuple(listed)
    v = get("ram")
    ram_mb = v if type(v) is int and -limit < v < limit else _to_int(v)
    if ram_mb is not None and 0 < ram_mb < RAM_GB_THRESHOLD:
        ram_mb *= 1024
    v = get("location_id")
    location_id = v if type(v) is int and -limit < v < limit else _to_int(v)
    v = get("srvrname")
    name = (v.strip() or None) if type(v) is str else _to_str(v)
    v = get("status")
    status_text = (v.strip() or None) if type(v) is str else _to_str(v)
    status = _STATUS_OF_TEXT.get(status_text) if status_text is not None else None
    v = get("product_id")
    plan_rid = v if type(v) is int and -limit < v < limit else _to_int(v)
    v = get("product_name")
    plan_name = (v.strip() or None) if type(v) is str else _to_str(v)
    v = get("cpu")
    vcpu = v if type(v) is int and -limit < v < limit else _to_int(v)
    v = get("disk")
    disk_gb = v if type(v) is int and -limit < v < limit else _to_int(v)
    v = get("locked")
    locked = _to_bool(v) if type(v) is str else bool(v)
    v = get("is_suspended")
    suspended = _to_bool(v) if type(v) is str else bool(v)
    v = get("hostname")
    hostname = (v.strip() or None) if type(v) is str else _to_str(v)
    v = get("disp_status")
    display_status = (v.strip() or None) if type(v) is str else _to_str(v)
    return ObservedServer(
        service_id=service_id,
        name=name or "",
        location_id=location_id if location_id is not None else 0,
        status=status if status is not None else ServerStatus.parse(status_text),
        main_ip=main_ip,
        ips=ips,
        plan_rid=plan_rid,
        plan_name=plan_name,
        vcpu=vcpu,
        ram_mb=ram_mb,
        disk_gb=disk_gb,
        locked=locked,
        suspended=suspended,
        hostname=hostname,
        display_status=display_status,
        created_at=_to_datetime(get("created_at")),
    )


def _converters(model: type[BaseModel]) -> tuple[tuple[str, Callable[[Any], Any]], ...] | None:
    """Each field's lenient converter (its ``BeforeValidator``), or None when a field has none
    (then :func:`parse_instance` falls back to pydantic)."""
    found: list[tuple[str, Callable[[Any], Any]]] = []
    for name, info in model.model_fields.items():
        before = [m.func for m in info.metadata if isinstance(m, BeforeValidator)]
        if info.alias not in (None, name) or len(before) != 1:
            return None
        found.append((name, cast("Callable[[Any], Any]", before[0])))
    return tuple(found)


_INSTANCE_CONVERTERS = _converters(InstanceWire)


def instance_values(entry: object) -> dict[str, Any]:
    """The converted fields present in ``entry`` (what ``InstanceWire.model_validate`` would
    set; absent fields are left out). Raises ``ValueError`` for what it refuses."""
    if _INSTANCE_CONVERTERS is None:  # pragma: no cover - a field without a converter
        try:
            wire = InstanceWire.model_validate(entry)
        except ValidationError as exc:
            raise ValueError("an instance object did not parse") from exc
        return {name: wire.__dict__[name] for name in wire.model_fields_set}
    if not isinstance(entry, Mapping):
        raise ValueError("an instance object is not a JSON object")
    return {name: convert(entry[name]) for name, convert in _INSTANCE_CONVERTERS if name in entry}


def parse_instance(entry: object) -> InstanceWire:
    """``InstanceWire.model_validate(entry)``, about ten times faster (a 10,000-server account
    is parsed on every reconcile): every field is one lenient converter whose result already
    has the field's type, so the converters are applied directly. Raises ``ValueError`` for
    what ``model_validate`` refuses (a property test pins the two equal). The listing skips
    the model altogether: :func:`observed_from_values` of :func:`instance_values`."""
    return InstanceWire.model_construct(**instance_values(entry))


class InstanceIdWire(_Wire):
    """A light entry of ``get_instance_ids``: ``id`` is the serviceid."""

    id: LooseInt = None
    serviceid: LooseInt = None
    srvrname: LooseStr = None
    hostname: LooseStr = None

    @property
    def service_id(self) -> int | None:
        return self.id if self.id is not None else self.serviceid


class PriceEntryWire(_Wire):
    """One entry of ``get_price_list``; prices and sizes are strings."""

    id: LooseInt = None
    rid: LooseInt = None
    name: LooseStr = None
    ram: Any = None
    cpu: Any = None
    disk: Any = None
    bandwidth: Any = None
    monthly: Any = None
    promo: Any = None
    percent: Any = None
    firsts: Any = None
    cycles: Any = None

    def to_plan(self, key: object = None) -> PricePlan | None:
        rid = self.rid if self.rid is not None else self.id
        if rid is None:
            rid = _to_int(key)
        monthly = decimal_from(self.monthly)
        if rid is None or monthly is None:
            return None
        ram = decimal_from(self.ram) or Decimal(0)
        if ram >= RAM_GB_THRESHOLD:  # a size in MB
            ram = ram / Decimal(1024)
        cpu = decimal_from(self.cpu)
        disk = decimal_from(self.disk)
        bandwidth = _to_str(self.bandwidth) or ""
        return PricePlan(
            rid=rid,
            name=self.name or f"rid {rid}",
            vcpu=int(cpu) if cpu is not None else 0,
            ram_gb=Decimal(int(ram)) if ram == ram.to_integral_value() else ram,
            disk_gb=int(disk) if disk is not None else 0,
            bandwidth=bandwidth,
            monthly=monthly,
            promo=_truthy(self.promo),
            promo_percent=decimal_from(self.percent) or Decimal(0),
            first_payment=decimal_from(self.firsts),
            cycles=_cycles(self.cycles),
        )


def _truthy(value: object) -> bool:
    """The API's flags: 1/0, "1"/"0", true/false (strings or not)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    return text not in ("", "0", "false", "no", "none", "null")


def _cycles(value: object) -> tuple[str, ...]:
    """``cycles`` as a list of names, or a mapping keyed by them (shape not fixed)."""
    if isinstance(value, Mapping):
        return tuple(str(k) for k in value)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value if isinstance(v, str | int))
    if isinstance(value, str) and value.strip():
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return ()


class CommandResultWire(_Wire):
    """One status object of a command's answer list."""

    result: LooseStr = None
    action: LooseStr = None
    message: LooseStr = None
    error_code: LooseStr = Field(default=None, alias="ERROR")


# --- the envelope ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiFailure:
    """A ``"result": "error"`` body, whatever the HTTP status."""

    message: str
    code: str | None


@dataclass(frozen=True, slots=True)
class ApiSuccess:
    """A success body: ``data`` is ``body["success"]`` for getters, the list for commands."""

    data: object


@dataclass(frozen=True, slots=True)
class Unrecognised:
    """JSON, but neither envelope (e.g. a proxy's ``{"detail": ...}`` on a 429)."""


Envelope = ApiFailure | ApiSuccess | Unrecognised


def read_envelope(body: object, *, getter: bool) -> Envelope:
    """The parsing rule of hostwinds-api.md §1.1, covering every observed shape.

    - a list: look at ``body[0]``; ``result == "error"`` is a failure, otherwise the command's
      list is the data (a getter answering with a list of non-error objects gets the list);
    - a dict with ``result == "error"`` (the bare auth error): a failure;
    - a dict with ``success``: getters get ``body["success"]``;
    - anything else: unrecognised.
    """
    if isinstance(body, list):
        if body and isinstance(body[0], Mapping):
            first = body[0]
            if _is_error(first):
                return _failure(first)
        if not getter or not body or isinstance(body[0], Mapping):
            return ApiSuccess(body)
        return Unrecognised()
    if isinstance(body, Mapping):
        if _is_error(body):
            return _failure(body)
        if "success" in body:
            return ApiSuccess(body["success"])
        if not getter and str(body.get("result", "")).lower() == "success":
            return ApiSuccess([body])
    return Unrecognised()


def _is_error(entry: Mapping[str, object]) -> bool:
    return str(entry.get("result", "")).strip().lower() == "error"


def _failure(entry: Mapping[str, object]) -> ApiFailure:
    message = entry.get("message") or entry.get("msg") or ""
    code = entry.get("ERROR")
    return ApiFailure(
        message=str(message) if not isinstance(message, str) else message,
        code=str(code) if code not in (None, "") else None,
    )


def entries(data: object) -> list[Mapping[str, object]]:
    """The objects of a getter payload that may be a list or an id-keyed dict."""
    if isinstance(data, list):
        return [item for item in data if isinstance(item, Mapping)]
    if isinstance(data, Mapping):
        return [item for item in data.values() if isinstance(item, Mapping)]
    return []


def parse_ips(data: object) -> list[str]:
    """``get_instance_ips``: ``{"IP Addresses": [{"ip": ...}]}`` (observed live), or a list of
    ``{ip, type, primary}`` / strings, or a list of instance objects (``main_ip`` + ``ips``)."""
    found: list[str] = []

    def add(ip: object) -> None:
        if isinstance(ip, str) and ip.strip() and ip.strip() not in found:
            found.append(ip.strip())

    if isinstance(data, Mapping):
        for key in ("IP Addresses", "ip_addresses", "IPs"):
            if key in data:
                for ip in _to_ips(data[key]):
                    add(ip)
                return found
        data = [data] if {"main_ip", "ip", "ips"} & set(data) else list(data.values())
    if isinstance(data, list):
        for item in data:
            if isinstance(item, Mapping):
                add(item.get("main_ip"))
                add(item.get("ip"))
                for ip in _to_ips(item.get("ips")):
                    add(ip)
            else:
                add(item)
    return found


def parse_locations(data: object) -> list[Location]:
    """``get_locations`` has an unknown shape: accept a list of objects, a dict of objects
    keyed by id, or a plain ``{id: name}`` map."""
    out: dict[int, Location] = {}
    if isinstance(data, Mapping):
        items: list[tuple[object, object]] = list(data.items())
    elif isinstance(data, list):
        items = [(None, item) for item in data]
    else:
        items = []
    for key, item in items:
        if isinstance(item, Mapping):
            raw_id = _first(item, "location_id", "id", "locationid", "loc_id")
            location_id = _to_int(raw_id if raw_id is not None else key)
            name = _to_str(_first(item, "name", "location", "location_name", "city", "title"))
        else:
            location_id = _to_int(key)
            name = _to_str(item)
        if location_id is not None:
            out[location_id] = Location(location_id=location_id, name=name or str(location_id))
    return sorted(out.values(), key=lambda loc: loc.location_id)


def _first(item: Mapping[str, object], *keys: str) -> object:
    for key in keys:
        if item.get(key) not in (None, ""):
            return item[key]
    return None
