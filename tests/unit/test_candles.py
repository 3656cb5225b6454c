"""Candle building: OHLCV on UTC boundaries, closing on time, the late-data rule, synthetic fills."""

from __future__ import annotations

import random
from decimal import Decimal as D

import pytest

from core.domain.candles import MAX_FILL, Aggregate, Candle, CandleBuilder
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


def test_a_tick_late_for_its_minute_is_late_for_every_timeframe() -> None:
    b = builder(Timeframe.M1, Timeframe.M5)
    start = Timeframe.M5.open_time(T0)
    b.add_tick(D(1), D(1), start)
    b.add_tick(D(2), D(1), start + MIN)  # closes the first 1m candle; the 5m candle stays open
    update = b.add_tick(D(100), D(5), start + 30_000)
    assert update.late == [Timeframe.M1, Timeframe.M5] and update.closed == []
    five = next(c for c in b.advance(start + 10 * MIN) if c.timeframe is Timeframe.M5)
    assert (five.high, five.volume) == (D(2), D(2))  # the roll-up of its 1m candles, nothing else


# Restoring: a builder rebuilt from what was stored continues exactly as one that never stopped.

ALL = tuple(Timeframe)
DAY = 1_440 * MIN
D0 = 1_800_000_000_000 - 1_800_000_000_000 % DAY  # a UTC day boundary


def ticks_between(start: int, end: int, seed: int) -> list[tuple[D, D, int]]:
    """A seeded random walk of ticks, with bursts, ties and silent stretches (empty minutes)."""
    rng = random.Random(seed)
    price, ts, out = 1000.0, start, []
    while ts < end:
        ts += rng.choice([0, 1, 700, 3_000, 9_000, 4 * MIN if rng.random() < 0.02 else 5_000])
        price *= 1 + rng.uniform(-0.002, 0.002)
        out.append((D(f"{price:.2f}"), D(f"{rng.uniform(0.001, 2):.4f}"), ts))
    return [t for t in out if t[2] < end]


def run(b: CandleBuilder, ticks: list[tuple[D, D, int]], until: int) -> list[Candle]:
    """Feed ticks with a clock that advances before each one (as the writer's does), then the clock to ``until``."""
    closed: list[Candle] = []
    for price, volume, ts in ticks:
        closed += b.advance(ts)
        update = b.add_tick(price, volume, ts)
        assert not update.late
        closed += update.closed
    return closed + b.advance(until)


def per_minute(ticks: list[tuple[D, D, int]]) -> list[Aggregate]:
    """The stored ticks aggregated per minute, as PostgreSQL does it (first and last by timestamp, then arrival)."""
    minutes: dict[int, list[tuple[D, D, int]]] = {}
    for tick in ticks:
        minutes.setdefault(Timeframe.M1.open_time(tick[2]), []).append(tick)
    out = []
    for minute in sorted(minutes):
        rows = minutes[minute]
        first = min(rows, key=lambda t: t[2])
        last = max(reversed(rows), key=lambda t: t[2])
        prices = [p for p, _, _ in rows]
        out.append(
            Aggregate(first[2], last[2], first[0], max(prices), min(prices), last[0], sum(v for _, v, _ in rows))
        )
    return out


def restored(stored: list[Candle], ticks: list[tuple[D, D, int]], now: int) -> tuple[CandleBuilder, list[Candle]]:
    """What a new writer does at ``now``: rebuild from the stored candles and ticks, then run its clock."""
    b = CandleBuilder("sim", "BTC-USD")
    history = {}
    for candle in stored:
        if candle.timeframe not in history or candle.open_time > history[candle.timeframe][0]:
            history[candle.timeframe] = (candle.open_time, candle.close)
    since, ticks_since = b.restore_window(history, now)
    minutes = [
        Aggregate.of_minute(c)
        for c in sorted(stored, key=lambda c: c.open_time)
        if c.timeframe is Timeframe.M1 and not c.is_synthetic and since <= c.open_time < ticks_since
    ]
    minutes += per_minute([t for t in ticks if t[2] >= ticks_since])
    closed = b.restore(history, minutes)
    return b, closed + b.advance(now)


