"""Candle building: OHLCV on UTC boundaries, closing on time, the late-data rule, synthetic fills."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from core.domain.candles import MAX_FILL, CandleBuilder
from core.domain.timeframes import Timeframe

MIN = 60_000
T0 = 1_700_000_040_000  # a UTC minute boundary (not a 5m one)


def builder(*timeframes: Timeframe, grace: int = 2_000) -> CandleBuilder:
    return CandleBuilder("sim", "BTC-USD", timeframes=timeframes or (Timeframe.M1,), close_grace_ms=grace)


def test_ticks_in_one_minute_make_one_ohlcv_candle_closed_by_the_next_tick() -> None:
    b = builder()
    for price, volume, ts in [("10", "1", 0), ("12.50", "2", 10_000), ("9", "0.5", 20_000), ("11", "1", 59_999)]:
        assert b.add_tick(D(price), D(volume), T0 + ts).closed == []
    (candle,) = b.add_tick(D("11"), D("1"), T0 + MIN).closed
    assert (candle.open_time, candle.open, candle.high, candle.low, candle.close, candle.volume) == (
        T0,
        D("10"),
        D("12.50"),
        D("9"),
        D("11"),
        D("4.5"),
    )
    assert not candle.is_synthetic
    assert candle.sequence_num == T0 // MIN


def test_digits_are_kept_exactly() -> None:
    b = builder()
    b.add_tick(D("0.000000012345678901"), D("1.10"), T0)
    (candle,) = b.advance(T0 + MIN + 2_000)
    assert format(candle.close, "f") == "0.000000012345678901"
    assert str(candle.volume) == "1.10"


def test_a_candle_closes_on_the_clock_without_a_new_tick_after_the_grace() -> None:
    b = builder()
    b.add_tick(D(1), D(1), T0 + 5)
    assert b.advance(T0 + MIN + 1_999) == []
    (candle,) = b.advance(T0 + MIN + 2_000)
    assert candle.open_time == T0


def test_out_of_order_ticks_inside_the_open_candle_keep_open_and_close_by_timestamp() -> None:
    b = builder()
    b.add_tick(D(5), D(1), T0 + 30_000)
    b.add_tick(D(4), D(1), T0 + 1_000)  # earlier: becomes the open
    b.add_tick(D(6), D(1), T0 + 50_000)
    b.add_tick(D(7), D(1), T0 + 40_000)  # earlier than the last: not the close
    (candle,) = b.advance(T0 + 10 * MIN)[:1]
    assert (candle.open, candle.close, candle.high, candle.low) == (D(4), D(6), D(7), D(4))


def test_a_tick_for_a_closed_candle_is_late_and_changes_nothing() -> None:
    b = builder()
    b.add_tick(D(1), D(1), T0)
    (closed,) = b.add_tick(D(2), D(1), T0 + MIN).closed
    update = b.add_tick(D(100), D(1), T0 + 30_000)
    assert update.late == [Timeframe.M1] and update.closed == []
    (current,) = b.advance(T0 + 2 * MIN + 2_000)
    assert current.high == D(2) and closed.high == D(1)


def test_empty_minutes_between_ticks_become_synthetic_flat_candles() -> None:
    b = builder()
    b.add_tick(D(3), D(1), T0)
    closed = b.add_tick(D(4), D(1), T0 + 3 * MIN + 5).closed
    assert [c.open_time for c in closed] == [T0, T0 + MIN, T0 + 2 * MIN]
    assert [c.is_synthetic for c in closed] == [False, True, True]
    assert all(c.open == c.close == D(3) and c.volume == 0 for c in closed[1:])


def test_the_clock_fills_idle_minutes_once_history_exists() -> None:
    b = builder()
    assert b.advance(T0 + 10 * MIN) == []  # no history: nothing to fill
    b.add_tick(D(3), D(1), T0 + 10 * MIN)
    closed = b.advance(T0 + 13 * MIN + 2_000)
    assert [c.open_time - T0 for c in closed] == [10 * MIN, 11 * MIN, 12 * MIN]
    assert b.advance(T0 + 13 * MIN + 2_000) == []  # nothing twice


def test_fill_after_a_long_silence_is_bounded() -> None:
    b = builder()
    b.add_tick(D(3), D(1), T0)
    closed = b.advance(T0 + 10 * MAX_FILL * MIN)
    assert len(closed) == 1 + MAX_FILL


def test_higher_timeframes_use_utc_boundaries() -> None:
    b = builder(Timeframe.M1, Timeframe.M5, Timeframe.H1)
    start = Timeframe.H1.open_time(T0)
    b.add_tick(D(1), D(1), start + 4 * MIN)
    b.add_tick(D(2), D(1), start + 6 * MIN)  # closes 1m@4 and 5m@0, fills 1m@5
    closed = b.add_tick(D(3), D(1), start + 60 * MIN).closed
    by_tf = {tf: [c for c in closed if c.timeframe is tf] for tf in (Timeframe.M5, Timeframe.H1)}
    assert [c.open_time - start for c in by_tf[Timeframe.H1]] == [0]
    h1 = by_tf[Timeframe.H1][0]
    assert (h1.open, h1.close, h1.volume) == (D(1), D(2), D(2))
    assert [c.close_time for c in closed] == sorted(c.close_time for c in closed)


def test_exchange_minute_candles_roll_up_into_higher_timeframes() -> None:
    b = builder(Timeframe.M1, Timeframe.M5)
    base = Timeframe.M5.open_time(T0) + 5 * MIN
    for i in range(5):
        b.add_minute(base + i * MIN, D(10 + i), D(20 + i), D(5 + i), D(11 + i), D(1))
    closed = b.advance(base + 5 * MIN + 2_000)
    five = next(c for c in closed if c.timeframe is Timeframe.M5)
    assert (five.open, five.high, five.low, five.close, five.volume) == (D(10), D(24), D(5), D(15), D(5))


@pytest.mark.parametrize("tf", list(Timeframe))
def test_open_time_is_a_boundary(tf: Timeframe) -> None:
    t = tf.open_time(T0 + 12_345_678)
    assert t % tf.ms == 0 and t <= T0 + 12_345_678 < t + tf.ms


def test_parse_timeframe() -> None:
    assert Timeframe.parse(" 1H ") is Timeframe.H1
    with pytest.raises(ValueError, match="unknown timeframe"):
        Timeframe.parse("2m")


def test_resuming_after_a_stored_candle_makes_older_data_late_and_fills_from_its_close() -> None:
    b = builder()
    b.resume(Timeframe.M1, T0, D(50))
    assert b.add_tick(D(1), D(1), T0 + 30_000).late == [Timeframe.M1]  # a replayed trade of a stored candle
    closed = b.add_tick(D(60), D(1), T0 + 2 * MIN).closed
    assert [(c.open_time - T0, c.close, c.is_synthetic) for c in closed] == [(MIN, D(50), True)]
