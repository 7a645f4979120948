"""Property: whatever JSON (or bytes) the endpoint answers, every client method returns its
declared type or raises an error of ``reconciler.core.errors``; nothing else escapes."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import anyio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from providers.hostwinds import HostwindsClient
from reconciler.core.errors import ProviderError
from reconciler.core.fleet import CreateRequest, Location, ObservedServer, PricePlan
from tests.fakes.clocks import FakeClock
from tests.fakes.wires import Reply, ScriptedApi

scalars = st.none() | st.booleans() | st.integers(-5, 10**8) | st.floats() | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(
        st.sampled_from(
            ["success", "result", "message", "ERROR", "serviceid", "id", "srvrname", "status",
             "ips", "main_ip", "ram", "rid", "monthly", "IP Addresses", "ip", "name",
             "location_id", "created_at", "locked", "x"]
        ),
        inner,
        max_size=6,
    ),
    max_leaves=25,
)  # fmt: skip
bodies = (
    json_values.map(lambda body: Reply(body=body))
    | json_values.map(lambda body: Reply(body={"success": body}))
    | st.binary(max_size=40).map(lambda raw: Reply(raw=raw))
    | st.tuples(st.sampled_from([200, 400, 404, 429, 500]), json_values).map(
        lambda pair: Reply(body=pair[1], status=pair[0])
    )
)

Call = Callable[[HostwindsClient], Awaitable[object]]
CALLS: list[tuple[Call, type | None]] = [
    (lambda c: c.list_servers(), ObservedServer),
    (lambda c: c.get_server(5), None),
    (lambda c: c.find_servers_by_name("a"), ObservedServer),
    (lambda c: c.list_ips(5), str),
    (lambda c: c.price_list(), PricePlan),
    (lambda c: c.locations(), Location),
    (lambda c: c.create_server(CreateRequest("a", 12, 52, "t")), None),
    (lambda c: c.terminate(5), None),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reply=bodies, which=st.integers(0, len(CALLS) - 1))
@example(reply=Reply(body={"success": [{"serviceid": float("inf"), "ram": 1e300}]}), which=0)
@example(reply=Reply(body={"success": {"rid": 5, "monthly": float("inf")}}), which=1)
@example(reply=Reply(body={"success": {"1": {"rid": 5, "monthly": float("nan")}}}), which=4)
@example(reply=Reply(body={"success": [{"id": "9" * 40, "srvrname": "a"}]}), which=2)
def test_any_answer_gives_a_typed_result_or_a_project_error(reply: Reply, which: int) -> None:
    call, item_type = CALLS[which]
    api = ScriptedApi(fallback=lambda sent: reply)

    async def run() -> None:
        clock = FakeClock()
        async with HostwindsClient(
            "https://api.example.test/cloud/api.php",
            "key",
            rate_limit=1000.0,
            max_read_retries=1,
            transport=api.transport,
            sleep=clock.sleep,
            monotonic=clock.monotonic,
            rng=random.Random(0),
        ) as client:
            try:
                result = await call(client)
            except ProviderError:
                return
            if isinstance(result, list) and item_type is not None:
                assert all(isinstance(item, item_type) for item in result)
            elif which == 1:
                assert isinstance(result, ObservedServer)
            else:
                assert result is None

    anyio.run(run)
