"""The SDK's ``LiveStream`` against a real core and WebSocket gateway, as an SDK user runs it.

A gateway restart loses nothing and repeats nothing (the stream reconnects and
resumes); events the gateway skipped while the consumer was slow are refilled
on the same connection; a history that no longer reaches back arrives as one
``SeqGap``; a refused channel raises and the stream goes on; a bad key ends it
with 4001.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from core.adapters.events import EventPublisher
from core.adapters.redis_keys import RedisKeys
from perseus_sdk import LiveEvent, LiveStream, SeqGap, StreamClosed, StreamRefused
from tests.support import ws as support
from tests.support.processes import Process, free_port, running_gateway
from tests.support.redis_target import pipeline
from tests.support.ws import fresh_symbol, prices_channel, publish_prices, small_buffer_socket

pytestmark = pytest.mark.integration
key = support.key  # fixtures: an internal key, the core's event publisher
publisher = support.publisher

READ_S = 15.0


@pytest.fixture(scope="module")
def gateway(migrated_env: dict[str, str], core: Process) -> Iterator[Process]:
    with running_gateway("ws", migrated_env, core.addr) as process:
        yield process


@pytest.fixture(scope="module")
def patient_gateway(migrated_env: dict[str, str], core: Process) -> Iterator[Process]:
    """A slow client is skipped at once but closed only after 20 s behind."""
    with running_gateway("ws", {**migrated_env, "PERSEUS_WS_SLOW_CLIENT_S": "20"}, core.addr) as process:
        yield process


async def take(stream: LiveStream, count: int) -> list[LiveEvent | SeqGap]:
    async with asyncio.timeout(READ_S):
        return [await anext(stream) for _ in range(count)]


def consecutive(seqs: list[int]) -> bool:
    return all(b == a + 1 for a, b in itertools.pairwise(seqs))


async def test_a_gateway_restart_loses_nothing_and_repeats_nothing(
    migrated_env: dict[str, str], core: Process, key: str, publisher: EventPublisher
) -> None:
    addr = f"127.0.0.1:{free_port()}"
    symbol = fresh_symbol()
    name, channel = f"prices:{symbol}", prices_channel(symbol)
    stream = LiveStream(f"ws://{addr}", key, max_backoff_s=0.5)
    try:
        with running_gateway("ws", migrated_env, core.addr, addr=addr) as first:
            await stream.__aenter__()
            await stream.subscribe(name)
            await publish_prices(publisher, channel, range(1, 4))
            before = await take(stream, 3)
            first.stop()
        await publish_prices(publisher, channel, range(4, 7))  # while no gateway runs
        with running_gateway("ws", migrated_env, core.addr, addr=addr):
            missed = await take(stream, 3)  # replayed from the history once reconnected
            await publish_prices(publisher, channel, range(7, 9))
            live = await take(stream, 2)
    finally:
        await stream.aclose()
    received = [*before, *missed, *live]
    assert all(isinstance(item, LiveEvent) and item.channel == name for item in received)
    assert [item.data["price"] for item in received] == [f"{p}.5" for p in range(1, 9)]  # type: ignore[union-attr]
    assert consecutive([item.seq for item in received])  # type: ignore[union-attr]
    assert stream.reconnects >= 1


def skipped_events(gateway: Process) -> float:
    text = httpx.get(f"http://{gateway.addr}/metrics", timeout=5).text
    found = re.search(r"^perseus_ws_skipped_events_total (\S+)$", text, re.M)
    assert found
    return float(found.group(1))


def small_buffers(addr: str) -> Any:
    """websockets' ``connect`` on a socket with a tiny receive buffer and a one-frame queue: a consumer that
    stops reading backs the gateway up at once."""

    def connect_small(url: str, **kwargs: Any) -> Any:
        return connect(url, sock=small_buffer_socket(addr), max_queue=1, **kwargs)

    return connect_small


async def test_events_skipped_while_the_consumer_was_slow_are_refilled_in_order(
    patient_gateway: Process, key: str, publisher: EventPublisher
) -> None:
    symbol = fresh_symbol()
    name, channel = f"prices:{symbol}", prices_channel(symbol)
    addr = patient_gateway.addr
    async with LiveStream(f"ws://{addr}", key, buffer=1, connect=small_buffers(addr)) as stream:
        await stream.subscribe(name)
        first = await publish_prices(publisher, channel, range(1, 2))
        await take(stream, 1)
        skipped = skipped_events(patient_gateway)
        last = first
        while skipped_events(patient_gateway) == skipped:  # the consumer reads nothing: the gateway skips
            last = await publish_prices(publisher, channel, range(500))
            await asyncio.sleep(0.05)
        received: list[LiveEvent | SeqGap] = []
        async with asyncio.timeout(READ_S):  # reads again; a skip shows only once a later event is written
            while not received or getattr(received[-1], "seq", 0) < last:
                try:
                    async with asyncio.timeout(0.2):
                        received.append(await anext(stream))
                except TimeoutError:
                    last = await publish_prices(publisher, channel, range(1))  # the channel moves on, as live ones do
        reconnects = stream.reconnects
    assert all(isinstance(item, LiveEvent) for item in received)  # no SeqGap: the history had them all
    assert [item.seq for item in received] == list(range(first + 1, last + 1))  # type: ignore[union-attr]
    assert reconnects == 0  # refilled on the same connection, not by a 4009 and a reconnect


async def test_history_that_no_longer_reaches_back_is_one_seq_gap(
    migrated_env: dict[str, str], core: Process, key: str, redis_url: str, redis_prefix: str
) -> None:
    addr = f"127.0.0.1:{free_port()}"
    symbol = fresh_symbol()
    name, channel = f"prices:{symbol}", prices_channel(symbol)
    client = pipeline(redis_url)
    short_history = EventPublisher(client, RedisKeys(redis_prefix), history_maxlen=3)
    stream = LiveStream(f"ws://{addr}", key, max_backoff_s=0.5)
    try:
        with running_gateway("ws", migrated_env, core.addr, addr=addr) as first:
            await stream.__aenter__()
            await stream.subscribe(name)
            first_seq = await publish_prices(short_history, channel, range(1, 2))
            (seen,) = await take(stream, 1)
            first.stop()
        last_seq = await publish_prices(short_history, channel, range(2, 400))  # the history keeps ~100 of them
        with running_gateway("ws", migrated_env, core.addr, addr=addr):
            gap, after = await take(stream, 2)
            assert isinstance(gap, SeqGap) and isinstance(after, LiveEvent)
            rest = await take(stream, last_seq - after.seq)
    finally:
        await stream.aclose()
        await client.aclose()
    assert isinstance(seen, LiveEvent) and seen.seq == first_seq
    assert gap == SeqGap(name, after_seq=first_seq, next_seq=after.seq) and after.seq > first_seq + 1
    seqs = [after.seq, *(item.seq for item in rest)]  # type: ignore[union-attr]
    assert consecutive(seqs) and seqs[-1] == last_seq


async def test_a_refused_channel_raises_and_the_stream_goes_on(
    gateway: Process, key: str, publisher: EventPublisher
) -> None:
    symbol = fresh_symbol()
    async with LiveStream(f"ws://{gateway.addr}", key) as stream:
        with pytest.raises(StreamRefused) as refused:
            await stream.subscribe("weather:BTC-USD")
        await stream.subscribe(f"prices:{symbol}")
        await publish_prices(publisher, prices_channel(symbol), range(1, 2))
        (event,) = await take(stream, 1)
        assert stream.channels == [f"prices:{symbol}"]
    assert refused.value.code == "INVALID_CHANNEL"
    assert isinstance(event, LiveEvent) and event.type == "price_update" and event.data["price"] == "1.5"


async def test_a_bad_key_ends_the_stream_with_4001(gateway: Process) -> None:
    async with LiveStream(f"ws://{gateway.addr}", "not-a-key") as stream:
        with pytest.raises(StreamClosed) as closed:
            async with asyncio.timeout(READ_S):
                await stream.subscribe("prices:BTC-USD")
        with pytest.raises(StreamClosed):
            await anext(stream)
    assert closed.value.code == 4001
    assert stream.reconnects == 0
