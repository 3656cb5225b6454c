"""MACD-V, one candle close at a time: ``(EMA12 - EMA26) / ATR26 x 100``, its signal line and histogram.

Pure, clock-free, no I/O. ``step`` folds one closed candle into a small
``MacdVState`` (O(1) per close; the state serialises to a few hundred bytes, so
a restart resumes where it stopped); ``batch`` recomputes a series from scratch
and must agree with folding ``step`` value for value.

The arithmetic is TA-Lib's, operation for operation:

* EMA(N): the first value (at the N-th input) is the SMA of the first N inputs,
  then ``prev + (x - prev) * 2 / (N + 1)``.
* ATR(N) (Wilder): the true range needs the previous close, so the first bar
  has none (as in TA-Lib, whose ATR starts at index N); the first ATR is the SMA
  of the first N true ranges, then ``(prev * (N - 1) + tr) / N``.
* signal = EMA(9) of MACD-V, fed from the first bar where both EMAs and the
  ATR exist. A value is ``ready`` once the signal line exists (bar 35 with the
  default periods); before that, values are provisional: each average is the
  running mean of what it has seen, and the signal equals MACD-V until it has
  an input.
* Zero ATR (flat prices) makes MACD-V ``0.0``: no momentum relative to no range.

A gap in ``open_time`` (missing candles) is just the next bar: the candle builder
already fills quiet periods with synthetic candles. A close whose ``open_time``
is not after the last one (duplicate, out of order) is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate
from typing import TYPE_CHECKING

import orjson

from core.domain.signals import Stage, Zone, classify, neutral_run

if TYPE_CHECKING:
    from core.domain.candles import Candle

STATE_VERSION = 1
MACD_V_SCALE = 100.0
ZERO_ATR_MACD_V = 0.0

Price = Decimal | float
Smoothing = Callable[[float, float, int], float]  # (previous average, input, period) -> next average


@dataclass(frozen=True, slots=True)
class MacdVParams:
    fast: int = 12
    slow: int = 26
    signal: int = 9
    atr: int = 26

    def __post_init__(self) -> None:
        for period in (self.fast, self.slow, self.signal, self.atr):
            if type(period) is not int or period < 1:
                raise ValueError(f"MACD-V periods must be positive integers, got {self}")

    @property
    def first_macd_index(self) -> int:
        """0-based index of the first bar with both EMAs and the ATR seeded (26 by default)."""
        return max(self.fast, self.slow, self.atr + 1) - 1

    @property
    def warmup_bars(self) -> int:
        """Closes that give provisional values; the next one is the first ready value (34 by default)."""
        return self.first_macd_index + self.signal - 1


DEFAULT_PARAMS = MacdVParams()


@dataclass(frozen=True, slots=True)
class Bar:
    """One closed candle's input to the indicator."""

    open_time: int
    high: Price
    low: Price
    close: Price

    @classmethod
    def from_candle(cls, candle: Candle) -> Bar:
        return cls(candle.open_time, candle.high, candle.low, candle.close)


@dataclass(frozen=True, slots=True)
class MacdVValue:
    open_time: int
    macd_v: float
    signal: float
    histogram: float
    fast_ema: float
    slow_ema: float
    atr: float
    stage: Stage
    zone: Zone
    ready: bool
    neutral_bars: int = 0  # consecutive ready readings in the neutral zone, this one included (for "ranging")


