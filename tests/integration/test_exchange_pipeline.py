"""The exchange pipeline against real PostgreSQL and Redis, with a clock the test controls."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal as D

import asyncpg
import pytest
import redis.asyncio as aioredis

from common import resp
from core.adapters.candle_store import CandleStore
from core.adapters.events import EventPublisher
from core.adapters.migrations import migrate
from core.adapters.redis_keys import RedisKeys
from core.adapters.tick_store import TickStore
from core.domain.channels import Channel, ChannelFamily
from core.domain.market_events import ExchangeCandle, Trade
from core.domain.prices import Tick
from core.domain.timeframes import Timeframe
from core.services.exchange_pipeline import ExchangePipeline, LeaseLost
from perseus.marketdata.v1 import candles_pb2, stream_service_pb2
from tests.support.redis_target import pipeline as redis_pipeline, redis_client

pytestmark = pytest.mark.integration

MIN = 60_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % (24 * 3600 * 1000)  # a UTC day boundary in 2027


Stores = tuple[asyncpg.Pool, aioredis.Redis, RedisKeys, resp.Pipeline]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture(scope="module")
async def stores(database_url: str, redis_url: str, redis_prefix: str) -> AsyncIterator[Stores]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    await migrate(pool)
    client, bus = redis_client(redis_url), redis_pipeline(redis_url)
    yield pool, client, RedisKeys(redis_prefix + "pipeline:"), bus
    await bus.aclose()
    await client.aclose()
    await pool.close()


def pipeline(stores: Stores, exchange: str, clock: Clock, **kw: object) -> ExchangePipeline:
    pool, _, keys, bus = stores
    after: list[Tick] = []

    async def after_ticks(ticks: list[Tick]) -> None:
        after.extend(ticks)

    p = ExchangePipeline(
        exchange,
        {"sim": 1, "coinbase": 2, "binance": 3, "kraken": 4}[exchange],
        ticks=TickStore(pool),
        after_ticks=after_ticks,  # type: ignore[arg-type]
        candles=CandleStore(pool, bus, keys),
        publisher=EventPublisher(bus, keys),
        clock_ms=clock,
        may_write=kw.pop("may_write", lambda: True),  # type: ignore[arg-type]
        build_from_trades=bool(kw.pop("build_from_trades", True)),
    )
    p.after = after  # type: ignore[attr-defined]
    return p


def trade(symbol: str, price: str, size: str, ts: int, exchange: str = "sim") -> Trade:
    return Trade(exchange, symbol, D(price), D(size), ts, trade_id=f"{ts}")


async def test_trades_become_stored_ticks_and_candles_that_close_on_the_clock(stores: Stores) -> None:
    pool, client, keys, _ = stores
    clock = Clock()
    p = pipeline(stores, "sim", clock)
    await p.on_events([trade("PIPE-USD", "10", "1", T0 + 1_000), trade("PIPE-USD", "12", "2", T0 + 20_000)])
    await p.on_events([trade("PIPE-USD", "9", "1", T0 + 59_000)])
    clock.now = T0 + MIN + 1_000
    await p.advance()
    assert await pool.fetchval("SELECT count(*) FROM candles WHERE symbol = 'PIPE-USD'") == 0  # grace not over
    clock.now = T0 + MIN + 2_000
    await p.advance()
    row = await pool.fetchrow(
        "SELECT open::text, high::text, low::text, close::text, volume::text, sequence_num FROM candles"
        " WHERE symbol = 'PIPE-USD' AND timeframe = '1m'"
    )
    assert tuple(row) == ("10", "12", "9", "9", "4", T0 // MIN)
    assert await pool.fetchval("SELECT count(*) FROM price_feeds WHERE symbol = 'PIPE-USD' AND source = 'sim'") == 3
    assert len(p.after) == 3  # type: ignore[attr-defined]

    window = await client.zrange(keys.candle_window("sim", "PIPE-USD", Timeframe.M1), 0, -1, withscores=True)
    assert [score for _, score in window] == [T0]
    assert candles_pb2.Candle.FromString(window[0][0]).close == "9"
    history = await client.xrange(keys.stream_history(Channel(ChannelFamily.CANDLES, "sim", "PIPE-USD", Timeframe.M1)))
    assert len(history) == 1  # one candle-close event
    event = stream_service_pb2.StreamEvent.FromString(history[0][1][b"p"])
    assert event.channel == "candles:sim:PIPE-USD:1m" and event.candle_close.high == "12"


async def test_a_replayed_trade_is_not_counted_twice(stores: Stores) -> None:
    pool, *_ = stores
    clock = Clock()
    p = pipeline(stores, "sim", clock)
    first = [trade("DUP-USD", "5", "1", T0 + 1_000), trade("DUP-USD", "6", "1", T0 + 2_000)]
    await p.on_events(first)
    await p.on_events([*first, trade("DUP-USD", "7", "1", T0 + 3_000)])  # a reconnect snapshot, then a new trade
    clock.now = T0 + MIN + 2_000
    await p.advance()
    assert await pool.fetchval("SELECT volume FROM candles WHERE symbol = 'DUP-USD' AND timeframe = '1m'") == 3
    assert p.stats.duplicate_trades == 2


async def test_venue_trades_alike_but_for_their_trade_id_are_both_counted(stores: Stores) -> None:
    """The venue's trade id is part of a tick's identity: two trades of one millisecond, price and size are two
    ticks (stored with their ids, both in the volume), and either delivered again (a snapshot) is one."""
    pool, *_ = stores
    clock = Clock()
    p = pipeline(stores, "coinbase", clock)
    twins = [Trade("coinbase", "TWIN-USD", D("5"), D("1"), T0 + 1_000, trade_id=f"cb-{n}") for n in (1, 2)]
    await p.on_events(twins)
    await p.on_events(twins)  # a reconnect snapshot repeats them
    clock.now = T0 + MIN + 2_000
    await p.advance()
    assert await pool.fetchval("SELECT volume FROM candles WHERE symbol = 'TWIN-USD' AND timeframe = '1m'") == 2
    stored = await pool.fetch("SELECT trade_id FROM price_feeds WHERE symbol = 'TWIN-USD' ORDER BY trade_id")
    assert [r["trade_id"] for r in stored] == ["cb-1", "cb-2"]
    assert (p.stats.trades, p.stats.duplicate_trades) == (2, 2)


async def test_a_restarted_pipeline_resumes_after_stored_candles(stores: Stores) -> None:
    pool, *_ = stores
    clock = Clock()
    p = pipeline(stores, "coinbase", clock)
    await p.on_events([trade("RES-USD", "100", "1", T0 + 1_000, "coinbase")])
    clock.now = T0 + MIN + 2_000
    await p.advance()
    restarted = pipeline(stores, "coinbase", clock)
    await restarted.on_events([trade("RES-USD", "1", "1", T0 + 5_000, "coinbase")])  # late for a stored candle
    await restarted.on_events([trade("RES-USD", "101", "1", T0 + 3 * MIN + 1_000, "coinbase")])
    rows = await pool.fetch(
        "SELECT open_time, close::text, is_synthetic FROM candles WHERE symbol = 'RES-USD' AND timeframe = '1m'"
        " ORDER BY open_time"
    )
    assert [(int(r[0].timestamp() * 1000) - T0, r[1], r[2]) for r in rows] == [
        (0, "100", False),
        (MIN, "100", True),
        (2 * MIN, "100", True),
    ]


async def test_venue_minute_candles_are_the_source_when_configured(stores: Stores) -> None:
    pool, *_ = stores
    clock = Clock()
    p = pipeline(stores, "binance", clock, build_from_trades=False)
    kline = ExchangeCandle("binance", "KL-USDT", T0, D("1.5"), D("2"), D("1"), D("1.75"), D("10"), closed=True)
    await p.on_events([kline, trade("KL-USDT", "1.6", "3", T0 + 5_000, "binance")])
    clock.now = T0 + MIN + 2_000
    await p.advance()
    row = await pool.fetchrow(
        "SELECT open::text, close::text, volume::text FROM candles WHERE symbol = 'KL-USDT' AND timeframe = '1m'"
    )
    assert tuple(row) == ("1.5", "1.75", "10")  # the trade is a tick only: not counted into the candle


async def test_without_the_lease_nothing_is_written(stores: Stores) -> None:
    pool, *_ = stores
    p = pipeline(stores, "sim", Clock(), may_write=lambda: False)
    with pytest.raises(LeaseLost):
        await p.on_events([trade("NOLEASE-USD", "1", "1", T0 + 1_000)])
    assert await pool.fetchval("SELECT count(*) FROM price_feeds WHERE symbol = 'NOLEASE-USD'") == 0


# A new writer (takeover or restart) rebuilds every candle in progress from storage before it writes one.

DAY = 24 * 60 * MIN
END = T0 + DAY  # the next UTC day boundary: every timeframe closes there

# The reference: the stored ticks of each interval, by window functions (not the core's query).
AGGREGATES = """
SELECT DISTINCT (extract(epoch FROM date_bin($3::interval, ts, timestamptz 'epoch')) * 1000)::bigint AS open_time,
       first_value(price) OVER w, max(price) OVER w, min(price) OVER w, last_value(price) OVER w, sum(volume) OVER w
