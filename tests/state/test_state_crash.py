"""Crash consistency: a process SIGKILLed in the middle of ``begin_intent`` (after the intent row,
after the node row, after the last row, before the commit) leaves nothing half-recorded."""

from __future__ import annotations

import signal
import subprocess
import sys
from decimal import Decimal

import pytest
import sqlalchemy as sa
from state_builders import make_node

from state import SqlStore
from state import models as m

CHILD = r"""
import os, signal, sys
from sqlalchemy import event
from reconciler.core.fleet import NodeStatus, RecordedNode
from state import open_store

store = open_store(sys.argv[1])
point = sys.argv[2]

def die(conn, cursor, statement, *args):
    if statement.lstrip().upper().startswith(point):
        os.kill(os.getpid(), signal.SIGKILL)

event.listen(store.engine, "after_cursor_execute", die)
node = RecordedNode(id="0b7f3c52-9d1e-4c36-8b2a-5f0e6a7d8c91", fleet="acme",
                    name="acme-dallas-001", region="dallas", plan="small",
                    status=NodeStatus.PROVISIONING, ip_address="192.0.2.1",
                    approximate_cost=__import__("decimal").Decimal("14.98"))
store.begin_intent("acme", "create", node.name, {"rid": "1"}, node=node)
print("not killed")
"""


def _counts(store: SqlStore) -> dict[str, int]:
    with store.engine.connect() as connection:
        return {
            model.__tablename__: int(
                connection.execute(sa.select(sa.func.count()).select_from(model)).scalar_one()
            )
            for model in (m.Intent, m.SendingNode, m.VpsInstance, m.SmtpIpAddress)
        }


@pytest.mark.parametrize(
    "point",
    [
        "INSERT INTO INTENTS",
        "INSERT INTO SENDING_NODES",
        "INSERT INTO SMTP_IP_ADDRESSES",
    ],
)
def test_sigkill_inside_begin_intent_leaves_nothing(
    store_url: str, store: SqlStore, point: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, store_url, point],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    assert _counts(store) == {
        "intents": 0,
        "sending_nodes": 0,
        "vps_instances": 0,
        "smtp_ip_addresses": 0,
    }
    # and the store is usable: the whole step can simply be done again
    node = make_node(ip_address="192.0.2.1", approximate_cost=Decimal("14.98"))
    store.begin_intent("acme", "create", node.name, {"rid": "1"}, node=node)
    assert _counts(store) == {
        "intents": 1,
        "sending_nodes": 1,
        "vps_instances": 1,
        "smtp_ip_addresses": 1,
    }
