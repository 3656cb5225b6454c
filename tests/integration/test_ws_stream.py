"""`perseus ws` as users see it: a real gateway in front of a real core, driven with the `websockets` client.

Covers the protocol of CONTRACT.md (keys, subscribe/unsubscribe and their
acks, both channel forms, event envelopes with seq and the public projection,
errors), limits (connections per key across gateways, channels per message
and connection, message rate, frame size), resume (exact, and the resume gap)
and the AsyncAPI document.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import jsonschema
import pytest
from websockets.exceptions import ConnectionClosed

from core.adapters.events import EventPublisher
from core.adapters.redis_keys import RedisKeys
from gateways.common.auth import CACHE_TTL_S
from tests.support import ws as support
from tests.support.processes import Process, free_port, run_cli, running_core, running_gateway
from tests.support.redis_target import pipeline
from tests.support.ws import (
    events,
    fresh_symbol,
    make_key,
    open_stream,
    prices_channel,
    publish_prices,
    recv,
    send,
    subscribe,
)

pytestmark = pytest.mark.integration
key = support.key  # fixtures: an internal key, the core's event publisher
publisher = support.publisher

ASYNCAPI_SCHEMA = "tests/fixtures/asyncapi/asyncapi-3.1.0.schema.json"
WS_ENV = {"PERSEUS_WS_LEASE_S": "3", "PERSEUS_WS_MESSAGE_BURST": "30", "PERSEUS_WS_KEY_RECHECK_S": "0.5"}


@pytest.fixture(scope="module")
def ws_env(migrated_env: dict[str, str]) -> dict[str, str]:
    return {**migrated_env, **WS_ENV}


@pytest.fixture(scope="module")
def core_metrics_addr() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def core(migrated_env: dict[str, str], core_metrics_addr: str) -> Iterator[Process]:
    """A core with its Prometheus endpoint on, to count the gateway's streams."""
    with running_core(migrated_env, PERSEUS_CORE_METRICS_ADDR=core_metrics_addr) as process:
        yield process


