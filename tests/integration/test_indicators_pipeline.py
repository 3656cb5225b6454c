"""Indicators behind the exchange pipeline, on real PostgreSQL and Redis, then served by the real core.

The pipeline runs in-process with a clock the test controls; each minute's
trades and the clock's advance close a wave of candles, which the
:class:`IndicatorService` folds into the MACD-V state in Redis. The state must
equal a from-scratch ``batch()`` over the same stored closes, whatever
happens in between: a restart, a flushed Redis, a replayed wave.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal as D

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from grpc import aio

from common import resp
from core.adapters.alert_store import AlertStore
from core.adapters.candle_store import CandleStore
from core.adapters.events import EventPublisher
from core.adapters.indicator_store import CandleHistory, IndicatorStore
from core.adapters.migrations import migrate
from core.adapters.redis_keys import RedisKeys
from core.adapters.tick_store import TickStore
from core.domain.candles import Candle
from core.domain.channels import Channel, ChannelFamily
from core.domain.indicators import Bar, MacdVValue, batch
from core.domain.market_events import Trade
from core.domain.signals import Alert, Direction, Strength
from core.domain.timeframes import Timeframe
from core.services.exchange_pipeline import ExchangePipeline
from core.services.indicators import IndicatorService, NewAlert
from perseus.marketdata.v1 import (
    common_pb2,
    indicators_pb2,
    market_data_service_pb2 as md_pb2,
    market_data_service_pb2_grpc as md_grpc,
    signals_pb2,
    stream_service_pb2,
)
from tests.support.processes import free_port, running_core
from tests.support.redis_target import pipeline, redis_client

pytestmark = pytest.mark.integration

MIN = 60_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % (24 * 3600 * 1000)  # a UTC day boundary in 2027
GRACE = 2_000
SYMBOL = "MACD-USD"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Stack:
    """One test's stores and services; ``service()`` builds a fresh IndicatorService (a restart)."""

    def __init__(
        self, pool: asyncpg.Pool, client: aioredis.Redis, bus: resp.Pipeline, keys: RedisKeys, ids: dict[str, int]
    ) -> None:
        self.pool, self.redis, self.bus, self.keys, self.ids = pool, client, bus, keys, ids
        self.clock = Clock()
        self.publisher = EventPublisher(bus, keys, clock_ms=self.clock)
        self.states = IndicatorStore(bus, keys)
        self.alerts = AlertStore(pool)

    def service(self, publisher: EventPublisher | None = None) -> IndicatorService:
        return IndicatorService(
            states=self.states,
            history=CandleHistory(self.pool),
            alerts=self.alerts,
            signals=publisher or self.publisher,
            exchange_ids=self.ids,
        )

    def pipeline(self, service: IndicatorService) -> ExchangePipeline:
        async def after_ticks(ticks: object) -> None:
            return None

        return ExchangePipeline(
            "sim",
            self.ids["sim"],
            ticks=TickStore(self.pool),
            after_ticks=after_ticks,  # type: ignore[arg-type]
            candles=CandleStore(self.pool, self.bus, self.keys),
            publisher=self.publisher,
            clock_ms=self.clock,
            may_write=lambda: True,
            build_from_trades=True,
            on_closed=service.on_closed,
        )


@pytest.fixture(scope="module")
async def connections(
    database_url: str, redis_url: str
) -> AsyncIterator[tuple[asyncpg.Pool, aioredis.Redis, resp.Pipeline]]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    await migrate(pool)
    client, bus = redis_client(redis_url), pipeline(redis_url)
    yield pool, client, bus
    await bus.aclose()
    await client.aclose()
    await pool.close()


@pytest.fixture(scope="module")
async def stack(
    connections: tuple[asyncpg.Pool, aioredis.Redis, resp.Pipeline], redis_prefix: str
) -> AsyncIterator[Stack]:
    pool, client, bus = connections
    ids = {row["name"]: row["id"] for row in await pool.fetch("SELECT id, name FROM exchanges")}
    yield Stack(pool, client, bus, RedisKeys(redis_prefix), ids)  # the core's prefix: it serves what is written here


def price(minute: int) -> D:
    """A swinging price: MACD-V crosses its levels and its signal line every cycle."""
    return D(str(round(100 + 12 * math.sin(minute * 2 * math.pi / 50) + 3 * math.sin(minute / 3.0), 4)))


