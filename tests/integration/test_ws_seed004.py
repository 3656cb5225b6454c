"""Seed 004's WebSocket dialect on the same socket (issue 17): what a client written from that text alone does.

Seed 004 (``WS /stream``): the key as ``?key=`` or in a first message,
``{"action":"subscribe","symbols":["BTC/USD",…]}``, and ``price_update``
messages from every source of the symbol. Against a real core, REST gateway
(the seed's ingest) and WebSocket gateway: each symbol is the channel
``prices:all:{SYMBOL}`` (every source), ``price_updates:all`` carries every
symbol to internal and admin keys, and an unknown symbol is refused as the
channel form refuses it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.support import ws as support
from tests.support.processes import Process, running_gateway
from tests.support.redis_target import sync_redis_client
from tests.support.replay import wait_until
from tests.support.ws import closed_with, fresh_symbol, make_key, recv, send, subscribe

pytestmark = pytest.mark.integration
key = support.key  # fixture: an internal key


@pytest.fixture(scope="module")
def gateway(migrated_env: dict[str, str], core: Process) -> Iterator[Process]:
    with running_gateway("ws", migrated_env, core.addr) as process:
        yield process


@pytest.fixture(scope="module")
def free_key(migrated_env: dict[str, str]) -> str:
    return make_key(migrated_env, "free")


def ingest(rest: Process, key: str, symbol: str, prices: dict[str, str]) -> None:
    """Seed 004's ingest: one feed per source (``{source: price}``) for ``symbol`` written ``BASE/QUOTE``."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1)) + ".000Z"
    feeds = [
        {"symbol": symbol, "price": price, "volume": "1.5", "source": source, "timestamp": stamp}
        for source, price in prices.items()
    ]
    body = {"worker_id": "seed-004-test", "timestamp": stamp, "feeds": feeds}
    response = httpx.post(f"http://{rest.addr}/internal/v1/ingest", json=body, headers={"X-API-Key": key}, timeout=10)
    assert response.status_code == 200 and response.json()["data"]["ingested"] == len(feeds), response.text


