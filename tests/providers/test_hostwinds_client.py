"""HostwindsClient against a scripted wire (httpx.MockTransport) on fake time: request
encoding, response mapping, error mapping, retries, rate limit. No sockets, no real sleeps."""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest

from providers.hostwinds import HostwindsClient, MissingCredentialError, client_from_settings
from providers.hostwinds.client import _tls_context_for
from providers.hostwinds.errors import AUTH_HINT
from reconciler.core.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    ProviderError,
    TerminalError,
    TransientError,
    UserError,
)
from reconciler.core.fleet import CreateRequest, Location, ServerStatus
from tests.fakes.clocks import FakeClock
from tests.fakes.wires import ANY, Reply, ScriptedApi, api_error, command_ok

pytestmark = pytest.mark.anyio

KEY = "k3y-under-test-0123456789"
URL = "https://api.example.test/cloud/api.php"


def instance(sid: int, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "serviceid": sid,
        "srvrname": name,
        "location_id": 12,
        "status": "ACTIVE",
        "main_ip": f"198.51.100.{sid % 250 + 2}",
        "ips": None,
        "product_id": 52,
        "product_name": "Unmanaged Linux VPS 2GB",
        "cpu": 1,
        "ram": 2048,
        "disk": 50,
        "locked": 0,
        "is_suspended": 0,
        "password": "pw-secret",
        "configkey": "ck-secret",
        **extra,
    }


@asynccontextmanager
async def client_for(
    api: ScriptedApi, **options: Any
) -> AsyncIterator[tuple[HostwindsClient, FakeClock]]:
    clock = FakeClock()
    options.setdefault("rate_limit", 1000.0)
    client = HostwindsClient(
        URL,
        KEY,
        transport=api.transport,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        rng=random.Random(7),
        **options,
    )
    async with client:
        yield client, clock


REQUEST = CreateRequest(
    name="mail-sea-1",
    location_id=12,
    rid=52,
    template="b1e32484-ea0d-4875-921f-2d01fd7b4341",
    ssh_keys=("ops", "backup"),
)


# --- requests --------------------------------------------------------------------------------


async def test_create_sends_one_form_post_with_repeated_keys_and_returns_nothing() -> None:
    api = ScriptedApi()
    api.json(
        "add_instance",
        [
            {"result": "success", "action": "Invoice Paid", "message": "Invoice paid"},
            {"result": "success", "action": "Add Instance", "message": "Server is being Created!"},
        ],
    )
    async with client_for(api) as (client, _):
        await client.create_server(REQUEST)  # returns no id: add_instance carries none
        assert dict(client.calls) == {"add_instance": 1}
    (sent,) = api.requests
    assert sent.method == "POST"
    assert sent.url == URL
    assert sent.content_type.startswith("application/x-www-form-urlencoded")
    assert sent.form == {
        "action": ["add_instance"],
        "template": [REQUEST.template],
        "rid": ["52"],
        "location_id": ["12"],
        "qty": ["1"],
        "srvrname": ["mail-sea-1"],
        "billingcycle": ["monthly"],
        "keys[]": ["ops", "backup"],
        "API": [KEY],
    }


async def test_an_error_in_any_entry_of_a_command_answer_counts() -> None:
    api = ScriptedApi()
    api.json(
        "add_instance",
        [
            {"result": "success", "action": "Invoice Paid", "message": "Invoice paid"},
            {"result": "error", "action": "Add Instance", "message": "Location Id is invalid."},
        ],
    )
    async with client_for(api) as (client, _):
        with pytest.raises(TerminalError, match=r"^add_instance failed: Location Id is invalid\."):
            await client.create_server(REQUEST)