async def run_minute(pipeline: ExchangePipeline, clock: Clock, minute: int) -> None:
    """One minute of trades, then the clock past its close: one wave of closed candles."""
    base, p = T0 + minute * MIN, price(minute)
    trades = [
        Trade("sim", SYMBOL, p - D("0.4"), D("1"), base + 1_000, trade_id=f"{minute}a"),
        Trade("sim", SYMBOL, p + D("0.6"), D("1"), base + 20_000, trade_id=f"{minute}b"),
        Trade("sim", SYMBOL, p, D("2"), base + 50_000, trade_id=f"{minute}c"),
    ]
    await pipeline.on_events(trades)
    clock.now = base + MIN + GRACE
    await pipeline.advance()


async def stored_bars(pool: asyncpg.Pool, exchange_id: int, symbol: str, timeframe: Timeframe) -> list[Bar]:
    rows = await pool.fetch(
        "SELECT (extract(epoch FROM open_time) * 1000)::bigint, high, low, close FROM candles"
        " WHERE exchange_id = $1 AND symbol = $2 AND timeframe = $3 ORDER BY open_time",
        exchange_id,
        symbol,
        timeframe.value,
    )
    return [Bar(t, float(h), float(lo), float(c)) for t, h, lo, c in rows]


def same(ours: MacdVValue | None, expected: MacdVValue) -> bool:
    """Equal up to float rounding (1e-9 relative): the incremental and batch paths do the same arithmetic."""
    assert ours is not None
    numbers = ("macd_v", "signal", "histogram", "fast_ema", "slow_ema", "atr")
    return (ours.open_time, ours.stage, ours.zone, ours.ready) == (
        expected.open_time,
        expected.stage,
        expected.zone,
        expected.ready,
    ) and all(math.isclose(getattr(ours, n), getattr(expected, n), rel_tol=1e-9, abs_tol=1e-9) for n in numbers)


async def assert_matches_batch(s: Stack, timeframe: Timeframe) -> MacdVValue:
    expected = batch(await stored_bars(s.pool, s.ids["sim"], SYMBOL, timeframe))[-1]
    ours = await s.states.latest(("sim", SYMBOL, timeframe))
    assert same(ours, expected), (ours, expected)
    return expected


async def signal_events(s: Stack, symbol: str) -> list[stream_service_pb2.StreamEvent]:
    history = s.keys.stream_history(Channel(ChannelFamily.SIGNALS, "sim", symbol, Timeframe.M1))
    return [stream_service_pb2.StreamEvent.FromString(fields[b"p"]) for _, fields in await s.redis.xrange(history)]


async def alert_rows(s: Stack, symbol: str) -> list[asyncpg.Record]:
    return await s.pool.fetch("SELECT * FROM alerts WHERE symbol = $1 ORDER BY triggered_at, id", symbol)


