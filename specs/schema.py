"""The JSON Schema of the fleet spec, for editors' YAML language servers and other tools."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from specs.durations import format_duration
from specs.model import API_VERSION, FleetSpec

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://fleet-reconciler.invalid/schemas/fleet-reconciler-v1.json"


class _SpecSchema(GenerateJsonSchema):
    """Defaults written as a person would write them: durations as ``30s``, not ``PT30S``."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def _polish(node: Any) -> None:
    """Maps keyed by names (``patternProperties``) refuse keys that are not valid names;
    descriptions (from the models' docstrings) become single lines for editors' hovers."""
    if isinstance(node, dict):
        if "patternProperties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        description = node.get("description")
        if isinstance(description, str):
            node["description"] = " ".join(description.split())
        for value in node.values():
            _polish(value)
    elif isinstance(node, list):
        for item in node:
            _polish(item)


def json_schema() -> dict[str, Any]:
    """FleetSpec's JSON Schema (validation mode) with ``$schema``, ``$id`` and a title."""
    document = FleetSpec.model_json_schema(mode="validation", schema_generator=_SpecSchema)
    _polish(document)
    document["$schema"] = SCHEMA_DIALECT
    document["$id"] = SCHEMA_ID
    document["title"] = f"fleet-reconciler fleet spec ({API_VERSION})"
    document["description"] = (
        "A fleet of email-sending servers on Hostwinds, as declared for fleet-reconciler. "
        "Durations are strings like 30s, 5m, 6w; money is a decimal amount in USD."
    )
    return document