@pytest.mark.parametrize(
    ("call", "action", "fields"),
    [
        (lambda c: c.terminate(5), "terminate", {"serviceid": "5"}),
        (lambda c: c.upgrade_instance(5, 53), "upgrade_instance", {"serviceid": "5", "rid": "53"}),
        (lambda c: c.upgrade_server(5), "upgrade_server", {"serviceid": "5"}),
        (lambda c: c.confirm_upgrade(5), "confirm_upgrade", {"serviceid": "5"}),
        (lambda c: c.revert_upgrade(5), "revert_upgrade", {"serviceid": "5"}),
        (
            lambda c: c.set_rdns(5, "198.51.100.7", "mx1.example.com"),
            "set_rdns",
            {"serviceid": "5", "ip": "198.51.100.7", "rdns": "mx1.example.com"},
        ),
    ],
)
async def test_commands_send_their_fields(
    call: Callable[[HostwindsClient], Any], action: str, fields: dict[str, str]
) -> None:
    api = ScriptedApi()
    api.json(action, command_ok())
    async with client_for(api) as (client, _):
        assert await call(client) is None
    (sent,) = api.requests
    assert sent.action == action
    assert {k: v[-1] for k, v in sent.form.items() if k not in ("action", "API")} == fields


async def test_every_call_has_a_timeout() -> None:
    seen: list[dict[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={"success": []})

    clock = FakeClock()
    async with HostwindsClient(
        URL, KEY, timeout=7.5, transport=httpx.MockTransport(handler), monotonic=clock.monotonic
    ) as client:
        await client.list_servers()
    assert seen == [{"connect": 7.5, "read": 7.5, "write": 7.5, "pool": 7.5}]


# --- reads -----------------------------------------------------------------------------------


async def test_list_servers_is_one_call_for_the_whole_fleet() -> None:
    api = ScriptedApi()
    api.json("get_instances", {"success": [instance(n, f"mail-sea-{n}") for n in range(1, 51)]})
    async with client_for(api) as (client, _):
        servers = await client.list_servers()
        assert dict(client.calls) == {"get_instances": 1}
    assert len(servers) == 50
    assert servers[0].status is ServerStatus.ACTIVE
    assert "secret" not in repr(servers)


@pytest.mark.parametrize(
    "body",
    [
        {"success": []},
        {"success": {}},
        {"success": True},
        {"success": None},
        [{"result": "error", "message": "No Instances Found"}],
    ],
)
async def test_an_empty_account_is_an_empty_list(body: object) -> None:
    api = ScriptedApi()
    api.json("get_instances", body)
    async with client_for(api) as (client, _):
        assert await client.list_servers() == []


async def test_an_unchanged_listing_is_not_parsed_again() -> None:
    """The same answer bytes give the same servers (the very objects: not parsed again); a
    changed answer, even by one field, is parsed; an answer that does not parse is never kept."""
    fleet = [instance(n, f"mail-sea-{n}") for n in range(1, 4)]
    api = ScriptedApi()
    api.json("get_instances", {"success": fleet})
    api.json("get_instances", {"success": fleet})
    changed = [*fleet[:2], instance(3, "mail-sea-3", status="SHUTOFF")]
    api.json("get_instances", {"success": changed})
    api.json("get_instances", {"success": [{"serviceid": "not a number"}]})
    api.json("get_instances", {"success": changed})
    api.json("get_instances", {"success": changed})
    async with client_for(api, max_read_retries=0) as (client, _):
        first = await client.list_servers()
        again = await client.list_servers()
        assert again == first
        assert all(a is b for a, b in zip(again, first, strict=True))
        third = await client.list_servers()
        assert [s.status for s in third] == [ServerStatus.ACTIVE] * 2 + [ServerStatus.SHUTOFF]
        with pytest.raises(ProviderError):
            await client.list_servers()
        fifth = await client.list_servers()
        assert fifth == third
        assert await client.list_servers() == third
        assert dict(client.calls) == {"get_instances": 6}


async def test_a_client_that_lists_once_parses_every_answer_and_keeps_none() -> None:
    # a dry-run lists the account once: no digest of the answer, nothing kept (issue 14)
    fleet = [instance(n, f"mail-sea-{n}") for n in range(1, 4)]
    api = ScriptedApi()
    api.json("get_instances", {"success": fleet})
    api.json("get_instances", {"success": fleet})
    async with client_for(api, remember_listing=False) as (client, _):
        first = await client.list_servers()
        again = await client.list_servers()
        assert again == first
        assert not any(a is b for a, b in zip(again, first, strict=True))
        assert client._listing is None
        assert dict(client.calls) == {"get_instances": 2}


def test_a_plain_http_endpoint_gets_a_context_that_trusts_no_certificate() -> None:
    # no CA bundle loaded for the embedded simulator's http:// URL (issue 14); any TLS it
    # were made to speak would fail verification
    context = _tls_context_for("http://127.0.0.1:8080/cloud/api.php")
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 0
    for endpoint in ("https://clients.hostwinds.com/cloudapi.php", "HTTPS://x/y", "ftp://x", ""):
        assert _tls_context_for(endpoint) is True


async def test_list_servers_accepts_an_id_keyed_dict() -> None:
    api = ScriptedApi()
    api.json("get_instances", {"success": {"1": instance(1, "a"), "2": instance(2, "b")}})
    async with client_for(api) as (client, _):
        assert [s.name for s in await client.list_servers()] == ["a", "b"]


async def test_find_by_name_filters_exactly_then_reads_only_the_match() -> None:
    api = ScriptedApi()
    api.json(
        "get_instance_ids",
        {
            "success": [
                {"id": 10, "srvrname": "mail-sea-1", "hostname": "h", "dedicatedip": "x"},
                {"id": 11, "srvrname": "mail-sea-10"},
                {"id": 12, "srvrname": "MAIL-SEA-1"},
            ]
        },
    )
    api.json("get_instance", {"success": instance(10, "mail-sea-1")})
    async with client_for(api) as (client, _):
        found = await client.find_servers_by_name("mail-sea-1")
        assert dict(client.calls) == {"get_instance_ids": 1, "get_instance": 1}
    assert [s.service_id for s in found] == [10]
    assert api.requests[0].field("search") == "mail-sea-1"
    assert api.requests[1].field("serviceid") == "10"


async def test_find_by_name_reads_further_pages_and_stops_on_a_repeat() -> None:
    api = ScriptedApi()
    page1 = [{"id": n, "srvrname": f"web-{n}"} for n in range(100)]
    api.json("get_instance_ids", {"success": page1})
    api.json("get_instance_ids", {"success": [{"id": 500, "srvrname": "web"}]})
    api.json("get_instance", {"success": instance(500, "web")})
    async with client_for(api) as (client, _):
        found = await client.find_servers_by_name("web")
    assert [s.service_id for s in found] == [500]
    assert [r.field("page") for r in api.requests[:2]] == ["1", "2"]
    # a server that ignores paging (same page again) does not loop forever
    api2 = ScriptedApi()
    api2.json("get_instance_ids", {"success": page1}, times=2)
    async with client_for(api2) as (client, _):
        assert await client.find_servers_by_name("nothing") == []
    assert len(api2.requests) == 2


async def test_find_by_name_skips_a_server_gone_between_the_calls() -> None:
    api = ScriptedApi()
    api.json("get_instance_ids", {"success": [{"id": 10, "srvrname": "a"}]})
    api.json("get_instance", api_error("A valid serviceid is required."))
    async with client_for(api) as (client, _):
        assert await client.find_servers_by_name("a") == []


async def test_get_server_uses_the_requested_id_when_the_answer_has_none() -> None:
    api = ScriptedApi()
    body = instance(0, "a")
    del body["serviceid"]
    api.json("get_instance", {"success": body})
    async with client_for(api) as (client, _):
        server = await client.get_server(99)
    assert server.service_id == 99


async def test_catalogue_reads() -> None:
    api = ScriptedApi()
    api.json(
        "get_price_list",
        {
            "success": {
                "7": {"id": "7", "rid": "53", "name": "4GB", "ram": "4", "cpu": "2", "disk": "75",
                      "bandwidth": "3000", "monthly": "19.99"},
                "6": {"id": "6", "rid": "52", "name": "2GB", "ram": "2", "cpu": "1", "disk": "50",
                      "bandwidth": "2000", "monthly": "9.99"},
                "junk": {"name": "no price"},
            }
        },
    )  # fmt: skip
    api.json("get_locations", {"success": [{"id": 12, "name": "Seattle"}]})
    api.json("get_instance_ips", {"success": {"IP Addresses": [{"ip": "198.51.100.2"}]}})
    async with client_for(api) as (client, _):
        plans = await client.price_list()
        assert [(p.rid, p.monthly) for p in plans] == [
            (52, Decimal("9.99")),
            (53, Decimal("19.99")),
        ]
        assert await client.locations() == [Location(12, "Seattle")]
        assert await client.list_ips(5) == ["198.51.100.2"]


# --- error mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "error", "hint"),
    [
        ("Not Authorized!", AuthError, "allow-list"),
        ("A valid serviceid is required.", NotFoundError, None),
        ("Invalid Action.", TerminalError, "endpoint"),
        ("Location Id is invalid.", TerminalError, "location_id"),
        ("Service is locked. Unlock it first.", ConflictError, None),
        ("An upgrade order is already pending.", ConflictError, None),
        ("Only one pending upgrade order is allowed.", ConflictError, None),
        ("The server is not waiting for an upgrade confirmation.", ConflictError, None),
        ("Hourly products are disabled! Please contact customer service.", TerminalError, None),
        ("An unexpected error occurred.", TransientError, None),
        ("Something else entirely", TerminalError, None),
    ],
)
async def test_api_errors_map_into_the_error_tree(
    message: str, error: type[ProviderError], hint: str | None
) -> None:
    api = ScriptedApi()
    api.json("terminate", api_error(message, "Terminate", "6734"))
    async with client_for(api) as (client, _):
        with pytest.raises(error) as caught:
            await client.terminate(5)
    assert type(caught.value) is error
    assert str(caught.value).startswith(f"terminate failed: {message}")
    assert "6734" in str(caught.value)  # informational only
    if hint:
        assert hint in (caught.value.hint or "")
    assert len(api.requests) == 1  # a mutation is never repeated