async def test_state_follows_batch_through_restart_flush_and_replay(stack: Stack) -> None:
    s = stack
    service = s.service()
    pipeline = s.pipeline(service)
    for minute in range(60):
        await run_minute(pipeline, s.clock, minute)
        await assert_matches_batch(s, Timeframe.M1)
    assert service.stats.errors == 0 and service.stats.warmups == 4  # the first close of 1m, 5m, 15m and 1h
    await assert_matches_batch(s, Timeframe.M5)
    await assert_matches_batch(s, Timeframe.M15)

    # A restart: a new service and pipeline read the state back and continue identically.
    service = s.service()
    pipeline = s.pipeline(service)
    for minute in range(60, 90):
        await run_minute(pipeline, s.clock, minute)
        await assert_matches_batch(s, Timeframe.M1)
    assert service.stats.warmups == 0 and service.stats.errors == 0

    # Redis loses the state: the next wave warms up from PostgreSQL and lands on the same value.
    await s.redis.delete(*(s.keys.indicator_state("sim", SYMBOL, tf) for tf in Timeframe))
    for minute in range(90, 100):
        await run_minute(pipeline, s.clock, minute)
        await assert_matches_batch(s, Timeframe.M1)
    assert service.stats.warmups >= 1 and service.stats.errors == 0

    # Alerts: each stored once, each published once on signals:sim:MACD-USD:1m, with every field.
    rows = await alert_rows(s, SYMBOL)
    events = await signal_events(s, SYMBOL)
    assert len(rows) >= 2
    assert [e.trade_signal.id for e in events if e.trade_signal.timeframe == common_pb2.TIMEFRAME_1M] == [
        r["id"] for r in rows if r["timeframe"] == "1m"
    ]
    first = events[0]
    assert first.channel == f"signals:sim:{SYMBOL}:1m"
    assert first.trade_signal.alert_type and first.trade_signal.trigger_label
    assert first.trade_signal.source_exchange_id == s.ids["sim"]
    row = next(r for r in rows if r["id"] == first.trade_signal.id)
    assert first.trade_signal.price == str(row["price"]) and D(first.trade_signal.price) > 0
    opened = int(row["triggered_at"].timestamp() * 1000) - MIN
    assert first.trade_signal.price == str(
        await s.pool.fetchval(
            "SELECT close FROM candles WHERE symbol = $1 AND timeframe = '1m'"
            " AND open_time = timestamptz 'epoch' + $2::bigint * interval '1 millisecond'",
            SYMBOL,
            opened,
        )
    )

    # The same waves again (a replay, then with the state gone): nothing new stored or published.
    candles = await wave_candles(s, 0, 100)
    assert await s.service().process(candles) == []
    await s.redis.delete(s.keys.indicator_state("sim", SYMBOL, Timeframe.M1))
    replayed = s.service()
    assert await replayed.process(candles) == []
    assert replayed.stats.warmups == 1
    assert [r["id"] for r in await alert_rows(s, SYMBOL)] == [r["id"] for r in rows]
    assert len(await signal_events(s, SYMBOL)) == len(events)
    await assert_matches_batch(s, Timeframe.M1)


async def wave_candles(s: Stack, first_minute: int, end_minute: int) -> list[Candle]:
    rows = await s.pool.fetch(
        "SELECT (extract(epoch FROM open_time) * 1000)::bigint AS t, open, high, low, close, volume FROM candles"
        " WHERE symbol = $1 AND timeframe = '1m' AND open_time >= timestamptz 'epoch' + $2::bigint * interval '1 ms'"
        " AND open_time < timestamptz 'epoch' + $3::bigint * interval '1 ms' ORDER BY open_time",
        SYMBOL,
        T0 + first_minute * MIN,
        T0 + end_minute * MIN,
    )
    return [
        Candle("sim", SYMBOL, Timeframe.M1, r["t"], r["open"], r["high"], r["low"], r["close"], r["volume"])
        for r in rows
    ]


async def test_a_failing_store_never_breaks_candle_persistence(stack: Stack) -> None:
    s = stack

    class Broken(IndicatorStore):
        async def load(self, series: Sequence[object]) -> list[object]:  # type: ignore[override]
            raise ConnectionError("redis gone")

    service = s.service()
    service._states = Broken(s.bus, s.keys)  # type: ignore[assignment]
    pipeline = s.pipeline(service)
    s.clock.now = T0
    await pipeline.on_events([Trade("sim", "BROKEN-USD", D("5"), D("1"), T0 + 1_000, trade_id="x")])
    s.clock.now = T0 + MIN + GRACE
    await pipeline.advance()
    assert await s.pool.fetchval("SELECT count(*) FROM candles WHERE symbol = 'BROKEN-USD'") == 1
    assert service.stats.errors == 1 and pipeline.stats.candles_closed == 1


async def test_alerts_stored_while_redis_is_away_are_published_by_a_later_wave(stack: Stack) -> None:
    s, symbol = stack, "OUTBOX-USD"
    candles = [
        Candle("sim", symbol, Timeframe.M1, T0 + m * MIN, p, p + 1, p - 1, p, D(1))
        for m in range(80)
        for p in [price(m)]
    ]
    # Redis away for the publisher
    unreachable = resp.AutoPipeline({"host": "127.0.0.1", "port": free_port()}, tls=False, client_name="away")
    try:
        away = s.service(EventPublisher(unreachable, s.keys))
        stored = await away.process(candles[:60])
    finally:
        await unreachable.aclose()
    assert stored and away.stats.publish_failures == 1 and away.stats.errors == 0
    assert await signal_events(s, symbol) == []
    waiting = "SELECT count(*) FROM alert_outbox o JOIN alerts a ON a.id = o.alert_id WHERE a.symbol = $1"
    assert await s.pool.fetchval(waiting, symbol) == len(stored)  # stored, waiting in the outbox

    back = s.service()  # a restart with Redis back: its first wave publishes what waits, then its own
    later = await back.process(candles[60:])
    rows = await alert_rows(s, symbol)
    assert len(rows) == len(stored) + len(later)
    assert sorted(e.trade_signal.id for e in await signal_events(s, symbol)) == sorted(r["id"] for r in rows)
    assert await s.pool.fetchval(waiting, symbol) == 0
    assert back.stats.publish_failures == 0


