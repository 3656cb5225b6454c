"""The simulated exchange: deterministic per seed, labelled sim, plausible prices."""

from __future__ import annotations

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
