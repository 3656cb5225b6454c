"""Indicators on every candle close: MACD-V state in Redis, alerts in PostgreSQL, trade signals published.

The write path, :class:`IndicatorService`, receives the closed candles of one
persist wave of an exchange's pipeline (after they are stored and published,
within the writer's lease). For each (exchange, symbol, timeframe) it reads
the state, steps it with the new closes in ``open_time`` order and writes it
back: one pipelined read and one pipelined write for the whole wave, O(1) per
close. A series continues from its state only when the state's last close is
the candle just before the new ones; otherwise (no state: first run, Redis
flushed, unreadable; or a missed close: a crash between the candle and the
state write) it is rebuilt from the last ``WARMUP_BARS`` stored candles, and
the closes after the state's last one are evaluated for alerts then.

Alerts are inserted with ``ON CONFLICT DO NOTHING`` on their crossing key;
only the rows this call inserted are published, so the same crossing seen
again (a restart, a replayed wave, a rebuilt state) is neither stored nor
published twice. Each is stored with an outbox row, deleted once its event
is in Redis; after a start, or a wave whose publish failed (Redis away, a
crash after the commit), the next wave first publishes everything left in the
outbox, oldest first. So no stored alert goes unannounced; a crash between
the publish and the delete announces that batch twice (at least once, never
zero). After the states are written, every ready reading of the wave's closes is
published on its ``indicators:{exchange}:{SYMBOL}:{TF}`` stream (best effort,
no outbox: a lost reading is superseded by the next close, and the state in
Redis stays what reads answer). A failure of this step is logged and counted, never raised
into candle persistence: the candles are already stored, and the next wave
rebuilds a state that missed them. Only a lost lease goes up.

The read path is :mod:`core.services.indicator_queries`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from core.domain.candles import Candle
from core.domain.errors import LeaseLost
from core.domain.indicators import MacdVParams, MacdVState, MacdVValue, step
from core.domain.signals import Alert, Direction, Strength, detect_alerts
from core.domain.timeframes import Timeframe
from core.services.ports import Fenced

logger = logging.getLogger(__name__)

# Bars read to rebuild a missing state: the influence of the seed on the ATR (the slowest, alpha 1/26)
# falls below 1e-6 of its weight after about 360 bars.
WARMUP_BARS = 400
OUTBOX_BATCH = 1_000  # alerts published per round when what is left in the outbox is drained

SeriesKey = tuple[str, str, Timeframe]  # (exchange, canonical symbol, timeframe)
_FOLDED: list[StoredClose] = []  # the closes of a series once its state took them (shared, never filled)


class StoredClose(NamedTuple):
    """A closed candle as the indicators read it: a bar for ``step`` (float prices) and its exact close price.

    One flat tuple, not a ``Bar`` and a pair: a close wave keeps one per close alive, and with one object
    fewer each a wave of 1,000 symbols x 6 timeframes stays under the young-generation threshold of
    ``common.runtime.tune_gc`` (a collection inside the wave cost about a fifth of it)."""

    open_time: int
    high: float
    low: float
    close: float
    price: Decimal


@dataclass(frozen=True, slots=True)
class NewAlert:
    exchange_id: int
    exchange: str
    symbol: str
    timeframe: Timeframe
    alert: Alert
    price: Decimal  # the close of the candle that raised it

    @property
    def triggered_ms(self) -> int:
        """When the alert became known: the close time of its candle."""
        return self.timeframe.close_time(self.alert.open_time)


class IndicatorReading(NamedTuple):
    """A MACD-V reading of a series with everything internal callers see (reads and ``indicators:`` events).

    A named tuple: a close wave builds one per ready close (a frozen dataclass cost about 1 µs more each)."""

    exchange: str
    exchange_id: int
    symbol: str
    symbol_id: int  # 0 when the symbol is not registered, and in stream events (not looked up on the write path)
    timeframe: Timeframe
    value: MacdVValue
    params: MacdVParams


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """A stored alert: every field, internal ones included (the gateways project it)."""

    id: int
    exchange_id: int
    exchange: str
    symbol: str
    timeframe: Timeframe
    alert_type: str
    signal_type: str
    direction: Direction
    strength: Strength
    trigger_value: float
    signal_delta: float
    trigger_label: str
    price: Decimal
    triggered_ms: int


class IndicatorStates(Protocol):
    async def load(self, series: Sequence[SeriesKey]) -> list[MacdVState | None]: ...
    async def save(self, items: Sequence[tuple[SeriesKey, MacdVState]]) -> None: ...
    async def latest(self, series: SeriesKey) -> MacdVValue | None: ...


class StoredCloses(Protocol):
    async def closes_before(
        self, exchange_id: int, wanted: Sequence[tuple[str, Timeframe, int]], limit: int
    ) -> list[list[StoredClose]]: ...
    async def symbol_id(self, exchange_id: int, symbol: str) -> int | None: ...


class AlertWriter(Protocol):
    async def insert(self, alerts: Sequence[NewAlert], *, conn: Any = None) -> list[AlertRecord]: ...
    async def unpublished(self, limit: int) -> list[AlertRecord]: ...
    async def published(self, ids: Sequence[int]) -> None: ...


class SignalPublisher(Protocol):
    async def publish_signals(self, records: Sequence[AlertRecord]) -> None: ...
    async def publish_indicators(self, readings: Sequence[IndicatorReading]) -> None: ...


@dataclass(slots=True)
class IndicatorStats:
    waves: int = 0
    closes: int = 0
    warmups: int = 0
    alerts: int = 0
    errors: int = 0
    publish_failures: int = 0
    reading_publish_failures: int = 0  # waves whose indicator_update events were not published


@dataclass(slots=True)
class _Series:
    """One series during a wave: where it continues from and what it produced."""

    key: SeriesKey
    closes: list[StoredClose]
    state: MacdVState | None = None
    emit_after: int = -1  # alerts only for closes after this open time
    alerts: list[tuple[Alert, Decimal]] | None = None  # made on the first alert (few series raise one)


class IndicatorService:
    def __init__(
        self,
        *,
        states: IndicatorStates,
        history: StoredCloses,
        alerts: AlertWriter,
        signals: SignalPublisher,
        exchange_ids: Mapping[str, int],
        params: MacdVParams | None = None,
        warmup_bars: int = WARMUP_BARS,
    ) -> None:
        self._states = states
        self._history = history
        self._alerts = alerts
        self._signals = signals
        self._exchange_ids = exchange_ids
        self.params = params or MacdVParams()
        self._warmup_bars = warmup_bars
        self.stats = IndicatorStats()
        self._outbox_clear = False  # unknown at start: the first wave publishes what an earlier run left

    async def on_closed(self, candles: Sequence[Candle], fenced: Fenced | None = None) -> None:
        """The pipeline's hook: like :meth:`process`, but only a lost lease is raised."""
        if not candles:
            return
        try:
            await self.process(candles, fenced)
        except LeaseLost:
            raise
        except Exception:
            self.stats.errors += 1
            logger.warning("indicators not updated for %d closed candles", len(candles), exc_info=True)

    async def process(self, candles: Sequence[Candle], fenced: Fenced | None = None) -> list[AlertRecord]:
        """Update every series of one wave; returns the alerts stored (and published) for the first time."""
        series = _group(candles)
        loaded = await self._states.load([s.key for s in series])
        cold: list[_Series] = []
        for s, state in zip(series, loaded, strict=True):
            if state is None or state.params != self.params:
                s.emit_after = s.closes[0].open_time - 1
                cold.append(s)
                continue
            last_open = state.last.open_time
            if len(s.closes) > 1 or s.closes[0].open_time <= last_open:
                s.closes = [c for c in s.closes if c.open_time > last_open]  # duplicates and late closes
            s.emit_after = last_open
            if s.closes and s.closes[0].open_time != s.key[2].close_time(last_open):
                cold.append(s)  # the state missed a close: rebuild it from the stored candles
            else:
                s.state = state
        readings: list[IndicatorReading] = []  # ready values of the closes after each series' emit_after
        await self._warm_up(cold, readings)
        stepped: list[tuple[SeriesKey, MacdVState]] = []  # the states to save: those that took a new close
        for s in series:
            if s.closes:
                self._run(s, s.closes, readings)
                s.closes = _FOLDED  # let the wave's closes go now: fewer objects alive at the wave's peak
                if s.state is not None:
                    stepped.append((s.key, s.state))
        self.stats.waves += 1
        self.stats.closes += len(candles)
        records = await self._store_alerts(series, fenced)
        # The alerts' events and the states leave together (one Redis round trip; the outbox's delete in
        # PostgreSQL meanwhile): the states only wait for the alerts to be stored (a state saved past an alert
        # that was not stored would never raise it again), and a publish failure stays in _publish.
        save = self._states.save(stepped)
        if records or not self._outbox_clear:
            # Both run to their end before the wave goes on (a failed save is raised after the publish is done).
            for outcome in await asyncio.gather(self._publish(records), save, return_exceptions=True):
                if isinstance(outcome, BaseException):
                    raise outcome
        else:
            await save
        await self._publish_readings(readings)
        return records

    async def _warm_up(self, cold: list[_Series], readings: list[IndicatorReading]) -> None:
        by_exchange: dict[str, list[_Series]] = {}
        for s in cold:
            by_exchange.setdefault(s.key[0], []).append(s)
        for exchange, group in by_exchange.items():
            wanted = [(s.key[1], s.key[2], s.closes[0].open_time) for s in group]
            found = await self._history.closes_before(self._exchange_ids[exchange], wanted, self._warmup_bars)
            for s, stored in zip(group, found, strict=True):
                self._run(s, stored, readings)
            self.stats.warmups += len(group)

    def _run(self, s: _Series, closes: Sequence[StoredClose], readings: list[IndicatorReading]) -> None:
        state, params, emit_after = s.state, self.params, s.emit_after
        exchange, symbol, timeframe = s.key
        for close in closes:
            last = state.last if state is not None else None
            state, value = step(state, close, params)
            if value is not None and close.open_time > emit_after:
                if value.ready:
                    readings.append(
                        IndicatorReading(exchange, self._exchange_ids[exchange], symbol, 0, timeframe, value, params)
                    )
                alerts = detect_alerts(last, value)
                if alerts:
                    if s.alerts is None:
                        s.alerts = []
                    s.alerts.extend((alert, close.price) for alert in alerts)
        s.state = state

    async def _store_alerts(self, series: Sequence[_Series], fenced: Fenced | None) -> list[AlertRecord]:
        new = [
            NewAlert(self._exchange_ids[s.key[0]], s.key[0], s.key[1], s.key[2], alert, price)
            for s in series
            if s.alerts
            for alert, price in s.alerts
        ]
        if not new:
            return []
        if fenced is None:
            records = await self._alerts.insert(new)
        else:
            async with fenced() as conn:
                records = await self._alerts.insert(new, conn=conn)
        self.stats.alerts += len(records)
        return records

    async def _publish(self, fresh: list[AlertRecord]) -> None:
        """Publish ``fresh`` (just stored, with their outbox rows), and first all the outbox holds when it
        may hold more; a failure is logged and leaves the rows for the next wave (the alerts are stored)."""
        try:
            if self._outbox_clear:
                if fresh:
                    await self._signals.publish_signals(fresh)
                    await self._alerts.published([r.id for r in fresh])
                return
            while batch := await self._alerts.unpublished(OUTBOX_BATCH):
                await self._signals.publish_signals(batch)
                await self._alerts.published([r.id for r in batch])
                if len(batch) < OUTBOX_BATCH:
                    break
            self._outbox_clear = True
        except Exception:
            self._outbox_clear = False
            self.stats.publish_failures += 1
            logger.warning(
                "%d new alerts stored but not published yet; the next wave retries", len(fresh), exc_info=True
            )

    async def _publish_readings(self, readings: list[IndicatorReading]) -> None:
        """The wave's ready readings on their ``indicators:`` streams; a failure is logged, the states are saved."""
        if not readings:
            return
        try:
            await self._signals.publish_indicators(readings)
        except Exception:
            self.stats.reading_publish_failures += 1
            logger.warning("%d indicator readings not published", len(readings), exc_info=True)


def _group(candles: Sequence[Candle]) -> list[_Series]:
    """The wave per series, each in open_time order without repeats (one close per series is the usual case)."""
    by_key: dict[SeriesKey, list[StoredClose]] = {}
    for c in candles:
        key = (c.exchange, c.symbol, c.timeframe)
        close = StoredClose(c.open_time, float(c.high), float(c.low), float(c.close), c.close)
        closes = by_key.get(key)
        if closes is None:
            by_key[key] = [close]
        else:
            closes.append(close)
    series = []
    for key, closes in by_key.items():
        if len(closes) > 1:
            closes = list({close.open_time: close for close in sorted(closes, key=_open_time)}.values())
        series.append(_Series(key, closes))
    return series


def _open_time(close: StoredClose) -> int:
    return close.open_time