# --- Served by the real core over gRPC ------------------------------------------------------------------------

GRPC_SYMBOL = "GRPC-USD"
ALERT_SYMBOL = "ALERT-USD"
ALERTS = 7
PAGE = 4


def known_alert(i: int, exchange_id: int) -> NewAlert:
    up = i % 2 == 0
    alert = Alert(
        open_time=T0 + i * MIN,
        alert_type="macdv_level",
        trigger_label=f"level_+50_{'up' if up else 'down'}",
        trigger_value=50.5 + i,
        signal_delta=1.25,
        signal_type="momentum_signal",
        direction=Direction.BULLISH if up else Direction.BEARISH,
        strength=Strength.MODERATE,
    )
    return NewAlert(exchange_id, "sim", ALERT_SYMBOL, Timeframe.M1, alert, D(f"100.{i}5"))


async def test_indicator_signal_and_alerts_through_the_core(stack: Stack, migrated_env: dict[str, str]) -> None:
    s = stack
    sim = s.ids["sim"]
    store = CandleStore(s.pool, s.bus, s.keys)
    await store.register_symbols(sim, [GRPC_SYMBOL])
    candles = [
        Candle("sim", GRPC_SYMBOL, Timeframe.M1, T0 + m * MIN, p, p + 1, p - 1, p, D(1))
        for m in range(60)
        for p in [price(m)]
    ]
    await store.insert(sim, candles)  # stored before the indicators see them, as the pipeline does
    await s.service().process(candles)
    expected = batch([Bar(c.open_time, float(c.high), float(c.low), float(c.close)) for c in candles])[-1]
    stored = await s.alerts.insert([known_alert(i, sim) for i in range(ALERTS)])
    assert len(stored) == ALERTS
    symbol_id = await s.pool.fetchval("SELECT id FROM symbols WHERE exchange_id = $1 AND symbol = $2", sim, GRPC_SYMBOL)

    with running_core(migrated_env, PERSEUS_MODE="pw-host") as core:
        async with aio.insecure_channel(core.addr) as channel:
            stub = md_grpc.MarketDataServiceStub(channel)
            series = {"exchange": "sim", "symbol": "grpc/usd", "timeframe": common_pb2.TIMEFRAME_1M}
            reply = await stub.GetIndicator(md_pb2.GetIndicatorRequest(**series), timeout=5)
            m = reply.indicator
            assert (m.exchange, m.symbol, m.timeframe) == ("sim", GRPC_SYMBOL, common_pb2.TIMEFRAME_1M)
            assert m.timestamp.ToMilliseconds() == T0 + 60 * MIN  # the close time of the last candle
            numbers = ("macd_v", "signal", "histogram", "fast_ema", "slow_ema", "atr")
            assert [getattr(m, n) for n in numbers] == pytest.approx([getattr(expected, n) for n in numbers])
            assert (m.fast_period, m.slow_period, m.signal_period, m.atr_period) == (12, 26, 9, 26)
            assert (m.exchange_id, m.symbol_id) == (sim, symbol_id)
            assert m.stage == indicators_pb2.MomentumStage.Value(f"MOMENTUM_STAGE_{expected.stage.name}")
            assert m.zone == indicators_pb2.ValueZone.Value(f"VALUE_ZONE_{expected.zone.name}")

            # The current signal: the state's, with the exact close of its candle; the last alert beside it.
            answer = await stub.GetSignal(md_pb2.GetSignalRequest(**series), timeout=5)
            current = answer.current
            assert (current.exchange, current.symbol, current.signal_type) == ("sim", GRPC_SYMBOL, "momentum_state")
            assert current.price == str(candles[-1].close) and current.timestamp == m.timestamp
            bullish = expected.macd_v >= expected.signal
            assert current.direction == (
                signals_pb2.SIGNAL_DIRECTION_BULLISH if bullish else signals_pb2.SIGNAL_DIRECTION_BEARISH
            )
            assert current.stage == m.stage and (current.exchange_id, current.symbol_id) == (sim, symbol_id)
            newest_alert = await s.alerts.latest(sim, GRPC_SYMBOL, Timeframe.M1)
            assert newest_alert is not None and answer.signal.id == newest_alert.id
            assert answer.signal.alert_type == newest_alert.alert_type and answer.signal.source_exchange_id == sim

            # A pair with alerts but no indicator state has no current signal: NOT_FOUND.
            alert_series = {**series, "symbol": ALERT_SYMBOL}
            with pytest.raises(aio.AioRpcError) as info:
                await stub.GetSignal(md_pb2.GetSignalRequest(**alert_series), timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
            # A registered pair whose timeframe has no ready value: NOT_FOUND with the reason in trailing metadata.
            for method, request in [
                (stub.GetIndicator, md_pb2.GetIndicatorRequest(**{**series, "timeframe": common_pb2.TIMEFRAME_1D})),
                (stub.GetSignal, md_pb2.GetSignalRequest(**{**series, "timeframe": common_pb2.TIMEFRAME_1D})),
            ]:
                with pytest.raises(aio.AioRpcError) as info:
                    await method(request, timeout=5)
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
                assert ("perseus-reason", "warming_up") in tuple(info.value.trailing_metadata() or ())

            request = md_pb2.ListAlertsRequest(exchange="sim", symbol=ALERT_SYMBOL, page_size=PAGE)
            first = await stub.ListAlerts(request, timeout=5)
            assert len(first.signals) == PAGE and first.next_page_token
            request.page_token = first.next_page_token
            second = await stub.ListAlerts(request, timeout=5)
            assert not second.next_page_token
            ids = [a.id for a in [*first.signals, *second.signals]]
            assert ids == [r.id for r in reversed(stored)]  # newest first, no duplicate, no gap

            since = md_pb2.ListAlertsRequest(exchange="sim", symbol=ALERT_SYMBOL, timeframe=common_pb2.TIMEFRAME_1M)
            since.since_time.FromMilliseconds(known_alert(5, sim).triggered_ms)
            assert [a.id for a in (await stub.ListAlerts(since, timeout=5)).signals] == [stored[6].id, stored[5].id]

            failures = [
                (md_pb2.ListAlertsRequest(page_token="not a token!"), grpc.StatusCode.INVALID_ARGUMENT),
                (md_pb2.ListAlertsRequest(page_size=1001), grpc.StatusCode.INVALID_ARGUMENT),
                (md_pb2.ListAlertsRequest(exchange="nowhere"), grpc.StatusCode.NOT_FOUND),
            ]
            for bad, code in failures:
                with pytest.raises(aio.AioRpcError) as info:
                    await stub.ListAlerts(bad, timeout=5)
                assert info.value.code() == code, bad
            indicator_failures = [
                ({**series, "exchange": "nowhere"}, grpc.StatusCode.NOT_FOUND),
                ({**series, "symbol": "NOPE"}, grpc.StatusCode.INVALID_ARGUMENT),
                ({**series, "timeframe": common_pb2.TIMEFRAME_UNSPECIFIED}, grpc.StatusCode.INVALID_ARGUMENT),
                ({**series, "symbol": "NONE-USD"}, grpc.StatusCode.NOT_FOUND),
            ]
            for fields, code in indicator_failures:
                with pytest.raises(aio.AioRpcError) as info:
                    await stub.GetIndicator(md_pb2.GetIndicatorRequest(**fields), timeout=5)
                assert info.value.code() == code, fields
            assert "no MACD-V" in (info.value.details() or "")
            assert "perseus-reason" not in dict(info.value.trailing_metadata() or ())  # unknown, not warming up
            with pytest.raises(aio.AioRpcError) as info:
                await stub.GetSignal(md_pb2.GetSignalRequest(**{**series, "symbol": "NONE-USD"}), timeout=5)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
