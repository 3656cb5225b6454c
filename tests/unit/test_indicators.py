"""MACD-V: incremental == batch, the building blocks against TA-Lib, restart, bad input and warm-up.

Tolerances: incremental vs batch, and a restarted series vs an uninterrupted one,
must be *equal* (same operations in the same order); against TA-Lib, EMAs and
ATR within 1e-12 relative, MACD-V, signal and histogram within 1e-9 relative or
1e-9 absolute (the signal line crosses zero, where relative error means nothing).
"""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Sequence
from decimal import Decimal

import numpy as np
import pytest
import talib

from core.domain.candles import Candle
from core.domain.indicators import DEFAULT_PARAMS, Bar, MacdVParams, MacdVState, MacdVValue, batch, step
from core.domain.signals import Stage, Zone
from core.domain.timeframes import Timeframe

MIN = 60_000
T0 = 1_700_000_040_000
BLOCK_REL = 1e-12
MACD_REL = MACD_ABS = 1e-9


def random_walk(n: int, seed: int = 7, start: float = 100.0) -> list[Bar]:
    rng = random.Random(seed)
    close, bars = start, []
    for i in range(n):
        opened = close * (1 + rng.gauss(0, 0.004))  # gaps away from the previous close exercise the true range
        close = max(0.01, opened * (1 + rng.gauss(0, 0.01)))
        high = max(opened, close) * (1 + abs(rng.gauss(0, 0.003)))
        low = min(opened, close) * (1 - abs(rng.gauss(0, 0.003)))
        bars.append(Bar(T0 + i * MIN, high, low, close))
    return bars


def fold(bars: Sequence[Bar], params: MacdVParams = DEFAULT_PARAMS) -> tuple[MacdVState | None, list[MacdVValue]]:
    state, values = None, []
    for bar in bars:
        state, value = step(state, bar, params)
        if value is not None:
            values.append(value)
    return state, values


def columns(bars: Sequence[Bar]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([float(b.high) for b in bars]),
        np.array([float(b.low) for b in bars]),
        np.array([float(b.close) for b in bars]),
    )


def assert_close(ours: Sequence[float], theirs: np.ndarray, start: int, rel: float, abs_: float = 0.0) -> None:
    assert np.isnan(theirs[:start]).all() and not np.isnan(theirs[start:]).any()
    for i in range(start, len(ours)):
        assert math.isclose(ours[i], theirs[i], rel_tol=rel, abs_tol=abs_), (i, ours[i], theirs[i])


def test_incremental_equals_batch_on_a_long_random_walk() -> None:
    bars = random_walk(5_000)
    _, incremental = fold(bars)
    assert len(incremental) == 5_000
    assert incremental == batch(bars)
    stages = {v.stage for v in incremental}
    assert stages == set(Stage), "the series should visit every stage"


@pytest.mark.parametrize("params", [DEFAULT_PARAMS, MacdVParams(fast=5, slow=13, signal=4, atr=7)])
def test_ema_and_atr_match_talib(params: MacdVParams) -> None:
    bars = random_walk(5_000, seed=11)
    high, low, close = columns(bars)
    for values in (fold(bars, params)[1], batch(bars, params)):
        assert_close([v.fast_ema for v in values], talib.EMA(close, params.fast), params.fast - 1, BLOCK_REL)
        assert_close([v.slow_ema for v in values], talib.EMA(close, params.slow), params.slow - 1, BLOCK_REL)
        assert_close([v.atr for v in values], talib.ATR(high, low, close, params.atr), params.atr, BLOCK_REL)


@pytest.mark.parametrize("params", [DEFAULT_PARAMS, MacdVParams(fast=5, slow=13, signal=4, atr=7)])
def test_macd_v_signal_and_histogram_match_a_talib_composition(params: MacdVParams) -> None:
    bars = random_walk(5_000, seed=3)
    high, low, close = columns(bars)
    macd_v = (
        (talib.EMA(close, params.fast) - talib.EMA(close, params.slow)) / talib.ATR(high, low, close, params.atr) * 100
    )
    signal = talib.EMA(macd_v, params.signal)
    _, values = fold(bars, params)
    assert_close([v.macd_v for v in values], macd_v, params.first_macd_index, MACD_REL, MACD_ABS)
    assert_close([v.signal for v in values], signal, params.warmup_bars, MACD_REL, MACD_ABS)
    assert_close([v.histogram for v in values], macd_v - signal, params.warmup_bars, MACD_REL, MACD_ABS)
    assert [v.ready for v in values] == [i >= params.warmup_bars for i in range(len(values))]


def test_warm_up_is_provisional_and_ready_from_the_35th_close() -> None:
    _, values = fold(random_walk(40))
    assert DEFAULT_PARAMS.warmup_bars == 34
    assert not any(v.ready for v in values[:34]) and all(v.ready for v in values[34:])
    assert values[0].fast_ema == values[0].slow_ema == float(random_walk(1)[0].close) and values[0].atr == 0.0
    assert values[0].macd_v == 0.0
    assert all(v.neutral_bars == 0 for v in values[:34])