async def price_updates(ws: ClientConnection, symbol: str, count: int) -> list[dict[str, Any]]:
    """The next ``count`` price updates of ``symbol`` (other symbols' are skipped: the sim trades meanwhile)."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        message = await recv(ws)
        if message["type"] == "price_update" and message["data"]["symbol"] == symbol:
            found.append(message)
    return found


async def test_a_client_written_from_seed_004_receives_the_price_updates_of_every_source(
    gateway: Process, rest: Process, key: str
) -> None:
    symbol = fresh_symbol()
    written = symbol.replace("-", "/")  # the seed writes BTC/USD
    async with connect(f"ws://{gateway.addr}/public/v1/stream?key={key}", open_timeout=10) as ws:
        await ws.send(json.dumps({"action": "subscribe", "symbols": [written]}))
        assert json.loads(await ws.recv()) == {"type": "subscribed", "channels": [f"prices:all:{symbol}"]}
        ingest(rest, key, written, {"coinbase": "101.25", "kraken": "101.75"})
        updates = await price_updates(ws, symbol, 2)
        await ws.send(json.dumps({"action": "unsubscribe", "symbols": [written]}))
        assert (await recv(ws)) == {"type": "unsubscribed", "channels": [f"prices:all:{symbol}"]}
    assert {(u["data"]["source"], u["data"]["price"], u["data"]["volume"]) for u in updates} == {
        ("coinbase", "101.25", "1.5"),
        ("kraken", "101.75", "1.5"),
    }
    assert {"symbol", "price", "volume", "source", "timestamp"} <= set(updates[0]["data"])
    assert updates[1]["seq"] == updates[0]["seq"] + 1  # one stream for the symbol, one seq across its sources


async def test_the_prices_all_channel_is_open_to_every_key_and_resumes(
    gateway: Process, rest: Process, key: str, free_key: str
) -> None:
    symbol = fresh_symbol()
    channel = f"prices:all:{symbol}"
    async with connect(f"ws://{gateway.addr}/public/v1/stream?apiKey={free_key}", open_timeout=10) as ws:
        assert await subscribe(ws, [channel]) == {"type": "subscribed", "channels": [channel]}
        ingest(rest, key, symbol, {"binance": "7", "coinbase": "8"})
        first, second = await price_updates(ws, symbol, 2)
    ingest(rest, key, symbol, {"kraken": "9"})
    async with connect(f"ws://{gateway.addr}/public/v1/stream?apiKey={free_key}", open_timeout=10) as ws:
        await send(ws, {"action": "subscribe", "channels": [channel], "resume": {channel: first["seq"]}})
        assert await recv(ws) == {"type": "subscribed", "channels": [channel]}
        replayed = await price_updates(ws, symbol, 2)
    assert [m["seq"] for m in replayed] == [second["seq"], second["seq"] + 1]
    assert replayed[1]["data"]["source"] == "kraken"


async def test_price_updates_all_carries_every_symbol_to_internal_keys_only(
    gateway: Process, rest: Process, key: str, free_key: str
) -> None:
    symbol = fresh_symbol()
    async with connect(f"ws://{gateway.addr}/public/v1/stream?key={free_key}", open_timeout=10) as ws:
        refused = await subscribe(ws, ["price_updates:all"])
        assert refused["code"] == "INVALID_CHANNEL"
        assert (
            refused["message"]
            == "invalid channel 'price_updates:all': price_updates:all is for internal and admin keys"
        )
    async with connect(f"ws://{gateway.addr}/public/v1/stream?key={key}", open_timeout=10) as ws:
        assert await subscribe(ws, ["price_updates:all"]) == {"type": "subscribed", "channels": ["price_updates:all"]}
        ingest(rest, key, symbol, {"coinbase": "3", "kraken": "4"})
        updates = await price_updates(ws, symbol, 2)
    assert {u["channel"] for u in updates} == {"price_updates:all"}
    assert {u["data"]["source"] for u in updates} == {"coinbase", "kraken"}


async def test_the_symbols_dialect_refuses_an_unknown_symbol_as_the_channel_form_does(
    gateway: Process, key: str
) -> None:
    async with connect(f"ws://{gateway.addr}/public/v1/stream?key={key}", open_timeout=10) as ws:
        by_symbol = await send_and_read(ws, {"action": "subscribe", "symbols": ["NOPE9/USD"]})
        by_channel = await subscribe(ws, ["prices:all:NOPE9-USD"])
        assert by_symbol == by_channel
        assert by_symbol["code"] == "INVALID_CHANNEL"
        assert (
            by_symbol["message"]
            == "invalid channel 'prices:all:NOPE9-USD': unknown symbol 'NOPE9-USD' (no exchange lists it)"
        )
        malformed = await send_and_read(ws, {"action": "subscribe", "symbols": ["BTCUSD"]})
        assert malformed["code"] == "INVALID_CHANNEL" and "malformed symbol 'BTCUSD'" in malformed["message"]
        empty = await send_and_read(ws, {"action": "subscribe", "symbols": []})
        assert empty["code"] == "INVALID_MESSAGE"
        assert (await subscribe(ws, ["candles:all:BTC-USD:1h"]))["code"] == "INVALID_CHANNEL"  # prices only


async def send_and_read(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await send(ws, message)
    return await recv(ws)


async def test_the_key_may_come_in_a_first_auth_message(gateway: Process, key: str) -> None:
    symbol = fresh_symbol()
    async with connect(f"ws://{gateway.addr}/public/v1/stream", open_timeout=10) as ws:
        await send(ws, {"action": "auth", "key": key})
        assert await subscribe(ws, [f"prices:{symbol}"]) == {"type": "subscribed", "channels": [f"prices:{symbol}"]}
        again = await send_and_read(ws, {"action": "auth", "key": key})
        assert again["code"] == "INVALID_MESSAGE"


async def test_a_first_message_that_is_not_auth_or_a_bad_key_closes_with_4001(gateway: Process) -> None:
    async with connect(f"ws://{gateway.addr}/public/v1/stream", open_timeout=10) as ws:
        await send(ws, {"action": "subscribe", "symbols": ["BTC/USD"]})
        code_reason = await closed_with(ws)
        assert code_reason is not None and code_reason[0] == 4001 and '{"action":"auth"' in code_reason[1]
    async with connect(f"ws://{gateway.addr}/public/v1/stream", open_timeout=10) as ws:
        await send(ws, {"action": "auth", "key": "pk_free_" + "x" * 40})
        assert await closed_with(ws) == (4001, "invalid or revoked API key")


async def test_an_auth_message_that_never_comes_closes_with_4001_after_5_s(gateway: Process) -> None:
    async with connect(f"ws://{gateway.addr}/public/v1/stream", open_timeout=10) as ws:
        opened = time.monotonic()
        code_reason = await closed_with(ws, within=15)
        waited = time.monotonic() - opened
    assert code_reason is not None and code_reason[0] == 4001
    assert waited >= 4.5  # it waited for the message, then gave up


def stream_keys(redis_prefix: str, venue: str, symbol: str) -> tuple[str, str, str]:
    """History, seq counter and listened marker of the stream ``prices:{venue}:{symbol}``."""
    stream = f"prices:{{{venue}:{symbol}}}"
    return f"{redis_prefix}history:{stream}", f"{redis_prefix}seq:{stream}", f"{redis_prefix}listened:{stream}"


async def test_prices_all_streams_are_written_only_while_someone_listens(
    gateway: Process, rest: Process, key: str, redis_url: str, redis_prefix: str
) -> None:
    """Nobody subscribed: a tick is on its source's stream only (the on-demand streams would triple Redis's work
    per tick for everyone); once a client subscribes, its ticks reach the symbol's every-source stream."""
    symbol = fresh_symbol()
    client = sync_redis_client(redis_url)
    try:
        ingest(rest, key, symbol, {"coinbase": "5"})
        source_history, _, _ = stream_keys(redis_prefix, "coinbase", symbol)
        all_history, _, marker = stream_keys(redis_prefix, "all", symbol)
        every_history, _, _ = stream_keys(redis_prefix, "all", "*")
        await wait_until(lambda: client.exists(source_history) == 1)
        assert client.exists(all_history) == 0 and client.exists(marker) == 0
        async with connect(f"ws://{gateway.addr}/public/v1/stream?key={key}", open_timeout=10) as ws:
            await ws.send(json.dumps({"action": "subscribe", "symbols": [symbol]}))
            assert (await recv(ws))["type"] == "subscribed"
            assert 0 < client.pttl(marker) <= 60_000
            ingest(rest, key, symbol, {"kraken": "6"})
            (update,) = await price_updates(ws, symbol, 1)
        assert update["data"]["source"] == "kraken" and client.xlen(all_history) == 1
        entry_ids = [entry_id for entry_id, _ in client.xrange(every_history, count=10_000)]
        assert all(int(entry_id.split(b"-")[0]) for entry_id in entry_ids)  # the firehose keeps its own history
    finally:
        client.close()


