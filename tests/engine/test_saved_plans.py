"""A saved plan (issue 9): it carries a digest of its own content (an edited plan is refused)
and its guards are judged again when it is applied."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.cli.reconciling import _read_plan, _write_plan
from reconciler.core.errors import GuardRefusedError, UserError
from reconciler.engine.reconciling import RunRequest, SavedPlan
from tests.engine.conftest import World, make_spec


def test_an_edited_plan_file_is_refused(tmp_path: Path) -> None:
    world = World()
    spec = make_spec({"dallas": 2})
    plan = world.plan(spec)
    path = tmp_path / "plan.json"
    _write_plan(path, plan, "fp-1")
    assert _read_plan(path).plan.changes == plan.changes  # untouched: accepted
    document = json.loads(path.read_text(encoding="utf-8"))
    document["changes"][0]["after"]["plan"] = "large"  # someone edits the plan
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(UserError, match="changed after it was made"):
        _read_plan(path)
    del document["digest"]
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(UserError, match="carries no digest"):
        _read_plan(path)
    world.store.close()


def test_a_saved_plans_guards_are_judged_again_when_it_is_applied() -> None:
    world = World()
    big = make_spec({"dallas": 4})
    world.converge(big)
    small = make_spec({"dallas": 0})
    reconciler = world.reconciler(small)

    async def go() -> None:
        snapshot = await reconciler.observe()
        plan = reconciler.plan(snapshot)
        assert plan.blocked  # the mass-delete guard refuses it
        # a plan file whose guard verdicts were dropped (say, by an older tool)
        unguarded = replace(plan, warnings=())
        result = await reconciler.reconcile(
            RunRequest(saved=SavedPlan(unguarded, snapshot.fingerprint))
        )
        assert result.outcome == "refused"
        assert isinstance(result.error, GuardRefusedError)

    asyncio.run(go())
    assert len(world.names()) == 4  # nothing destroyed
    world.store.close()
