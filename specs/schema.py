"""The JSON Schema of the fleet spec, for editors' YAML language servers and other tools."""

from __future__ import annotations

import ast
import inspect
import sys
from datetime import timedelta
from functools import cache
from typing import Any

from pydantic import BaseModel
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


@cache
def _module_attribute_docs(module_name: str) -> dict[str, dict[str, str]]:
    """``{class: {attribute: docstring}}`` for the classes of a module: the string literal that
    follows an annotated attribute in a class body (PEP 257's attribute docstrings).

    The models leave pydantic's ``use_attribute_docstrings`` off: it reads and parses the source
    of every model class at import, a third of the CLI's start-up, for descriptions that only
    this schema shows. Here each module is parsed once, when the schema is asked for."""
    source = inspect.getsource(sys.modules[module_name])
    docs: dict[str, dict[str, str]] = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ClassDef):
            continue
        found = docs.setdefault(node.name, {})
        for statement, following in zip(node.body, node.body[1:], strict=False):
            if (
                isinstance(statement, ast.AnnAssign)
                and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                found[statement.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """The attribute docstrings of a model and of the models it inherits from."""
    docs: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls is not BaseModel:
            docs.update(_module_attribute_docs(cls.__module__).get(cls.__name__, {}))
    return docs


def _models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from ``root`` through its fields, by class name."""
    found: dict[str, type[BaseModel]] = {}
    pending: list[Any] = [root]
    while pending:
        item = pending.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            if found.setdefault(item.__name__, item) is not item or item is BaseModel:
                continue
            if len(found) > 1 or item is root:
                for field in item.model_fields.values():
                    pending.append(field.annotation)
            continue
        pending.extend(getattr(item, "__args__", ()))
    return found


def _property_maps(node: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``properties`` of a model's schema, also inside ``anyOf`` (a model that accepts a
    plain string as well)."""
    maps = [node.get("properties")]
    maps += [
        branch.get("properties") for branch in node.get("anyOf", []) if isinstance(branch, dict)
    ]
    return [found for found in maps if isinstance(found, dict)]


def _describe(document: dict[str, Any]) -> None:
    """Each property's description from its attribute docstring (over the description of its
    type, as pydantic's ``use_attribute_docstrings`` does), unless the field sets one."""
    for name, model in _models(FleetSpec).items():
        node = document if model is FleetSpec else document.get("$defs", {}).get(name)
        if not isinstance(node, dict):
            continue
        docs = _attribute_docs(model)
        for properties in _property_maps(node):
            for field_name, field in model.model_fields.items():
                key = field.alias or field_name
                doc = docs.get(field_name)
                if doc and field.description is None and isinstance(properties.get(key), dict):
                    properties[key]["description"] = doc


#: fields refused as not yet supported (``specs.validating.NOT_YET_SUPPORTED``), refused by
#: editors too: (model, field) -> the one value accepted, if any
_UNSUPPORTED: dict[tuple[str, str], object] = {
    ("PoolSpec", "kind"): None,
    ("CostsSpec", "hours_per_month"): None,
    ("CostsSpec", "ips_per_node"): 1,
}


def _refuse_unsupported(document: dict[str, Any]) -> None:
    for (model, field), allowed in _UNSUPPORTED.items():
        properties = document.get("$defs", {}).get(model, {}).get("properties", {})
        node = properties.get(field)
        if not isinstance(node, dict):
            continue
        if allowed is None:
            node["not"] = {}
        else:
            node["const"] = allowed
        text = str(node.get("description", ""))
        if not text.startswith("Not yet supported"):
            node["description"] = f"Not yet supported beyond {allowed}: {text}"


def json_schema() -> dict[str, Any]:
    """FleetSpec's JSON Schema (validation mode) with ``$schema``, ``$id`` and a title."""
    document = FleetSpec.model_json_schema(mode="validation", schema_generator=_SpecSchema)
    _describe(document)
    _polish(document)
    _refuse_unsupported(document)
    # every file of a split spec (a directory: regions.yaml, pools.yaml...) is checked
    # against this schema by editors, so no top-level section is required here; a whole
    # spec's metadata and plans are required by `reconcile validate`, which merges the files
    document.pop("required", None)
    document["$schema"] = SCHEMA_DIALECT
    document["$id"] = SCHEMA_ID
    document["title"] = f"fleet-reconciler fleet spec ({API_VERSION})"
    document["description"] = (
        "A fleet of email-sending servers on Hostwinds, as declared for fleet-reconciler. "
        "Durations are strings like 30s, 5m, 6w; money is a decimal amount in USD. Each file "
        "of a split spec is valid on its own: metadata and plans are required of the merged "
        "spec (reconcile validate), not of each file."
    )
    return document
