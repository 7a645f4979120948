"""An honest spec (issue 11): every field of the JSON Schema is read by the code that gives it
its meaning, or is free text for people, or is refused as not yet supported.

The test walks the schema itself, so a field added to the models fails here until it is
classified; each reader named is checked to access the field (``.name``, ``["name"]`` or
``get("name")``), and each refused field is checked to be refused when written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from spec_texts import ROOT, VALID

from specs.errors import SpecError
from specs.loading import load_spec_text
from specs.schema import json_schema

CORE = "reconciler/core"

#: field (``*``: any name, ``[]``: any item) -> the file reading it (``file:attribute`` when it
#: is read through a method or property of the model, such as ``min_nodes``)
READERS: dict[str, str] = {
    "alerts.dedupe_window": "reconciler/daemon/alerts.py",
    "alerts.webhook": "reconciler/daemon/running.py",
    "costs.contracts.*.ip_monthly_price": f"{CORE}/costs.py",
    "costs.contracts.*.plan_prices": f"{CORE}/costs.py",
    "costs.currency": "specs/validating.py",
    "costs.ip_monthly_price": f"{CORE}/costs.py",
    "costs.ips_per_node": f"{CORE}/costs.py",
    "costs.monthly_budget": f"{CORE}/planning.py",
    "disruption.billing_aware": f"{CORE}/planning.py",
    "disruption.drain_timeout": f"{CORE}/lifecycle.py",
    "disruption.mass_delete_threshold": f"{CORE}/planning.py",
    "disruption.mass_delete_window": "reconciler/engine/reconciling.py",
    "disruption.max_destroys_per_run": f"{CORE}/planning.py",
    "disruption.max_unavailable": f"{CORE}/planning.py",
    "disruption.protected": f"{CORE}/matching.py",
    "health.bounce_critical": f"{CORE}/health.py",
    "health.bounce_warning": f"{CORE}/health.py",
    "health.cpu_alert": f"{CORE}/health.py",
    "health.disruption_min_silent": f"{CORE}/health.py",
    "health.disruption_share": f"{CORE}/health.py",
    "health.heartbeat_interval": f"{CORE}/health.py",
    "health.missed_beats": f"{CORE}/health.py",
    "health.on_unhealthy": f"{CORE}/health.py",
    "health.queue_critical": f"{CORE}/health.py",
    "health.queue_warning": f"{CORE}/health.py",
    "health.rate_critical": f"{CORE}/health.py",
    "health.rate_warning": f"{CORE}/health.py",
    "health.replace_after": f"{CORE}/health.py",
    "ip_pools.*.contract": f"{CORE}/costs.py",
    "ip_pools.*.ip_monthly_price": f"{CORE}/costs.py",
    "ip_pools.*.regions": f"{CORE}/planning.py",
    "ip_pools.*.size": f"{CORE}/planning.py",
    "ip_pools.*.status": f"{CORE}/planning.py",
    "ip_pools.*.warmup": f"{CORE}/pipeline.py",
    "metadata.name": f"{CORE}/addresses.py",
    "plans.*.disk_gb": f"{CORE}/planning.py",
    "plans.*.monthly_price": f"{CORE}/costs.py",
    "plans.*.production_ready": "specs/validating.py",
    "plans.*.ram_gb": f"{CORE}/offers.py",
    "plans.*.rid": f"{CORE}/planning.py",
    "plans.*.transfer_tb": f"{CORE}/offers.py",
    "plans.*.vcpu": f"{CORE}/scaling.py",
    "provider.api_key_env": "reconciler/wiring.py",
    "provider.billing_cycle": "reconciler/engine/creating.py",
    "provider.build_failure_rate": "reconciler/wiring.py",
    "provider.build_time": "reconciler/wiring.py",
    "provider.endpoint": "reconciler/wiring.py",
    "provider.rate_limit": "reconciler/wiring.py",
    "provider.ssh_keys": "reconciler/engine/creating.py",
    "provider.template": "reconciler/engine/creating.py",
    "provider.timeout": "reconciler/wiring.py",
    "provider.type": "reconciler/wiring.py",
    "provisioning.agent_package": "reconciler/node/bundle.py",
    "provisioning.circuit_breaker.failures": f"{CORE}/lifecycle.py",
    "provisioning.circuit_breaker.window": f"{CORE}/lifecycle.py",
    "provisioning.deadline": f"{CORE}/lifecycle.py",
    "provisioning.dmarc.adkim": "reconciler/engine/provisioning.py",
    "provisioning.dmarc.aspf": "reconciler/engine/provisioning.py",
    "provisioning.dmarc.manage": "reconciler/engine/provisioning.py",
    "provisioning.dmarc.percent": "reconciler/engine/provisioning.py",
    "provisioning.dmarc.policy": "reconciler/engine/provisioning.py",
    "provisioning.dmarc.rua": "reconciler/engine/provisioning.py",
    "provisioning.dmarc.ruf": "reconciler/engine/provisioning.py",
    "provisioning.dmarc.subdomain_policy": "reconciler/engine/provisioning.py",
    "provisioning.dns.server": "reconciler/wiring.py",
    "provisioning.dns.ttl": "reconciler/engine/provisioning.py",
    "provisioning.dns.zone": "reconciler/wiring.py",  # through the zone property
    "provisioning.domain": f"{CORE}/addresses.py",
    "provisioning.postfix.default_destination_concurrency_limit": "reconciler/node/bundle.py",
    "provisioning.postfix.default_process_limit": "reconciler/node/bundle.py",
    "provisioning.postfix.initial_destination_concurrency": "reconciler/node/bundle.py",
    "provisioning.postfix.maximal_backoff_time": "reconciler/node/bundle.py",
    "provisioning.postfix.minimal_backoff_time": "reconciler/node/bundle.py",
    "provisioning.postfix.submission_networks": "reconciler/node/bundle.py",
    "provisioning.sink": "reconciler/wiring.py",
    "provisioning.spf.all": "reconciler/engine/provisioning.py",
    "provisioning.spf.extra": "reconciler/engine/provisioning.py",
    "provisioning.spf.manage": "reconciler/engine/provisioning.py",
    "provisioning.ssh.port": "reconciler/engine/provisioning.py",
    "provisioning.ssh.user": "reconciler/engine/provisioning.py",
    "provisioning.drift_check": f"{CORE}/upkeep.py",
    "provisioning.replacements": f"{CORE}/lifecycle.py",
    "provisioning.step_attempts": f"{CORE}/pipeline.py",
    "provisioning.step_timeout": "reconciler/engine/provisioning.py",
    "provisioning.sysctl": "reconciler/node/bundle.py",
    "reconcile.adoption_grace": "reconciler/engine/contexts.py",
    "reconcile.concurrency": "reconciler/engine/contexts.py",
    "reconcile.create_timeout": "reconciler/engine/contexts.py",
    "reconcile.interval": "reconciler/daemon/running.py",
    "reconcile.resize_timeout": "reconciler/engine/contexts.py",
    "regions.*.allow_small_plans": "specs/validating.py",
    "regions.*.location_id": f"{CORE}/planning.py",
    "regions.*.nodes.max": f"{CORE}/planning.py:max_nodes",
    "regions.*.nodes.min": f"{CORE}/planning.py:min_nodes",
    "regions.*.plan": f"{CORE}/planning.py",
    "regions.*.protected": f"{CORE}/matching.py",
    "regions.*.vertical_plans": f"{CORE}/planning.py",
    "reputation.blocklists[].daily_budget": f"{CORE}/reputation.py:budget",
    "reputation.blocklists[].errors": f"{CORE}/reputation.py:error_codes",
    "reputation.blocklists[].listings[].action": f"{CORE}/reputation.py",
    "reputation.blocklists[].listings[].codes": f"{CORE}/reputation.py",
    "reputation.blocklists[].listings[].name": f"{CORE}/reputation.py",
    "reputation.blocklists[].listings[].severity": f"{CORE}/reputation.py",
    "reputation.blocklists[].listings": f"{CORE}/reputation.py:listing_rules",
    "reputation.blocklists[].unmapped": f"{CORE}/reputation.py",
    "reputation.blocklists[].zone": f"{CORE}/reputation.py",
    "reputation.bounce_alert": f"{CORE}/reputation.py",
    "reputation.bounce_pause": f"{CORE}/reputation.py",
    "reputation.check_interval": f"{CORE}/reputation.py",
    "reputation.complaint_alert": f"{CORE}/reputation.py",
    "reputation.complaint_pause": f"{CORE}/reputation.py",
    "reputation.concurrency": "reconciler/wiring.py",
    "reputation.delist_after": "reconciler/daemon/reputation.py",
    "reputation.high": f"{CORE}/reputation.py:action_for",
    "reputation.low": f"{CORE}/reputation.py:action_for",
    "reputation.medium": f"{CORE}/reputation.py:action_for",
    "reputation.max_window": f"{CORE}/reputation.py",
    "reputation.min_volume": f"{CORE}/reputation.py",
    "reputation.resolver": "reconciler/wiring.py",
    "reputation.rewarm_after": f"{CORE}/reputation.py",
    "reputation.timeout": "reconciler/wiring.py",
    "reputation.window": f"{CORE}/reputation.py",
    "scaling.enabled": f"{CORE}/scaling.py",
    "scaling.evaluation_interval": "reconciler/daemon/running.py",
    "scaling.max_step": f"{CORE}/scaling.py",
    "scaling.per_core_rate": f"{CORE}/scaling.py",
    "scaling.scale_down_stabilization": f"{CORE}/scaling.py",
    "scaling.scale_up_stabilization": f"{CORE}/scaling.py",
    "scaling.target_utilization": f"{CORE}/scaling.py",
    "scaling.tolerance": f"{CORE}/scaling.py",
    "scaling.vertical.enabled": f"{CORE}/scaling.py",
    "scaling.vertical.queue_threshold": f"{CORE}/scaling.py",
    "scaling.vertical.window": f"{CORE}/scaling.py",
    "warmup.schedules.*.phases[].days": f"{CORE}/warmup.py",
    "warmup.schedules.*.phases[].end": f"{CORE}/warmup.py",
    "warmup.schedules.*.phases[].start": f"{CORE}/warmup.py",
    "warmup.schedules.*.safety.max_bounce_rate": f"{CORE}/reputation.py",
    "warmup.schedules.*.safety.max_complaint_rate": f"{CORE}/reputation.py",
    "warmup.schedules.*.safety.max_daily_increase": f"{CORE}/warmup.py",
    "warmup.schedules.*.safety.pause_on_blocklist": f"{CORE}/reputation.py",
}

#: for people reading the spec; documented as such, nothing reads them
FREE_TEXT = {
    "costs.contracts.*.description",
    "ip_pools.*.description",
    "metadata.description",
    "metadata.labels",
    "plans.*.description",
    "regions.*.location",
    "warmup.schedules.*.description",
}

#: the format's own markers: the loader accepts only their one value
FORMAT = {"apiVersion", "kind"}

#: documented, read by nothing yet: refused when written (a spec line setting each)
REFUSED: dict[str, str] = {
    "costs.hours_per_month": "costs:\n  hours_per_month: 730\n",
    "ip_pools.*.kind": "    kind: shared\n",
}


def _resolve(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        node = document["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def schema_fields() -> set[str]:
    """Every field path of the JSON Schema (sections and leaves)."""
    document = json_schema()
    found: set[str] = set()

    def walk(node: Any, prefix: str, depth: int) -> None:
        node = _resolve(document, node)
        if not isinstance(node, dict) or depth > 16:
            return
        for branch in [*node.get("anyOf", []), *node.get("oneOf", []), *node.get("allOf", [])]:
            walk(branch, prefix, depth + 1)
        for name, sub in node.get("properties", {}).items():
            path = f"{prefix}.{name}" if prefix else name
            found.add(path)
            walk(sub, path, depth + 1)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            walk(extra, f"{prefix}.*", depth + 1)
        for sub in node.get("patternProperties", {}).values():
            walk(sub, f"{prefix}.*", depth + 1)
        if "items" in node:
            walk(node["items"], f"{prefix}[]", depth + 1)

    walk(document, "", 0)
    return found


def leaves(fields: set[str]) -> set[str]:
    """Fields with no field below them (a section is read when its fields are)."""
    return {
        f for f in fields if not any(o.startswith(f + ".") or o.startswith(f + "[") for o in fields)
    } | {f for f in READERS if f in fields}


def test_every_field_of_the_schema_is_read_free_text_or_refused() -> None:
    fields = schema_fields()
    assert len(fields) > 150, "the walk reaches every field"
    classified = set(READERS) | FREE_TEXT | FORMAT | set(REFUSED)
    unclassified = sorted(leaves(fields) - classified)
    assert unclassified == [], (
        "fields with no reader: give each a reader (and list it in READERS), mark it free "
        "text, or refuse it in specs.validating.NOT_YET_SUPPORTED"
    )
    assert sorted(classified - fields) == [], "entries for fields the schema no longer has"


def _field_name(path: str) -> str:
    return [part for part in re.split(r"[.\[\]*]+", path) if part][-1]


@pytest.mark.parametrize("field", sorted(READERS))
def test_each_reader_reads_its_field(field: str) -> None:
    where, _, attribute = READERS[field].partition(":")
    name = attribute or _field_name(field)
    text = (ROOT / where).read_text()
    assert re.search(rf"\.{name}\b|\[\"{name}\"\]|get\(\"{name}\"", text), (
        f"{where} does not read {field} (no access to {name!r})"
    )
    assert not where.startswith(("specs/model.py", "specs/provisioning.py")) or attribute, (
        "the model declaring a field is not its reader (unless through a property)"
    )


def _spec_with(field: str, line: str) -> str:
    if field.startswith("ip_pools"):
        return VALID.replace("    size: 3\n", "    size: 3\n" + line)
    return VALID + line


@pytest.mark.parametrize("field", sorted(REFUSED))
def test_each_unread_field_is_refused_as_not_yet_supported(field: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text(_spec_with(field, REFUSED[field]), source="f.yaml")
    [problem] = caught.value.problems
    assert problem.field == field.replace("*", "shared")
    assert problem.message.startswith("not yet supported: ")


def test_ips_per_node_other_than_one_is_refused() -> None:
    assert load_spec_text(VALID + "costs:\n  ips_per_node: 1\n")
    with pytest.raises(SpecError) as caught:
        load_spec_text(VALID + "costs:\n  ips_per_node: 2\n", source="f.yaml")
    [problem] = caught.value.problems
    assert problem.render() == (
        "f.yaml:32:3: costs.ips_per_node: not yet supported: a node carries one dedicated IP; "
        "extra IPs are never ordered (Hostwinds documents no action to buy them), so only 1 "
        "is accepted (remove it)"
    )


def test_the_examples_use_no_refused_field() -> None:
    for path in [
        *Path(ROOT / "examples").glob("*.yaml"),
        *Path(ROOT / "examples/production").glob("*.yaml"),
    ]:
        text = path.read_text()
        for field in REFUSED:
            assert f" {_field_name(field)}:" not in text or path.name == "broken.yaml", path


def test_editors_refuse_the_unsupported_fields_too() -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(json_schema())
    for document in (
        {"ip_pools": {"p": {"size": 1, "regions": ["r"], "kind": "shared"}}},
        {"costs": {"hours_per_month": 730}},
        {"costs": {"ips_per_node": 2}},
    ):
        assert list(validator.iter_errors(document)), document
    assert not list(validator.iter_errors({"costs": {"ips_per_node": 1}}))
