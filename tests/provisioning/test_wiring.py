"""The composition root's provisioning settings: secrets from the operator, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.core.errors import UserError
from reconciler.daemon.heartbeats import derive_node_secret
from reconciler.wiring import build_provisioning, node_token
from specs.loading import load_spec
from tests.provisioning.harness import spec_yaml

pytestmark = pytest.mark.anyio


def test_node_tokens_are_the_daemons() -> None:
    master = b"0123456789abcdef" * 2
    assert node_token(master, "demo-dallas-001") == derive_node_secret(master, "demo-dallas-001")


async def test_a_real_provider_needs_the_operator_settings(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(spec_yaml("op", {"seattle": 1}).replace("type: simulator", "type: hostwinds"))
    loaded = load_spec([path])
    environ = {"RECONCILER_NODE_MASTER_SECRET": "x" * 64}
    with pytest.raises(UserError, match="DNS server") as info:
        async with build_provisioning(loaded, object(), environ=environ, state_dir=tmp_path):  # type: ignore[arg-type]
            pass
    assert info.value.hint
    environ["RECONCILER_DNS_SERVER"] = "127.0.0.1:5353"
    with pytest.raises(UserError, match="TSIG key file"):
        async with build_provisioning(loaded, object(), environ=environ, state_dir=tmp_path):  # type: ignore[arg-type]
            pass
    environ["RECONCILER_TSIG_KEY_FILE"] = str(tmp_path / "absent.key")
    with pytest.raises(UserError, match="SSH private key"):
        async with build_provisioning(loaded, object(), environ=environ, state_dir=tmp_path):  # type: ignore[arg-type]
            pass
    with pytest.raises(UserError, match="master secret"):
        async with build_provisioning(loaded, object(), environ={}, state_dir=tmp_path):  # type: ignore[arg-type]
            pass
