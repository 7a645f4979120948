"""What the private-PostgreSQL daemon tests share (test_pg_faults.py, test_pg_leaders.py):
the fleet they run, a migrated private PostgreSQL, the daemons' JSON log events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from state.store import open_store
from tests.daemon.privatepg import PrivatePostgres, postgres_binary, private_postgres
from tests.daemon.processes import Proc

MARKS = [
    pytest.mark.e2e,
    pytest.mark.timeout(280),
    pytest.mark.skipif(postgres_binary("initdb") is None, reason="PostgreSQL binaries missing"),
]

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: faults}}
provider: {{type: simulator, build_time: 300ms}}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
regions:
  dallas: {{location_id: 13, plan: baseline, nodes: {nodes}}}
health: {{heartbeat_interval: 1s, missed_beats: 3, replace_after: 20s}}
reconcile: {{interval: 2s, concurrency: 1, adoption_grace: 5s}}
"""


@contextmanager
def migrated_postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        open_store(server.url, upgrade=True).close()
        yield server


def events(proc: Proc) -> list[dict[str, Any]]:
    return [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