def gauge(addr: str, name: str) -> float:
    text = httpx.get(f"http://{addr}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


@pytest.fixture(scope="module")
def gateway(ws_env: dict[str, str], core: Process) -> Iterator[Process]:
    with running_gateway("ws", ws_env, core.addr) as process:
        yield process


async def close_code(ws: object, within: float = 10.0) -> int | None:
    """Read until the server closes; the close code it sent."""
    async with asyncio.timeout(within):
        try:
            while True:
                await ws.recv()  # type: ignore[attr-defined]
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


# --- keys ------------------------------------------------------------------------------------


async def test_a_missing_key_closes_with_4001(gateway: Process) -> None:
    async with open_stream(gateway.addr, None) as ws:
        assert await close_code(ws) == 4001


async def test_an_unknown_key_closes_with_4001(gateway: Process) -> None:
    async with open_stream(gateway.addr, "pk_free_nope") as ws:
        assert await close_code(ws) == 4001


async def test_the_key_may_come_in_the_x_api_key_header(gateway: Process, key: str) -> None:
    async with open_stream(gateway.addr, None, additional_headers={"X-API-Key": key}) as ws:
        assert await subscribe(ws, ["prices:BTC-USD"]) == {"type": "subscribed", "channels": ["prices:BTC-USD"]}


async def test_an_open_connection_closes_with_4001_within_seconds_of_its_key_being_revoked(
    gateway: Process, ws_env: dict[str, str], key: str
) -> None:
    revoked, kept = make_key(ws_env, "free"), make_key(ws_env, "free")
    quiet = [f"prices:{fresh_symbol()}" for _ in range(2)]  # no events: every message read is an answer
    async with open_stream(gateway.addr, revoked) as doomed, open_stream(gateway.addr, kept) as other:
        assert (await subscribe(doomed, quiet[:1]))["type"] == "subscribed"
        assert (await subscribe(other, quiet[:1]))["type"] == "subscribed"
        result = await asyncio.to_thread(run_cli, ["keys", "revoke", revoked], ws_env)
        assert result.returncode == 0, result.stderr
        assert await close_code(doomed, within=CACHE_TTL_S + 3) == 4001
        assert (await subscribe(other, quiet[1:]))["type"] == "subscribed"  # another key's stays open
    async with open_stream(gateway.addr, revoked) as again:
        assert await close_code(again) == 4001


# --- subscribe, events, unsubscribe ----------------------------------------------------------


async def test_events_carry_the_clients_channel_name_seq_and_public_data(
    gateway: Process, key: str, publisher: EventPublisher
) -> None:
    symbol = fresh_symbol()
    short, explicit = f"prices:{symbol}", f"prices:sim:{symbol}"
    async with open_stream(gateway.addr, key) as a, open_stream(gateway.addr, key) as b:
        assert await subscribe(a, [short]) == {"type": "subscribed", "channels": [short]}
        assert await subscribe(b, [explicit.replace("sim", "SIM")]) == {
            "type": "subscribed",
            "channels": [explicit.replace("sim", "SIM")],
        }
        last = await publish_prices(publisher, prices_channel(symbol), range(100, 103))
        got_a, got_b = await events(a, 3), await events(b, 3)
    assert [e["seq"] for e in got_a] == [last - 2, last - 1, last]
    assert [e["seq"] for e in got_b] == [e["seq"] for e in got_a]
    first = got_a[0]
    assert first["type"] == "price_update" and first["channel"] == short
    assert got_b[0]["channel"] == explicit.replace("sim", "SIM")
    assert first["data"]["price"] == "100.5" and first["data"]["symbol"] == symbol
    assert set(first) == {"type", "channel", "seq", "data"}


async def test_unsubscribe_is_acknowledged_and_stops_events(
    gateway: Process, key: str, publisher: EventPublisher
) -> None:
    symbol = fresh_symbol()
    other = fresh_symbol()
    async with open_stream(gateway.addr, key) as ws:
        await subscribe(ws, [f"prices:{symbol}", f"prices:{other}"])
        await send(ws, {"action": "unsubscribe", "channels": [f"prices:{symbol}"]})
        assert await recv(ws) == {"type": "unsubscribed", "channels": [f"prices:{symbol}"]}
        await publish_prices(publisher, prices_channel(symbol), range(1, 3))
        await publish_prices(publisher, prices_channel(other), range(1, 2))
        event = await recv(ws)
    assert event["channel"] == f"prices:{other}"


async def test_a_duplicate_subscribe_is_acknowledged_and_delivers_once(
    gateway: Process, key: str, publisher: EventPublisher
) -> None:
    channel = f"prices:{fresh_symbol()}"
    async with open_stream(gateway.addr, key) as ws:
        await subscribe(ws, [channel, channel])
        assert await subscribe(ws, [channel]) == {"type": "subscribed", "channels": [channel]}
        await publish_prices(publisher, prices_channel(channel.split(":")[1]), range(1, 3))
        got = await events(ws, 2)
        await send(ws, {"action": "unsubscribe", "channels": [channel]})
        assert await recv(ws) == {"type": "unsubscribed", "channels": [channel]}
    assert got[1]["seq"] == got[0]["seq"] + 1


async def test_many_clients_share_one_core_stream_and_each_channel_is_held_once(
    gateway: Process, key: str, core_metrics_addr: str, publisher: EventPublisher
) -> None:
    symbols = [fresh_symbol(), fresh_symbol()]
    names = [f"prices:{s}" for s in symbols]
    channels_before = gauge(gateway.addr, "perseus_ws_channels")
    clients = [await open_stream(gateway.addr, key).__aenter__() for _ in range(12)]
    try:
        for i, ws in enumerate(clients):
            await subscribe(ws, [names[i % 2]])
        assert gauge(gateway.addr, "perseus_ws_channels") == channels_before + 2
        multiplex = 'perseus_grpc_active_streams{method="/perseus.marketdata.v1.StreamService/Multiplex"}'
        assert gauge(core_metrics_addr, multiplex) == 1  # one core stream for all the clients
        await publish_prices(publisher, prices_channel(symbols[0]), range(1, 2))
        got = [await recv(ws) for ws in clients[::2]]
        assert {e["channel"] for e in got} == {names[0]}
    finally:
        for ws in clients:
            await ws.close()
    deadline = asyncio.get_running_loop().time() + 5
    while gauge(gateway.addr, "perseus_ws_channels") != channels_before:  # the last one out unsubscribed
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "INVALID_MESSAGE"),
        ("[1, 2]", "INVALID_MESSAGE"),
        ('{"action": "dance", "channels": ["prices:BTC-USD"]}', "INVALID_MESSAGE"),
        ('{"action": "subscribe"}', "INVALID_MESSAGE"),
        ('{"action": "subscribe", "channels": []}', "INVALID_MESSAGE"),
        ('{"action": "subscribe", "channels": ["weather:BTC-USD"]}', "INVALID_CHANNEL"),
        ('{"action": "subscribe", "channels": ["candles:BTC-USD:2h"]}', "INVALID_CHANNEL"),
        ('{"action": "subscribe", "channels": ["prices:BTCUSD"]}', "INVALID_CHANNEL"),
        ('{"action": "subscribe", "channels": ["prices:nowhere:BTC-USD"]}', "INVALID_CHANNEL"),
        ('{"action": "subscribe", "channels": [7]}', "INVALID_CHANNEL"),
        (
            json.dumps({"action": "subscribe", "channels": [f"prices:A{i}-USD" for i in range(21)]}),
            "SUBSCRIPTION_LIMIT",
        ),
        ('{"action": "subscribe", "channels": ["prices:BTC-USD"], "resume": {"prices:ETH-USD": 1}}', "INVALID_MESSAGE"),
    ],
)
async def test_bad_messages_get_an_error_and_the_connection_stays_open(
    gateway: Process, key: str, frame: str, code: str
) -> None:
    async with open_stream(gateway.addr, key) as ws:
        await ws.send(frame)
        error = await recv(ws)
        assert error["type"] == "error" and error["code"] == code, error
        assert isinstance(error["message"], str) and error["message"]
        assert await subscribe(ws, ["prices:BTC-USD"]) == {"type": "subscribed", "channels": ["prices:BTC-USD"]}


