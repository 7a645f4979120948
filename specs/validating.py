"""Validating parsed spec data: every problem at once, each with file:line:column and a hint.

Two passes, both always run so that one mistake never hides another:

1. the Pydantic models (types, ranges, unknown fields, local consistency), whose errors are
   translated into ``SpecProblem``s pointing at the offending key or value;
2. cross-references and fleet-wide rules (a region naming an unknown plan, a pool drawing from
   an unknown region, a budget the minimum fleet already exceeds...). They read the raw data
   defensively, so they run even when pass 1 found problems elsewhere.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from specs.errors import SpecProblem
from specs.model import (
    NAME_PATTERN,
    WARMUP_PRESETS,
    CostsSpec,
    FleetSpec,
    PlanSpec,
    PoolSpec,
    RegionSpec,
    WarmupPhase,
    WarmupSafety,
)
from specs.parsing import FieldPath, Position, SourceMap, dotted, shown

_M = TypeVar("_M", bound=BaseModel)

_TYPE_MISMATCH = frozenset(
    {
        "int_type",
        "int_parsing",
        "int_from_float",
        "float_type",
        "float_parsing",
        "decimal_type",
        "decimal_parsing",
        "string_type",
        "bool_type",
        "bool_parsing",
        "dict_type",
        "model_type",
        "model_attributes_type",
        "list_type",
        "literal_error",
        "enum",
    }
)


@dataclass(slots=True)
class Findings:
    """What validation found: errors and (non-fatal) warnings."""

    errors: list[SpecProblem] = field(default_factory=list)
    warnings: list[SpecProblem] = field(default_factory=list)


def _count(number: int, word: str) -> str:
    return f"{number} {word}{'' if number == 1 else 's'}"


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, Decimal | int | float):
        text = str(value)
        return f"the number {text if len(text) <= 30 else text[:30] + '...'}"
    return f"{type(value).__name__} {shown(repr(value))}"


# --- walking the model alongside a pydantic error location -------------------------------


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _models_in(args: Iterable[Any]) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    for arg in map(_strip, args):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            found.append(arg)
    return found


def _model_at(path: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class whose fields live at ``path`` in a FleetSpec (None if not a model)."""
    current: Any = FleetSpec
    for part in path:
        current = _strip(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = info.annotation
            continue
        origin = typing.get_origin(current)
        args = typing.get_args(current)
        if origin in (dict, Mapping) and len(args) == 2:
            current = args[1]
        elif origin in (list, Sequence) and args:
            current = args[0]
        elif origin in (typing.Union, types.UnionType):
            models = _models_in(args)
            if len(models) != 1:
                return None
            info = models[0].model_fields.get(str(part))
            if info is None:
                return None
            current = info.annotation
        else:
            return None
    current = _strip(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    origin = typing.get_origin(current)
    if origin in (typing.Union, types.UnionType):
        models = _models_in(typing.get_args(current))
        if len(models) == 1:
            return models[0]
    return None


def _members(tp: Any) -> list[Any]:
    """The members of a union (``None`` left out), or ``[tp]``."""
    tp = _strip(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [_strip(a) for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _type_at(path: Sequence[str | int]) -> Any | None:
    """The declared type of the value at ``path`` in a FleetSpec (None: not a field)."""
    current: Any = FleetSpec
    for part in path:
        step: Any = None
        for member in _members(current):
            if isinstance(member, type) and issubclass(member, BaseModel):
                if isinstance(part, str) and part in member.model_fields:
                    step = member.model_fields[part].annotation
                    break
                continue
            origin = typing.get_origin(member)
            args = typing.get_args(member)
            if origin in (dict, Mapping) and len(args) == 2 and isinstance(part, str):
                step = args[1]
                break
            if origin in (list, Sequence) and args and isinstance(part, int):
                step = args[0]
                break
        if step is None:
            return None
        current = step
    return current


def _takes_bool(tp: Any) -> bool:
    return any(m is bool or m is Any for m in _members(tp))


def _numeric(tp: Any) -> bool:
    """int or float (which pydantic would read ``true`` into); Decimal refuses booleans."""
    return any(m in (int, float) for m in _members(tp))


@dataclass(slots=True)
class _Located:
    error: ErrorDetails
    path: FieldPath  # the data path (union member tags removed)
    union_at: FieldPath | None  # data path of the union this error came through
    tag: str | None
    key_error: bool
    missing_name: str | None


def _step(current: Any, part: str | int) -> tuple[bool, Any]:
    if isinstance(current, dict) and isinstance(part, str) and part in current:
        return True, current[part]
    if isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
        return True, current[part]
    return False, None


def _locate_error(error: ErrorDetails, data: Any) -> _Located:
    loc = list(error["loc"])
    path: list[str | int] = []
    union_at: FieldPath | None = None
    tag: str | None = None
    key_error = False
    missing_name: str | None = None
    current: Any = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if part == "[key]":
            key_error = True
            continue
        found, child = _step(current, part)
        if found:
            path.append(part)
            current = child
        elif last and error["type"] == "missing":
            missing_name = str(part)
        elif union_at is None and isinstance(part, str):
            union_at = tuple(path)
            tag = part
        else:
            path.append(part)
            current = None
    return _Located(error, tuple(path), union_at, tag, key_error, missing_name)


def _collapse_unions(located: list[_Located], data: Any) -> list[_Located]:
    """Keep, for each union (``nodes: int | {min, max}``), the errors of the member meant."""
    by_union: dict[FieldPath, dict[str, list[_Located]]] = {}
    result: list[_Located] = []
    for item in located:
        if item.union_at is None or item.tag is None:
            result.append(item)
        else:
            by_union.setdefault(item.union_at, {}).setdefault(item.tag, []).append(item)
    for union_path, groups in by_union.items():
        meaningful = {
            tag: items
            for tag, items in groups.items()
            if not all(
                i.error["type"] in _TYPE_MISMATCH and i.path == union_path and not i.missing_name
                for i in items
            )
        }
        if meaningful:
            for items in meaningful.values():
                result.extend(items)
            continue
        # every member refused the value's type: one error listing what was expected
        first = next(iter(groups.values()))[0]
        kinds = []
        for tag in groups:
            kinds.append(_kind_of_tag(tag))
        synthetic: ErrorDetails = {
            "type": "union_type",
            "loc": tuple(union_path),
            "msg": "expected " + " or ".join(dict.fromkeys(kinds)),
            "input": first.error["input"],
        }
        result.append(_Located(synthetic, union_path, None, None, False, None))
    return result


def _kind_of_tag(tag: str) -> str:
    lowered = tag.lower()
    if "int" in lowered and "[" not in lowered:
        return "a whole number"
    if "str" in lowered and "[" not in lowered:
        return "a string"
    if "float" in lowered or "decimal" in lowered:
        return "a number"
    return "a mapping"


# --- turning one pydantic error into words -----------------------------------------------

_NAME_HINT = "use lower-case letters, digits and dashes, starting with a letter"
#: a node's sequence number as the planner writes it: 001..999, then 1000...
_SEQ = r"(?:00[1-9]|0[1-9][0-9]|[1-9][0-9]{2,})"


def _suggest(word: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _choices_hint(word: str, choices: Sequence[str], what: str = "expected") -> str:
    suggestion = _suggest(word, choices)
    if suggestion is not None:
        return f"did you mean {suggestion!r}?"
    listed = ", ".join(choices)
    return f"{what}: {listed}" if listed else "none are defined"


def _parse_expected(text: str) -> list[str]:
    return re.findall(r"'([^']*)'", text)


def _words(item: _Located) -> tuple[str, str | None]:
    error = item.error
    kind = error["type"]
    value = error.get("input")
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "missing":
        return f"required field {item.missing_name!r} is missing", None
    if kind == "extra_forbidden":
        name = str(item.path[-1]) if item.path else "?"
        model = _model_at(item.path[:-1])
        allowed = sorted(model.model_fields) if model is not None else []
        return f"unknown field {name!r}", _choices_hint(name, allowed, "allowed fields")
    if kind in ("literal_error", "enum"):
        expected = _parse_expected(str(ctx.get("expected", "")))
        shown = ", ".join(repr(e) for e in expected)
        return (
            f"{_describe(value)} is not one of {shown}",
            _choices_hint(str(value), expected) if isinstance(value, str) else None,
        )
    if kind == "string_pattern_mismatch":
        if ctx.get("pattern") == NAME_PATTERN:
            suggestion = re.sub(r"[^a-z0-9-]+", "-", str(value).lower()).strip("-")
            name_hint = _NAME_HINT
            if suggestion and re.match(NAME_PATTERN, suggestion):
                name_hint += f", e.g. {suggestion!r}"
            return f"{_describe(value)} is not a valid name", name_hint
        return f"{_describe(value)} does not match the pattern {ctx.get('pattern')!r}", None
    if kind in ("value_error", "assertion_error"):
        message = str(error["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        hint: str | None = None
        if "expected a duration" in message:
            hint = "units: ms, s, m, h, d, w; combine like 1h30m"
        elif "greater than max" in message:
            hint = "min is the fewest nodes, max the most"
        return message, hint
    if kind == "union_type":
        return f"{error['msg']}, got {_describe(value)}", None
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = next(iter(ctx.values()), "?")
        words = {
            "greater_than_equal": "at least",
            "greater_than": "greater than",
            "less_than_equal": "at most",
            "less_than": "less than",
        }[kind]
        return f"must be {words} {bound}, got {value}", None
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {_describe(value)}", None
    if kind in ("float_type", "float_parsing", "finite_number"):
        return f"expected a number, got {_describe(value)}", None
    if kind in ("decimal_type", "decimal_parsing"):
        return f"expected an amount like 9.99, got {_describe(value)}", None
    if kind == "decimal_max_places":
        return (
            f"{value} has more than {ctx.get('decimal_places')} decimal places",
            "amounts are kept to 4 decimal places",
        )
    if kind in ("decimal_max_digits", "decimal_whole_digits"):
        return f"{value} has too many digits", None
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {_describe(value)}", None
    if kind == "string_type":
        quote: str | None = None
        if isinstance(value, bool) or value is None:
            quote = "YAML reads yes/no/on/off/true/false/null unquoted: put the value in quotes"
        elif isinstance(value, int | Decimal):
            quote = "put the value in quotes"
        return f"expected a string, got {_describe(value)}", quote
    if kind == "string_too_short":
        return "must not be empty", None
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters", None
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)", None
    if kind == "too_long":
        return f"has more than {ctx.get('max_length')} items", None
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {_describe(value)}", None
    if kind == "list_type":
        return f"expected a list, got {_describe(value)}", "write '[a, b]' or one '- item' per line"
    return str(error["msg"]), None


def _problem(item: _Located, source_map: SourceMap) -> SpecProblem:
    message, hint = _words(item)
    kind = item.error["type"]
    if item.missing_name is not None:
        position = source_map.key_position(item.path)
        field_path: FieldPath = (*item.path, item.missing_name)
    elif item.key_error or kind == "extra_forbidden":
        position = source_map.key_position(item.path)
        field_path = item.path
    else:
        position = source_map.value_position(item.path)
        field_path = item.path
    return SpecProblem(
        position.file, position.line, position.column, dotted(field_path), message, hint
    )


#: problems described in full (a report lists at most 100)
_DETAILED = 1000


def model_problems(data: Any, source_map: SourceMap) -> tuple[FleetSpec | None, list[SpecProblem]]:
    """Validate ``data`` against FleetSpec; problems point into the files."""
    try:
        return FleetSpec.model_validate(data), []
    except ValidationError as exc:
        located = [_locate_error(e, data) for e in exc.errors(include_url=False)]
        collapsed = _collapse_unions(located, data)
        # words and hints (did-you-mean) for the first problems; the rest, which no report
        # lists, are only located: 100,000 unknown keys must not cost a difflib each
        problems = [_problem(item, source_map) for item in collapsed[:_DETAILED]]
        for item in collapsed[_DETAILED:]:
            position = source_map.key_position(item.path)
            problems.append(
                SpecProblem(
                    position.file,
                    position.line,
                    position.column,
                    dotted(item.path),
                    str(item.error["msg"])[:200],
                )
            )
        return None, problems


# --- cross-references and fleet-wide rules -----------------------------------------------


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> list[tuple[int, str]]:
    if not isinstance(value, list):
        return []
    return [(i, v) for i, v in enumerate(value) if isinstance(v, str)]


def _valid(model: type[_M], raw: Any) -> _M | None:
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


class _Checker:
    def __init__(self, data: dict[str, Any], source_map: SourceMap) -> None:
        self.data = data
        self.source_map = source_map
        self.findings = Findings()

    def _add(
        self,
        into: list[SpecProblem],
        path: FieldPath,
        message: str,
        hint: str | None,
        at_key: bool,
    ) -> None:
        pos: Position = (
            self.source_map.key_position(path) if at_key else self.source_map.value_position(path)
        )
        into.append(SpecProblem(pos.file, pos.line, pos.column, dotted(path), message, hint))

    def error(
        self, path: FieldPath, message: str, hint: str | None = None, *, at_key: bool = False
    ) -> None:
        self._add(self.findings.errors, path, message, hint, at_key)

    def warn(
        self, path: FieldPath, message: str, hint: str | None = None, *, at_key: bool = False
    ) -> None:
        self._add(self.findings.warnings, path, message, hint, at_key)

    def run(self) -> Findings:
        data = self.data
        self.plans_raw = _mapping(data.get("plans"))
        self.regions_raw = _mapping(data.get("regions"))
        self.pools_raw = _mapping(data.get("ip_pools"))
        self.costs_raw = _mapping(data.get("costs"))
        self.contracts_raw = _mapping(self.costs_raw.get("contracts"))
        self.schedules_raw = _mapping(_mapping(data.get("warmup")).get("schedules"))
        self.plans = {
            name: plan
            for name, raw in self.plans_raw.items()
            if (plan := _valid(PlanSpec, raw)) is not None
        }
        metadata_name = _mapping(data.get("metadata")).get("name")
        self.fleet_name = metadata_name if isinstance(metadata_name, str) else None
        self.check_regions()
        self.check_pools()
        self.check_contracts()
        self.check_schedules()
        self.check_protected()
        self.check_not_supported()
        self.check_booleans(self.data, ())
        self.check_competing_pools()
        self.check_budget()
        self.check_provider()
        return self.findings

    def plan_ref(self, path: FieldPath, name: str) -> bool:
        if name in self.plans_raw:
            return True
        self.error(
            path, f"unknown plan {name!r}", _choices_hint(name, list(self.plans_raw), "plans")
        )
        return False

    def check_regions(self) -> None:
        for region_name, raw in self.regions_raw.items():
            region = _mapping(raw)
            base = ("regions", region_name)
            plan_name = region.get("plan")
            if isinstance(plan_name, str) and self.plan_ref((*base, "plan"), plan_name):
                plan = self.plans.get(plan_name)
                if (
                    plan is not None
                    and not plan.production_ready
                    and region.get("allow_small_plans") is not True
                ):
                    self.warn(
                        (*base, "plan"),
                        f"plan {plan_name!r} is marked production_ready: false",
                        "use a production plan, or set allow_small_plans: true on the region",
                    )
            previous = self.plans.get(plan_name) if isinstance(plan_name, str) else None
            seen: set[str] = set()
            for index, name in _strings(region.get("vertical_plans")):
                path = (*base, "vertical_plans", index)
                if name in seen:
                    self.error(path, f"plan {name!r} is listed twice")
                seen.add(name)
                if not self.plan_ref(path, name):
                    continue
                plan = self.plans.get(name)
                if (
                    plan is not None
                    and previous is not None
                    and (plan.vcpu < previous.vcpu or plan.ram_gb < previous.ram_gb)
                ):
                    self.warn(
                        path,
                        f"plan {name!r} is smaller than the plan before it",
                        "list vertical_plans from the smallest to the largest",
                    )
                if plan is not None:
                    previous = plan

    def region_max_nodes(self, name: str) -> int | None:
        region = _valid(RegionSpec, self.regions_raw.get(name))
        return None if region is None else region.max_nodes

    def check_pools(self) -> None:
        costs = _valid(CostsSpec, self.costs_raw) if self.costs_raw else CostsSpec()
        ips_per_node = costs.ips_per_node if costs is not None else None
        schedule_names = sorted({*WARMUP_PRESETS, *self.schedules_raw})
        for pool_name, raw in self.pools_raw.items():
            pool = _mapping(raw)
            base = ("ip_pools", pool_name)
            capacity: int | None = 0
            seen: set[str] = set()
            for index, region_name in _strings(pool.get("regions")):
                path = (*base, "regions", index)
                if region_name in seen:
                    self.error(path, f"region {region_name!r} is listed twice")
                    continue
                seen.add(region_name)
                if region_name not in self.regions_raw:
                    self.error(
                        path,
                        f"unknown region {region_name!r}",
                        _choices_hint(region_name, list(self.regions_raw), "regions"),
                    )
                    capacity = None
                    continue
                most = self.region_max_nodes(region_name)
                capacity = None if most is None or capacity is None else capacity + most
            warmup = pool.get("warmup")
            if isinstance(warmup, str) and warmup not in schedule_names:
                self.error(
                    (*base, "warmup"),
                    f"unknown warmup schedule {warmup!r}",
                    _choices_hint(warmup, schedule_names, "schedules"),
                )
            contract = pool.get("contract")
            if isinstance(contract, str) and contract not in self.contracts_raw:
                self.error(
                    (*base, "contract"),
                    f"unknown contract {contract!r}",
                    _choices_hint(contract, list(self.contracts_raw), "costs.contracts"),
                )
            size = pool.get("size")
            if (
                isinstance(size, int)
                and not isinstance(size, bool)
                and capacity is not None
                and ips_per_node is not None
                and seen
                and pool.get("status", "active") == "active"
                and size > capacity * ips_per_node
            ):
                self.error(
                    (*base, "size"),
                    f"the pool needs {size} IPs but its regions provide at most "
                    f"{capacity * ips_per_node} ({_count(capacity, 'node')} x "
                    f"{_count(ips_per_node, 'IP')} per node)",
                    "raise the regions' maximum node counts or lower the pool size",
                )

    def check_contracts(self) -> None:
        for contract_name, raw in self.contracts_raw.items():
            for plan_name in _mapping(_mapping(raw).get("plan_prices")):
                self.plan_ref(
                    ("costs", "contracts", contract_name, "plan_prices", plan_name), plan_name
                )

    def check_schedules(self) -> None:
        for name, raw in self.schedules_raw.items():
            base = ("warmup", "schedules", name)
            if name in WARMUP_PRESETS:
                self.warn(
                    base,
                    f"this schedule replaces the built-in preset {name!r}",
                    "give a custom schedule its own name",
                    at_key=True,
                )
            schedule = _mapping(raw)
            safety = _valid(WarmupSafety, schedule.get("safety") or {})
            most = safety.max_daily_increase if safety is not None else None
            phases_raw = schedule.get("phases")
            if not isinstance(phases_raw, list):
                continue
            previous: WarmupPhase | None = None
            for index, phase_raw in enumerate(phases_raw):
                phase = _valid(WarmupPhase, phase_raw)
                path = (*base, "phases", index)
                if phase is None:
                    previous = None
                    continue
                if phase.end < phase.start:
                    self.error(
                        (*path, "end"),
                        f"the ramp decreases: days {phase.days} go from {phase.start} down to "
                        f"{phase.end} emails/day",
                        "a warmup only rises; end >= start",
                    )
                if previous is not None and phase.start < previous.end:
                    self.error(
                        (*path, "start"),
                        f"the ramp decreases: phase {index} starts at {phase.start} "
                        f"emails/day, below the {previous.end} the phase before ended at",
                        "each phase starts at or above the end of the one before",
                    )
                if most is not None:
                    span = phase.last_day - phase.first_day
                    step = (phase.end - phase.start) / span if span > 0 else 0
                    if step > most:
                        self.warn(
                            path,
                            f"days {phase.days} rise by {step:,.0f} emails/day each day, above "
                            f"safety.max_daily_increase ({most:,})",
                            "the daily limit is capped, so this ramp takes longer than "
                            "written; lower the ramp or raise max_daily_increase",
                        )
                    jump = phase.start - previous.end if previous is not None else 0
                    if jump > most:
                        self.warn(
                            (*path, "start"),
                            f"phase {index} starts {jump:,} emails/day above the phase "
                            f"before, above safety.max_daily_increase ({most:,})",
                            "the daily limit is capped, so this ramp takes longer than written",
                        )
                previous = phase

    def check_protected(self) -> None:
        """Protection lists name full node names that can exist: ``<fleet>-<region>-<NNN>``
        (as the planner names nodes: ``demo-seattle-001``), in the region of the list."""
        if self.fleet_name is None:
            return
        prefix = f"{self.fleet_name}-"
        lists: list[tuple[FieldPath, Any, str | None]] = [
            (
                ("disruption", "protected"),
                _mapping(self.data.get("disruption")).get("protected"),
                None,
            )
        ]
        for region_name, raw in self.regions_raw.items():
            lists.append(
                (("regions", region_name, "protected"), _mapping(raw).get("protected"), region_name)
            )
        full = re.compile(rf"{re.escape(prefix)}(?P<region>[a-z][a-z0-9-]*?)-(?P<seq>{_SEQ})")
        loose = re.compile(rf"{re.escape(prefix)}(?P<region>[a-z][a-z0-9-]*?)-(?P<seq>\d+)")
        for base, values, own in lists:
            for index, name in _strings(values):
                path = (*base, index)
                example = f"{prefix}{own or next(iter(self.regions_raw), 'seattle')}-001"
                if not name.startswith(prefix):
                    self.error(
                        path,
                        f"{name!r} is not a node of this fleet",
                        f"node names start with the fleet name: {prefix}<region>-<NNN>, "
                        f"e.g. {example}",
                    )
                    continue
                match = full.fullmatch(name)
                if match is None:
                    near = loose.fullmatch(name)
                    hint = f"nodes are named {prefix}<region>-<NNN>, e.g. {example}"
                    if near is not None and int(near["seq"]) >= 1:
                        hint = f"did you mean '{prefix}{near['region']}-{int(near['seq']):03d}'?"
                    self.error(
                        path,
                        f"{name!r} is not a full node name: it protects nothing",
                        hint,
                    )
                    continue
                region = match["region"]
                if own is not None and region != own:
                    self.error(
                        path,
                        f"{name!r} is a node of region {region!r}, not of {own!r}",
                        f"list it under regions.{region}.protected or disruption.protected",
                    )
                elif region not in self.regions_raw:
                    self.warn(
                        path,
                        f"{name!r}: there is no region {region!r} in the spec",
                        "it protects only a node already recorded in the store",
                    )

    def check_not_supported(self) -> None:
        """Fields the schema documents that nothing reads yet are refused when written, so a
        spec never says something the tool does not do (``NOT_YET_SUPPORTED``)."""
        for pattern, (why, allowed) in NOT_YET_SUPPORTED.items():
            for path, value in _matches(self.data, pattern):
                if allowed is not None and value == allowed:
                    continue
                self.error(path, f"not yet supported: {why}", "remove it", at_key=True)

    def check_booleans(self, value: Any, path: FieldPath) -> None:
        """``nodes: off`` / ``nodes: yes`` are YAML booleans, not counts: a boolean where a
        number is expected is an error (pydantic would read it as 0 or 1)."""
        if isinstance(value, bool):
            if not path:
                return
            declared = _type_at(path)
            if declared is not None and _numeric(declared) and not _takes_bool(declared):
                self.error(
                    path,
                    f"expected a number, got the boolean {str(value).lower()}",
                    "YAML reads yes/no/on/off/true/false unquoted as booleans; write a number",
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                self.check_booleans(item, (*path, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.check_booleans(item, (*path, index))

    def _ips_per_node(self) -> int | None:
        costs = _valid(CostsSpec, self.costs_raw) if self.costs_raw else CostsSpec()
        return costs.ips_per_node if costs is not None else None

    def check_competing_pools(self) -> None:
        """Pools that draw from the same regions share those regions' nodes (a node serves
        one pool): together they may not need more IPs than their regions can provide
        (Hall's condition over every group of pools)."""
        ips = self._ips_per_node()
        if ips is None:
            return
        pools: list[tuple[str, int, frozenset[str]]] = []
        for name, raw in self.pools_raw.items():
            pool = _valid(PoolSpec, raw)
            if pool is None or pool.status.value != "active" or pool.size == 0:
                continue
            if any(region not in self.regions_raw for region in pool.regions):
                continue
            pools.append((name, pool.size, frozenset(pool.regions)))
        capacity: dict[str, int] = {}
        for region in {r for _, _, regions in pools for r in regions}:
            most = self.region_max_nodes(region)
            if most is None:
                return
            capacity[region] = most * ips
        groups: list[list[tuple[str, int, frozenset[str]]]] = []
        if len(pools) <= 12:
            for mask in range(1, 1 << len(pools)):
                group = [pools[i] for i in range(len(pools)) if mask >> i & 1]
                if len(group) >= 2:
                    groups.append(group)
            groups.sort(key=len)
        else:  # too many pools to try every group: the whole of each set sharing regions
            groups = [pools]
        for group in groups:
            regions = frozenset().union(*(g[2] for g in group))
            if len(regions) == sum(len(g[2]) for g in group):
                continue  # no region shared: each pool was checked on its own
            need = sum(g[1] for g in group)
            have = sum(capacity[r] for r in regions)
            if need > have:
                names = ", ".join(g[0] for g in group)
                last = group[-1][0]
                self.error(
                    ("ip_pools", last, "size"),
                    f"pools {names} compete for the nodes of {', '.join(sorted(regions))}: "
                    f"together they need {need} IPs, those regions provide at most {have}",
                    "a node serves one pool: lower the pool sizes or raise the regions' "
                    "maximum node counts",
                )
                return

    def _fleet_cost(self, costs: CostsSpec, size: str) -> Decimal | None:
        """Monthly cost of the fleet at its minimum or maximum size, priced as the planner
        prices it: each new node joins the first active pool of its region with room (in
        spec order), and a pool's own IP price or its contract's IP and plan prices apply
        (``reconciler.core.costs`` without the store's overrides). None: values missing."""
        pools: list[tuple[str, PoolSpec]] = []
        for name, raw in self.pools_raw.items():
            pool = _valid(PoolSpec, raw)
            if pool is None:
                return None
            pools.append((name, pool))
        filled: dict[str, int] = dict.fromkeys(self.pools_raw, 0)
        total = Decimal(0)
        for region_name, raw in self.regions_raw.items():
            region = _valid(RegionSpec, raw)
            if region is None:
                return None
            plan = self.plans.get(region.plan)
            if plan is None:
                return None
            count = region.min_nodes if size == "min" else region.max_nodes
            for _ in range(count):
                chosen: PoolSpec | None = None
                for name, pool in pools:
                    if (
                        pool.status.value == "active"
                        and region_name in pool.regions
                        and filled[name] < pool.size
                    ):
                        chosen = pool
                        filled[name] += costs.ips_per_node
                        break
                contract = (
                    costs.contracts.get(chosen.contract)
                    if chosen is not None and chosen.contract is not None
                    else None
                )
                plan_price = plan.monthly_price
                if contract is not None and region.plan in contract.plan_prices:
                    plan_price = contract.plan_prices[region.plan]
                ip_price = costs.ip_monthly_price
                if chosen is not None and chosen.ip_monthly_price is not None:
                    ip_price = chosen.ip_monthly_price
                elif contract is not None and contract.ip_monthly_price is not None:
                    ip_price = contract.ip_monthly_price
                total += plan_price + ip_price * costs.ips_per_node
        return total

    def check_budget(self) -> None:
        budget_raw = self.costs_raw.get("monthly_budget")
        if budget_raw is None:
            return
        costs = _valid(CostsSpec, self.costs_raw)
        if costs is None or costs.monthly_budget is None:
            return
        minimum = self._fleet_cost(costs, "min")
        maximum = self._fleet_cost(costs, "max")
        if minimum is None or maximum is None:
            return
        budget = costs.monthly_budget
        priced = (
            " (pool and contract prices included)"
            if any(
                isinstance(p, dict) and (p.get("ip_monthly_price") or p.get("contract"))
                for p in self.pools_raw.values()
            )
            else ""
        )
        if minimum > budget:
            self.error(
                ("costs", "monthly_budget"),
                f"the declared minimum fleet already costs {minimum:.2f} {costs.currency}/month"
                f"{priced}, over the budget of {budget:.2f}",
                "raise the budget or lower the regions' minimum node counts",
            )
        elif maximum > budget:
            self.warn(
                ("costs", "monthly_budget"),
                f"at its maximum size the fleet would cost {maximum:.2f} {costs.currency}/month"
                f"{priced}, over the budget of {budget:.2f}",
                "autoscaling will stop at the budget",
            )

    def check_provider(self) -> None:
        provider = _mapping(self.data.get("provider"))
        endpoint = provider.get("endpoint")
        if (
            provider.get("type") == "hostwinds"
            and isinstance(endpoint, str)
            and endpoint.startswith("http://")
        ):
            self.warn(
                ("provider", "endpoint"),
                "the API key would travel unencrypted over plain http",
                "use an https:// endpoint",
            )
        webhook = _mapping(self.data.get("alerts")).get("webhook")
        if isinstance(webhook, str) and not webhook.startswith(("https://", "http://")):
            self.error(("alerts", "webhook"), f"{webhook!r} is not an http(s) URL")


#: Documented fields that nothing reads yet: refused when written (with the one value that
#: says what the tool does anyway, if any). ``*`` matches any name.
NOT_YET_SUPPORTED: dict[FieldPath, tuple[str, Any]] = {
    ("costs", "hours_per_month"): (
        "nothing prices hourly billing yet (plans are priced per month)",
        None,
    ),
    ("costs", "ips_per_node"): (
        "a node carries one dedicated IP; extra IPs are never ordered (Hostwinds documents "
        "no action to buy them), so only 1 is accepted",
        1,
    ),
    ("ip_pools", "*", "kind"): ("a pool's kind changes nothing yet", None),
}


def _matches(data: Any, pattern: FieldPath) -> list[tuple[FieldPath, Any]]:
    """(path, value) of every key of ``data`` that ``pattern`` names (``*``: any name)."""
    found: list[tuple[FieldPath, Any]] = []
    level: list[tuple[FieldPath, Any]] = [((), data)]
    for part in pattern:
        following: list[tuple[FieldPath, Any]] = []
        for path, node in level:
            if not isinstance(node, dict):
                continue
            keys = list(node) if part == "*" else [part] if part in node else []
            following.extend(((*path, key), node[key]) for key in keys)
        level = following
    found.extend(level)
    return found


def semantic_findings(data: Any, source_map: SourceMap) -> Findings:
    """Cross-references and fleet-wide rules, on raw data (runs even if the models failed)."""
    if not isinstance(data, dict):
        return Findings()
    return _Checker(data, source_map).run()


def validate_data(data: Any, source_map: SourceMap) -> tuple[FleetSpec | None, Findings]:
    """Both passes; the spec is returned only when there is no error at all."""
    spec, problems = model_problems(data, source_map)
    findings = semantic_findings(data, source_map)
    findings.errors = problems + findings.errors
    return (spec if not findings.errors else None), findings
