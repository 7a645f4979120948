"""What a change of the spec changes in the desired state, field by field (pure).

``diff_specs(old, new)`` compares the two specs' canonical documents (defaults included, so a
field written with its default value is no change) with deepdiff and returns one ``SpecChange``
per changed field, added or removed entry: ``regions.dallas.nodes: 2 → 3``,
``+ regions.seattle: {location_id: 12, plan: baseline, nodes: 1, ...}``. Lists are compared as
whole values (``ip_pools.shared.regions: [seattle] → [seattle, dallas]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from specs.loading import canonical_document
from specs.model import FleetSpec

_VALUE_MAX = 160
Kind = Literal["added", "removed", "changed"]


@dataclass(frozen=True, slots=True)
class SpecChange:
    kind: Kind
    path: str  # dotted: regions.dallas.nodes
    old: Any = None
    new: Any = None

    def render(self, arrow: str = "→") -> str:
        if self.kind == "added":
            return f"+ {self.path}: {render_value(self.new)}"
        if self.kind == "removed":
            return f"- {self.path}: {render_value(self.old)}"
        return f"~ {self.path}: {render_value(self.old)} {arrow} {render_value(self.new)}"


def render_value(value: Any, limit: int = _VALUE_MAX) -> str:
    """Compact flow style: ``{min: 1, max: 3}``, ``[seattle, dallas]``, ``null``."""
    text = _flow(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _flow(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{k}: {_flow(v)}" for k, v in value.items() if v not in (None, [], {}))
        return "{" + inner + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return str(value)


def _dotted(parts: Sequence[Any]) -> str:
    return ".".join(str(p) for p in parts)


def _lookup(document: Any, parts: Sequence[Any]) -> Any:
    for part in parts:
        document = document[part]
    return document


def _skeleton(document: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ({} if isinstance(v, Mapping) else None) for k, v in document.items()}


def diff_specs(old: FleetSpec | None, new: FleetSpec | None) -> list[SpecChange]:
    """The changes from ``old`` to ``new`` (``None``: no spec on that side), sorted by path."""
    before = canonical_document(old) if old is not None else None
    after = canonical_document(new) if new is not None else None
    # a missing side is the other side's sections, empty: each entry shows as added/removed
    if before is None:
        before = _skeleton(after or {})
    if after is None:
        after = _skeleton(before)
    from deepdiff import DeepDiff  # here: `reconcile diff` needs it, a plan's Markdown does not

    tree = DeepDiff(before, after, view="tree", verbose_level=2)
    changes: dict[str, SpecChange] = {}
    for report_type, levels in tree.items():
        for level in levels:
            parts = level.path(output_format="list")
            # a change inside a list: report the whole list (its first list ancestor)
            for depth in range(len(parts)):
                if isinstance(parts[depth], int):
                    parts = parts[:depth]
                    report_type = "values_changed"
                    break
            path = _dotted(parts)
            if path in changes:
                continue
            if report_type == "dictionary_item_added":
                changes[path] = SpecChange("added", path, new=_lookup(after, parts))
            elif report_type == "dictionary_item_removed":
                changes[path] = SpecChange("removed", path, old=_lookup(before, parts))
            else:
                changes[path] = SpecChange(
                    "changed", path, old=_lookup(before, parts), new=_lookup(after, parts)
                )
    return [changes[p] for p in sorted(changes)]
