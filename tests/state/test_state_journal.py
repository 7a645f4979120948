"""The journal: intents before mutating calls, atomic with the node they record."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from state_builders import FakeClock, make_node

from reconciler.core.errors import StoreError, StoreUnavailableError
from reconciler.core.fleet import IntentStatus, NodeStatus
from state import SqlStore
from state import models as m
from state.store import InvalidRecordError, SecretInParamsError


def _count(store: SqlStore, model: type[m.Base]) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(model)).scalar_one())


def test_begin_finish_with_node(store: SqlStore, clock: FakeClock) -> None:
    node = make_node()
    intent = store.begin_intent(
        "acme", "create", node.name, {"rid": "3", "region": "dallas"}, node=node, epoch=None
    )
    assert intent.status is IntentStatus.PENDING
    assert intent.attempts == 1
    fleet = store.load_fleet("acme")
    assert fleet.pending_intents == (intent,)
    assert fleet.nodes[0].status is NodeStatus.PROVISIONING
    clock.advance(5)
    store.finish_intent(
        intent.id, IntentStatus.DONE, node=make_node(service_id=77, status=NodeStatus.WARMING)
    )
    fleet = store.load_fleet("acme")
    assert fleet.pending_intents == ()
    assert fleet.nodes[0].service_id == 77
    (done,) = store.journal("acme")
    assert done.status is IntentStatus.DONE
    assert done.updated_at == clock.now()
    assert done.params == {"rid": "3", "region": "dallas"}


def test_failed_intent_keeps_its_error(store: SqlStore) -> None:
    intent = store.begin_intent("acme", "destroy", "acme-dallas-001", {})
    store.finish_intent(intent.id, IntentStatus.FAILED, error="boom " * 2000)
    (failed,) = store.journal("acme")
    assert failed.status is IntentStatus.FAILED
    assert failed.error is not None
    assert failed.error.startswith("boom")
    assert len(failed.error) <= 4000


def test_retry_counts_attempts_of_pending_intents_only(store: SqlStore) -> None:
    intent = store.begin_intent("acme", "create", "n1", {})
    assert store.retry_intent(intent.id).attempts == 2
    assert store.retry_intent(intent.id, epoch=None).attempts == 3
    store.finish_intent(intent.id, IntentStatus.DONE)
    with pytest.raises(StoreError, match="only a pending one retries"):
        store.retry_intent(intent.id)
    with pytest.raises(StoreError, match="no intent with id 999"):
        store.retry_intent(999)
    with pytest.raises(InvalidRecordError):
        store.finish_intent(intent.id, IntentStatus.PENDING)


def test_journal_is_newest_first_and_limited(store: SqlStore) -> None:
    for i in range(5):
        store.begin_intent("acme", "create", f"n{i}", {})
    assert [i.target for i in store.journal("acme", limit=3)] == ["n4", "n3", "n2"]
    assert store.journal("nobody") == []


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "configkey",
        "api_key",
        "apiKey",
        "api",
        "token",
        "node_token",
        "secret",
        "HOSTWINDS_API_KEY",
        "rootPassword",
        "credentials",
        "private_key",
    ],
)
def test_secrets_are_refused_in_params(store: SqlStore, key: str) -> None:
    with pytest.raises(SecretInParamsError, match="looks like a secret") as info:
        store.begin_intent("acme", "create", "n1", {key: "hunter2"})
    assert "hunter2" not in str(info.value)
    assert store.journal("acme") == []


@pytest.mark.parametrize("key", ["rid", "location_id", "template", "srvrname", "ip", "hostname"])
def test_ordinary_params_pass(store: SqlStore, key: str) -> None:
    assert store.begin_intent("acme", "create", "n1", {key: "v"}).params == {key: "v"}


def test_params_must_be_text(store: SqlStore) -> None:
    with pytest.raises(InvalidRecordError, match="text to text"):
        store.begin_intent("acme", "create", "n1", {"rid": 3})  # type: ignore[dict-item]


def test_begin_intent_is_atomic_when_the_node_write_fails(store: SqlStore) -> None:
    """A failure after the intent insert, inside the transaction: nothing half-recorded."""
    store.upsert_node(make_node("acme-dallas-001", service_id=5))
    with pytest.raises(StoreError):
        store.begin_intent(
            "acme", "create", "acme-dallas-002", {}, node=make_node("acme-dallas-002", service_id=5)
        )
    assert store.journal("acme") == []
    assert [n.name for n in store.load_fleet("acme").nodes] == ["acme-dallas-001"]


def test_a_crash_mid_transaction_leaves_nothing(store: SqlStore) -> None:
    """The connection dies between the intent and the node write (a fault at the driver
    boundary): the whole transaction is gone, and the store keeps working afterwards."""

    dbapi_error = store.engine.dialect.loaded_dbapi.OperationalError

    def die(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "INSERT INTO vps_instances" in statement:
            raise dbapi_error("simulated crash")

    event.listen(store.engine, "before_cursor_execute", die)
    try:
        with pytest.raises(StoreUnavailableError, match="simulated crash"):
            store.begin_intent("acme", "create", "acme-dallas-001", {}, node=make_node())
    finally:
        event.remove(store.engine, "before_cursor_execute", die)
    assert store.journal("acme") == []
    assert store.load_fleet("acme").nodes == ()
    assert _count(store, m.VpsInstance) == 0
    store.begin_intent("acme", "create", "acme-dallas-001", {}, node=make_node())
    assert _count(store, m.Intent) == 1
    assert _count(store, m.SendingNode) == 1


def test_node_of_another_fleet_is_refused(store: SqlStore) -> None:
    with pytest.raises(InvalidRecordError, match="belongs to fleet"):
        store.begin_intent("other", "create", "n", {}, node=make_node())
    assert store.journal("other") == []