async def test_a_binary_frame_is_an_invalid_message(gateway: Process, key: str) -> None:
    async with open_stream(gateway.addr, key) as ws:
        await ws.send(b'{"action": "subscribe", "channels": ["prices:BTC-USD"]}')
        assert (await recv(ws))["code"] == "INVALID_MESSAGE"


async def test_a_connection_holds_at_most_50_channels(gateway: Process, key: str, migrated_env: dict[str, str]) -> None:
    known = [f"L{batch}X{i}-USD" for batch in (0, 1, 3) for i in range(20)]
    support.register_symbols(migrated_env["PERSEUS_DATABASE_URL"], known)  # the gateway refuses unknown symbols
    async with open_stream(gateway.addr, key) as ws:
        for batch in range(2):
            names = [f"prices:L{batch}X{i}-USD" for i in range(20)]
            assert (await subscribe(ws, names))["type"] == "subscribed"
        error = await subscribe(ws, [f"prices:L3X{i}-USD" for i in range(11)])
        assert error["code"] == "SUBSCRIPTION_LIMIT"
        assert (await subscribe(ws, [f"prices:L3X{i}-USD" for i in range(10)]))["type"] == "subscribed"


async def test_a_frame_over_the_limit_closes_with_1009(gateway: Process, key: str) -> None:
    async with open_stream(gateway.addr, key) as ws:
        await ws.send("x" * 100_000)
        assert await close_code(ws) == 1009


async def test_messages_sent_before_the_key_is_checked_are_all_answered(
    gateway: Process, key: str, migrated_env: dict[str, str]
) -> None:
    support.register_symbols(migrated_env["PERSEUS_DATABASE_URL"], [f"F{i}-USD" for i in range(10)])
    async with open_stream(gateway.addr, key) as ws:
        for i in range(10):
            await send(ws, {"action": "subscribe", "channels": [f"prices:F{i}-USD"]})
        acks = [await recv(ws) for _ in range(10)]
    assert [a["channels"] for a in acks] == [[f"prices:F{i}-USD"] for i in range(10)]


async def test_too_many_messages_get_rate_limited_then_closed_with_4029(gateway: Process, key: str) -> None:
    async with open_stream(gateway.addr, key) as ws:
        for _ in range(60):
            await ws.send("{}")
        seen: list[str] = []
        code = None
        try:
            async with asyncio.timeout(10):
                while True:
                    seen.append(json.loads(await ws.recv())["code"])
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
    assert code == 4029
    assert "RATE_LIMITED" in seen


# --- connections per key ---------------------------------------------------------------------


async def test_a_free_key_has_five_connections_across_gateways(
    ws_env: dict[str, str], core: Process, gateway: Process
) -> None:
    free = make_key(ws_env, "free")
    with running_gateway("ws", ws_env, core.addr) as second:
        conns = [await open_stream(addr, free).__aenter__() for addr in [gateway.addr] * 3 + [second.addr] * 2]
        try:
            for ws in conns:
                assert (await subscribe(ws, ["prices:BTC-USD"]))["type"] == "subscribed"
            async with open_stream(second.addr, free) as sixth:
                assert await close_code(sixth) == 4008
            await conns[0].close()
            await asyncio.sleep(0.3)
            async with open_stream(second.addr, free) as again:
                assert (await subscribe(again, ["prices:BTC-USD"]))["type"] == "subscribed"
        finally:
            for ws in conns:
                await ws.close()