@dataclass(frozen=True, slots=True)
class MacdVState:
    """Everything needed to continue after ``last``; the running averages themselves are ``last``'s fields."""

    params: MacdVParams
    bars: int  # closes processed
    macd_count: int  # MACD-V values fed to the signal line
    prev_close: float
    fast_sum: float  # warm-up sums of each average's inputs (unchanged once it is seeded)
    slow_sum: float
    atr_sum: float
    signal_sum: float
    last: MacdVValue

    @property
    def last_open_time(self) -> int:
        return self.last.open_time

    def to_bytes(self) -> bytes:
        p, v = self.params, self.last
        return orjson.dumps(
            {
                "v": STATE_VERSION,
                "p": [p.fast, p.slow, p.signal, p.atr],
                "n": [self.bars, self.macd_count],
                "c": self.prev_close,
                "s": [self.fast_sum, self.slow_sum, self.atr_sum, self.signal_sum],
                "last": [
                    v.open_time,
                    [v.macd_v, v.signal, v.histogram, v.fast_ema, v.slow_ema, v.atr],
                    v.stage.value,
                    v.zone.value,
                    v.ready,
                    v.neutral_bars,
                ],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> MacdVState:
        """The state ``to_bytes`` wrote; ValueError for anything else (garbage, another version)."""
        try:
            doc = orjson.loads(data)
            if not isinstance(doc, dict) or _int(doc.get("v")) != STATE_VERSION:
                raise ValueError("not a version-1 MACD-V state")
            fast, slow, signal, atr = (_int(x) for x in doc["p"])
            bars, macd_count = (_int(x) for x in doc["n"])
            fast_sum, slow_sum, atr_sum, signal_sum = (_float(x) for x in doc["s"])
            open_time, numbers, stage, zone, ready, neutral_bars = doc["last"]
            macd_v, sig, histogram, fast_ema, slow_ema, atr_value = (_float(x) for x in numbers)
            if not isinstance(ready, bool) or bars < 1 or macd_count < 0:
                raise ValueError("inconsistent MACD-V state")
            last = MacdVValue(
                _int(open_time), macd_v, sig, histogram, fast_ema, slow_ema, atr_value,
                Stage(stage), Zone(zone), ready, _int(neutral_bars),
            )  # fmt: skip
            params = MacdVParams(fast, slow, signal, atr)
            sums = (fast_sum, slow_sum, atr_sum, signal_sum)
            return cls(params, bars, macd_count, _float(doc["c"]), *sums, last)
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"unreadable MACD-V state: {exc!r}") from exc


def step(
    state: MacdVState | None, bar: Bar, params: MacdVParams = DEFAULT_PARAMS
) -> tuple[MacdVState, MacdVValue | None]:
    """Fold one closed candle in; ``(state, None)`` unchanged when ``bar`` is not after the last one."""
    if state is not None:
        if state.params != params:
            raise ValueError(f"state was built with {state.params}, not {params}")
        if bar.open_time <= state.last.open_time:
            return state, None
    high, low, close = _prices(bar)
    if state is None:
        bars = macd_count = 0
        fast_sum = slow_sum = atr_sum = signal_sum = 0.0
        fast_ema = slow_ema = atr = signal = 0.0
        previous: MacdVValue | None = None
    else:
        bars, macd_count = state.bars, state.macd_count
        fast_sum, slow_sum, atr_sum, signal_sum = state.fast_sum, state.slow_sum, state.atr_sum, state.signal_sum
        last = state.last
        fast_ema, slow_ema, atr, signal = last.fast_ema, last.slow_ema, last.atr, last.signal
        atr_sum, atr = _average(_true_range(high, low, state.prev_close), bars - 1, atr_sum, atr, params.atr, _wilder)
        previous = last if last.ready else None
    fast_sum, fast_ema = _average(close, bars, fast_sum, fast_ema, params.fast, _ema)
    slow_sum, slow_ema = _average(close, bars, slow_sum, slow_ema, params.slow, _ema)
    macd_v = _macd_v(fast_ema, slow_ema, atr)
    if bars >= params.first_macd_index:  # both EMAs and the ATR (which has seen `bars` true ranges) are seeded
        signal_sum, signal = _average(macd_v, macd_count, signal_sum, signal, params.signal, _ema)
        macd_count += 1
    else:
        signal = macd_v
    value = _value(bar.open_time, macd_v, signal, fast_ema, slow_ema, atr, macd_count >= params.signal, previous)
    new_state = MacdVState(params, bars + 1, macd_count, close, fast_sum, slow_sum, atr_sum, signal_sum, value)
    return new_state, value


def batch(bars: Sequence[Bar], params: MacdVParams = DEFAULT_PARAMS) -> list[MacdVValue]:
    """From-scratch recomputation over whole series (bars not after their predecessor are dropped, as in step)."""
    rows: list[Bar] = []
    for bar in bars:
        if not rows or bar.open_time > rows[-1].open_time:
            rows.append(bar)
    if not rows:
        return []
    prices = [_prices(bar) for bar in rows]
    closes = [close for _, _, close in prices]
    true_ranges = [_true_range(h, lo, prev) for (h, lo, _), prev in zip(prices[1:], closes, strict=False)]
    fast = _series(closes, params.fast, _ema)
    slow = _series(closes, params.slow, _ema)
    atr = [0.0, *_series(true_ranges, params.atr, _wilder)]
    macd = [_macd_v(f, s, a) for f, s, a in zip(fast, slow, atr, strict=True)]
    start = params.first_macd_index
    signal = macd[:start] + _series(macd[start:], params.signal, _ema)
    values: list[MacdVValue] = []
    previous: MacdVValue | None = None
    for i, bar in enumerate(rows):
        value = _value(bar.open_time, macd[i], signal[i], fast[i], slow[i], atr[i], i >= params.warmup_bars, previous)
        values.append(value)
        previous = value if value.ready else None
    return values


def _value(
    open_time: int,
    macd_v: float,
    signal: float,
    fast_ema: float,
    slow_ema: float,
    atr: float,
    ready: bool,
    previous: MacdVValue | None,
) -> MacdVValue:
    """Assemble a reading; ``previous`` is the last ready reading (None during warm-up)."""
    stage, zone = classify(macd_v, signal, previous)
    neutral_bars = neutral_run(macd_v, previous) if ready else 0
    return MacdVValue(
        open_time, macd_v, signal, macd_v - signal, fast_ema, slow_ema, atr, stage, zone, ready, neutral_bars
    )


def _macd_v(fast_ema: float, slow_ema: float, atr: float) -> float:
    if atr == 0.0:
        return ZERO_ATR_MACD_V
    return (fast_ema - slow_ema) / atr * MACD_V_SCALE


def _true_range(high: float, low: float, prev_close: float) -> float:
    return max(high - low, abs(prev_close - high), abs(prev_close - low))


def _ema(prev: float, x: float, period: int) -> float:
    return (x - prev) * (2.0 / (period + 1)) + prev


def _wilder(prev: float, x: float, period: int) -> float:
    return (prev * (period - 1) + x) / period


def _average(x: float, seen: int, total: float, value: float, period: int, smooth: Smoothing) -> tuple[float, float]:
    """Add ``x`` to an average that has seen ``seen`` inputs: running mean up to ``period`` inputs, then ``smooth``."""
    if seen < period:
        total += x
        return total, total / (seen + 1)
    return total, smooth(value, x, period)


def _series(values: Sequence[float], period: int, smooth: Smoothing) -> list[float]:
    out = [total / n for n, total in enumerate(accumulate(values[:period]), start=1)]
    for x in values[period:]:
        out.append(smooth(out[-1], x, period))
    return out


def _prices(bar: Bar) -> tuple[float, float, float]:
    high, low, close = float(bar.high), float(bar.low), float(bar.close)
    if not (math.isfinite(high) and math.isfinite(low) and math.isfinite(close)):
        raise ValueError(f"bar at {bar.open_time} has a non-finite price")
    return high, low, close


def _int(x: object) -> int:
    if type(x) is not int:
        raise TypeError(f"expected an integer, got {x!r}")
    return x


def _float(x: object) -> float:
    if type(x) is not float and type(x) is not int:
        raise TypeError(f"expected a number, got {x!r}")
    return float(x)