async def test_a_resume_across_an_unlistened_silence_is_told_the_gap_and_a_new_subscriber_is_not(
    gateway: Process, rest: Process, key: str, redis_url: str, redis_prefix: str
) -> None:
    """Once the last listener's marker lapsed (a minute), the symbol's ticks are not published on
    ``prices:all:{SYMBOL}``: a client resuming from before that silence gets ``resume_gap``, never a quiet loss,
    and a client subscribing anew starts with no gap."""
    symbol = fresh_symbol()
    channel = f"prices:all:{symbol}"
    _, _, marker = stream_keys(redis_prefix, "all", symbol)
    client = sync_redis_client(redis_url)
    url = f"ws://{gateway.addr}/public/v1/stream?key={key}"
    try:
        async with connect(url, open_timeout=10) as ws:
            assert (await subscribe(ws, [channel]))["type"] == "subscribed"
            ingest(rest, key, symbol, {"coinbase": "10"})
            (first,) = await price_updates(ws, symbol, 1)
        client.delete(marker)  # the minute after the last listener passed
        ingest(rest, key, symbol, {"coinbase": "11"})  # published on the source's stream only
        async with connect(url, open_timeout=10) as resumed, connect(url, open_timeout=10) as fresh:
            await send(resumed, {"action": "subscribe", "channels": [channel], "resume": {channel: first["seq"]}})
            assert await recv(resumed) == {"type": "subscribed", "channels": [channel]}
            assert (await subscribe(fresh, [channel]))["type"] == "subscribed"
            ingest(rest, key, symbol, {"coinbase": "12"})
            told = await until_price(resumed, symbol, "12")
            quiet = await until_price(fresh, symbol, "12")
    finally:
        client.close()
    assert [m["type"] for m in told] == ["resume_gap", "price_update"], told
    assert told[0]["channel"] == channel and told[0]["requested_seq"] == first["seq"], told[0]
    assert [m["type"] for m in quiet] == ["price_update"], quiet
    assert told[-1]["seq"] == quiet[-1]["seq"] > first["seq"] + 1


async def until_price(ws: ClientConnection, symbol: str, price: str) -> list[dict[str, Any]]:
    """The messages about ``symbol`` (gaps included) up to its price update at ``price``."""
    seen: list[dict[str, Any]] = []
    while True:
        message = await recv(ws)
        if message["type"] == "resume_gap" or message.get("data", {}).get("symbol") == symbol:
            seen.append(message)
            if message["type"] == "price_update" and message["data"]["price"] == price:
                return seen
