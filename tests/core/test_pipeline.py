"""The per-node pipeline (``core.pipeline``): next steps from recorded step state, and how a
new step slots in without touching the fleet rules."""

from __future__ import annotations

from dataclasses import replace

from reconciler.core.fleet import NodeStatus, ServerStatus, StepState, StepStatus
from reconciler.core.matching import LiveNode, match
from reconciler.core.pipeline import (
    StepContext,
    next_changes,
    node_change,
    pipeline_for,
)
from reconciler.core.plans import Action, Change
from tests.core.factories import NOW, make_spec, node, server, world

NAME = "acme-dallas-001"


def _live(*, status: ServerStatus = ServerStatus.ACTIVE, **node_kw: object) -> LiveNode:
    observed, recorded = world(
        [server(NAME, 101, status=status)],
        [node(NAME, 101, status=NodeStatus.PROVISIONING, **node_kw)],  # type: ignore[arg-type]
    )
    (live,) = match(make_spec({"dallas": 1}), observed, recorded).nodes
    return live


class Dns:
    """A step as issue 12 will add them: done per the recorded step state."""

    name = "dns"

    def __init__(self, wait: str | None = None) -> None:
        self._wait = wait

    def done(self, node: LiveNode) -> bool:
        return node.record is not None and node.record.step_done(self.name)

    def wait(self, node: LiveNode, ctx: StepContext) -> str | None:
        return self._wait

    def change(self, node: LiveNode, ctx: StepContext) -> Change | None:
        return node_change(
            Action.SET_RDNS, node, "publish the A record", before={}, after={}, step=self.name
        )


CTX = StepContext(make_spec({"dallas": 1}), NOW)


def test_a_provisioning_node_gets_every_step_from_its_first_unfinished_one() -> None:
    steps = next_changes(_live(rdns_done=False), CTX)
    assert [(c.action, c.step) for c in steps.changes] == [
        (Action.SET_RDNS, "rdns"),
        (Action.ACTIVATE, "rotation"),
    ]
    assert steps.changes[0].hostname == f"{NAME}.acme.example"
    assert steps.changes[1].status is NodeStatus.WARMING
    # rdns recorded done (as a step): only the rotation is left
    live = _live(rdns_done=False)
    assert live.record is not None
    done = (StepState("rdns", StepStatus.DONE, 1, NOW),)
    live = replace(live, record=replace(live.record, steps=done))
    steps = next_changes(live, CTX)
    assert [c.step for c in steps.changes] == ["rotation"]


def test_a_node_waits_for_its_address_with_a_note() -> None:
    steps = next_changes(_live(status=ServerStatus.BUILD, rdns_done=False), CTX)
    assert steps.changes == []
    assert steps.notes == [f"{NAME}: waiting for the server to be ACTIVE with an IP (now BUILD)"]


def test_an_unhealthy_node_is_not_put_into_rotation() -> None:
    ctx = StepContext(CTX.spec, NOW, frozenset({NAME}))
    steps = next_changes(_live(rdns_done=True), ctx)
    assert steps.changes == []
    assert steps.notes == [f"{NAME}: not put into rotation while unhealthy"]


def test_a_new_step_slots_in_between_without_touching_the_others() -> None:
    address, rdns, rotation = pipeline_for(CTX.spec)
    pipeline = (address, rdns, Dns(), rotation)
    steps = next_changes(_live(rdns_done=False), CTX, pipeline)
    assert [c.step for c in steps.changes] == ["rdns", "dns", "rotation"]
    # a step that has to wait stops the node there, with its note
    waiting = (address, rdns, Dns(wait="acme-dallas-001: waiting for DNS"), rotation)
    steps = next_changes(_live(rdns_done=True), CTX, waiting)
    assert steps.changes == []
    assert steps.notes == ["acme-dallas-001: waiting for DNS"]
