"""Candle building: ticks and exchange 1m candles in, closed OHLCV candles out.

Pure and clock-free: the caller passes every timestamp (epoch ms).

The rule for late and out-of-order data, in one place:

* Inside the open candle, order does not matter: ``open`` is the price with
  the earliest timestamp, ``close`` the one with the latest, ``high``/``low``
  the extremes and ``volume`` the sum.
* A candle closes at the first data of a later candle, or when the clock
  passes ``close_time + close_grace_ms``, whichever comes first. A closed
  candle is final: it has been published and stored.
* Data for a candle that has already closed is *late*: it is reported (the
  tick itself is still stored as a tick) but changes no candle, in any
  timeframe: data goes into every timeframe or into none, so a higher
  timeframe's candle is always the roll-up of its 1m candles (which is also
  what lets :meth:`CandleBuilder.restore` rebuild it from them).
* A candle with no data at all between two others, or after the last one once
  its time is over, is *synthetic*: flat at the previous close, volume 0,
  ``is_synthetic`` set. A builder with no history fills nothing, and at most
  ``MAX_FILL`` synthetic candles are produced per timeframe in one step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from core.domain.timeframes import TIMEFRAMES, Timeframe

DEFAULT_CLOSE_GRACE_MS = 2_000
MAX_FILL = 1_440
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Candle:
    exchange: str
    symbol: str
    timeframe: Timeframe
    open_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    is_synthetic: bool = False

    @property
    def close_time(self) -> int:
        return self.open_time + self.timeframe.ms

    @property
    def sequence_num(self) -> int:
        """Index of the candle since the epoch: deterministic, so it survives restarts."""
        return self.open_time // self.timeframe.ms


@dataclass(frozen=True, slots=True)
class Aggregate:
    """OHLCV of data that lies inside one minute, with the timestamps of its first and last datum:
    what :meth:`CandleBuilder.restore` is fed (stored ticks aggregated per minute, or a stored 1m candle)."""

    first_ts: int
    last_ts: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    @classmethod
    def of_minute(cls, candle: Candle) -> Aggregate:
        """A stored 1m candle, placed at its open time (as :meth:`CandleBuilder.add_minute` places one)."""
        t = candle.open_time
        return cls(t, t, candle.open, candle.high, candle.low, candle.close, candle.volume)


@dataclass(slots=True)
class _Bar:
    open_time: int
    first_ts: int
    last_ts: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    def merge(self, first: int, last: int, o: Decimal, h: Decimal, lo: Decimal, c: Decimal, v: Decimal) -> None:
        if first < self.first_ts:
            self.first_ts, self.open = first, o
        if last >= self.last_ts:
            self.last_ts, self.close = last, c
        self.high = max(self.high, h)
        self.low = min(self.low, lo)
        self.volume += v


@dataclass(slots=True)
class _Series:
    """State of one timeframe: the open bar and where closed history ends."""

    timeframe: Timeframe
    bar: _Bar | None = None
    closed_through: int = 0  # close time of the last closed candle; earlier data is late
    last_close: Decimal | None = None


@dataclass(slots=True)
class Update:
    """What one input did: the candles it closed (oldest first) and the timeframes it was late for."""

    closed: list[Candle] = field(default_factory=list)
    late: list[Timeframe] = field(default_factory=list)


class CandleBuilder:
    """Every timeframe's candles for one (exchange, symbol)."""

    def __init__(
        self,
        exchange: str,
        symbol: str,
        *,
        timeframes: Iterable[Timeframe] = TIMEFRAMES,
        close_grace_ms: int = DEFAULT_CLOSE_GRACE_MS,
    ) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self._grace = close_grace_ms
        self._series = [_Series(tf) for tf in timeframes]

    def resume(self, timeframe: Timeframe, last_open_time: int, last_close: Decimal) -> None:
        """Continue after a stored candle (e.g. on restart): earlier data is late, gaps fill from its close."""
        for series in self._series:
            if series.timeframe is timeframe and series.bar is None:
                series.closed_through = max(series.closed_through, last_open_time + timeframe.ms)
                series.last_close = last_close

    def restore_window(self, history: Mapping[Timeframe, tuple[int, Decimal]], now_ms: int) -> tuple[int, int]:
        """What :meth:`restore` needs, as ``(since, ticks_since)`` in epoch ms: the minutes from ``since``
        on (where the timeframe that stored least ends), and of those, the ones from ``ticks_since`` on
        (where the stored 1m candles end) come from stored ticks, the earlier ones from the stored 1m
        candles. A timeframe with nothing stored looks back to the start of the candle before the one in
        progress at ``now_ms`` (older data would be in a candle it had stored)."""
        ends = [
            (s.timeframe.ms, history[s.timeframe][0] + s.timeframe.ms)
            if s.timeframe in history
            else (s.timeframe.ms, s.timeframe.open_time(now_ms) - s.timeframe.ms)
            for s in self._series
        ]
        return min(end for _, end in ends), min(ends)[1]

    def restore(self, history: Mapping[Timeframe, tuple[int, Decimal]], minutes: Iterable[Aggregate]) -> list[Candle]:
        """Rebuild a new builder from storage, e.g. when a writer takes over from one that died.

        ``history``: the newest stored candle per timeframe (open time, close), as for :meth:`resume`.
        ``minutes``: the data after it, oldest first, one :class:`Aggregate` per minute: the stored
        (not synthetic) 1m candles, then the stored ticks of the minutes after the last stored 1m
        candle. Each timeframe takes the minutes it has not stored yet and skips the others, so the
        builder ends as one that had seen every stored datum: the candles in progress hold what the
        dead writer had, and the candles it never closed come out here (later data closes them),
        oldest first, not yet stored. What the clock closes comes from :meth:`advance` after this.
        """
        for timeframe, (open_time, close) in history.items():
            self.resume(timeframe, open_time, close)
        closed: list[Candle] = []
        for m in minutes:
            for series in self._series:
                bucket = series.timeframe.open_time(m.first_ts)
                if not self._is_late(series, bucket):  # late here: already in a stored candle of this timeframe
                    closed += self._merge_into(
                        series, bucket, m.first_ts, m.last_ts, m.open, m.high, m.low, m.close, m.volume
                    )
        closed.sort(key=lambda candle: (candle.close_time, candle.timeframe.ms))
        return closed

    def add_tick(self, price: Decimal, volume: Decimal, ts_ms: int) -> Update:
        return self._merge(ts_ms, ts_ms, price, price, price, price, volume)

    def add_minute(self, open_time: int, o: Decimal, h: Decimal, lo: Decimal, c: Decimal, v: Decimal) -> Update:
        """A closed 1m candle from an exchange's candle feed; it lies inside one candle of every timeframe."""
        t = Timeframe.M1.open_time(open_time)
        return self._merge(t, t, o, h, lo, c, v)

    def advance(self, now_ms: int) -> list[Candle]:
        """Close every candle whose time (plus grace) is over, and fill empty ones."""
        closed: list[Candle] = []
        for series in self._series:
            tf = series.timeframe
            if series.bar is not None and now_ms >= series.bar.open_time + tf.ms + self._grace:
                closed.append(self._close(series))
            if series.bar is None and series.last_close is not None:
                closed.extend(self._fill(series, until=tf.open_time(now_ms - self._grace)))
        return closed

    def _merge(self, first: int, last: int, o: Decimal, h: Decimal, lo: Decimal, c: Decimal, v: Decimal) -> Update:
        update = Update()
        buckets = [series.timeframe.open_time(first) for series in self._series]
        if any(self._is_late(series, bucket) for series, bucket in zip(self._series, buckets, strict=True)):
            update.late = [series.timeframe for series in self._series]  # late for one: late for all
            return update
        for series, bucket in zip(self._series, buckets, strict=True):
            update.closed += self._merge_into(series, bucket, first, last, o, h, lo, c, v)
        update.closed.sort(key=lambda candle: (candle.close_time, candle.timeframe.ms))
        return update

    @staticmethod
    def _is_late(series: _Series, bucket: int) -> bool:
        return bucket < series.closed_through or (series.bar is not None and bucket < series.bar.open_time)

    def _merge_into(
        self,
        series: _Series,
        bucket: int,
        first: int,
        last: int,
        o: Decimal,
        h: Decimal,
        lo: Decimal,
        c: Decimal,
        v: Decimal,
    ) -> list[Candle]:
        """Merge data of ``bucket`` (not late) into one timeframe; returns what that closes and fills."""
        closed: list[Candle] = []
        if series.bar is not None and bucket > series.bar.open_time:
            closed.append(self._close(series))
        if series.bar is None:
            closed.extend(self._fill(series, until=bucket))
            series.bar = _Bar(bucket, first, last, o, h, lo, c, v)
        else:
            series.bar.merge(first, last, o, h, lo, c, v)
        return closed

    def _close(self, series: _Series) -> Candle:
        bar = series.bar
        assert bar is not None
        series.bar = None
        series.closed_through = bar.open_time + series.timeframe.ms
        series.last_close = bar.close
        return Candle(
            self.exchange,
            self.symbol,
            series.timeframe,
            bar.open_time,
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume,
        )

    def _fill(self, series: _Series, *, until: int) -> list[Candle]:
        """Synthetic candles for the empty buckets from ``closed_through`` up to (not including) ``until``."""
        if series.last_close is None or series.closed_through == 0:
            return []
        tf, price = series.timeframe, series.last_close
        start = max(series.closed_through, until - MAX_FILL * tf.ms)
        filled = [
            Candle(self.exchange, self.symbol, tf, t, price, price, price, price, ZERO, is_synthetic=True)
            for t in range(start, until, tf.ms)
        ]
        series.closed_through = max(series.closed_through, until)
        return filled
