"""The exchange pipeline over in-memory implementations of its ports: what it stores, closes and publishes, and
what it does when storage is down or the lease is gone. No Redis, no PostgreSQL: the real adapters keep their
integration tests (tests/integration/test_exchange_pipeline.py, test_candle_takeover.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal as D

import pytest

from core.domain.candles import Aggregate, Candle
from core.domain.errors import LeaseLost, StorageUnavailable
from core.domain.market_events import Trade
from core.domain.prices import Tick
from core.domain.timeframes import Timeframe
from core.services.exchange_pipeline import ExchangePipeline
from core.services.ports import Connection

MIN = 60_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % (24 * 3600 * 1000)  # a UTC day boundary
SYMBOL = "PIPE-USD"


class Storage:
    """PostgreSQL and the candle windows, in memory: the ticks' identity and the candles' first write win."""

    def __init__(self) -> None:
        self.down = False
        self.ticks: list[Tick] = []
        self._tick_keys: set[tuple[object, ...]] = set()
        self.candles: dict[tuple[int, str, Timeframe, int], Candle] = {}
        self.windowed: list[Candle] = []
        self.symbols: set[tuple[int, str]] = set()
        self.inbox: list[Tick] = []  # ingested ticks (also in ``ticks``) waiting for the writer
        self.take_fails_for: set[str] = set()  # symbols whose inbox cannot be taken (PostgreSQL failing then)

    def check(self) -> None:
        if self.down:
            raise StorageUnavailable("postgresql", "down")

    def stored(self, timeframe: Timeframe = Timeframe.M1) -> list[Candle]:
        return sorted((c for c in self.candles.values() if c.timeframe is timeframe), key=lambda c: c.open_time)


class MemoryTicks:
    def __init__(self, storage: Storage) -> None:
        self._s = storage

    async def insert(
        self, ticks: Sequence[tuple[int, Tick]], *, worker_id: str, batch_id: str, conn: Connection = None
    ) -> set[int]:
        self._s.check()
        fresh: set[int] = set()
        for index, tick in ticks:
            key = (tick.symbol, tick.source, tick.ts_ms, tick.price, tick.volume, tick.trade_id)
            if key not in self._s._tick_keys:
                self._s._tick_keys.add(key)
                self._s.ticks.append(tick)
                fresh.add(index)
        return fresh


class MemoryCandles:
    def __init__(self, storage: Storage) -> None:
        self._s = storage

    async def register_symbols(self, exchange_id: int, symbols: Sequence[str], *, conn: Connection = None) -> None:
        self._s.check()
        self._s.symbols.update((exchange_id, s) for s in symbols)

    async def last_closed(self, exchange_id: int, symbol: str) -> dict[Timeframe, tuple[int, D]]:
        self._s.check()
        last: dict[Timeframe, tuple[int, D]] = {}
        for (eid, sym, tf, open_time), candle in sorted(self._s.candles.items(), key=lambda kv: kv[0][3]):
            if (eid, sym) == (exchange_id, symbol):
                last[tf] = (open_time, candle.close)
        return last

    async def stored_minutes(
        self, exchange_id: int, symbol: str, since_ms: int, until_ms: int | None = None
    ) -> list[Aggregate]:
        self._s.check()
        return [
            Aggregate.of_minute(c)
            for c in self._s.stored()
            if c.symbol == symbol
            and not c.is_synthetic
            and c.open_time >= since_ms
            and (until_ms is None or c.open_time < until_ms)
        ]

    async def tick_minutes(self, source: str, symbol: str, since_ms: int) -> list[Aggregate]:
        self._s.check()
        by_minute: dict[int, list[Tick]] = {}
        for tick in sorted(self._s.ticks, key=lambda t: t.ts_ms):  # stable: insertion order breaks ties
            waiting = any(tick is w for w in self._s.inbox)  # left out: the writer takes it from the inbox
            if tick.source == source and tick.symbol == symbol and tick.ts_ms >= since_ms and not waiting:
                by_minute.setdefault(tick.ts_ms // MIN, []).append(tick)
        return [
            Aggregate(
                ts[0].ts_ms,
                ts[-1].ts_ms,
                ts[0].price,
                max(t.price for t in ts),
                min(t.price for t in ts),
                ts[-1].price,
                sum((t.volume for t in ts), D(0)),
            )
            for _, ts in sorted(by_minute.items())
        ]

    async def inbox_symbols(self, source: str) -> set[str]:
        self._s.check()
        return {t.symbol for t in self._s.inbox if t.source == source}

    async def take_inbox(
        self, source: str, symbols: Sequence[str], *, conn: Connection = None
    ) -> list[tuple[str, D, D, int]]:
        self._s.check()
        if self._s.take_fails_for & set(symbols):
            raise StorageUnavailable("postgresql", "down")
        taken = [t for t in self._s.inbox if t.source == source and t.symbol in symbols]
        self._s.inbox = [t for t in self._s.inbox if not any(t is x for x in taken)]
        return [(t.symbol, t.price, t.volume, t.ts_ms) for t in sorted(taken, key=lambda t: t.ts_ms)]

    async def insert(self, exchange_id: int, candles: Sequence[Candle], *, conn: Connection = None) -> None:
        self._s.check()
        for c in candles:
            self._s.candles.setdefault((exchange_id, c.symbol, c.timeframe, c.open_time), c)

    async def add_to_windows(self, exchange_id: int, candles: Sequence[Candle]) -> None:
        self._s.windowed.extend(candles)


class MemoryPublisher:
    def __init__(self) -> None:
        self.down = False
        self.published: list[Candle] = []

    async def publish_candles(self, exchange_id: int, candles: Sequence[Candle]) -> None:
        if self.down:
            raise StorageUnavailable("redis", "down")
        self.published.extend(candles)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Harness:
    def __init__(self) -> None:
        self.storage = Storage()
        self.publisher = MemoryPublisher()
        self.clock = Clock()
        self.lease = True
        self.after: list[Tick] = []

    def pipeline(self, *, build_from_trades: bool = True, **kw: object) -> ExchangePipeline:
        async def after_ticks(ticks: Sequence[Tick]) -> None:
            self.after.extend(ticks)

        return ExchangePipeline(
            "sim",
            1,
            ticks=MemoryTicks(self.storage),
            after_ticks=after_ticks,
            candles=MemoryCandles(self.storage),
            publisher=self.publisher,
            clock_ms=self.clock,
            may_write=lambda: self.lease,
            build_from_trades=build_from_trades,
            **kw,  # type: ignore[arg-type]
        )


def trade(price: str, size: str, ts: int) -> Trade:
    return Trade("sim", SYMBOL, D(price), D(size), ts, trade_id=str(ts))


def ohlcv(candle: Candle) -> tuple[D, D, D, D, D]:
    return candle.open, candle.high, candle.low, candle.close, candle.volume


async def test_trades_become_ticks_and_a_candle_that_closes_after_the_grace_stored_before_it_is_published() -> None:
    h = Harness()
    p = h.pipeline()
    await p.on_events([trade("10", "1", T0 + 1_000), trade("12", "2", T0 + 20_000)])
    await p.on_events([trade("9", "1", T0 + 59_000)])
    h.clock.now = T0 + MIN + 1_000
    await p.advance()
    assert h.storage.stored() == [] and h.publisher.published == []  # the grace is not over
    h.clock.now = T0 + MIN + 2_000
    await p.advance()
    [candle] = h.storage.stored()
    assert (candle.open_time, ohlcv(candle)) == (T0, (D(10), D(12), D(9), D(9), D(4)))
    assert h.publisher.published == [candle] and h.storage.windowed == [candle]
    assert len(h.after) == 3 and p.stats.trades == 3 and p.stats.candles_closed == 1


async def test_a_replayed_trade_is_stored_and_counted_once() -> None:
    h = Harness()
    p = h.pipeline()
    trades = [trade("10", "1", T0 + 1_000), trade("11", "1", T0 + 2_000)]
    await p.on_events(trades)
    await p.on_events(trades)  # the snapshot a venue replays on reconnect
    h.clock.now = T0 + MIN + 2_000
    await p.advance()
    [candle] = h.storage.stored()
    assert candle.volume == D(2)
    assert (p.stats.trades, p.stats.duplicate_trades, len(h.after)) == (2, 2, 2)


async def test_candles_closed_while_storage_is_down_are_kept_and_stored_and_published_once_it_is_back() -> None:
    h = Harness()
    p = h.pipeline()
    await p.on_events([trade("10", "1", T0 + 1_000)])
    h.clock.now = T0 + MIN + 2_000
    h.publisher.down = True
    with pytest.raises(StorageUnavailable):
        await p.advance()
    h.publisher.down, h.storage.down = False, True
    with pytest.raises(StorageUnavailable):
        await p.advance()
    await p.deliver([])  # the venue's sink: an outage is logged, never raised into the venue
    h.storage.down = False
    await p.advance()
    [candle] = h.storage.stored()
    assert h.publisher.published == [candle]
    await p.advance()
    assert h.publisher.published == [candle]  # nothing left over to publish twice


async def test_without_the_lease_nothing_is_written_and_the_sink_raises() -> None:
    h = Harness()
    p = h.pipeline()
    h.lease = False
    with pytest.raises(LeaseLost):
        await p.on_events([trade("10", "1", T0 + 1_000)])
    with pytest.raises(LeaseLost):
        await p.deliver([trade("10", "1", T0 + 1_000)])
    assert h.storage.ticks == [] and h.storage.candles == {}


async def test_a_write_the_fence_refuses_raises_lease_lost_and_stores_nothing() -> None:
    h = Harness()

    class RefusingFence:
        @asynccontextmanager
        async def transaction(self, term: int) -> AsyncIterator[Connection]:
            if term != 8:  # a newer writer claimed term 8
                raise LeaseLost(f"writer term {term} is fenced off (current term 8)")
            yield None

    p = h.pipeline(fence=RefusingFence(), term=lambda: 7)
    with pytest.raises(LeaseLost):
        await p.on_events([trade("10", "1", T0 + 1_000)])
    assert h.storage.ticks == []


async def test_a_new_pipeline_rebuilds_the_candle_in_progress_from_the_stored_ticks() -> None:
    h = Harness()
    old = h.pipeline()
    await old.on_events([trade("10", "1", T0 + 1_000), trade("12", "2", T0 + 20_000)])
    # the old writer dies here; a new one takes over before the minute is over
    h.clock.now = T0 + 30_000
    new = h.pipeline()
    await new.start([SYMBOL])
    await new.on_events([trade("8", "1", T0 + 40_000)])
    h.clock.now = T0 + MIN + 2_000
    await new.advance()
    [candle] = h.storage.stored()
    assert ohlcv(candle) == (D(10), D(12), D(8), D(8), D(4))
    assert h.storage.symbols == {(1, SYMBOL)}


async def test_a_new_pipeline_closes_the_minutes_the_old_writer_never_closed() -> None:
    h = Harness()
    old = h.pipeline()
    await old.on_events([trade("10", "1", T0 + 1_000)])
    h.clock.now = T0 + MIN + 30_000  # the old writer died after the minute, before it closed it
    new = h.pipeline()
    await new.start([SYMBOL])
    [candle] = h.storage.stored()
    assert (candle.open_time, ohlcv(candle)) == (T0, (D(10), D(10), D(10), D(10), D(1)))
    assert h.publisher.published == [candle]


async def test_closed_candles_reach_the_listener_after_they_are_published() -> None:
    h = Harness()
    told: list[tuple[list[Candle], int]] = []

    async def on_closed(candles: Sequence[Candle], fenced: object) -> None:
        told.append((list(candles), len(h.publisher.published)))

    p = h.pipeline(on_closed=on_closed)
    await p.on_events([trade("10", "1", T0 + 1_000)])
    h.clock.now = T0 + MIN + 2_000
    await p.advance()
    assert told == [(h.storage.stored(), 1)]


def ingested(storage: Storage, symbol: str, price: str, size: str, ts: int, *, waiting: bool = True) -> None:
    """A tick stored by ingest (any core); ``waiting``: still in the inbox, not taken by a writer yet."""
    tick = Tick(symbol, D(price), D(size), "sim", ts)
    storage.ticks.append(tick)
    if waiting:
        storage.inbox.append(tick)


async def test_ingested_ticks_are_taken_into_the_candles_once_across_a_rebuild() -> None:
    h = Harness()
    ingested(h.storage, SYMBOL, "10", "1", T0 + 1_000, waiting=False)  # taken by the writer before (now dead)
    ingested(h.storage, SYMBOL, "12", "2", T0 + 2_000)  # ingested while nobody led
    p = h.pipeline()
    await p.start([SYMBOL])  # the rebuild reads the first, the inbox gives the second: each once
    ingested(h.storage, SYMBOL, "9", "4", T0 + 3_000)  # ingested on any core after the start
    await p.advance()
    h.clock.now = T0 + MIN + 2_000
    await p.advance()
    [candle] = h.storage.stored()
    assert ohlcv(candle) == (D(10), D(12), D(9), D(9), D(7))
    assert h.storage.inbox == [] and p.stats.ingested == 2


async def test_a_failed_take_keeps_the_candles_other_symbols_rebuilt_and_rebuilds_its_symbol_again() -> None:
    h = Harness()
    for symbol in ("AAA-USD", "BBB-USD"):
        ingested(h.storage, symbol, "5", "1", T0 + 1_000, waiting=False)
        ingested(h.storage, symbol, "6", "2", T0 + 2_000)
    h.clock.now = T0 + MIN + 2_000  # both symbols' first minute is over: their rebuild closes it
    p = h.pipeline()
    h.storage.take_fails_for = {"BBB-USD"}
    with pytest.raises(StorageUnavailable):
        await p.advance()
    h.storage.take_fails_for = set()
    await p.advance()
    stored = {c.symbol: ohlcv(c) for c in h.storage.stored()}
    assert stored == {s: (D(5), D(6), D(5), D(6), D(3)) for s in ("AAA-USD", "BBB-USD")}
    assert p.stats.ingested == 2