async def test_the_slots_of_a_killed_gateway_are_released(ws_env: dict[str, str], core: Process) -> None:
    free = make_key(ws_env, "free")
    with running_gateway("ws", ws_env, core.addr) as doomed, running_gateway("ws", ws_env, core.addr) as other:
        held = [await open_stream(doomed.addr, free).__aenter__() for _ in range(5)]
        for ws in held:
            await subscribe(ws, ["prices:BTC-USD"])
        async with open_stream(other.addr, free) as refused:
            assert await close_code(refused) == 4008
        doomed.proc.kill()
        doomed.proc.wait()
        await asyncio.sleep(float(WS_ENV["PERSEUS_WS_LEASE_S"]) + 1)
        async with open_stream(other.addr, free) as ws:
            assert (await subscribe(ws, ["prices:BTC-USD"]))["type"] == "subscribed"


# --- resume ----------------------------------------------------------------------------------


async def test_resume_replays_exactly_what_was_missed(gateway: Process, key: str, publisher: EventPublisher) -> None:
    symbol = fresh_symbol()
    name = f"prices:{symbol}"
    async with open_stream(gateway.addr, key) as watcher:  # keeps the channel live in the gateway
        await subscribe(watcher, [name])
        async with open_stream(gateway.addr, key) as ws:
            await subscribe(ws, [name])
            await publish_prices(publisher, prices_channel(symbol), range(1, 4))
            seen = await events(ws, 3)
        last_seen = seen[-1]["seq"]
        last = await publish_prices(publisher, prices_channel(symbol), range(4, 9))
        async with open_stream(gateway.addr, key) as ws:
            ack = await subscribe(ws, [name], resume={name: last_seen})
            assert ack == {"type": "subscribed", "channels": [name]}
            replayed = await events(ws, 5)
            assert [e["seq"] for e in replayed] == list(range(last_seen + 1, last + 1))
            await publish_prices(publisher, prices_channel(symbol), range(9, 10))
            assert (await recv(ws))["seq"] == last + 1


async def test_resume_beyond_the_history_says_so(gateway: Process, key: str, redis_url: str, redis_prefix: str) -> None:
    symbol = fresh_symbol()
    name = f"prices:{symbol}"
    client = pipeline(redis_url)
    short_history = EventPublisher(client, RedisKeys(redis_prefix), history_maxlen=3)
    try:
        first = await publish_prices(short_history, prices_channel(symbol), range(1, 2))
        # the history is capped approximately (MAXLEN ~, whole stream nodes of 100 entries)
        last = await publish_prices(short_history, prices_channel(symbol), range(2, 400))
    finally:
        await client.aclose()
    async with open_stream(gateway.addr, key) as ws:
        ack = await subscribe(ws, [name], resume={name: first})
        assert ack["type"] == "subscribed"
        gap = await recv(ws)
        assert gap["type"] == "resume_gap" and gap["channel"] == name
        assert gap["requested_seq"] == first and gap["first_available_seq"] > first + 1
        replayed = await events(ws, last - gap["first_available_seq"] + 1)
    assert [e["seq"] for e in replayed] == list(range(gap["first_available_seq"], last + 1))


# --- the document ----------------------------------------------------------------------------


def test_the_asyncapi_document_is_valid_asyncapi_3_1(gateway: Process) -> None:
    response = httpx.get(f"http://{gateway.addr}/public/v1/asyncapi.json", timeout=5)
    assert response.status_code == 200
    document = response.json()
    assert document["asyncapi"] == "3.1.0"
    with open(ASYNCAPI_SCHEMA) as f:
        jsonschema.Draft7Validator(json.load(f)).validate(document)
    assert document["channels"]["stream"]["address"] == "/public/v1/stream"
    price = document["components"]["schemas"]["PriceFeed"]
    assert "price" in price["properties"]


def test_a_bad_ws_setting_stops_the_gateway_with_one_line(ws_env: dict[str, str]) -> None:
    result = run_cli(["ws"], {**ws_env, "PERSEUS_WS_HEARTBEAT_S": "often"}, timeout=20)
    assert result.returncode == 2
    assert result.stderr.strip() == "perseus ws: PERSEUS_WS_HEARTBEAT_S: must be a number (got 'often')"
