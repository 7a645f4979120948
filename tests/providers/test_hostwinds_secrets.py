"""SECRET CANARY: the API key and the root password/configkey never leave the client.

The key is a unique string; DEBUG logging is on for every logger (ours, httpx, httpcore);
every client path is driven, each error path included, over a scripted wire and over a real
socket to the simulator. The canaries must appear nowhere in the captured logs, in exception
messages, reprs, hints or formatted tracebacks (causes included), in ``repr(client)``, or on
stdout/stderr.
"""

from __future__ import annotations

import logging
import random
import traceback
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from providers.hostwinds import HostwindsClient, client_from_settings
from providers.simulator.serving import SimulatorServer
from reconciler.core.errors import ReconcilerError
from reconciler.core.fleet import CreateRequest
from tests.fakes.clocks import FakeClock
from tests.fakes.wires import Reply, ScriptedApi, api_error, command_ok

pytestmark = pytest.mark.anyio

KEY = f"CANARY-KEY-{uuid.uuid4().hex}"
PASSWORD = f"CANARY-PW-{uuid.uuid4().hex}"
CONFIGKEY = f"CANARY-CK-{uuid.uuid4().hex}"
CANARIES = (KEY, PASSWORD, CONFIGKEY)


def leaky_instance(sid: int = 7, name: str = "mail-sea-1") -> dict[str, Any]:
    return {
        "serviceid": sid,
        "srvrname": name,
        "location_id": 12,
        "status": "ACTIVE",
        "main_ip": "198.51.100.7",
        "password": PASSWORD,
        "configkey": CONFIGKEY,
        "nested": {"password": PASSWORD, "note": f"key was {KEY}"},
    }


REQUEST = CreateRequest(name="mail-sea-1", location_id=12, rid=52, template="t", ssh_keys=("k",))

Call = Callable[[HostwindsClient], Awaitable[object]]
CALLS: list[tuple[str, Call]] = [
    ("get_instances", lambda c: c.list_servers()),
    ("get_instance", lambda c: c.get_server(7)),
    ("get_instance_ips", lambda c: c.list_ips(7)),
    ("get_price_list", lambda c: c.price_list()),
    ("get_locations", lambda c: c.locations()),
    ("add_instance", lambda c: c.create_server(REQUEST)),
    ("terminate", lambda c: c.terminate(7)),
    ("upgrade_instance", lambda c: c.upgrade_instance(7, 53)),
    ("upgrade_server", lambda c: c.upgrade_server(7)),
    ("confirm_upgrade", lambda c: c.confirm_upgrade(7)),
    ("revert_upgrade", lambda c: c.revert_upgrade(7)),
    ("set_rdns", lambda c: c.set_rdns(7, "198.51.100.7", "mx.example.com")),
]

SUCCESS: dict[str, object] = {
    "get_instances": {"success": [leaky_instance()]},
    "get_instance": {"success": leaky_instance()},
    "get_instance_ips": {"success": {"IP Addresses": [{"ip": "198.51.100.7"}], "API": KEY}},
    "get_price_list": {"success": {"1": {"rid": "52", "name": "x", "monthly": "9.99"}}},
    "get_locations": {"success": [{"id": 12, "name": "Seattle", "echo": KEY}]},
}

FAILURES: list[Reply] = [
    Reply(body=[{"result": "error", "action": "Authorization", "message": "Not Authorized!"}]),
    Reply(body={"result": "error", "action": "Authorization", "message": "Not Authorized!"}),
    Reply(body=api_error("A valid serviceid is required.")),
    Reply(body=api_error("Invalid Action.", code="6734")),
    Reply(body=api_error("Location Id is invalid.")),
    Reply(body=api_error("Service is locked. Unlock it first.")),
    Reply(body=api_error(f"Invalid API key {KEY}", code=KEY)),
    Reply(body=api_error("An unexpected error occurred.")),
    Reply(body={"unexpected": KEY, "password": PASSWORD}),
    Reply(raw=f'<b>Warning</b> {{"password":"{PASSWORD}","API":"{KEY}"}}'.encode()),
    Reply(raw=f"<h1>503 {KEY}</h1>".encode(), status=503),
    Reply(raw=b"slow down", status=429, headers={"Retry-After": "2"}),
    Reply(body=api_error("Not Authorized!"), status=403),
    Reply(error=httpx.ReadTimeout),
    Reply(error=httpx.ConnectError),
    Reply(error=httpx.RemoteProtocolError),
]


def render(exc: BaseException) -> str:
    parts = ["".join(traceback.format_exception(exc)), repr(exc), str(exc)]
    if isinstance(exc, ReconcilerError):
        parts += [exc.message, repr(exc.hint), repr(vars(exc))]
    return "\n".join(parts)


