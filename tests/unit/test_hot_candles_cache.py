"""The hot candle cache over an in-memory hub: an answer is kept until its series closes a candle, never one read
while a close arrived, and everything goes on a resync or a watcher that fell behind
(tests/integration/test_hot_candles.py runs it on Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from core.domain.channels import Channel, ChannelFamily
from core.domain.timeframes import Timeframe
from core.services.candle_queries import CandleQuery
from core.services.hot_candles import WATCH_QUEUE, HotCandles
from tests.support.memory_hub import MemoryHub, internal_name

QUERY = CandleQuery("sim", "BTC-USD", Timeframe.M1, 100, None, None)
OTHER = CandleQuery("sim", "ETH-USD", Timeframe.M1, 100, None, None)


def channel_of(query: CandleQuery) -> str:
    return internal_name(Channel(ChannelFamily.CANDLES, query.exchange, query.symbol, query.timeframe))


class Reads:
    """The store behind the cache: counts reads, answers with the count."""

    def __init__(self) -> None:
        self.count = 0
        self.during: Callable[[], None] = lambda: None

    async def __call__(self, query: CandleQuery) -> bytes:
        self.count += 1
        self.during()
        return f"{query.symbol}#{self.count}".encode()


@pytest.fixture
async def cache() -> AsyncIterator[tuple[MemoryHub, HotCandles]]:
    hub = MemoryHub()
    hot = HotCandles(hub, internal_name)
    hot.start()
    yield hub, hot
    await hot.aclose()


async def settle() -> None:
    for _ in range(20):  # let the watcher task take what the hub pushed
        await asyncio.sleep(0)


async def test_an_answer_is_kept_until_its_series_closes(cache: tuple[MemoryHub, HotCandles]) -> None:
    hub, hot = cache
    read = Reads()
    assert await hot.answer(QUERY, read) == b"BTC-USD#1"
    assert await hot.answer(QUERY, read) == b"BTC-USD#1" and read.count == 1
    other = await hot.answer(OTHER, read)
    hub.deliver(channel_of(QUERY), 10)  # BTC-USD closed a candle
    await settle()
    assert await hot.answer(QUERY, read) == b"BTC-USD#3"
    assert await hot.answer(OTHER, read) == other  # another series is untouched


async def test_an_answer_read_while_its_series_closed_is_not_kept(cache: tuple[MemoryHub, HotCandles]) -> None:
    hub, hot = cache
    read = Reads()
    await hot.answer(QUERY, read)  # watched from here on
    hub.deliver(channel_of(QUERY), 10)
    await settle()
    read.during = lambda: hub.deliver(channel_of(QUERY), 11)  # a close lands during the next read
    hot_during = await hot.answer(QUERY, read)
    await settle()
    read.during = lambda: None
    assert await hot.answer(QUERY, read) != hot_during and read.count == 3


async def test_a_resync_drops_every_answer(cache: tuple[MemoryHub, HotCandles]) -> None:
    hub, hot = cache
    read = Reads()
    await hot.answer(QUERY, read)
    hub.resync()
    await settle()
    await hot.answer(QUERY, read)
    assert read.count == 2


async def test_a_watcher_that_fell_behind_drops_everything_and_watches_again(
    cache: tuple[MemoryHub, HotCandles],
) -> None:
    hub, hot = cache
    read = Reads()
    await hot.answer(QUERY, read)
    watcher = hub.subscriptions[0]
    for seq in range(1, WATCH_QUEUE + 2):  # more closes than its queue holds, before it runs
        watcher.offer((channel_of(OTHER), seq, b""))
    await settle()
    assert len(hub.subscriptions) == 2 and hub.held(channel_of(QUERY)) == 0
    await hot.answer(QUERY, read)
    await hot.answer(QUERY, read)
    assert read.count == 2 and hub.held(channel_of(QUERY)) == 1


async def test_a_hub_that_cannot_watch_answers_every_read_from_the_store(
    cache: tuple[MemoryHub, HotCandles],
) -> None:
    hub, hot = cache
    hub.down = True
    read = Reads()
    await hot.answer(QUERY, read)
    await hot.answer(QUERY, read)
    assert read.count == 2


async def test_a_bounded_read_is_never_kept(cache: tuple[MemoryHub, HotCandles]) -> None:
    _, hot = cache
    read = Reads()
    bounded = CandleQuery("sim", "BTC-USD", Timeframe.M1, 100, None, 1_800_000_000_000)
    await hot.answer(bounded, read)
    await hot.answer(bounded, read)
    assert read.count == 2


async def test_a_kept_answer_is_had_without_awaiting_and_fill_keeps_it(cache: tuple[MemoryHub, HotCandles]) -> None:
    hub, hot = cache
    read = Reads()
    bounded = CandleQuery("sim", "BTC-USD", Timeframe.M1, 100, None, 1_800_000_000_000)
    assert hot.kept(QUERY) is None and hot.kept(bounded) is None
    assert await hot.fill(QUERY, read) == b"BTC-USD#1"
    assert hot.kept(QUERY) == b"BTC-USD#1" and hot.kept(bounded) is None  # GetCandles' path: no coroutine
    hub.deliver(channel_of(QUERY), 10)
    await settle()
    assert hot.kept(QUERY) is None and read.count == 1
