"""History replay over the stream (issue 21): ``{"action":"replay"}`` on the WebSocket gateway and the core's
``ReplayService.Replay``, against a real core, WebSocket gateway and PostgreSQL.

Ticks with known times are ingested through the core's ``IngestPrices``; a replay of a range plays exactly
those in order as ``price_update`` envelopes with ``"replay": true``, no ``seq`` and their original times,
between ``replay_started`` and ``replay_done``. A speed paces it, ``stop_replay`` stops it, a replay stalled
by a client that does not read holds nobody else's live events back, and bad requests get documented errors.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import grpc
import httpx
import jsonschema
import pytest
from grpc import aio
from websockets.asyncio.client import ClientConnection, connect

import perseus_sdk
from common.projection import public_fields
from core.adapters.events import EventPublisher
from perseus.marketdata.v1 import (
    candles_pb2,
    ingest_service_pb2,
    ingest_service_pb2_grpc,
    prices_pb2,
    replay_service_pb2,
    replay_service_pb2_grpc,
    signals_pb2,
)
from tests.support import ws as support
from tests.support.market_seed import Seed, seed_market
from tests.support.processes import Process, running_core, running_gateway
from tests.support.ws import (
    fresh_symbol,
    open_stream,
    prices_channel,
    publish_prices,
    recv,
    send,
    small_buffer_socket,
    stream_url,
    subscribe,
)

pytestmark = pytest.mark.integration
key = support.key  # fixtures: an internal key, the core's event publisher
publisher = support.publisher

READ_S = 15.0
# ids of its own: the session database is shared with the other modules' seeds (test_ts_sdk seeds Seed())
SEED = Seed(
    exchange="replayx",
    exchange_id=770_001,
    symbol_id=770_002,
    symbol="RPL-USD",
    sequence_base=770_100,
    alert_id_base=770_200,
    feed_id_base=770_400,
    source="replaysrc",
)
BASE_MS = (int(time.time()) - 3 * 3600) * 1000  # 3 hours ago: inside the stored ticks' partitions


@pytest.fixture(scope="module")
def core(migrated_env: dict[str, str]) -> Iterator[Process]:
    """The seeded market's stored candles (replayx:RPL-USD:1h) exist before the core lists the exchanges."""
    env = migrated_env
    asyncio.run(seed_market(env["PERSEUS_DATABASE_URL"], env["PERSEUS_REDIS_URL"], env["PERSEUS_REDIS_PREFIX"], SEED))
    with running_core(migrated_env) as process:
        yield process


@pytest.fixture(scope="module")
def gateway(migrated_env: dict[str, str], core: Process) -> Iterator[Process]:
    """Replays up to 2 hours; one replay per key at a time; 3 channels per key; a client behind is closed only
    after 20 s."""
    env = {
        **migrated_env,
        "PERSEUS_WS_CHANNELS_PER_KEY": "3",
        "PERSEUS_WS_REPLAY_MAX_HOURS": "2",
        "PERSEUS_WS_REPLAYS_PER_KEY": "1",
        "PERSEUS_WS_SLOW_CLIENT_S": "20",
    }
    with running_gateway("ws", env, core.addr) as process:
        yield process


@pytest.fixture
async def ws(gateway: Process, key: str) -> AsyncIterator[ClientConnection]:
    async with open_stream(gateway.addr, key) as connection:
        yield connection


async def ingest(core: Process, database_url: str, symbol: str, offsets_ms: list[int]) -> list[int]:
    """One tick per offset (price = its index + 1) at BASE_MS + offset, stored before this returns; their times."""
    feeds = []
    for index, offset in enumerate(offsets_ms):
        feed = prices_pb2.PriceFeed(symbol=symbol, price=f"{index + 1}.25", volume="2", source="sim")
        feed.timestamp.FromMilliseconds(BASE_MS + offset)
        feeds.append(feed)
    async with aio.insecure_channel(core.addr) as channel:
        stub = ingest_service_pb2_grpc.IngestServiceStub(channel)
        for start in range(0, len(feeds), 100):  # the most one call takes
            await stub.IngestPrices(
                ingest_service_pb2.IngestPricesRequest(feeds=feeds[start : start + 100]), timeout=30
            )
    conn = await asyncpg.connect(database_url)
    try:
        for _ in range(300):  # 15 s
            if await conn.fetchval("SELECT count(*) FROM price_feeds WHERE symbol = $1", symbol) >= len(feeds):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the ingested ticks were not stored")
    finally:
        await conn.close()
    return [BASE_MS + offset for offset in offsets_ms]