@pytest.mark.parametrize("status", [200, 401, 403, 500])
@pytest.mark.parametrize(
    "body",
    [
        {"result": "error", "action": "Authorization", "message": "Not Authorized!"},
        [{"result": "error", "action": "Authorization", "message": "Not Authorized!"}],
    ],
)
async def test_the_body_wins_over_the_status(status: int, body: object) -> None:
    api = ScriptedApi()
    api.json("get_instances", body, status=status)
    async with client_for(api) as (client, _):
        with pytest.raises(AuthError) as caught:
            await client.list_servers()
    assert caught.value.hint == AUTH_HINT
    assert len(api.requests) == 1  # terminal: not retried


async def test_terminal_read_errors_are_not_retried() -> None:
    api = ScriptedApi()
    api.json("get_instance", api_error("A valid serviceid is required.", "Get Instance"))
    async with client_for(api) as (client, _):
        with pytest.raises(NotFoundError):
            await client.get_server(1)
        assert client.calls["get_instance"] == 1


# --- retries ---------------------------------------------------------------------------------

PHP_NOISE = b'<br />\n<b>Warning</b>: Undefined array key<br />\n{"success":[]}'


@pytest.mark.parametrize(
    "failure",
    [
        Reply(raw=b"<h1>503</h1>", status=503),
        Reply(raw=b"<h1>502</h1>", status=502),
        Reply(body={"detail": "overloaded"}, status=500),
        Reply(raw=PHP_NOISE),
        Reply(body=api_error("An unexpected error occurred.")),
        Reply(body={"neither": "envelope"}),
        Reply(error=httpx.ReadTimeout),
        Reply(error=httpx.ConnectError),
        Reply(error=httpx.ConnectTimeout),
        Reply(error=httpx.RemoteProtocolError),
    ],
)
async def test_reads_retry_transient_failures_with_backoff(failure: Reply) -> None:
    api = ScriptedApi()
    api.queue("get_instances", failure, times=3)
    api.json("get_instances", {"success": [instance(1, "a")]})
    async with client_for(api, backoff_base=0.5) as (client, clock):
        servers = await client.list_servers()
        assert client.calls["get_instances"] == 4
    assert [s.name for s in servers] == ["a"]
    assert len(clock.sleeps) == 3
    for attempt, slept in enumerate(clock.sleeps):
        assert 0.0 <= slept <= 0.5 * 2**attempt  # full jitter under the exponential ceiling


