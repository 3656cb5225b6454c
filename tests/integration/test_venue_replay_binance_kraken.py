"""Binance and Kraken through the real VenueRunner against a local replay server: frames in, events to the sink.

No exchange is reachable from tests: :class:`ReplayServer` plays the fixtures
(frames in the documented formats) and checks what the client sends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

from core.adapters.venues.base import VenueProtocol
from core.adapters.venues.binance import BinanceProtocol
from core.adapters.venues.kraken import KrakenProtocol
from core.adapters.venues.runner import VenueRunner
from core.domain.market_events import ExchangeCandle, MarketEvent, SequenceGap, Trade
from tests.support.replay import Close, Drop, Hang, ReplayServer, Script, load_frames, wait_until

FIXTURES = Path(__file__).parent.parent / "fixtures"
BINANCE_SYMBOLS = ["BTC-USDT", "ETH-USDT"]
KRAKEN_SYMBOLS = ["BTC-USD", "ETH-USD"]
KRAKEN_TRADE_SUBSCRIBE = {
    "method": "subscribe",
    "params": {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"], "snapshot": True},
}
KRAKEN_OHLC_SUBSCRIBE = {
    "method": "subscribe",
    "params": {"channel": "ohlc", "symbol": ["BTC/USD", "ETH/USD"], "interval": 1},
}
KRAKEN_SUBSCRIBES = [KRAKEN_TRADE_SUBSCRIBE, KRAKEN_OHLC_SUBSCRIBE]
HEARTBEAT = '{"channel":"heartbeat"}'


def fixture(venue: str, name: str) -> list[str]:
    return load_frames(FIXTURES / venue / name)


class Sink:
    """Collects what the runner delivers, batch by batch."""

    def __init__(self) -> None:
        self.events: list[MarketEvent] = []

    async def __call__(self, events: Sequence[MarketEvent]) -> None:
        self.events.extend(events)

    def of(self, kind: type[MarketEvent]) -> list[MarketEvent]:
        return [event for event in self.events if isinstance(event, kind)]


@asynccontextmanager
async def running(factory: Callable[[], VenueProtocol], sink: Sink) -> AsyncIterator[VenueRunner]:
    runner = VenueRunner(factory, sink, backoff_base_s=0.01, backoff_cap_s=0.05)
    task = asyncio.create_task(runner.run())
    try:
        yield runner
    finally:
        await runner.aclose()
        await task


async def test_binance_streams_reach_the_sink_across_a_dropped_connection() -> None:
    session, gap = fixture("binance", "session.jsonl"), fixture("binance", "gap.jsonl")
    sink = Sink()
    scripts = [Script(send=session, then=Drop()), Script(send=gap, then=Hang())]
    async with ReplayServer(scripts) as server:
        async with running(lambda: BinanceProtocol(BINANCE_SYMBOLS, url=server.url), sink) as runner:
            await wait_until(lambda: len(sink.events) == len(session) + len(gap) + 1)
            assert runner.connects == 2
        assert [len(connection.received) for connection in server.connections] == [0, 0]  # subscribed by URL
    trades, candles = sink.of(Trade), sink.of(ExchangeCandle)
    assert len(trades) == 3 + 5 and len(candles) == 4
    assert trades[0] == Trade(
        "binance", "BTC-USDT", Decimal("26250.01000000"), Decimal("0.00381000"), 1695628177708, "3229461770"
    )
    assert [candle.closed for candle in candles] == [False, False, True, False]  # type: ignore[attr-defined]
    assert sink.of(SequenceGap) == [SequenceGap("binance", "BTC-USDT", expected=3229461774, received=3229461777)]


async def test_binance_error_frame_makes_the_runner_reconnect() -> None:
    session = fixture("binance", "session.jsonl")
    error = fixture("binance", "errors.jsonl")[1]  # {"code":3,"msg":...}
    sink = Sink()
    scripts = [Script(send=[session[0], error, session[2]], then=Hang()), Script(send=[session[3]], then=Hang())]
    async with ReplayServer(scripts) as server:
        async with running(lambda: BinanceProtocol(BINANCE_SYMBOLS, url=server.url), sink) as runner:
            await wait_until(lambda: len(sink.events) == 2)
            assert (runner.connects, runner.errors) == (2, 1)
        await server.wait_connections(2)
    # the frame after the error, on the abandoned connection, was never read
    assert [event.trade_id for event in sink.of(Trade)] == ["3229461770", "3229461771"]  # type: ignore[attr-defined]


async def test_kraken_subscribes_and_resubscribes_after_a_disconnect() -> None:
    session = fixture("kraken", "session.jsonl")
    sink = Sink()
    scripts = [
        Script(expect=KRAKEN_SUBSCRIBES, send=session, then=Close(1001, "going away")),
        Script(expect=KRAKEN_SUBSCRIBES, send=fixture("kraken", "gap.jsonl"), then=Hang()),
    ]
    async with ReplayServer(scripts) as server:
        async with running(lambda: KrakenProtocol(KRAKEN_SYMBOLS, url=server.url), sink) as runner:
            await wait_until(lambda: len(sink.of(Trade)) == 7 + 5)
            assert runner.connects == 2
        assert [[json.loads(frame) for frame in c.received] for c in server.connections] == [KRAKEN_SUBSCRIBES] * 2
    trades = sink.of(Trade)
    assert trades[5].price == Decimal("27000.12345678")  # type: ignore[attr-defined]
    assert str(trades[5].price) == "27000.12345678"  # type: ignore[attr-defined]
    candles = sink.of(ExchangeCandle)
    assert [candle.closed for candle in candles] == [False, True, False, False, False, True, False]  # type: ignore[attr-defined]
    assert sink.of(SequenceGap) == [SequenceGap("kraken", "BTC-USD", expected=64350742, received=64350745)]


async def test_kraken_refused_subscription_makes_the_runner_reconnect_and_resubscribe() -> None:
    session = fixture("kraken", "session.jsonl")
    refused = fixture("kraken", "errors.jsonl")[0]
    sink = Sink()
    scripts = [
        Script(expect=KRAKEN_SUBSCRIBES, send=[session[0], refused, session[5]], then=Hang()),
        Script(expect=KRAKEN_SUBSCRIBES, send=[session[0], session[5]], then=Hang()),
    ]
    async with ReplayServer(scripts) as server:
        async with running(lambda: KrakenProtocol(KRAKEN_SYMBOLS, url=server.url), sink) as runner:
            await wait_until(lambda: len(sink.events) == 3)
            assert (runner.connects, runner.errors) == (2, 1)
        assert len(server.connections) == 2
    assert [event.trade_id for event in sink.of(Trade)] == ["64350729", "64350730", "64350731"]  # type: ignore[attr-defined]


async def test_kraken_silence_past_the_idle_timeout_reconnects() -> None:
    sink = Sink()
    trade = fixture("kraken", "gap.jsonl")[0]
    scripts = [
        Script(expect=KRAKEN_SUBSCRIBES, send=[HEARTBEAT], then=Hang()),  # then no heartbeat: a stalled feed
        Script(expect=KRAKEN_SUBSCRIBES, send=[HEARTBEAT, trade], then=Hang()),
    ]
    async with ReplayServer(scripts) as server:
        factory = lambda: KrakenProtocol(KRAKEN_SYMBOLS, url=server.url, idle_timeout_s=0.3)  # noqa: E731
        async with running(factory, sink) as runner:
            await wait_until(lambda: len(sink.events) == 1)
            assert runner.connects == 2