def iso(ms: int) -> str:
    """As the public projection writes a time (protobuf JSON: no fraction for whole seconds)."""
    fraction = f".{ms % 1000:03d}" if ms % 1000 else ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + fraction + "Z"


async def until(ws: ClientConnection, kind: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages before the first of type ``kind`` (or of an ending of the replay), and that one."""
    before = []
    async with asyncio.timeout(READ_S):
        while (message := await recv(ws, within=READ_S))["type"] not in (kind, "replay_stopped", "replay_done"):
            before.append(message)
    return before, message


async def test_a_replay_at_max_plays_exactly_the_range_in_order_with_original_times(
    core: Process, migrated_env: dict[str, str], gateway: Process, key: str, ws: ClientConnection
) -> None:
    symbol = fresh_symbol()
    async with open_stream(gateway.addr, key) as watcher:  # the same ticks live, as they are ingested
        assert (await subscribe(watcher, [f"prices:{symbol}"]))["type"] == "subscribed"
        times = await ingest(core, migrated_env["PERSEUS_DATABASE_URL"], symbol, [0, 100, 100, 250, 900, 1000, 5000])
        live = [await recv(watcher) for _ in times]
    start, end = times[1], times[5]  # start <= t < end: the ticks at 100, 100, 250 and 900
    name = f"prices:{symbol}"
    await send(ws, {"action": "replay", "channel": name, "start": start, "end": iso(end), "speed": "max"})
    started = await recv(ws)
    assert started == {"type": "replay_started", "channel": name, "start": start, "end": end, "speed": "max"}
    events, done = await until(ws, "replay_done")
    assert done == {"type": "replay_done", "channel": name, "count": 4}
    assert [e["type"] for e in events] == ["price_update"] * 4
    assert all(e["channel"] == name and e["replay"] is True and "seq" not in e for e in events)
    assert [e["data"]["price"] for e in events] == ["2.25", "3.25", "4.25", "5.25"]
    assert [e["data"]["timestamp"] for e in events] == [iso(t) for t in times[1:5]]
    assert [e["data"] for e in events] == [e["data"] for e in live[1:5]]  # the live events' projection
    assert [(e["type"], e["channel"]) for e in events] == [(e["type"], e["channel"]) for e in live[1:5]]


async def test_a_speed_paces_the_replay(core: Process, migrated_env: dict[str, str], ws: ClientConnection) -> None:
    symbol = fresh_symbol()
    times = await ingest(core, migrated_env["PERSEUS_DATABASE_URL"], symbol, [0, 1000, 2000])
    await send(
        ws, {"action": "replay", "channel": f"prices:{symbol}", "start": times[0], "end": times[2] + 1, "speed": 10}
    )
    await recv(ws)  # replay_started
    began = time.monotonic()
    events, done = await until(ws, "replay_done")
    elapsed = time.monotonic() - began
    assert len(events) == 3 and done["count"] == 3
    assert elapsed >= 0.15  # 2 s of history at 10x: about 0.2 s (a lower bound only)


async def test_stop_replay_stops_it(core: Process, migrated_env: dict[str, str], ws: ClientConnection) -> None:
    symbol = fresh_symbol()
    times = await ingest(core, migrated_env["PERSEUS_DATABASE_URL"], symbol, [0, 600_000, 1_200_000])
    await send(
        ws, {"action": "replay", "channel": f"prices:{symbol}", "start": times[0], "end": times[2] + 1, "speed": 1}
    )
    await recv(ws)  # replay_started
    first = await recv(ws)
    assert first["data"]["price"] == "1.25"  # the next one is 10 minutes of real time away
    await send(ws, {"action": "stop_replay"})
    assert await recv(ws) == {"type": "replay_stopped", "channel": f"prices:{symbol}", "count": 1}
    await send(ws, {"action": "stop_replay"})  # nothing plays any more
    assert (await recv(ws))["code"] == "INVALID_MESSAGE"
    # the connection is free for another replay
    await send(ws, {"action": "replay", "channel": f"prices:{symbol}", "start": times[1], "end": times[2] + 1})
    assert (await recv(ws))["type"] == "replay_started"


async def test_a_stalled_replay_holds_no_other_clients_live_events_back(
    core: Process,
    migrated_env: dict[str, str],
    gateway: Process,
    key: str,
    publisher: EventPublisher,
) -> None:
    replayed = fresh_symbol()
    times = await ingest(core, migrated_env["PERSEUS_DATABASE_URL"], replayed, list(range(0, 6_000_000, 1000)))
    url = stream_url(gateway.addr, key)
    # a replay of 6,000 ticks at "max" to a client that stops reading after its request
    async with connect(url, sock=small_buffer_socket(gateway.addr), max_queue=1) as stalled:
        await send(
            stalled,
            {"action": "replay", "channel": f"prices:{replayed}", "start": times[0], "end": times[-1], "speed": "max"},
        )
        live = fresh_symbol()
        async with open_stream(gateway.addr, key) as watcher:
            assert (await subscribe(watcher, [f"prices:{live}"]))["type"] == "subscribed"
            for round_ in range(5):
                seq = await publish_prices(publisher, prices_channel(live), range(round_, round_ + 1))
                message = await recv(watcher)
                assert message["seq"] == seq and "replay" not in message
        # the stalled client still gets its replay once it reads: it was held, not dropped
        count = 0
        async with asyncio.timeout(60):
            while (message := json.loads(await stalled.recv()))["type"] not in ("replay_done", "replay_stopped"):
                count += message["type"] == "price_update"
        assert message["type"] == "replay_done", message
        assert count == message["count"] == len(times) - 1


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"channel": "prices:sim:NOPE-USD"}, "INVALID_CHANNEL"),  # not listed by the exchange
        ({"channel": "indicators:BTC-USD:1h"}, "INVALID_CHANNEL"),  # prices, candles and signals channels only
        ({"channel": "price_updates:all"}, "INVALID_CHANNEL"),
        ({"channel": "bogus"}, "INVALID_CHANNEL"),
        ({"start": BASE_MS + 1000, "end": BASE_MS}, "INVALID_MESSAGE"),  # end before start
        ({"end": BASE_MS}, "INVALID_MESSAGE"),  # empty
        ({"speed": 0}, "INVALID_MESSAGE"),
        ({"speed": -2}, "INVALID_MESSAGE"),
        ({"speed": "fast"}, "INVALID_MESSAGE"),
        ({"end": BASE_MS + 3 * 3_600_000}, "INVALID_MESSAGE"),  # more than PERSEUS_WS_REPLAY_MAX_HOURS
        ({"start": "yesterday"}, "INVALID_MESSAGE"),
        ({"start": "2026-01-01T00:00:00"}, "INVALID_MESSAGE"),  # no zone
        ({"extra": 1}, "INVALID_MESSAGE"),
    ],
)
async def test_bad_replay_requests_are_refused_with_documented_errors(
    ws: ClientConnection, change: dict[str, Any], code: str
) -> None:
    request = {"action": "replay", "channel": "prices:BTC-USD", "start": BASE_MS, "end": BASE_MS + 1000, **change}
    await send(ws, request)
    answer = await recv(ws)
    assert answer["type"] == "error" and answer["code"] == code, answer
    assert (await subscribe(ws, ["prices:BTC-USD"]))["type"] == "subscribed"  # the connection goes on


async def test_one_replay_per_connection_and_the_keys_replays_are_capped(
    core: Process, migrated_env: dict[str, str], gateway: Process, key: str
) -> None:
    symbol = fresh_symbol()
    times = await ingest(core, migrated_env["PERSEUS_DATABASE_URL"], symbol, [0, 600_000])
    request = {"action": "replay", "channel": f"prices:{symbol}", "start": times[0], "end": times[1] + 1, "speed": 1}
    async with open_stream(gateway.addr, key) as first, open_stream(gateway.addr, key) as second:
        await send(first, request)
        assert (await recv(first))["type"] == "replay_started"
        await send(first, request)
        answer = await recv(first)
        while answer["type"] == "price_update":
            answer = await recv(first)
        assert answer["code"] == "INVALID_MESSAGE" and "already playing" in answer["message"]
        await send(second, request)  # PERSEUS_WS_REPLAYS_PER_KEY=1
        assert (await recv(second))["code"] == "RATE_LIMITED"
        await send(first, {"action": "stop_replay"})
        _, stopped = await until(first, "replay_stopped")
        await send(second, request)  # the key's replay slot is free again
        assert (await recv(second))["type"] == "replay_started"
    assert stopped["count"] in (0, 1)  # the first tick, if it was sent before the stop


async def test_the_sdk_replay_iterator_yields_the_ticks(
    core: Process, migrated_env: dict[str, str], gateway: Process, key: str
) -> None:
    symbol = fresh_symbol()
    times = await ingest(core, migrated_env["PERSEUS_DATABASE_URL"], symbol, [0, 10, 20, 30])
    url, name = f"ws://{gateway.addr}", f"prices:{symbol}"
    got = [event async for event in perseus_sdk.replay(url, key, name, times[0], times[-1] + 1)]
    assert [(e.type, e.channel, e.data["price"], e.data["timestamp"]) for e in got] == [
        ("price_update", name, f"{i + 1}.25", iso(t)) for i, t in enumerate(times)
    ]
    with pytest.raises(perseus_sdk.StreamRefused) as refused:
        async for _ in perseus_sdk.replay(url, key, name, times[1], times[0]):
            pass
    assert refused.value.code == "INVALID_MESSAGE"


async def test_the_cores_replay_rpc(core: Process, migrated_env: dict[str, str]) -> None:
    symbol = fresh_symbol()
    times = await ingest(core, migrated_env["PERSEUS_DATABASE_URL"], symbol, list(range(0, 2500)))
    request = replay_service_pb2.ReplayRequest(channel=f"prices:all:{symbol}", chunk_size=1000)
    request.start_time.FromMilliseconds(times[0])
    request.end_time.FromMilliseconds(times[-1] + 1)
    async with aio.insecure_channel(core.addr) as channel:
        stub = replay_service_pb2_grpc.ReplayServiceStub(channel)
        chunks = [response async for response in stub.Replay(request, timeout=30)]
        assert [len(c.events) for c in chunks] == [1000, 1000, 500]
        events = [e for c in chunks for e in c.events]
        assert all(e.channel == f"prices:all:{symbol}" and e.seq == 0 for e in events)
        assert [e.price_update.timestamp.ToMilliseconds() for e in events] == times
        request.channel = f"indicators:{symbol}:1m"
        with pytest.raises(aio.AioRpcError) as refused:
            _ = [response async for response in stub.Replay(request, timeout=30)]
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def served_asyncapi(addr: str) -> dict[str, Any]:
    """The gateway's AsyncAPI document, checked against the AsyncAPI 3.1.0 schema."""
    document: dict[str, Any] = httpx.get(f"http://{addr}/public/v1/asyncapi.json", timeout=5).json()
    with open("tests/fixtures/asyncapi/asyncapi-3.1.0.schema.json") as f:
        jsonschema.Draft7Validator(json.load(f)).validate(document)
    return document


async def test_replay_messages_match_the_served_asyncapi_document(
    core: Process, migrated_env: dict[str, str], gateway: Process, ws: ClientConnection
) -> None:
    document = served_asyncapi(gateway.addr)
    messages = document["components"]["messages"]

    def check(name: str, message: dict[str, Any]) -> None:
        schema = {**messages[name]["payload"], "components": document["components"]}
        jsonschema.Draft202012Validator(schema).validate(message)

    symbol = fresh_symbol()
    times = await ingest(core, migrated_env["PERSEUS_DATABASE_URL"], symbol, [0, 10, 600_000])
    request = {"action": "replay", "channel": f"prices:{symbol}", "start": times[0], "end": iso(times[1] + 1)}
    check("replay", request)
    await send(ws, request)
    started, *replayed = [await recv(ws) for _ in range(3)]
    check("replay_started", started)
    for message in replayed:
        check("price_update", message)
    check("replay_done", await recv(ws))
    await send(ws, {**request, "end": times[2] + 1, "speed": 1})
    await recv(ws)  # replay_started
    await recv(ws)
    await recv(ws)
    check("stop_replay", {"action": "stop_replay"})
    await send(ws, {"action": "stop_replay"})
    check("replay_stopped", await recv(ws))


async def test_a_candles_channel_replays_its_stored_closed_candles(ws: ClientConnection) -> None:
    seed = SEED
    name, start = f"candles:{seed.exchange}:{seed.symbol}:1h", seed.first_open_ms + 3_600_000
    await send(ws, {"action": "replay", "channel": name, "start": start, "end": start + 2 * 3_600_000, "speed": "max"})
    assert (await recv(ws))["type"] == "replay_started"
    events, done = await until(ws, "replay_done")
    assert done == {"type": "replay_done", "channel": name, "count": 2}, done
    assert [(e["type"], e["channel"], e["replay"]) for e in events] == [("candle_close", name, True)] * 2
    assert [e["data"]["timestamp"] for e in events] == [iso(start), iso(start + 3_600_000)]
    assert all(e["data"]["exchange"] == seed.exchange and e["data"]["symbol"] == seed.symbol for e in events)
    assert set(events[0]["data"]) <= {f.name for f in public_fields(candles_pb2.Candle.DESCRIPTOR)}


async def test_a_signals_channel_replays_its_stored_alerts_as_public_trade_signals(ws: ClientConnection) -> None:
    seed = SEED  # alerts 0..4 triggered at the open of hours 1..5, with proprietary values in their rows
    name, start = f"signals:{seed.exchange}:{seed.symbol}:1h", seed.open_ms(2)
    await send(ws, {"action": "replay", "channel": name, "start": start, "end": seed.open_ms(4), "speed": "max"})
    assert (await recv(ws))["type"] == "replay_started"
    events, done = await until(ws, "replay_done")
    assert done == {"type": "replay_done", "channel": name, "count": 2}, done
    assert [(e["type"], e["channel"], e["replay"]) for e in events] == [("trade_signal", name, True)] * 2
    assert [e["data"]["timestamp"] for e in events] == [iso(seed.open_ms(2)), iso(seed.open_ms(3))]
    assert [e["data"]["price"] for e in events] == [seed.price(1), seed.price(2)]
    assert set(events[0]["data"]) <= {f.name for f in public_fields(signals_pb2.TradeSignal.DESCRIPTOR)}
    assert seed.alert_type not in json.dumps(events) and seed.trigger_label not in json.dumps(events)


async def test_a_playing_replay_holds_one_of_the_keys_channels(
    core: Process, migrated_env: dict[str, str], gateway: Process, key: str, ws: ClientConnection
) -> None:
    symbol = fresh_symbol()
    times = await ingest(core, migrated_env["PERSEUS_DATABASE_URL"], symbol, [0, 600_000])
    held = [f"prices:{fresh_symbol()}" for _ in range(3)]  # PERSEUS_WS_CHANNELS_PER_KEY=3
    assert (await subscribe(ws, held))["type"] == "subscribed"
    request = {"action": "replay", "channel": f"prices:{symbol}", "start": times[0], "end": times[1] + 1}
    await send(ws, request)
    assert (await recv(ws))["code"] == "SUBSCRIPTION_LIMIT"  # a fourth channel
    await send(ws, {"action": "unsubscribe", "channels": held[:1]})
    assert (await recv(ws))["type"] == "unsubscribed"
    await send(ws, request)  # at 1x: the second tick is 10 minutes away, so it keeps playing
    assert (await recv(ws))["type"] == "replay_started"
    async with open_stream(gateway.addr, key) as other:  # the key's other connections see the channel held
        assert (await subscribe(other, [f"prices:{fresh_symbol()}"]))["code"] == "SUBSCRIPTION_LIMIT"
        await send(ws, {"action": "stop_replay"})
        await until(ws, "replay_stopped")
        assert (await subscribe(other, [f"prices:{fresh_symbol()}"]))["type"] == "subscribed"  # released