async def test_reads_give_up_after_the_retry_budget() -> None:
    api = ScriptedApi()
    api.queue(ANY, Reply(raw=b"oops", status=500), times=10)
    async with client_for(api, max_read_retries=2) as (client, _):
        with pytest.raises(TransientError, match=r"^get_price_list failed: HTTP 500"):
            await client.price_list()
    assert len(api.requests) == 3


async def test_429_honours_retry_after_for_reads() -> None:
    api = ScriptedApi()
    api.raw("get_locations", b"Too Many Requests", status=429, headers={"Retry-After": "7"})
    api.json("get_locations", {"success": [{"id": 12, "name": "Seattle"}]})
    async with client_for(api) as (client, clock):
        assert await client.locations() == [Location(12, "Seattle")]
    assert clock.sleeps == [7.0]


@pytest.mark.parametrize(
    "failure",
    [
        Reply(raw=b"<h1>502 Bad Gateway</h1>", status=502),
        Reply(raw=b"Too Many Requests", status=429, headers={"Retry-After": "1"}),
        Reply(raw=PHP_NOISE),
        Reply(body=api_error("An unexpected error occurred.")),
        Reply(error=httpx.ReadTimeout),
        Reply(error=httpx.WriteTimeout),
        Reply(error=httpx.ReadError),
        Reply(error=httpx.RemoteProtocolError),
    ],
)
async def test_mutations_that_may_have_reached_the_server_are_never_repeated(
    failure: Reply,
) -> None:
    api = ScriptedApi()
    api.queue("add_instance", failure)
    async with client_for(api) as (client, clock):
        with pytest.raises(TransientError) as caught:
            await client.create_server(REQUEST)
        assert client.calls["add_instance"] == 1
    assert str(caught.value).startswith("add_instance failed:")
    assert clock.sleeps == []


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
async def test_mutations_are_retried_when_the_request_provably_did_not_leave(
    error: type[httpx.TransportError],
) -> None:
    api = ScriptedApi()
    api.fail("terminate", error, times=2)
    api.json("terminate", command_ok("Terminate", "Instance deleted"))
    async with client_for(api) as (client, _):
        await client.terminate(5)
        assert client.calls["terminate"] == 3


