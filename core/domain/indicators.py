"""MACD-V, one candle close at a time: ``(EMA12 - EMA26) / ATR26 x 100``, its signal line and histogram.

Pure, clock-free, no I/O. ``step`` folds one closed candle into a small
``MacdVState`` (O(1) per close; the state packs into 140 bytes, so a restart
resumes where it stopped); ``batch`` recomputes a series from scratch and must
agree with folding ``step`` value for value. ``step`` runs on every close of
every series: values, states and bars are named tuples (cheap to build) and its
arithmetic is inlined, with each smoothing factor computed once in the params.

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
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import accumulate
from typing import TYPE_CHECKING, NamedTuple, Protocol

from core.domain.signals import Stage, Zone, reading_of

if TYPE_CHECKING:
    from core.domain.candles import Candle

STATE_VERSION = 2
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
    # Derived once (step's hot path): EMA factors 2 / (N + 1), exactly as _ema computes them, and bar counts.
    fast_alpha: float = field(init=False, repr=False, compare=False)
    slow_alpha: float = field(init=False, repr=False, compare=False)
    signal_alpha: float = field(init=False, repr=False, compare=False)
    first_macd_index: int = field(init=False, repr=False, compare=False)
    """0-based index of the first bar with both EMAs and the ATR seeded (26 by default)."""
    warmup_bars: int = field(init=False, repr=False, compare=False)
    """Closes that give provisional values; the next one is the first ready value (34 by default)."""

    def __post_init__(self) -> None:
        for period in (self.fast, self.slow, self.signal, self.atr):
            if type(period) is not int or period < 1:
                raise ValueError(f"MACD-V periods must be positive integers, got {self}")
        first = max(self.fast, self.slow, self.atr + 1) - 1
        derived = {
            "fast_alpha": 2.0 / (self.fast + 1),
            "slow_alpha": 2.0 / (self.slow + 1),
            "signal_alpha": 2.0 / (self.signal + 1),
            "first_macd_index": first,
            "warmup_bars": first + self.signal - 1,
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)


DEFAULT_PARAMS = MacdVParams()


class Bar(NamedTuple):
    """One closed candle's input to the indicator."""

    open_time: int
    high: Price
    low: Price
    close: Price

    @classmethod
    def from_candle(cls, candle: Candle) -> Bar:
        return cls(candle.open_time, candle.high, candle.low, candle.close)


class BarLike(Protocol):
    """What ``step`` reads of a close: a :class:`Bar`, or a tuple of the caller's with the same four fields
    (the indicator service's ``StoredClose`` carries the exact close price beside them)."""

    @property
    def open_time(self) -> int: ...
    @property
    def high(self) -> Price: ...
    @property
    def low(self) -> Price: ...
    @property
    def close(self) -> Price: ...


class MacdVValue(NamedTuple):
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


# Binary state: version, periods, counts, previous close, warm-up sums, then the last value (stage and zone as
# their index in declaration order: reordering those enums needs a new version).
_STATE = struct.Struct("<B4I2qd4dq6dBB?q")
_STAGES, _ZONES = tuple(Stage), tuple(Zone)
_STAGE_INDEX = {stage: i for i, stage in enumerate(_STAGES)}
_ZONE_INDEX = {zone: i for i, zone in enumerate(_ZONES)}


class MacdVState(NamedTuple):
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
        return _STATE.pack(
            STATE_VERSION, p.fast, p.slow, p.signal, p.atr, self.bars, self.macd_count, self.prev_close,
            self.fast_sum, self.slow_sum, self.atr_sum, self.signal_sum,
            v.open_time, v.macd_v, v.signal, v.histogram, v.fast_ema, v.slow_ema, v.atr,
            _STAGE_INDEX[v.stage], _ZONE_INDEX[v.zone], v.ready, v.neutral_bars,
        )  # fmt: skip

    @classmethod
    def from_bytes(cls, data: bytes) -> MacdVState:
        """The state ``to_bytes`` wrote; ValueError for anything else (garbage, another version)."""
        if len(data) != _STATE.size or data[0] != STATE_VERSION:
            raise ValueError(f"not a version-{STATE_VERSION} MACD-V state")
        (
            _, fast, slow, signal, atr, bars, macd_count, prev_close, fast_sum, slow_sum, atr_sum, signal_sum,
            open_time, macd_v, sig, histogram, fast_ema, slow_ema, atr_value, stage, zone, ready, neutral_bars,
        ) = _STATE.unpack(data)  # fmt: skip
        sums = (fast_sum, slow_sum, atr_sum, signal_sum)
        numbers = (prev_close, *sums, macd_v, sig, histogram, fast_ema, slow_ema, atr_value)
        if bars < 1 or macd_count < 0 or neutral_bars < 0 or stage >= len(_STAGES) or zone >= len(_ZONES):
            raise ValueError("inconsistent MACD-V state")
        if not all(map(math.isfinite, numbers)):
            raise ValueError("MACD-V state with a non-finite number")
        params = _params(fast, slow, signal, atr)
        last = MacdVValue(
            open_time, macd_v, sig, histogram, fast_ema, slow_ema, atr_value,
            _STAGES[stage], _ZONES[zone], ready, neutral_bars,
        )  # fmt: skip
        return cls(params, bars, macd_count, prev_close, fast_sum, slow_sum, atr_sum, signal_sum, last)