@pytest.mark.parametrize("cut", [1, 5, 26, 34, 35, 1_000, 2_999])
def test_restart_from_bytes_mid_series_continues_exactly(cut: int) -> None:
    bars = random_walk(3_000, seed=5)
    _, uninterrupted = fold(bars)
    state, first = fold(bars[:cut])
    assert state is not None
    restored = MacdVState.from_bytes(state.to_bytes())
    assert restored == state
    rest = []
    for bar in bars[cut:]:
        restored, value = step(restored, bar)
        assert value is not None
        rest.append(value)
    assert first + rest == uninterrupted


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b"{}",
        b'{"v": 2}',
        b'{"v": true}',
        b'{"v": 1, "p": [12, 26, 9]}',
        bytes(140),
    ],
)
def test_from_bytes_rejects_garbage_and_other_versions(data: bytes) -> None:
    with pytest.raises(ValueError):
        MacdVState.from_bytes(data)


def test_from_bytes_rejects_a_state_of_another_version_or_with_bad_fields() -> None:
    state, _ = fold(random_walk(50))
    assert state is not None
    good = state.to_bytes()
    nan = struct.pack("<d", math.nan)
    for bad in (
        bytes([good[0] + 1]) + good[1:],  # another version
        good[:1] + struct.pack("<I", 0) + good[5:],  # fast period 0
        good[:33] + nan + good[41:],  # previous close not a number
        good[:-1],  # truncated
        good + b"\x00",  # trailing bytes
        b"{" + good[1:],  # a JSON document, as the first version wrote
    ):
        assert bad != good
        with pytest.raises(ValueError):
            MacdVState.from_bytes(bad)


def test_duplicate_and_out_of_order_closes_are_ignored() -> None:
    bars = random_walk(60)
    state, _ = fold(bars[:50])
    assert state is not None
    for stale in (bars[49], bars[10], Bar(bars[49].open_time, 1e9, 1.0, 5e8)):
        again, value = step(state, stale)
        assert value is None and again is state
    mixed = [*bars[:30], bars[29], bars[5], *bars[30:]]
    assert fold(mixed)[1] == fold(bars)[1] == batch(mixed)


def test_flat_prices_give_zero_atr_and_zero_macd_v_without_error() -> None:
    flat = [Bar(T0 + i * MIN, 0.1, 0.1, 0.1) for i in range(80)]
    _, values = fold(flat)
    assert all(v.atr == 0.0 and v.macd_v == 0.0 and v.signal == 0.0 for v in values)
    assert values == batch(flat)
    assert values[-1].ready and values[-1].zone is Zone.NEUTRAL and values[-1].stage is Stage.RANGING


def test_prices_going_flat_after_moving_stay_finite() -> None:
    bars = random_walk(100)
    last = bars[-1]
    flat = [Bar(last.open_time + i * MIN, last.close, last.close, last.close) for i in range(1, 2_000)]
    _, values = fold([*bars, *flat])
    assert all(math.isfinite(v.macd_v) and math.isfinite(v.signal) for v in values)
    assert values == batch([*bars, *flat])


def test_a_gap_in_open_time_is_just_the_next_bar() -> None:
    bars = random_walk(100)
    gapped = [Bar(b.open_time + (0 if i < 50 else 37 * MIN), b.high, b.low, b.close) for i, b in enumerate(bars)]
    _, contiguous = fold(bars)
    _, with_gap = fold(gapped)
    assert len(with_gap) == 100
    assert [v.open_time for v in with_gap] == [b.open_time for b in gapped]
    assert [(v.macd_v, v.signal, v.stage) for v in with_gap] == [(v.macd_v, v.signal, v.stage) for v in contiguous]


def test_decimal_prices_are_accepted_and_candles_convert() -> None:
    as_float = [Bar(T0 + i * MIN, 10.5 + i % 3, 9.25, 10.0 + i % 5) for i in range(40)]
    as_decimal = [Bar(b.open_time, Decimal(str(b.high)), Decimal("9.25"), Decimal(str(b.close))) for b in as_float]
    assert fold(as_decimal)[1] == fold(as_float)[1]
    candle = Candle("sim", "BTC-USD", Timeframe.M1, T0, Decimal(1), Decimal(3), Decimal("0.5"), Decimal(2), Decimal(7))
    assert Bar.from_candle(candle) == Bar(T0, Decimal(3), Decimal("0.5"), Decimal(2))


@pytest.mark.parametrize("price", [math.nan, math.inf, -math.inf])
def test_non_finite_prices_are_refused(price: float) -> None:
    state, _ = fold(random_walk(5))
    with pytest.raises(ValueError):
        step(state, Bar(T0 + 10 * MIN, price, 1.0, 1.0))


def test_params_are_validated_and_must_match_the_state() -> None:
    with pytest.raises(ValueError):
        MacdVParams(fast=0)
    state, _ = fold(random_walk(5))
    with pytest.raises(ValueError):
        step(state, Bar(T0 + 10 * MIN, 2.0, 1.0, 1.5), MacdVParams(fast=10))


def test_batch_of_nothing_is_empty() -> None:
    assert batch([]) == []