async def test_connect_failures_end_as_transient_naming_the_action() -> None:
    api = ScriptedApi()
    api.fail("terminate", httpx.ConnectError, times=10)
    async with client_for(api, max_read_retries=1) as (client, _):
        with pytest.raises(TransientError, match="did not reach the server") as caught:
            await client.terminate(5)
    assert str(caught.value).startswith("terminate failed:")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(api.requests) == 2


# --- rate limit ------------------------------------------------------------------------------


async def test_requests_are_throttled_to_the_rate() -> None:
    api = ScriptedApi(fallback=lambda sent: Reply(body={"success": []}))
    async with client_for(api, rate_limit=2.0, burst=1) as (client, clock):
        for _ in range(5):
            await client.list_servers()
    assert clock.monotonic() == pytest.approx(2.0)  # 5 requests at 2/s, no burst


# --- construction ----------------------------------------------------------------------------


def test_client_from_settings_reads_the_key_and_the_endpoint_override() -> None:
    import asyncio

    client = client_from_settings(
        endpoint="https://clients.hostwinds.com/cloud/api.php",
        api_key_env="MY_KEY",
        environ={"MY_KEY": KEY, "HOSTWINDS_API_URL": "http://127.0.0.1:9/cloud/api.php"},
        rate_limit=3.0,
        timeout=5.0,
    )
    try:
        assert client.endpoint == "http://127.0.0.1:9/cloud/api.php"
        assert client.rate_limit == 3.0
        assert KEY not in repr(client)
        assert KEY not in str(vars(client))
    finally:
        asyncio.run(client.aclose())


