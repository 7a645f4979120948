"""The plan as a versioned JSON document (``format_version`` 2), and back.

The format is documented in docs/planning.md. Money is a string holding a decimal
(``"14.98"``), never a float; times are ISO 8601. ``plan_from_document`` is the exact inverse
of ``plan_to_document`` (``reconcile --plan FILE`` applies a saved plan). Version 2 carries
each change's typed control data (what the engine executes); version 1 documents (display
maps only) are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reconciler.core.errors import UserError
from reconciler.core.fleet import NodeStatus
from reconciler.core.plans import (
    Action,
    AppliedConstant,
    Change,
    GuardWarning,
    Plan,
    PlanSummary,
    Resolution,
    UnmanagedServer,
)

FORMAT_VERSION = 2
_DECIMAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class PlanDocumentError(UserError):
    """A plan document that cannot be read (wrong version, missing or malformed fields)."""

    hint = "produce a fresh one with `reconcile --dry-run --out PLANFILE`"


# --- the wire models (a boundary: pydantic) ----------------------------------------------


def _decimal(value: object) -> Decimal:
    if not isinstance(value, str) or not _DECIMAL.match(value.strip()):
        raise ValueError(f'expected a decimal number as a string (e.g. "14.98"), got {value!r}')
    try:
        return Decimal(value.strip())
    except InvalidOperation as exc:  # pragma: no cover - the pattern rules this out
        raise ValueError(f"not a decimal number: {value!r}") from exc


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ChangeDoc(_Doc):
    action: Action
    address: Annotated[str, Field(min_length=1)]
    region: str
    reason: str
    before: dict[str, str] | None = None
    after: dict[str, str] | None = None
    monthly_cost_delta: str = "0.00"
    service_id: int | None = None
    plan: str | None = None
    pool: str | None = None
    location_id: int | None = None
    drift: bool = False
    status: NodeStatus | None = None
    intent_ids: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    resolution: Resolution | None = None
    grace_until: str | None = None
    rid: int | None = None
    step: str | None = None
    hostname: str | None = None
    ip: str | None = None

    @field_validator("monthly_cost_delta")
    @classmethod
    def _money(cls, value: str) -> str:
        _decimal(value)
        return value

    @field_validator("grace_until")
    @classmethod
    def _iso_time(cls, value: str | None) -> str | None:
        if value is not None:
            datetime.fromisoformat(value)  # ValueError names the problem
        return value


class _WarningDoc(_Doc):
    guard: str
    message: str
    blocking: bool = False
    hint: str | None = None


class _UnmanagedDoc(_Doc):
    service_id: int
    name: str
    location_id: int


class _ConstantDoc(_Doc):
    key: str
    value: str
    source: str

    @field_validator("value")
    @classmethod
    def _money(cls, value: str) -> str:
        _decimal(value)
        return value


class _SummaryDoc(_Doc):
    counts: dict[str, int]
    node_count_before: int = 0
    node_count_after: int = 0
    monthly_cost_before: str
    monthly_cost_after: str
    monthly_cost_delta: str | None = None  # informative; recomputed on load
    monthly_budget: str | None = None
    constants: list[_ConstantDoc] = Field(default_factory=list)

    @field_validator("monthly_cost_before", "monthly_cost_after", "monthly_cost_delta")
    @classmethod
    def _money(cls, value: str | None) -> str | None:
        if value is not None:
            _decimal(value)
        return value

    @field_validator("monthly_budget")
    @classmethod
    def _budget(cls, value: str | None) -> str | None:
        if value is not None:
            _decimal(value)
        return value

    @field_validator("counts")
    @classmethod
    def _known_actions(cls, value: dict[str, int]) -> dict[str, int]:
        known = {a.value for a in Action}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown action(s) {', '.join(unknown)}")
        return value


class _PlanDoc(_Doc):
    format_version: Literal[2]
    fleet: Annotated[str, Field(min_length=1)]
    generated_at: str | None = None
    spec_hash: str = ""
    fingerprint: str | None = None
    changes: list[_ChangeDoc]
    warnings: list[_WarningDoc] = Field(default_factory=list)
    unmanaged: list[_UnmanagedDoc] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    summary: _SummaryDoc
    #: where the spec the plan was made from lives (``--out``), so ``--plan`` finds it
    spec_paths: list[str] = Field(default_factory=list)
    #: the state folder (SQLite database, simulator account) the plan was made against, when
    #: no database URL was set, so that ``--plan`` run elsewhere uses the same state
    state_dir: str | None = None

    @field_validator("generated_at")
    @classmethod
    def _iso_time(cls, value: str | None) -> str | None:
        if value is not None:
            datetime.fromisoformat(value)  # ValueError names the problem
        return value


# --- plan -> document --------------------------------------------------------------------


def _money(value: Decimal) -> str:
    return str(value)


def change_to_document(change: Change) -> dict[str, Any]:
    return {
        "action": change.action.value,
        "address": change.address,
        "region": change.region,
        "before": dict(change.before) if change.before is not None else None,
        "after": dict(change.after) if change.after is not None else None,
        "monthly_cost_delta": _money(change.monthly_cost_delta),
        "reason": change.reason,
        "service_id": change.service_id,
        "plan": change.plan,
        "pool": change.pool,
        "location_id": change.location_id,
        "drift": change.drift,
        "status": change.status.value if change.status is not None else None,
        "intent_ids": list(change.intent_ids),
        "resolution": change.resolution.value if change.resolution is not None else None,
        "grace_until": change.grace_until.isoformat() if change.grace_until else None,
        "rid": change.rid,
        "step": change.step,
        "hostname": change.hostname,
        "ip": change.ip,
    }


def plan_to_document(
    plan: Plan,
    *,
    fingerprint: str | None = None,
    spec_paths: Sequence[str] = (),
    state_dir: str | None = None,
) -> dict[str, Any]:
    """The plan as a JSON-able dict (``json.dumps`` works as is). ``spec_paths`` and
    ``state_dir`` (a saved plan) record where its spec and its state live, so that ``--plan``
    can find them."""
    document = _plan_document(plan, fingerprint)
    if spec_paths:
        document["spec_paths"] = list(spec_paths)
    if state_dir:
        document["state_dir"] = state_dir
    return document


def state_dir_of(doc: Mapping[str, Any]) -> str | None:
    """The state folder a saved plan document names (None when it names none)."""
    value = doc.get("state_dir") if isinstance(doc, Mapping) else None
    if not isinstance(value, str) or not value or len(value) >= 4096 or "\x00" in value:
        return None
    return value


def spec_paths_of(doc: Mapping[str, Any]) -> list[str]:
    """The spec paths a saved plan document names (empty when it names none)."""
    paths = doc.get("spec_paths") if isinstance(doc, Mapping) else None
    if not isinstance(paths, list):
        return []
    return [p for p in paths if isinstance(p, str) and p and len(p) < 4096][:100]


def _plan_document(plan: Plan, fingerprint: str | None) -> dict[str, Any]:
    s = plan.summary
    return {
        "format_version": FORMAT_VERSION,
        "fleet": plan.fleet,
        "generated_at": plan.generated_at.isoformat() if plan.generated_at else None,
        "spec_hash": plan.spec_hash,
        "fingerprint": fingerprint,
        "changes": [change_to_document(c) for c in plan.changes],
        "warnings": [
            {"guard": w.guard, "message": w.message, "blocking": w.blocking, "hint": w.hint}
            for w in plan.warnings
        ],
        "unmanaged": [
            {"service_id": u.service_id, "name": u.name, "location_id": u.location_id}
            for u in plan.unmanaged
        ],
        "notes": list(plan.notes),
        "summary": {
            "counts": dict(s.counts),
            "node_count_before": s.node_count_before,
            "node_count_after": s.node_count_after,
            "monthly_cost_before": _money(s.monthly_cost_before),
            "monthly_cost_after": _money(s.monthly_cost_after),
            "monthly_cost_delta": _money(s.monthly_cost_delta),
            "monthly_budget": _money(s.monthly_budget) if s.monthly_budget is not None else None,
            "constants": [
                {"key": c.key, "value": _money(c.value), "source": c.source} for c in s.constants
            ],
        },
    }


# --- document -> plan --------------------------------------------------------------------


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors()[:10]:
        where = ".".join(str(part) for part in item["loc"]) or "(document)"
        problems.append(f"{where}: {item['msg']}")
    more = error.error_count() - len(problems)
    if more > 0:
        problems.append(f"... and {more} more problem(s)")
    return "; ".join(problems)


def plan_from_document(doc: Mapping[str, Any]) -> tuple[Plan, str | None]:
    """Read a document made by :func:`plan_to_document`: ``(plan, fingerprint)``.

    Raises :class:`PlanDocumentError` (a ``UserError``) naming the first problems found.
    """
    if not isinstance(doc, Mapping):
        raise PlanDocumentError(
            f"not a plan document: expected a JSON object, got {type(doc).__name__}"
        )
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise PlanDocumentError(
            f"unsupported plan format_version {version!r}: this reconciler reads version "
            f"{FORMAT_VERSION}"
        )
    try:
        parsed = _PlanDoc.model_validate(dict(doc))
    except ValidationError as exc:
        raise PlanDocumentError(f"invalid plan document: {_describe(exc)}") from None
    s = parsed.summary
    summary = PlanSummary(
        counts=dict(s.counts),
        monthly_cost_before=_decimal(s.monthly_cost_before),
        monthly_cost_after=_decimal(s.monthly_cost_after),
        constants=tuple(AppliedConstant(c.key, _decimal(c.value), c.source) for c in s.constants),
        node_count_before=s.node_count_before,
        node_count_after=s.node_count_after,
        monthly_budget=_decimal(s.monthly_budget) if s.monthly_budget is not None else None,
    )
    changes = tuple(
        Change(
            action=c.action,
            address=c.address,
            region=c.region,
            reason=c.reason,
            before=dict(c.before) if c.before is not None else None,
            after=dict(c.after) if c.after is not None else None,
            monthly_cost_delta=_decimal(c.monthly_cost_delta),
            service_id=c.service_id,
            plan=c.plan,
            pool=c.pool,
            location_id=c.location_id,
            drift=c.drift,
            status=c.status,
            intent_ids=tuple(c.intent_ids),
            resolution=c.resolution,
            grace_until=datetime.fromisoformat(c.grace_until) if c.grace_until else None,
            rid=c.rid,
            step=c.step,
            hostname=c.hostname,
            ip=c.ip,
        )
        for c in parsed.changes
    )
    plan = Plan(
        fleet=parsed.fleet,
        changes=changes,
        summary=summary,
        warnings=tuple(
            GuardWarning(w.guard, w.message, w.blocking, w.hint) for w in parsed.warnings
        ),
        unmanaged=tuple(
            UnmanagedServer(u.service_id, u.name, u.location_id) for u in parsed.unmanaged
        ),
        spec_hash=parsed.spec_hash,
        generated_at=(datetime.fromisoformat(parsed.generated_at) if parsed.generated_at else None),
        notes=tuple(parsed.notes),
    )
    return plan, parsed.fingerprint
