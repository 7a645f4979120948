"""Golden tests for the three plan renderings, and properties of the JSON document and the
Markdown size limit. Regenerate the golden files with ``UPDATE_GOLDEN=1 pytest tests/views``."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.errors import UserError
from reconciler.core.fleet import CostConstant, NodeStatus, ServerStatus
from reconciler.core.planning import PlanOptions, plan
from reconciler.core.plans import (
    Action,
    AppliedConstant,
    Change,
    GuardWarning,
    Plan,
    PlanSummary,
    UnmanagedServer,
)
from reconciler.views.documents import PlanDocumentError, plan_from_document, plan_to_document
from reconciler.views.human import render_plan
from reconciler.views.markdown import render_markdown
from tests.core.factories import NOW, intent, make_spec, node, pair, server, world

GOLDEN = Path(__file__).parent / "golden"


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden file {path}; run with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


# --- representative plans ----------------------------------------------------------------


def steady_plan() -> Plan:
    a, b = pair("acme-dallas-001", 101), pair("acme-dallas-002", 102)
    return plan(make_spec({"dallas": 2}), *world([a[0], b[0]], [a[1], b[1]]), NOW)


def mixed_plan() -> Plan:
    spec = make_spec(
        {"dallas": 3, "seattle": {"plan": "baseline", "nodes": {"min": 1, "max": 3}}},
        pools={"shared": {"size": 10, "regions": ["dallas", "seattle"]}},
        costs={"ip_monthly_price": "4.99", "monthly_budget": "500"},
    )
    small = [pair(f"acme-seattle-00{i}", 300 + i, plan="small", pool="shared") for i in (1, 2)]
    servers = [
        server("acme-dallas-001", 101, ip="203.0.113.9"),  # IP changed behind our back
        server("acme-dallas-004", 104, plan="small"),  # unrecorded: adopt
        server("acme-dallas-003", 103, status=ServerStatus.ERROR),
        server("web-1", 7),
        server("db", 8),
        *(s for s, _ in small),
    ]
    nodes = [
        node("acme-dallas-001", 101, pool="shared"),
        node("acme-dallas-002", 102, pool="shared"),  # deleted behind our back
        node("acme-dallas-003", 103, status=NodeStatus.PROVISIONING, rdns_done=False),
        *(n for _, n in small),
    ]
    overrides = (
        CostConstant(
            "ip_monthly_price",
            "pool:shared",
            Decimal("4.49"),
            "finance",
            datetime(2026, 10, 1, tzinfo=UTC),
        ),
    )
    observed, recorded = world(
        servers, nodes, [intent(9, "acme-seattle-003")], cost_overrides=overrides
    )
    return plan(
        spec,
        observed,
        recorded,
        NOW,
        PlanOptions(
            spec_hash="5f1c0ffee0123456789abcdef",
            desired_counts={"seattle": 3},
            notes=("seattle: 2 -> 3 nodes, utilization 0.86 >= 0.80",),
        ),
    )


def refused_plan() -> Plan:
    keep = pair("acme-dallas-001", 101)
    gone = [pair(f"acme-paris-00{i}", 200 + i) for i in (1, 2)]
    return plan(
        make_spec({"dallas": 1}),
        *world([keep[0], *(s for s, _ in gone)], [keep[1], *(n for _, n in gone)]),
        NOW,
        PlanOptions(spec_hash="abc"),
    )


PLANS = {"steady": steady_plan, "mixed": mixed_plan, "refused": refused_plan}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_text_golden(name: str) -> None:
    golden(f"{name}.txt", render_plan(PLANS[name]()))


def test_text_color_golden() -> None:
    text = render_plan(mixed_plan(), color=True)
    assert "\x1b[32m+ acme-dallas-005" in text
    golden("mixed.color.txt", text)


@pytest.mark.parametrize("name", sorted(PLANS))
def test_json_golden(name: str) -> None:
    doc = plan_to_document(PLANS[name](), fingerprint="fp-" + name)
    golden(f"{name}.json", json.dumps(doc, indent=2) + "\n")


@pytest.mark.parametrize("name", sorted(PLANS))
def test_markdown_golden(name: str) -> None:
    golden(f"{name}.md", render_markdown(PLANS[name]()))


def test_empty_plan_is_one_line() -> None:
    text = render_plan(steady_plan())
    assert text == "No changes. Fleet acme matches the spec (2 nodes, $29.96/month).\n"


def test_text_shows_what_the_issue_asks_for() -> None:
    text = render_plan(mixed_plan())
    assert "# dallas" in text
    assert "+ acme-dallas-005  create  plan=baseline pool=shared location=13" in text
    assert "(dallas: 2 nodes, spec wants 3)" in text
    assert "> acme-dallas-004  adopt" in text
    assert "unmanaged (never touched): db (#8), web-1 (#7)" in text
    assert "Plan: 1 to create, 2 to resize, 1 to destroy, 1 to adopt, 1 to forget" in text
    assert "Monthly cost: $" in text
    assert "ip_monthly_price=4.49 (store:pool:shared" in text
    refused = render_plan(refused_plan())
    assert "REFUSED [mass_delete]" in refused
    assert "hint: re-run with --allow-mass-destroy if this is intended" in refused


# --- the JSON document -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PLANS))
def test_document_round_trips(name: str) -> None:
    original = PLANS[name]()
    doc = json.loads(json.dumps(plan_to_document(original, fingerprint="fp")))
    assert plan_from_document(doc) == (original, "fp")


texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
names = st.from_regex(r"\Aacme-[a-z]{1,8}-[0-9]{3}\Z")
money = st.decimals(min_value=-10_000, max_value=10_000, places=2, allow_nan=False)
small_maps = st.none() | st.dictionaries(texts, texts, max_size=3)

changes = st.builds(
    Change,
    action=st.sampled_from(list(Action)),
    address=names,
    region=st.sampled_from(["dallas", "seattle"]),
    reason=texts,
    before=small_maps,
    after=small_maps,
    monthly_cost_delta=money,
    service_id=st.none() | st.integers(1, 10**9),
    plan=st.none() | texts,
    pool=st.none() | texts,
    location_id=st.none() | st.integers(1, 99),
    drift=st.booleans(),
)
summaries = st.builds(
    PlanSummary,
    counts=st.dictionaries(st.sampled_from([a.value for a in Action]), st.integers(0, 10**5)),
    monthly_cost_before=money,
    monthly_cost_after=money,
    constants=st.lists(
        st.builds(AppliedConstant, key=texts, value=money, source=texts), max_size=3
    ).map(tuple),
    node_count_before=st.integers(0, 10**5),
    node_count_after=st.integers(0, 10**5),
    monthly_budget=st.none() | money,
)
plans = st.builds(
    Plan,
    fleet=st.from_regex(r"\A[a-z][a-z0-9]{0,10}\Z"),
    changes=st.lists(changes, max_size=8).map(tuple),
    summary=summaries,
    warnings=st.lists(
        st.builds(
            GuardWarning, guard=texts, message=texts, blocking=st.booleans(), hint=st.none() | texts
        ),
        max_size=3,
    ).map(tuple),
    unmanaged=st.lists(
        st.builds(
            UnmanagedServer,
            service_id=st.integers(1, 10**9),
            name=texts,
            location_id=st.integers(1, 99),
        ),
        max_size=3,
    ).map(tuple),
    spec_hash=texts,
    generated_at=st.none()
    | st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]))
    | st.datetimes(),
    notes=st.lists(texts, max_size=3).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(p=plans, fingerprint=st.none() | texts)
def test_any_plan_round_trips_through_json(p: Plan, fingerprint: str | None) -> None:
    text = json.dumps(plan_to_document(p, fingerprint=fingerprint))
    assert plan_from_document(json.loads(text)) == (p, fingerprint)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format_version=1), "unsupported plan format_version 1"),
        (lambda d: d.pop("format_version"), "unsupported plan format_version None"),
        (lambda d: d.pop("fleet"), "fleet: Field required"),
        (lambda d: d["changes"][0].update(action="explode"), "changes.0.action"),
        (
            lambda d: d["changes"][0].update(monthly_cost_delta=14.98),
            "changes.0.monthly_cost_delta",
        ),
        (lambda d: d["summary"].update(monthly_cost_after="lots"), "summary.monthly_cost_after"),
        (lambda d: d.update(generated_at="yesterday"), "generated_at"),
        (lambda d: d.update(surprise=1), "surprise: Extra inputs are not permitted"),
    ],
)
def test_invalid_documents_are_user_errors_naming_the_field(mutate: Any, message: str) -> None:
    doc = plan_to_document(mixed_plan())
    mutate(doc)
    with pytest.raises(PlanDocumentError, match=None) as caught:
        plan_from_document(doc)
    assert isinstance(caught.value, UserError)
    assert message in str(caught.value)
    assert caught.value.hint is not None


def test_a_document_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(PlanDocumentError, match="expected a JSON object"):
        plan_from_document([])  # type: ignore[arg-type]


# --- Markdown size -----------------------------------------------------------------------


def big_plan(count: int) -> Plan:
    return plan(make_spec({"dallas": count, "seattle": count}), *world(), NOW)


def test_markdown_of_a_huge_plan_stays_under_the_limit_and_says_what_is_left_out() -> None:
    p = big_plan(5000)
    text = render_markdown(p)
    assert len(text) <= 65_000
    assert "| create | 10000 |" in text
    assert "more changes not shown" in text
    shown = text.count("| `+` |")
    assert f"... and {10000 - shown} more changes not shown" in text


@settings(max_examples=40, deadline=None)
@given(count=st.integers(0, 400), limit=st.integers(200, 20_000))
def test_markdown_never_exceeds_any_limit(count: int, limit: int) -> None:
    text = render_markdown(big_plan(count), limit=limit)
    assert len(text) <= limit


@settings(max_examples=60, deadline=None)
@given(p=plans, limit=st.integers(300, 5_000))
def test_markdown_of_arbitrary_plans_fits(p: Plan, limit: int) -> None:
    assert len(render_markdown(p, limit=limit)) <= limit