def assert_clean(*texts: str) -> None:
    for text in texts:
        for canary in CANARIES:
            assert canary not in text


@pytest.fixture(autouse=True)
def debug_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("providers.hostwinds", "httpx", "httpcore"):
        caplog.set_level(logging.DEBUG, logger=name)


async def test_no_canary_escapes_over_the_scripted_wire(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    api = ScriptedApi()
    errors: list[str] = []
    clock = FakeClock()
    client = HostwindsClient(
        "https://api.example.test/cloud/api.php",
        KEY,
        rate_limit=1000.0,
        max_read_retries=1,
        transport=api.transport,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
        rng=random.Random(5),
    )
    async with client:
        # every path once successfully
        for action, call in CALLS:
            api.json(action, SUCCESS.get(action, command_ok()))
            if action == "get_instance_ids":
                continue
            await call(client)
        api.json("get_instance_ids", {"success": [{"id": 7, "srvrname": "mail-sea-1"}]})
        api.json("get_instance", {"success": leaky_instance()})
        servers = await client.find_servers_by_name("mail-sea-1")
        assert servers
        assert_clean(repr(servers), str([vars(type(s)) for s in servers[:0]]))
        # every path through every failure
        for failure in FAILURES:
            for action, call in CALLS:
                api.queue(action, failure, times=2)  # reads retry once
                with pytest.raises(ReconcilerError) as caught:
                    await call(client)
                errors.append(render(caught.value))
                api._queues.pop(action, None)
        assert_clean(repr(client), str(client), repr(dict(client.calls)))
    logged = caplog.text + "\n".join(
        logging.Formatter("%(message)s %(args)s").format(r) for r in caplog.records
    )
    assert "get_instances" in caplog.text  # logging was really on
    out, err = capsys.readouterr()
    assert_clean(logged, out, err, *errors)
    assert len(errors) == len(FAILURES) * len(CALLS)


async def test_no_canary_escapes_over_a_real_socket(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    errors: list[str] = []
    with SimulatorServer(api_key=KEY, build_seconds=0.0) as sim:
        client = client_from_settings(
            endpoint="https://clients.hostwinds.com/cloud/api.php",
            api_key_env="CANARY_KEY",
            environ={"CANARY_KEY": KEY, "HOSTWINDS_API_URL": sim.api_url},
            rate_limit=500.0,
            timeout=2.0,
            max_read_retries=0,  # no real backoff sleeps in this test
        )
        async with client, httpx.AsyncClient(base_url=sim.url) as admin:
            name = f"canary-{uuid.uuid4().hex[:8]}"
            await client.create_server(
                CreateRequest(name=name, location_id=12, rid=52, template="ubuntu-22.04")
            )
            (server,) = await client.find_servers_by_name(name)
            sid = server.service_id
            secrets = (sim.world.instances[sid].password, sim.world.instances[sid].configkey)
            await client.list_servers()
            await client.list_ips(sid)
            await client.price_list()
            await client.locations()
            assert server.main_ip is not None
            await client.set_rdns(sid, server.main_ip, "mx.example.com")
            await client.upgrade_instance(sid, 53)
            await client.upgrade_server(sid)
            await admin.post("/sim/clock/advance", json={"seconds": 5})
            await client.confirm_upgrade(sid)
            for bad in (
                client.get_server(1),
                client.terminate(1),
                client.confirm_upgrade(sid),
                client.set_rdns(sid, "192.0.2.99", "x.example.com"),
                client.create_server(
                    CreateRequest(name="x", location_id=999, rid=52, template="ubuntu-22.04")
                ),
            ):
                with pytest.raises(ReconcilerError) as caught:
                    await bad
                errors.append(render(caught.value))
            for fault in ({"http_5xx_rate": 1.0}, {"malformed_json_rate": 1.0},
                          {"error_in_200_rate": 1.0}, {"lost_response_rate": 1.0}):  # fmt: skip
                await admin.post("/sim/faults", json=fault)
                for call in (client.get_server(sid), client.confirm_upgrade(sid)):
                    with pytest.raises(ReconcilerError) as caught:
                        await call
                    errors.append(render(caught.value))
                await admin.delete("/sim/faults")
            await client.terminate(sid)
            errors.append(repr(await client.list_servers()))
            assert_clean(repr(client), repr(sim))
        wrong = HostwindsClient(sim.api_url, "not-the-key", rate_limit=500.0)
        async with wrong:
            with pytest.raises(ReconcilerError) as caught:
                await wrong.list_servers()
            errors.append(render(caught.value))
    out, err = capsys.readouterr()
    assert "hostwinds" in caplog.text
    for secret in secrets:
        for text in (caplog.text, out, err, *errors):
            assert secret not in text
    assert_clean(caplog.text, out, err, *errors)