@pytest.mark.parametrize("environ", [{}, {"MY_KEY": ""}, {"MY_KEY": "   "}])
def test_a_missing_key_is_a_user_error_naming_the_variable(environ: dict[str, str]) -> None:
    with pytest.raises(MissingCredentialError) as caught:
        client_from_settings(
            endpoint="https://clients.hostwinds.com/cloud/api.php",
            api_key_env="MY_KEY",
            environ=environ,
            rate_limit=2.0,
            timeout=30.0,
        )
    assert isinstance(caught.value, UserError)
    assert "MY_KEY" in str(caught.value)
    assert caught.value.hint is not None
    assert "MY_KEY" in caught.value.hint


def test_repr_hides_the_key_and_url_credentials() -> None:
    import asyncio

    client = HostwindsClient("https://user:pw@api.example.test/cloud/api.php?x=1", KEY)
    try:
        text = repr(client)
        assert KEY not in text
        assert "pw" not in text
        assert (
            text
            == "HostwindsClient(endpoint='https://api.example.test/cloud/api.php', rate_limit=2.0)"
        )
    finally:
        asyncio.run(client.aclose())


async def test_an_answer_that_never_ends_hits_the_overall_deadline() -> None:
    import asyncio

    async def stuck(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    clock = FakeClock()
    async with HostwindsClient(
        URL,
        KEY,
        timeout=0.02,
        max_read_retries=1,
        transport=httpx.MockTransport(stuck),
        sleep=clock.sleep,
    ) as client:
        with pytest.raises(TransientError, match="overall deadline"):
            await client.list_servers()
        with pytest.raises(TransientError, match="outcome is unknown"):
            await client.terminate(5)
        assert dict(client.calls) == {"get_instances": 2, "terminate": 1}


# --- known refusals (issue 9, design §3c) ---------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "refused"),
    [
        (Reply(raw=b"Too Many Requests", status=429, headers={"Retry-After": "3"}), True),
        (Reply(raw=b"Bad Request", status=400), True),
        (Reply(body=api_error("Location Id is invalid.")), True),
        (Reply(body=api_error("An unexpected error occurred.")), True),  # error in a 200
        (Reply(error=httpx.ConnectError), True),  # never reached the server
        (Reply(raw=b"<h1>502 Bad Gateway</h1>", status=502), False),
        (Reply(error=httpx.ReadTimeout), False),
        (Reply(error=httpx.RemoteProtocolError), False),
    ],
)
async def test_a_mutation_knows_whether_it_was_refused(reply: Reply, refused: bool) -> None:
    api = ScriptedApi()
    api.queue("add_instance", reply, times=5)
    async with client_for(api, max_read_retries=0) as (client, _):
        with pytest.raises(ProviderError) as caught:
            await client.create_server(REQUEST)
    assert caught.value.refused is refused, caught.value


async def test_a_429_slows_the_bucket_and_the_next_request_waits_for_retry_after() -> None:
    api = ScriptedApi()
    api.raw("add_instance", b"Too Many Requests", status=429, headers={"Retry-After": "4"})
    api.json("add_instance", command_ok("Add Instance"), times=30)
    async with client_for(api, rate_limit=2.0) as (client, clock):
        with pytest.raises(TransientError) as caught:
            await client.create_server(REQUEST)
        assert caught.value.refused
        assert client.rate_limit == 1.0  # halved
        started = clock.monotonic()
        await client.create_server(REQUEST)
        assert clock.monotonic() - started >= 4.0  # Retry-After honoured
        for _ in range(20):
            await client.create_server(REQUEST)
        assert client.rate_limit == 2.0  # grew back after successes
    assert api.actions.count("add_instance") == 22  # the refused request was not repeated
