"""Node names: ``<fleet>-<region>-<seq:03d>``, the identity of a node in the cloud and the store.

A server is *ours* only when its whole name has that shape (fleet prefix, a region name, a
sequence number of at least three digits). Anything else is unmanaged and never touched.
"""

from __future__ import annotations

import re

from specs.model import FleetSpec

#: region names follow specs.model.NAME_PATTERN; the sequence is the last hyphenated part
_TAIL = re.compile(r"^(?P<region>[a-z][a-z0-9]*(?:-[a-z0-9]+)*)-(?P<seq>[0-9]{3,})$")
_REGION = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def node_name(fleet: str, region: str, seq: int) -> str:
    """``node_name("acme", "dallas", 3) == "acme-dallas-003"``."""
    if seq < 1:
        raise ValueError(f"sequence numbers start at 1, got {seq}")
    return f"{fleet}-{region}-{seq:03d}"


def parse_node_name(fleet: str, name: str) -> tuple[str, int] | None:
    """``(region, seq)`` when ``name`` is one of ``fleet``'s node names, else ``None``."""
    prefix = f"{fleet}-"
    if not name.startswith(prefix):
        return None
    match = _TAIL.match(name[len(prefix) :])
    if match is None:
        return None
    seq = int(match.group("seq"))
    if seq < 1:
        return None
    return match.group("region"), seq


def plain_region(region: str) -> bool:
    """True when ``region`` has the shape of a region in a node name: then
    ``<fleet>-<region>-<seq>``, with ``seq`` three or more ASCII digits, parses as
    ``(region, int(seq))`` (when ``seq`` is not all zeros)."""
    return _REGION.fullmatch(region) is not None


def owned_by_fleet(fleet: str, name: str) -> bool:
    """True when ``name`` is shaped like one of ``fleet``'s node names."""
    return parse_node_name(fleet, name) is not None


def node_hostname(spec: FleetSpec, name: str) -> str:
    """The node's hostname (A, PTR): ``<name>.<provisioning.domain>``; without a
    ``provisioning:`` section, a placeholder under ``<fleet>.example``."""
    if spec.provisioning is not None:
        return spec.provisioning.hostname(name)
    return f"{name}.{spec.name}.example"
