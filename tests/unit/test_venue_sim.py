"""The simulated exchange: deterministic per seed, labelled sim, plausible prices."""

from __future__ import annotations

import itertools
from decimal import Decimal

from core.adapters.venues.sim import DEFAULT_SYMBOLS, START, SimVenue
from core.domain.market_events import MarketEvent


async def _sink(events: object) -> None:
    return None


def _venue(seed: int) -> SimVenue:
    return SimVenue(_sink, seed=seed, clock_ms=lambda: 0)


def test_the_same_seed_gives_the_same_trades() -> None:
    a, b, c = _venue(1), _venue(1), _venue(2)
    first = [a.next_trade(i) for i in range(200)]
    assert first == [b.next_trade(i) for i in range(200)]
    assert first != [c.next_trade(i) for i in range(200)]


def test_trades_are_labelled_sim_on_known_symbols_with_positive_exact_prices() -> None:
    venue = _venue(3)
    trades = [venue.next_trade(i) for i in range(2_000)]
    assert {t.exchange for t in trades} == {"sim"}
    assert {t.symbol for t in trades} == set(DEFAULT_SYMBOLS)
    for t in trades:
        assert isinstance(t.price, Decimal) and t.price > 0 and t.size > 0
        assert t.price.as_tuple().exponent == START[t.symbol].as_tuple().exponent  # the symbol's tick size
    assert len({t.trade_id for t in trades}) == len(trades)


async def test_run_delivers_batches_at_the_configured_rate() -> None:
    received: list[MarketEvent] = []
    steps = 0

    async def sink(events: list[MarketEvent]) -> None:
        received.extend(events)

    async def sleep(_: float) -> None:
        nonlocal steps
        steps += 1
        if steps == 100:  # 10 simulated seconds
            raise StopAsyncIteration

    venue = SimVenue(sink, trades_per_second=5, clock_ms=lambda: 1_000, sleep=sleep)  # type: ignore[arg-type]
    try:
        await venue.run()
    except StopAsyncIteration:
        pass
    assert len(received) == 50
    assert not venue.connected


async def test_backfill_fills_simulated_history_from_where_the_stored_history_ends() -> None:
    received: list[MarketEvent] = []
    calls: list[set[str]] = []

    async def sink(events: list[MarketEvent]) -> None:
        received.extend(events)
        calls.append({e.symbol for e in events})  # type: ignore[union-attr]

    now = 1_800_000_000_000
    ends = {"BTC-USD": None, "ETH-USD": now - 2 * 60_000}

    async def history_end(symbol: str) -> int | None:
        return ends[symbol]

    venue = SimVenue(
        sink,  # type: ignore[arg-type]
        symbols=["BTC-USD", "ETH-USD"],
        clock_ms=lambda: now,
        backfill_minutes=10,
        history_end=history_end,
    )
    await venue.backfill()
    by_symbol = {s: [t.ts_ms for t in received if t.symbol == s] for s in ends}  # type: ignore[union-attr]
    btc = by_symbol["BTC-USD"]
    assert len(btc) == 39 and {b - a for a, b in itertools.pairwise(btc)} == {15_000}  # every 15 s, strictly inside
    assert min(by_symbol["BTC-USD"]) > now - 10 * 60_000 and max(by_symbol["BTC-USD"]) < now
    assert min(by_symbol["ETH-USD"]) > now - 2 * 60_000  # only what is not stored yet
    assert by_symbol["BTC-USD"] == sorted(by_symbol["BTC-USD"])
    # one batch per symbol: between two batches the pipeline's clock would close the historical candle,
    # and the rest of the history would be stored as late ticks in no candle
    assert calls == [{"BTC-USD"}, {"ETH-USD"}]


async def test_a_long_backfill_still_comes_as_one_batch_per_symbol() -> None:
    calls: list[int] = []

    async def sink(events: list[MarketEvent]) -> None:
        calls.append(len(events))

    venue = SimVenue(sink, symbols=["BTC-USD"], clock_ms=lambda: 1_800_000_000_000, backfill_minutes=600)  # type: ignore[arg-type]
    await venue.backfill()
    assert calls == [2_399]
