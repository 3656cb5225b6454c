"""Answers of hot candle reads, kept in the core until their series' next candle close.

Most candle reads ask for the newest ``limit`` candles of a series, and that
answer changes only when the series closes a candle. The writer adds a closed
candle to the Redis window *before* it publishes ``candle_close``, so dropping
a series' answers when its ``candle_close`` arrives means no answer outlives
the window it was read from by more than the event's trip through Redis: the
same freshness as a read that raced the close.

How it stays exact:

- a series is watched (its candle channel subscribed through the process's
  one hub, and confirmed) *before* its first answer is read and kept;
- every read carries the series' version from before it started; an answer
  is kept only if no close arrived meanwhile (the version did not move);
- a resync (the hub reconnected, events may be lost) or a watcher that fell
  behind drops everything.

Bounded: at most ``MAX_BYTES`` of answers and ``MAX_SERIES`` watched series,
least recently used first out.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from core.domain.channels import Channel, ChannelFamily
from core.domain.errors import HubClosed, StreamFellBehind, Unavailable
from core.services.candle_queries import CandleQuery
from core.services.ports import RESYNC, Hub, Subscription

logger = logging.getLogger(__name__)

MAX_BYTES = 64 * 1024 * 1024
MAX_SERIES = 5_000
# A read waits at most this long for its series' watch to be confirmed; longer (Redis down or frozen) and it
# is answered uncached rather than held until the hub's own subscribe timeout, past its caller's deadline.
WATCH_WAIT_S = 0.5
WATCH_QUEUE = 10_000

Series = tuple[str, str, str]  # exchange, symbol, timeframe
Key = tuple[str, str, str, int]  # series + limit


def cacheable(query: CandleQuery) -> bool:
    """Only "the newest ``limit``" with no time bound: the answer every close moves."""
    return query.start_ms is None and query.end_ms is None


class HotCandles:
    def __init__(self, hub: Hub, channel_name: Callable[[Channel], str]) -> None:
        self._hub = hub
        self._channel_name = channel_name
        self._answers: OrderedDict[Key, bytes] = OrderedDict()
        self._bytes = 0
        self._series: OrderedDict[Series, str] = OrderedDict()  # watched series → internal channel
        self._by_channel: dict[str, Series] = {}
        self._versions: dict[Series, int] = {}  # from one counter: never reused, even after a series is dropped
        self._tick = itertools.count(1)
        self._confirmed: set[Series] = set()
        self._subscriber: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self.hits = self.misses = 0

    def start(self) -> None:
        """Watch in a task of its own (for owners without a supervisor: tools and tests)."""
        self._subscriber = self._hub.subscriber(WATCH_QUEUE)
        self._task = asyncio.create_task(self._invalidate(), name="hot-candles")

    async def run(self) -> None:
        """Drop answers as their series close, until cancelled or the hub closes; the core runs this under
        its supervisor. Each run starts from nothing: closes a crashed run did not see must not leave
        stale answers behind."""
        self._clear()
        self._subscriber = self._hub.subscriber(WATCH_QUEUE)
        await self._invalidate()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._clear()

    async def answer(self, query: CandleQuery, read: Callable[[CandleQuery], Awaitable[bytes]]) -> bytes:
        """The answer to ``query``: kept from an earlier read when its series has not closed since."""
        answer = self.kept(query)
        return answer if answer is not None else await self.fill(query, read)

    def kept(self, query: CandleQuery) -> bytes | None:
        """The kept answer to ``query``, without a coroutine (a hit is a dictionary read): None when it is not
        kept (counted as a miss) or not cacheable; then :meth:`fill` reads it."""
        return self.get(query) if query.start_ms is None and query.end_ms is None else None

    async def fill(self, query: CandleQuery, read: Callable[[CandleQuery], Awaitable[bytes]]) -> bytes:
        """``read(query)``, kept when the query is cacheable and no close arrived during the read; for a query
        :meth:`kept` found no answer to."""
        if not cacheable(query):
            return await read(query)
        version = await self.version(query)
        answer = await read(query)
        if version is not None:
            self.put(query, version, answer)
        return answer

    def get(self, query: CandleQuery) -> bytes | None:
        key = _key(query)
        answer = self._answers.get(key)
        if answer is None:
            self.misses += 1
            return None
        self.hits += 1
        self._answers.move_to_end(key)
        return answer

    async def version(self, query: CandleQuery) -> int | None:
        """The series' version before a read, once it is watched; None when it cannot be watched now."""
        series = _series(query)
        if series not in self._series:
            subscriber = self._subscriber
            if subscriber is None or subscriber.ended:
                return None
            name = self._channel_name(Channel(ChannelFamily.CANDLES, series[0], series[1], query.timeframe))
            self._series[series] = name
            self._by_channel[name] = series
            self._versions[series] = next(self._tick)
            try:
                async with asyncio.timeout(WATCH_WAIT_S):
                    await self._hub.acquire(subscriber, [name])
            except (Unavailable, TimeoutError):
                self._forget(series)
                return None
            if series in self._series:
                self._confirmed.add(series)
            self._evict_series()
        elif series not in self._confirmed:
            return None  # another read is still waiting for the subscription
        self._series.move_to_end(series)
        return self._versions[series]

    def put(self, query: CandleQuery, version: int, answer: bytes) -> None:
        series = _series(query)
        if series not in self._confirmed or self._versions.get(series) != version or len(answer) > MAX_BYTES // 16:
            return  # a close arrived during the read (or the series stopped being watched)
        key = _key(query)
        self._bytes += len(answer) - len(self._answers.get(key, b""))
        self._answers[key] = answer
        self._answers.move_to_end(key)
        while self._bytes > MAX_BYTES:
            _, dropped = self._answers.popitem(last=False)
            self._bytes -= len(dropped)

    async def _invalidate(self) -> None:
        while True:
            subscriber = self._subscriber
            assert subscriber is not None
            try:
                internal, seq, _ = await subscriber.get()
            except HubClosed:
                return
            except StreamFellBehind:
                logger.warning("hot candles: the watcher fell behind; dropping every cached answer")
                self._clear()
                self._subscriber = self._hub.subscriber(WATCH_QUEUE)
                continue
            if seq == RESYNC:  # Redis reconnected: closes may have been missed
                self._drop_answers()
                continue
            series = self._by_channel.get(internal)
            if series is not None:
                self._versions[series] = next(self._tick)
                self._drop_answers(series)

    def _drop_answers(self, series: Series | None = None) -> None:
        if series is None:
            for watched in self._series:
                self._versions[watched] = next(self._tick)
            self._answers.clear()
            self._bytes = 0
            return
        for key in [k for k in self._answers if k[:3] == series]:
            self._bytes -= len(self._answers.pop(key))

    def _evict_series(self) -> None:
        while len(self._series) > MAX_SERIES:
            series = next(iter(self._series))
            self._drop_answers(series)
            self._forget(series)

    def _forget(self, series: Series) -> None:
        name = self._series.pop(series, None)
        self._versions.pop(series, None)
        self._confirmed.discard(series)
        if name is not None:
            self._by_channel.pop(name, None)
            if self._subscriber is not None:
                self._hub.release(self._subscriber, [name])

    def _clear(self) -> None:
        self._drop_answers()
        if self._subscriber is not None:
            self._hub.release_all(self._subscriber)
        self._series.clear()
        self._by_channel.clear()
        self._versions.clear()
        self._confirmed.clear()


def _series(query: CandleQuery) -> Series:
    return query.exchange, query.symbol, query.timeframe.value


def _key(query: CandleQuery) -> Key:
    return query.exchange, query.symbol, query.timeframe.value, query.limit