FROM price_feeds WHERE symbol = $1 AND source = $2
WINDOW w AS (PARTITION BY date_bin($3::interval, ts, timestamptz 'epoch') ORDER BY ts, id
             ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
"""


async def candles_of(pool: asyncpg.Pool, symbol: str, tf: Timeframe) -> dict[int, tuple[object, ...]]:
    rows = await pool.fetch(
        "SELECT (extract(epoch FROM open_time) * 1000)::bigint, open, high, low, close, volume, is_synthetic"
        " FROM candles WHERE symbol = $1 AND timeframe = $2",
        symbol,
        tf.value,
    )
    return {r[0]: tuple(r[1:]) for r in rows}


async def assert_candles_equal_ticks(pool: asyncpg.Pool, symbol: str, source: str, horizon: int) -> None:
    """Every interval of every timeframe up to ``horizon``: one candle, equal to the aggregate of its
    stored ticks (synthetic and empty where there are none)."""
    for tf in Timeframe:
        ticks = {
            r[0]: tuple(r[1:]) for r in await pool.fetch(AGGREGATES, symbol, source, timedelta(milliseconds=tf.ms))
        }
        candles = await candles_of(pool, symbol, tf)
        for open_time in range(min(ticks), horizon - tf.ms + 1, tf.ms):
            assert open_time in candles, f"{tf} candle at {open_time - T0} missing"
            if open_time in ticks:
                assert candles[open_time] == (*ticks[open_time], False), f"{tf} at {open_time - T0}"
            else:
                assert candles[open_time][4:] == (0, True), f"{tf} at {open_time - T0}"


def walk(start: int, end: int, step: int, symbol: str, exchange: str = "sim") -> list[Trade]:
    rng = random.Random(start)
    price, out = D("100.00"), []
    for ts in range(start, end, step):
        price = (price * (1 + D(rng.randint(-20, 20)) / 10_000)).quantize(D("0.01"))
        out.append(trade(symbol, str(price), f"{rng.uniform(0.01, 2):.4f}", ts, exchange))
    return out


async def feed(p: ExchangePipeline, clock: Clock, trades: list[Trade], per_batch: int = 3) -> None:
    """As the writer does: batches of trades with their clock, the candle clock ticking in between."""
    for i in range(0, len(trades), per_batch):
        batch = trades[i : i + per_batch]
        clock.now = batch[-1].ts_ms
        await p.on_events(batch)
        await p.advance()


@pytest.mark.parametrize(
    ("died", "stalled_s"),
    [(END - 2 * MIN + 1_000, 4), (END - 7 * MIN - 2_000, 190)],
    ids=["killed-1s-after-a-minute", "dead-for-3-minutes-across-a-close"],
)
async def test_a_new_writer_rebuilds_the_candles_in_progress_from_the_stored_ticks(
    stores: Stores, died: int, stalled_s: int
) -> None:
    pool, *_ = stores
    symbol = f"TK{stalled_s}-USD"
    clock = Clock()
    leader = pipeline(stores, "sim", clock)
    await leader.start([symbol])
    await feed(leader, clock, walk(END - 75 * MIN, died, 3_100, symbol))  # then it dies: no clock, no close

    clock.now = died + stalled_s * 1_000
    standby = pipeline(stores, "sim", clock)
    await standby.start([symbol])  # takes over: rebuilds, and stores what the dead leader never closed
    await feed(standby, clock, walk(clock.now + 500, END + 2 * MIN, 2_300, symbol))
    clock.now = END + 2 * MIN + 2_000
    await standby.advance()

    await assert_candles_equal_ticks(pool, symbol, "sim", horizon=END + 2 * MIN)
    assert leader.stats.late == standby.stats.late == 0


async def test_a_new_writer_rebuilds_higher_timeframes_from_the_venues_stored_minutes(stores: Stores) -> None:
    pool, *_ = stores
    clock = Clock()

    def kline(minute: int) -> ExchangeCandle:
        o = D(100 + minute % 7)
        return ExchangeCandle("binance", "KLT-USDT", minute, o, o + 3, o - 2, o + 1, D(minute % 5 + 1), closed=True)

    leader = pipeline(stores, "binance", clock, build_from_trades=False)
    for minute in range(END - 12 * MIN, END - 3 * MIN, MIN):
        clock.now = minute + MIN + 500
        await leader.on_events([kline(minute), trade("KLT-USDT", "1", "1", clock.now, "binance")])
        await leader.advance()
    standby = pipeline(stores, "binance", clock, build_from_trades=False)
    await standby.start(["KLT-USDT"])
    for minute in range(END - 3 * MIN, END + MIN, MIN):
        clock.now = minute + MIN + 500
        await standby.on_events([kline(minute)])
        await standby.advance()
    clock.now = END + MIN + 2_000
    await standby.advance()

    minutes = await candles_of(pool, "KLT-USDT", Timeframe.M1)
    assert sorted(minutes) == list(range(END - 12 * MIN, END + MIN, MIN))
    for tf in (Timeframe.M5, Timeframe.M15, Timeframe.H1, Timeframe.D1):
        for open_time, candle in (await candles_of(pool, "KLT-USDT", tf)).items():
            inside = [minutes[t] for t in sorted(minutes) if open_time <= t < open_time + tf.ms]
            rollup = (inside[0][0], max(m[1] for m in inside), min(m[2] for m in inside), inside[-1][3])
            assert candle[:5] == (*rollup, sum(m[4] for m in inside)), f"{tf} at {open_time - END}"


async def test_the_clock_closes_no_candle_whose_trades_are_being_stored(stores: Stores) -> None:
    pool, *_ = stores
    clock = Clock()
    p = pipeline(stores, "sim", clock)
    await p.start(["SLOW-USD"])
    store, release = p._ticks, asyncio.Event()  # type: ignore[attr-defined]

    class SlowStore:  # the real insert, reached only once the test lets it (a PostgreSQL stall)
        async def insert(self, *args: object, **kw: object) -> set[int]:
            await release.wait()
            return await store.insert(*args, **kw)  # type: ignore[no-any-return]

    await p.on_events([trade("SLOW-USD", "10", "1", T0 + 1_000)])
    p._ticks = SlowStore()  # type: ignore[assignment]
    storing = asyncio.create_task(p.on_events([trade("SLOW-USD", "11", "2", T0 + 59_000)]))
    await asyncio.sleep(0.05)
    clock.now = T0 + MIN + 5_000  # past the close and its grace, while the trade is being stored
    await p.advance()
    release.set()
    await storing
    await p.advance()
    row = await pool.fetchrow(
        "SELECT close::text, volume::text FROM candles WHERE symbol = 'SLOW-USD' AND timeframe = '1m'"
    )
    assert tuple(row) == ("11", "3") and p.stats.late == 0


@pytest.mark.parametrize(
    "late_ms", [0, 800, 1_999, 2_500], ids=["at-the-end", "0.8s-after", "1.999s-after", "after-grace"]
)
async def test_takeovers_within_one_minute_and_one_in_its_close_grace_leave_no_synthetic_candle(
    stores: Stores, late_ms: int
) -> None:
    """The chaos run of issue 13: six terms in two minutes. The minute M gets ticks from three terms that lose
    the lease mid-minute (one stores a batch its builder never sees: the lease goes while it is being handed
    on), a term that starts and loses the lease at once, and the last takeover comes after M ended but
    within its close grace, with M's 1m candle not stored. M's candle must hold every stored tick of M
    (it came out synthetic, flat at the previous close, when the new writer took M for closed and empty)."""
    pool, *_ = stores
    symbol, clock = f"SIX{late_ms}-USD", Clock()
    m = END - 3 * MIN  # the minute M
    leases = {"term": 0}

    def term(n: int) -> ExchangePipeline:
        leases["term"] = n
        return pipeline(stores, "sim", clock, may_write=lambda: leases["term"] == n)

    async def lead(n: int, start: int, trades: list[Trade]) -> ExchangePipeline:
        clock.now = start
        p = term(n)
        await p.start([symbol])
        await feed(p, clock, trades)
        return p

    def lose_at(p: ExchangePipeline, at: int) -> None:  # the next batch is stored, then the lease is gone
        async def after_ticks(ticks: list[Tick]) -> None:
            leases["term"] = -1
            raise LeaseLost("lost while the batch was handed on")

        p._after_ticks = after_ticks  # type: ignore[attr-defined]
        clock.now = at

    first = await lead(1, m - 9_000, walk(m - 8_500, m + 1_000, 400, symbol))  # closes M - 1 at M's first trade
    assert (await candles_of(pool, symbol, Timeframe.M1)).keys() == {m - MIN}  # then SIGKILLed: no more calls
    second = await lead(2, m + 2_800, walk(m + 3_000, m + 6_000, 330, symbol))
    lose_at(second, m + 6_100)
    with pytest.raises(LeaseLost):
        await second.on_events([trade(symbol, "99.5", "0.7", m + 6_100)])  # stored, in no builder
    await lead(3, m + 10_000, walk(m + 10_100, m + 19_000, 450, symbol))  # lost to a frozen Redis: no more calls
    clock.now = m + 23_200
    await term(4).start([symbol])  # lost at once
    fifth = await lead(5, m + 25_200, walk(m + 25_300, m + 46_700, 350, symbol))
    lose_at(fifth, m + 46_700)
    with pytest.raises(LeaseLost):
        await fifth.on_events([trade(symbol, "100.5", "0.3", m + 46_700)])
    # Redis is back: the last takeover as M ends, in its close grace (0.8 s after in the run), or after it
    last = await lead(6, m + MIN + late_ms, walk(m + MIN + late_ms + 20, m + 3 * MIN + 500, 210, symbol))
    clock.now = m + 3 * MIN + 2_000
    await last.advance()

    minute = (await candles_of(pool, symbol, Timeframe.M1))[m]
    assert minute[-1] is False, f"M stored synthetic: {minute}"
    await assert_candles_equal_ticks(pool, symbol, "sim", horizon=END)
    assert first.stats.late == last.stats.late == 0
