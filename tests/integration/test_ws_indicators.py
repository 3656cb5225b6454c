"""The ``indicators:{SYMBOL}:{TF}`` channel through a real WebSocket gateway and core.

The indicators service runs in the test over real PostgreSQL and Redis (the
core's prefix), exactly as the exchange pipeline calls it on each wave of
closed candles; a ``websockets`` client subscribed to the channel must get one
``indicator_update`` per close once the indicator is warm, with the public
MACD-V projection only, ``seq`` increasing by one, and an exact resume.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal as D
from typing import Any

import asyncpg
import pytest

from core.adapters.alert_store import AlertStore
from core.adapters.events import EventPublisher
from core.adapters.indicator_store import CandleHistory, IndicatorStore
from core.adapters.redis_keys import RedisKeys
from core.domain.candles import Candle
from core.domain.indicators import Bar, MacdVValue, batch
from core.domain.timeframes import Timeframe
from core.services.indicators import IndicatorService
from perseus_sdk.stream import LiveEvent, LiveStream
from tests.support import ws as support
from tests.support.processes import Process, running_gateway
from tests.support.redis_target import pipeline
from tests.support.ws import events, fresh_symbol, open_stream, recv, subscribe

pytestmark = pytest.mark.integration
key = support.key

MIN = 60_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % (24 * 3600 * 1000)
PUBLIC_FIELDS = ["exchange", "symbol", "timeframe", "timestamp", "macd_v", "signal", "histogram", "stage", "zone"]


@pytest.fixture(scope="module")
def gateway(migrated_env: dict[str, str], core: Process) -> Iterator[Process]:
    with running_gateway("ws", migrated_env, core.addr) as process:
        yield process


@pytest.fixture
async def service(migrated_env: dict[str, str], redis_url: str, redis_prefix: str) -> AsyncIterator[IndicatorService]:
    """The core's indicators service on the session's stores (the core's Redis prefix)."""
    pool = await asyncpg.create_pool(migrated_env["PERSEUS_DATABASE_URL"], min_size=1, max_size=2)
    bus = pipeline(redis_url)
    keys = RedisKeys(redis_prefix)
    ids = {row["name"]: row["id"] for row in await pool.fetch("SELECT id, name FROM exchanges")}
    yield IndicatorService(
        states=IndicatorStore(bus, keys),
        history=CandleHistory(pool),
        alerts=AlertStore(pool),
        signals=EventPublisher(bus, keys),
        exchange_ids=ids,
    )
    await bus.aclose()
    await pool.close()


def closes(symbol: str, count: int) -> list[Candle]:
    out = []
    for m in range(count):
        p = D(str(round(100 + 12 * math.sin(m * 2 * math.pi / 50) + 3 * math.sin(m / 3.0), 4)))
        out.append(Candle("sim", symbol, Timeframe.M1, T0 + m * MIN, p, p + 1, p - 1, p, D(1)))
    return out


def expected(candles: list[Candle]) -> list[MacdVValue]:
    return batch([Bar(c.open_time, float(c.high), float(c.low), float(c.close)) for c in candles])


def assert_projection(event: dict[str, Any], channel: str, symbol: str, value: MacdVValue) -> None:
    assert event["type"] == "indicator_update" and event["channel"] == channel
    data = event["data"]
    assert list(data) == PUBLIC_FIELDS  # never the EMAs, the ATR, the periods or the ids
    assert (data["exchange"], data["symbol"], data["timeframe"]) == ("sim", symbol, "1m")
    assert data["macd_v"] == pytest.approx(value.macd_v) and data["signal"] == pytest.approx(value.signal)
    assert data["histogram"] == pytest.approx(value.histogram)
    assert (data["stage"], data["zone"]) == (value.stage.value, value.zone.value)


async def test_every_warm_close_is_delivered_with_seq_and_resumes(
    gateway: Process, key: str, service: IndicatorService
) -> None:
    symbol = fresh_symbol()
    candles = closes(symbol, 46)
    values = expected(candles)
    name = f"indicators:{symbol}:1m"
    async with open_stream(gateway.addr, key) as watcher:  # keeps the channel live in the gateway meanwhile
        assert await subscribe(watcher, [f"indicators:SIM:{symbol.lower()}:1M"]) == {
            "type": "subscribed",
            "channels": [f"indicators:SIM:{symbol.lower()}:1M"],
        }
        async with open_stream(gateway.addr, key) as ws:
            assert await subscribe(ws, [name]) == {"type": "subscribed", "channels": [name]}
            await service.process(candles[:40])  # one wave: warm from its 35th close on
            ready = [v for v in values[:40] if v.ready]
            assert 0 < len(ready) < 40
            got = await events(ws, len(ready))
            for event, value in zip(got, ready, strict=True):
                assert_projection(event, name, symbol, value)
            seqs = [e["seq"] for e in got]
            assert seqs == list(range(seqs[0], seqs[0] + len(ready)))
            for close in candles[40:42]:  # one close per wave, as a live pipeline sends them
                await service.process([close])
            live = await events(ws, 2)
            assert [e["seq"] for e in live] == [seqs[-1] + 1, seqs[-1] + 2]
            assert_projection(live[-1], name, symbol, values[41])
        last_seen = live[-1]["seq"]
        watched = await events(watcher, len(ready) + 2)
        assert [e["seq"] for e in watched] == [*seqs, last_seen - 1, last_seen]
        assert watched[0]["channel"] == f"indicators:SIM:{symbol.lower()}:1M"  # as the client named it

        await service.process(candles[42:45])  # missed while disconnected
        async with open_stream(gateway.addr, key) as ws:
            ack = await subscribe(ws, [name], resume={name: last_seen})
            assert ack == {"type": "subscribed", "channels": [name]}
            replayed = await events(ws, 3)
            assert [e["seq"] for e in replayed] == [last_seen + 1, last_seen + 2, last_seen + 3]
            for event, value in zip(replayed, values[42:45], strict=True):
                assert_projection(event, name, symbol, value)
            await service.process(candles[45:])
            after = await recv(ws)
            assert after["seq"] == last_seen + 4
            assert_projection(after, name, symbol, values[45])


async def test_the_sdk_live_stream_delivers_indicator_updates(
    gateway: Process, key: str, service: IndicatorService
) -> None:
    symbol = fresh_symbol()
    candles = closes(symbol, 37)
    values = expected(candles)
    name = f"indicators:{symbol}:1m"
    async with LiveStream(f"ws://{gateway.addr}", key) as stream:
        await stream.subscribe(name)
        await service.process(candles[:36])
        await service.process(candles[36:])
        ready = [v for v in values if v.ready]
        async with asyncio.timeout(10):
            got = [await anext(stream) for _ in ready]
    assert all(isinstance(e, LiveEvent) and e.type == "indicator_update" for e in got)
    for event, value in zip(got, ready, strict=True):
        assert isinstance(event, LiveEvent)
        assert_projection({"type": event.type, "channel": event.channel, "data": event.data}, name, symbol, value)
    seqs = [e.seq for e in got if isinstance(e, LiveEvent)]
    assert seqs == list(range(seqs[0], seqs[0] + len(ready)))


@pytest.mark.parametrize(
    "channel",
    ["indicators:BTC-USD", "indicators:BTC-USD:2h", "indicators:nowhere:BTC-USD:1h", "indicator:BTC-USD:1h"],
)
async def test_a_malformed_indicators_channel_is_refused(gateway: Process, key: str, channel: str) -> None:
    async with open_stream(gateway.addr, key) as ws:
        answer = await subscribe(ws, [channel])
    assert answer["type"] == "error" and answer["code"] == "INVALID_CHANNEL", answer
