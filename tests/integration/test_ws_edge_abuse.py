"""Abuse resistance of the stream (issue 16): what one client, one address or one key may cost a gateway.

Real ``websockets`` clients against a real ``perseus ws`` in front of a real
core: channels of unknown symbols are refused as REST refuses them, channels
are budgeted per key across its connections, resume replays are capped per
request and per key and leave the shared stream alone, and connections are
capped per client address (seed 000: 10) and per gateway (seed 004:
``WS_MAX_CONNECTIONS``), the address being the proxy's ``X-Forwarded-For``
entry behind ``PERSEUS_TRUSTED_PROXIES``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from core.adapters.events import EventPublisher
from perseus.marketdata.v1 import ingest_service_pb2 as ingest_pb2, ingest_service_pb2_grpc as ingest_grpc, prices_pb2
from tests.support import ws as support
from tests.support.processes import Process, running_gateway
from tests.support.ws import (
    closed_with,
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
key = support.key  # fixtures: an internal key (no connection limit), the core's event publisher
publisher = support.publisher

BUDGET_ENV = {
    "PERSEUS_WS_CHANNELS_PER_KEY": "3",
    "PERSEUS_WS_RESUMES_PER_KEY": "1",
    "PERSEUS_WS_SLOW_CLIENT_S": "60",  # a client that stops reading keeps its replay slot for the test's length
}
CAPPED_ENV = {"PERSEUS_WS_MAX_CONNECTIONS_PER_IP": "2", "PERSEUS_WS_MAX_CONNECTIONS": "4"}
PROXIED_ENV = {"PERSEUS_WS_MAX_CONNECTIONS_PER_IP": "2", "PERSEUS_TRUSTED_PROXIES": "1"}
REPLAY_CAP = 5_000  # events one subscribe may replay (core/services/streams.py MAX_REPLAY_EVENTS)


@pytest.fixture(scope="module")
def gateway(migrated_env: dict[str, str], core: Process) -> Iterator[Process]:
    with running_gateway("ws", {**migrated_env, **BUDGET_ENV}, core.addr) as process:
        yield process


@pytest.fixture(scope="module")
def other_key(migrated_env: dict[str, str]) -> str:
    return support.make_key(migrated_env, "internal")


async def nothing_within(ws: ClientConnection, seconds: float) -> bool:
    """True when no message arrives within ``seconds`` (heartbeats aside)."""
    try:
        await recv(ws, within=seconds)
    except TimeoutError:
        return True
    return False


# --- channel symbols ------------------------------------------------------------------------------


async def test_a_channel_of_an_unknown_symbol_is_refused_with_invalid_channel(gateway: Process, key: str) -> None:
    known = fresh_symbol()
    async with open_stream(gateway.addr, key) as ws:
        refused = await subscribe(ws, [f"prices:{known}", "candles:NOPE1-USD:1h"])
        assert refused["type"] == "error" and refused["code"] == "INVALID_CHANNEL"
        assert "unknown symbol 'NOPE1-USD' on exchange 'sim'" in refused["message"]
        refused = await subscribe(ws, [f"signals:kraken:{known}:1m"])  # known on sim, not on kraken
        assert (
            refused["code"] == "INVALID_CHANNEL"
            and f"unknown symbol '{known}' on exchange 'kraken'" in refused["message"]
        )
        # nothing of the refused message was subscribed; the known symbol alone is
        assert await subscribe(ws, [f"prices:{known}"]) == {"type": "subscribed", "channels": [f"prices:{known}"]}


async def test_a_symbol_listed_after_the_gateway_looked_is_found(
    gateway: Process, key: str, migrated_env: dict[str, str]
) -> None:
    async with open_stream(gateway.addr, key) as ws:
        assert (await subscribe(ws, ["prices:LATE1-USD"]))["code"] == "INVALID_CHANNEL"
        support.register_symbols(migrated_env["PERSEUS_DATABASE_URL"], ["LATE1-USD"])
        assert (await subscribe(ws, ["prices:LATE1-USD"]))["type"] == "subscribed"


async def test_a_symbol_ingested_for_a_known_source_becomes_subscribable(
    gateway: Process, core: Process, key: str
) -> None:
    symbol = f"ING{secrets.token_hex(3).upper()}-USD"  # never registered: only the ingest makes it exist
    async with open_stream(gateway.addr, key) as ws:
        assert (await subscribe(ws, [f"prices:sim:{symbol}"]))["code"] == "INVALID_CHANNEL"
        feed = prices_pb2.PriceFeed(symbol=symbol, price="10.5", volume="1", source="sim")
        feed.timestamp.FromMilliseconds(int(time.time() * 1000) - 1000)
        async with grpc.aio.insecure_channel(core.addr) as channel:
            reply = await ingest_grpc.IngestServiceStub(channel).IngestPrices(
                ingest_pb2.IngestPricesRequest(worker_id="ws-edge", feeds=[feed]), timeout=10
            )
        assert reply.ingested == 1
        assert (await subscribe(ws, [f"prices:sim:{symbol}"]))["type"] == "subscribed"


# --- channels per key -----------------------------------------------------------------------------


async def test_channels_are_budgeted_per_key_across_its_connections(gateway: Process, key: str, other_key: str) -> None:
    a, b, c, d = (f"prices:{fresh_symbol()}" for _ in range(4))
    async with (
        open_stream(gateway.addr, key) as one,
        open_stream(gateway.addr, key) as two,
        open_stream(gateway.addr, other_key) as elsewhere,
    ):
        assert (await subscribe(one, [a, b]))["type"] == "subscribed"
        assert (await subscribe(two, [a]))["type"] == "subscribed"  # held by the key already: costs nothing
        refused = await subscribe(two, [c, d])
        assert refused["code"] == "SUBSCRIPTION_LIMIT"
        assert refused["message"] == "this key holds 2 channels on this gateway, at most 3"
        assert (await subscribe(two, [c]))["type"] == "subscribed"
        assert (await subscribe(elsewhere, [b, c, d]))["type"] == "subscribed"  # another key has a budget of its own
        await send(one, {"action": "unsubscribe", "channels": [b]})
        assert (await recv(one))["type"] == "unsubscribed"
        assert (await subscribe(two, [d]))["type"] == "subscribed"  # b's place is free again
    async with open_stream(gateway.addr, key) as again:  # closed connections give theirs back
        assert (await subscribe(again, [b, c, d]))["type"] == "subscribed"


# --- resume replays -------------------------------------------------------------------------------


async def test_one_resume_replays_at_most_the_cap_shared_fairly_by_its_channels(
    gateway: Process, key: str, publisher: EventPublisher
) -> None:
    """Two channels 4,000 events behind: each gets its newest 2,500 after a gap, not the second all and the
    first what is left (and the core reads 5,000 events, not 8,000)."""
    names = [f"prices:{symbol}" for symbol in (fresh_symbol(), fresh_symbol())]
    last = {name: await publish_prices(publisher, prices_channel(name.split(":")[1]), range(4000)) for name in names}
    resume = {name: seq - 4000 for name, seq in last.items()}  # the seq before the first of the 4,000
    async with open_stream(gateway.addr, key, max_queue=None) as ws:
        await send(ws, {"action": "subscribe", "channels": names, "resume": resume})
        assert await recv(ws) == {"type": "subscribed", "channels": names}
        gaps: dict[str, dict[str, Any]] = {}
        seqs: dict[str, list[int]] = {name: [] for name in names}
        while sum(map(len, seqs.values())) < REPLAY_CAP:
            message = await recv(ws)
            if message["type"] == "resume_gap":
                gaps[message["channel"]] = message
            else:
                seqs[message["channel"]].append(message["seq"])
    share = REPLAY_CAP // 2
    for name in names:
        first = last[name] - share + 1
        assert gaps[name] == {
            "type": "resume_gap",
            "channel": name,
            "requested_seq": resume[name],
            "first_available_seq": first,
        }
        assert seqs[name] == list(range(first, last[name] + 1))


async def test_resumes_wait_per_key_never_hold_live_events_and_free_their_slot_when_the_client_leaves(
    gateway: Process, key: str, other_key: str, publisher: EventPublisher
) -> None:
    """The key has one replay slot (PERSEUS_WS_RESUMES_PER_KEY=1). A client of it that resumes deep and stops
    reading holds it; a second resume of the key waits, while live events reach everyone and another key
    resumes at once; the first client leaving hands the slot over."""
    deep, live = fresh_symbol(), fresh_symbol()
    deep_name, live_name = f"prices:{deep}", f"prices:{live}"
    last = await publish_prices(publisher, prices_channel(deep), range(REPLAY_CAP))
    async with open_stream(gateway.addr, other_key) as watcher, open_stream(gateway.addr, key) as waiting:
        assert (await subscribe(watcher, [live_name]))["type"] == "subscribed"
        stalled = await connect(stream_url(gateway.addr, key), sock=small_buffer_socket(gateway.addr), max_queue=1)
        try:
            await send(
                stalled, {"action": "subscribe", "channels": [deep_name], "resume": {deep_name: last - REPLAY_CAP}}
            )
            assert (await recv(stalled))["type"] == "subscribed"  # then it reads nothing: 5,000 events back up
            await send(waiting, {"action": "subscribe", "channels": [deep_name], "resume": {deep_name: last - 10}})
            assert await nothing_within(waiting, 1.5)  # the key's slot is taken
            last_live = await publish_prices(publisher, prices_channel(live), range(1, 2))
            assert (await recv(watcher))["seq"] == last_live  # live events go on meanwhile
            async with open_stream(gateway.addr, other_key) as elsewhere:  # another key's resume does not wait
                await send(elsewhere, {"action": "subscribe", "channels": [deep_name], "resume": {deep_name: last - 2}})
                assert (await recv(elsewhere))["type"] == "subscribed"
                assert [(await recv(elsewhere))["seq"] for _ in range(2)] == [last - 1, last]
            assert await nothing_within(waiting, 0.2)
        finally:
            stalled.transport.abort()  # the client goes away without a word
            await stalled.close()
        assert await recv(waiting) == {"type": "subscribed", "channels": [deep_name]}
        assert [(await recv(waiting))["seq"] for _ in range(10)] == list(range(last - 9, last + 1))


# --- connection caps ------------------------------------------------------------------------------


async def test_connections_are_capped_per_address_and_per_gateway(
    migrated_env: dict[str, str], core: Process, key: str
) -> None:
    symbol = fresh_symbol()
    with running_gateway("ws", {**migrated_env, **CAPPED_ENV}, core.addr) as capped:

        def from_address(host: str) -> Any:
            return open_stream(capped.addr, key, local_addr=(host, 0))

        async with contextlib.AsyncExitStack() as stack:
            for host in ("127.0.0.1", "127.0.0.1", "127.0.0.2"):
                ws = await stack.enter_async_context(from_address(host))
                assert (await subscribe(ws, [f"prices:{symbol}"]))["type"] == "subscribed"
            async with from_address("127.0.0.1") as third:
                assert await closed_with(third) == (4008, "this address already has 2 connections")
            fourth = await stack.enter_async_context(from_address("127.0.0.2"))
            assert (await subscribe(fourth, [f"prices:{symbol}"]))["type"] == "subscribed"
            async with from_address("127.0.0.3") as fifth:
                assert await closed_with(fifth) == (1013, "the gateway holds its maximum of 4 connections")
            await fourth.close()
            await asyncio.sleep(0.2)  # the gateway sees it leave
            async with from_address("127.0.0.3") as again:
                assert (await subscribe(again, [f"prices:{symbol}"]))["type"] == "subscribed"
            async with httpx.AsyncClient() as http:
                metrics = (await http.get(f"http://{capped.addr}/metrics", timeout=5)).text
            assert "perseus_ws_refused_connections_total 2.0" in metrics


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_one_capped(
    migrated_env: dict[str, str], core: Process, key: str
) -> None:
    symbol = fresh_symbol()
    with running_gateway("ws", {**migrated_env, **PROXIED_ENV}, core.addr) as proxied:

        def forwarded_for(address: str) -> Any:
            return open_stream(proxied.addr, key, additional_headers={"X-Forwarded-For": f"{address}"})

        async with forwarded_for("203.0.113.7") as one, forwarded_for("198.51.100.1, 203.0.113.7") as two:
            for ws in (one, two):
                assert (await subscribe(ws, [f"prices:{symbol}"]))["type"] == "subscribed"
            async with forwarded_for("203.0.113.7") as third:
                assert await closed_with(third) == (4008, "this address already has 2 connections")
            async with forwarded_for("203.0.113.8") as elsewhere:  # all from 127.0.0.1, another client's address
                assert (await subscribe(elsewhere, [f"prices:{symbol}"]))["type"] == "subscribed"


# --- unknown keys ---------------------------------------------------------------------------------


async def test_unknown_keys_are_counted_per_address_then_refused_without_a_lookup(
    migrated_env: dict[str, str], core: Process, key: str
) -> None:
    bad_keys_per_minute = 3
    env = {**migrated_env, "PERSEUS_BAD_KEYS_PER_MINUTE": str(bad_keys_per_minute)}
    unknown = [f"pk_pro_{'Y' * 30}{n:013d}" for n in range(bad_keys_per_minute + 1)]
    with running_gateway("ws", env, core.addr) as gateway:
        async with open_stream(gateway.addr, key, local_addr=("127.0.0.6", 0)) as ws:  # the good key, confirmed
            assert (await subscribe(ws, [f"prices:{fresh_symbol()}"]))["type"] == "subscribed"
        for junk in unknown[:bad_keys_per_minute]:
            async with open_stream(gateway.addr, junk, local_addr=("127.0.0.4", 0)) as ws:
                assert await closed_with(ws) == (4001, "invalid or revoked API key")
        async with open_stream(gateway.addr, unknown[-1], local_addr=("127.0.0.4", 0)) as ws:
            code, reason = await closed_with(ws) or (0, "")
        assert code == 4029 and "too many unknown API keys" in reason
        async with open_stream(gateway.addr, unknown[-1], local_addr=("127.0.0.5", 0)) as ws:
            assert await closed_with(ws) == (4001, "invalid or revoked API key")  # another address is not punished
        async with open_stream(gateway.addr, key, local_addr=("127.0.0.4", 0)) as ws:  # a confirmed key still works
            assert (await subscribe(ws, [f"prices:{fresh_symbol()}"]))["type"] == "subscribed"