@pytest.mark.parametrize(
    ("died", "stored_until", "took_over", "seed"),
    [
        (D0 - 5 * MIN + 1_000, D0 - 5 * MIN + 1_000, D0 - 5 * MIN + 4_000, 1),  # 1 s after a minute, mid-everything
        (D0 - 37 * MIN - 20_000, D0 - 39 * MIN, D0 - 37 * MIN - 15_000, 2),  # candles not stored for two minutes
        (D0 - 31 * MIN + 59_900, D0 - 31 * MIN + 59_900, D0 - 28 * MIN, 3),  # its last minute never closed
        (D0 - 2 * MIN, D0 - 2 * MIN, D0 + 3 * MIN + 1_500, 4),  # across the day: every timeframe closes at takeover
        (D0 - 10 * MIN + 46_700, D0 - 10 * MIN + 46_700, D0 - 9 * MIN + 800, 5),  # its minute over, in its grace
        (D0 - 10 * MIN + 46_700, D0 - 10 * MIN + 46_700, D0 - 9 * MIN, 6),  # the instant its minute ends
    ],
)
def test_a_restored_builder_closes_what_an_uninterrupted_one_closes(
    died: int, stored_until: int, took_over: int, seed: int
) -> None:
    before = ticks_between(D0 - 200 * MIN, died, seed)
    after = ticks_between(took_over, D0 + 40 * MIN, seed + 100)
    end = D0 + 45 * MIN

    expected = run(CandleBuilder("sim", "BTC-USD"), before + after, end)  # a writer that never died

    dead = CandleBuilder("sim", "BTC-USD")
    closed_by_dead = run(dead, before, stored_until)
    stored = [c for c in closed_by_dead if c.close_time <= stored_until]
    b, closed_at_takeover = restored(stored, before, took_over)
    got = stored + closed_at_takeover + run(b, after, end)

    key = lambda c: (c.timeframe.ms, c.open_time)  # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)  # one of each, equal in every field
    assert {c.timeframe for c in closed_at_takeover} >= ({*ALL} if took_over > D0 + 2_000 else set())


def test_restore_skips_for_each_timeframe_what_it_has_stored() -> None:
    b = builder(Timeframe.M1, Timeframe.M5)
    start = Timeframe.M5.open_time(T0) + 5 * MIN
    history = {Timeframe.M1: (start + MIN, D(11)), Timeframe.M5: (start - 5 * MIN, D(9))}
    minutes = [
        Aggregate(start, start, D(10), D(12), D(8), D(11), D(1)),  # stored 1m candles: for the 5m only
        Aggregate(start + MIN, start + MIN, D(11), D(15), D(11), D(14), D(2)),
        Aggregate(start + 2 * MIN + 5, start + 2 * MIN + 50_000, D(14), D(14), D(13), D(13), D(3)),  # ticks
    ]
    assert b.restore(history, minutes) == []
    assert b.restore_window(history, start + 2 * MIN + 51_000) == (start, start + 2 * MIN)
    assert b.add_tick(D(7), D(1), start + 2 * MIN + 1).late == []  # before the first stored tick: the open now
    closed = b.advance(start + 5 * MIN + 2_000)
    one, five = closed[0], closed[-1]
    assert (one.open_time, one.open, one.low, one.close, one.volume) == (start + 2 * MIN, D(7), D(7), D(13), D(4))
    assert (five.open_time, five.open, five.high, five.low, five.close, five.volume) == (
        start,
        D(10),
        D(15),
        D(7),
        D(13),
        D(7),
    )
    assert [c.timeframe for c in closed] == [Timeframe.M1, Timeframe.M1, Timeframe.M1, Timeframe.M5]
    assert all(c.is_synthetic for c in closed[1:3])


def test_restore_window_looks_back_one_candle_where_nothing_is_stored() -> None:
    b = builder(Timeframe.M1, Timeframe.H1)
    now = Timeframe.H1.open_time(T0) + 61 * MIN + 5
    assert b.restore_window({}, now) == (now - now % (60 * MIN) - 60 * MIN, now - now % MIN - MIN)
    assert b.restore_window({Timeframe.M1: (now - now % MIN - 3 * MIN, D(1))}, now)[1] == now - now % MIN - 2 * MIN


def test_restoring_from_nothing_is_a_new_builder() -> None:
    b = builder(Timeframe.M1)
    assert b.restore({}, []) == [] and b.advance(T0 + 10 * MIN) == []
