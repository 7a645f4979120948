"""Loading files and directories: merge rules, hashes, locations, the examples."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from spec_texts import EXAMPLES, VALID

from specs.errors import SpecError
from specs.loading import LoadedSpec, load_spec, load_spec_text
from specs.model import FleetSpec, ProviderType


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


def problems_of(paths: list[Path] | list[str]) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_spec(paths)
    return [p.render() for p in caught.value.problems]


def test_quickstart_example_is_valid() -> None:
    loaded = load_spec([EXAMPLES / "quickstart.yaml"])
    spec = loaded.spec
    assert spec.name == "demo"
    assert spec.provider.type is ProviderType.SIMULATOR
    assert set(spec.regions) == {"seattle", "dallas"}
    assert spec.regions["seattle"].location_id == 12
    assert spec.plans["baseline"].rid == 52
    assert spec.plans["baseline"].monthly_price == Decimal("9.99")
    assert spec.plans["small"].production_ready is False
    assert loaded.warnings == ()
    assert loaded.sources == (EXAMPLES / "quickstart.yaml",)


def test_production_example_directory_is_valid() -> None:
    loaded = load_spec([EXAMPLES / "production"])
    spec = loaded.spec
    assert spec.provider.type is ProviderType.HOSTWINDS
    assert spec.provider.api_key_env == "HOSTWINDS_API_KEY"
    assert set(spec.regions) == {"seattle", "dallas", "amsterdam"}
    assert len(spec.ip_pools) >= 3
    assert spec.warmup.schedule("high-volume") is not None
    assert [p.name for p in loaded.sources] == sorted(p.name for p in loaded.sources)
    assert len(loaded.sources) == 6
    assert loaded.warnings == ()


def test_a_single_path_string_is_accepted() -> None:
    assert load_spec(str(EXAMPLES / "quickstart.yaml")).spec.name == "demo"


def test_same_file_twice_is_read_once() -> None:
    path = EXAMPLES / "quickstart.yaml"
    assert load_spec([path, path]).sources == (path,)


def test_hash_is_stable_and_ignores_key_order_and_comments() -> None:
    first = load_spec_text(VALID)
    head, regions = VALID.split("regions:\n", 1)
    regions, pools = regions.split("ip_pools:\n", 1)
    reordered = "ip_pools:\n" + pools + "regions:\n" + regions + head
    swapped = (
        "# a comment\n"
        + VALID.replace("kind: Fleet\n", "")
        .replace("apiVersion: fleet-reconciler/v1\n", "")
        .rstrip("\n")
        + "\nkind: Fleet\napiVersion: fleet-reconciler/v1\n"
    )
    assert load_spec_text(reordered).spec_hash == first.spec_hash
    assert load_spec_text(swapped).spec_hash == first.spec_hash
    assert len(first.spec_hash) == 64
    changed = load_spec_text(VALID.replace("monthly_price: 9.99", "monthly_price: 9.98"))
    assert changed.spec_hash != first.spec_hash


def test_hash_does_not_depend_on_file_names() -> None:
    a = load_spec_text(VALID).spec_hash
    b = load_spec_text(VALID, source="other.yaml").spec_hash
    assert a == b


def test_locate_points_at_fields_and_falls_back_to_parents() -> None:
    loaded = load_spec_text(VALID, source="f.yaml")
    assert loaded.locate(("regions", "dallas", "nodes", "max")) == ("f.yaml", 26, 21)
    assert loaded.locate(("regions", "seattle", "plan")) == ("f.yaml", 21, 5)
    assert loaded.locate(("ip_pools", "shared", "regions", 1)) == ("f.yaml", 30, 24)
    # a default (not written) points at the nearest written parent
    assert loaded.locate(("ip_pools", "shared", "warmup")) == ("f.yaml", 28, 3)
    assert loaded.locate(("scaling", "max_step")) == ("f.yaml", 1, 1)


def test_directory_merge_by_name(tmp_path: Path) -> None:
    head, rest = VALID.split("regions:\n", 1)
    write(tmp_path, "a.yaml", head)
    write(tmp_path, "b.yml", "regions:\n" + rest)
    write(tmp_path, "notes.txt", "not yaml at all: [")
    write(tmp_path, ".hidden.yaml", "broken: [")
    loaded = load_spec([tmp_path])
    assert isinstance(loaded, LoadedSpec)
    assert set(loaded.spec.regions) == {"seattle", "dallas"}
    assert [p.name for p in loaded.sources] == ["a.yaml", "b.yml"]
    assert loaded.locate(("regions", "dallas")) == (str(tmp_path / "b.yml"), 6, 3)
    assert loaded.spec_hash == load_spec_text(VALID).spec_hash


def test_a_name_defined_in_two_files_names_both_places(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", VALID)
    write(
        tmp_path,
        "b.yaml",
        "regions:\n  other:\n    location_id: 14\n    plan: baseline\n    nodes: 1\n"
        "  dallas:\n    location_id: 13\n    plan: baseline\n    nodes: 1\n",
    )
    assert problems_of([tmp_path]) == [
        f"{tmp_path}/b.yaml:6:3: regions.dallas: defined twice: first at {tmp_path}/a.yaml:23:3,"
        " again here (a name may be defined only once across the files of a fleet)"
    ]


def test_metadata_twice_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", VALID)
    write(tmp_path, "b.yaml", "apiVersion: fleet-reconciler/v1\nmetadata:\n  name: demo\n")
    (problem,) = problems_of([tmp_path])
    assert problem.startswith(f"{tmp_path}/b.yaml:2:1: metadata: defined twice: first at ")
    assert f"{tmp_path}/a.yaml:3:1" in problem


def test_settings_in_two_files_conflict_but_named_sections_merge(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", VALID + "costs:\n  monthly_budget: 500\n")
    write(
        tmp_path,
        "b.yaml",
        "costs:\n  contracts:\n    acme: {ip_monthly_price: 3.5}\n  monthly_budget: 400\n",
    )
    (problem,) = problems_of([tmp_path])
    assert "costs.monthly_budget: defined twice" in problem
    assert problem.endswith("(a setting may be given in only one file)")
    write(tmp_path, "b.yaml", "costs:\n  contracts:\n    acme: {ip_monthly_price: 3.5}\n")
    assert set(load_spec([tmp_path]).spec.costs.contracts) == {"acme"}


def test_different_api_versions_conflict(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", VALID)
    write(tmp_path, "b.yaml", "apiVersion: fleet-reconciler/v2\n")
    (problem,) = problems_of([tmp_path])
    assert "apiVersion: defined twice" in problem


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert problems_of([tmp_path / "nope.yaml", empty]) == [
        f"{empty}: the directory holds no *.yaml or *.yml file "
        "(point at a fleet spec file or a directory of them)",
        f"{tmp_path}/nope.yaml: no such file or directory "
        "(give a fleet spec file such as fleet.yaml, or a directory of them)",
    ]


def test_no_path_at_all() -> None:
    with pytest.raises(SpecError):
        load_spec([])


def test_problems_of_all_files_are_reported_together(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", VALID.replace("rid: 52", "rid: 52\n    rid: 53"))
    write(tmp_path, "b.yaml", "scaling: [\n")
    rendered = problems_of([tmp_path])
    assert len(rendered) == 2
    assert rendered[0].startswith(f"{tmp_path}/a.yaml:8:5: plans.baseline.rid: duplicate key")
    assert rendered[1].startswith(f"{tmp_path}/b.yaml:2:1: ")


def test_a_missing_path_does_not_hide_problems_in_the_others(tmp_path: Path) -> None:
    good = write(
        tmp_path,
        "a.yaml",
        VALID.replace("plan: baseline\n    nodes: 2", "plan: nope\n    nodes: 2"),
    )
    rendered = problems_of([good, tmp_path / "gone.yaml"])
    assert any("unknown plan 'nope'" in line for line in rendered)
    assert any("gone.yaml: no such file" in line for line in rendered)


def test_a_directory_given_as_a_file_entry(tmp_path: Path) -> None:
    (tmp_path / "dir.yaml").mkdir()
    write(tmp_path, "a.yaml", VALID)
    assert load_spec([tmp_path]).spec.name == "demo"


def test_warnings_are_kept_on_a_valid_spec() -> None:
    text = VALID.replace(
        "    monthly_price: 9.99\n", "    monthly_price: 9.99\n    production_ready: false\n"
    )
    loaded = load_spec_text(text, source="f.yaml")
    assert [w.render() for w in loaded.warnings] == [
        "f.yaml:22:11: regions.seattle.plan: plan 'baseline' is marked production_ready: false "
        "(use a production plan, or set allow_small_plans: true on the region)",
        "f.yaml:26:11: regions.dallas.plan: plan 'baseline' is marked production_ready: false "
        "(use a production plan, or set allow_small_plans: true on the region)",
    ]


def test_loaded_spec_is_frozen() -> None:
    loaded = load_spec_text(VALID)
    with pytest.raises(AttributeError):
        loaded.spec_hash = "x"  # type: ignore[misc]
    assert isinstance(loaded.spec, FleetSpec)


def test_hash_is_the_same_in_another_process() -> None:
    script = (
        "import sys; from specs.loading import load_spec; print(load_spec([sys.argv[1]]).spec_hash)"
    )
    path = str(EXAMPLES / "production")
    results = {
        subprocess.run(
            [sys.executable, "-c", script, path],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert results == {load_spec([path]).spec_hash}