def _params(fast: int, slow: int, signal: int, atr: int) -> MacdVParams:
    """The default params object itself when they are the defaults (step then compares them by identity)."""
    d = DEFAULT_PARAMS
    if (fast, slow, signal, atr) == (d.fast, d.slow, d.signal, d.atr):
        return d
    return MacdVParams(fast, slow, signal, atr)


def step(
    state: MacdVState | None, bar: BarLike, params: MacdVParams = DEFAULT_PARAMS
) -> tuple[MacdVState, MacdVValue | None]:
    """Fold one closed candle in; ``(state, None)`` unchanged when ``bar`` is not after the last one.

    The operations of ``_series``/``_ema``/``_wilder``/``_true_range``/``_macd_v`` (what ``batch`` uses),
    inlined in the same order so the results are equal bit for bit.
    """
    open_time = bar.open_time
    if state is not None:
        if state.params is not params and state.params != params:
            raise ValueError(f"state was built with {state.params}, not {params}")
        last = state.last
        if open_time <= last.open_time:
            return state, None
    high, low, close = float(bar.high), float(bar.low), float(bar.close)
    if not (_isfinite(high) and _isfinite(low) and _isfinite(close)):
        raise ValueError(f"bar at {open_time} has a non-finite price")
    if state is None:
        bars = macd_count = 0
        fast_sum = slow_sum = atr_sum = signal_sum = 0.0
        fast_ema = slow_ema = atr = signal = 0.0
        previous: MacdVValue | None = None
    else:
        _, bars, macd_count, prev_close, fast_sum, slow_sum, atr_sum, signal_sum, _ = state
        fast_ema, slow_ema, atr, signal = last.fast_ema, last.slow_ema, last.atr, last.signal
        true_range = high - low
        if abs(prev_close - high) > true_range:
            true_range = abs(prev_close - high)
        if abs(prev_close - low) > true_range:
            true_range = abs(prev_close - low)
        if bars - 1 < params.atr:  # the ATR has seen bars - 1 true ranges
            atr_sum += true_range
            atr = atr_sum / bars
        else:
            atr = (atr * (params.atr - 1) + true_range) / params.atr
        previous = last if last.ready else None
    if bars < params.fast:
        fast_sum += close
        fast_ema = fast_sum / (bars + 1)
    else:
        fast_ema = (close - fast_ema) * params.fast_alpha + fast_ema
    if bars < params.slow:
        slow_sum += close
        slow_ema = slow_sum / (bars + 1)
    else:
        slow_ema = (close - slow_ema) * params.slow_alpha + slow_ema
    macd_v = ZERO_ATR_MACD_V if atr == 0.0 else (fast_ema - slow_ema) / atr * MACD_V_SCALE
    if bars >= params.first_macd_index:  # both EMAs and the ATR (which has seen `bars` true ranges) are seeded
        if macd_count < params.signal:
            signal_sum += macd_v
            signal = signal_sum / (macd_count + 1)
        else:
            signal = (macd_v - signal) * params.signal_alpha + signal
        macd_count += 1
    else:
        signal = macd_v
    ready = macd_count >= params.signal
    stage, zone, neutral_bars = reading_of(macd_v, signal, ready, previous)
    value = MacdVValue(
        open_time, macd_v, signal, macd_v - signal, fast_ema, slow_ema, atr, stage, zone, ready, neutral_bars
    )
    return MacdVState(params, bars + 1, macd_count, close, fast_sum, slow_sum, atr_sum, signal_sum, value), value


_isfinite = math.isfinite


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
    stage, zone, neutral_bars = reading_of(macd_v, signal, ready, previous)
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
