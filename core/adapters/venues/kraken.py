"""Kraken Spot WebSocket v2: the pure protocol (subscribe frames, frames in, market events out).

Pure, sans-I/O code; :mod:`core.adapters.venues.runner` owns the socket. Format
source: Kraken's v2 API reference (docs.kraken.com, ``spot-websocket-v2``:
trade, ohlc, heartbeat, status).

- **Subscription.** Two frames, one per channel, each naming every symbol:
  ``trade`` with ``snapshot: true`` (the last 50 trades) and ``ohlc`` with
  ``interval: 1``. Kraken acknowledges each symbol separately with
  ``{"method": "subscribe", "success": ..., "result" | "error": ...}``; a refusal
  (``success: false``) is a fatal :class:`VenueError`, so the runner reconnects
  and subscribes again (with backoff: a pair Kraken does not list keeps being
  refused, so configured symbols must be ones Kraken trades).
- **Numbers.** v2 sends prices and quantities as JSON numbers. They are parsed
  with ``parse_float=Decimal`` straight from the frame's text, so
  ``27000.12345678`` is ``Decimal("27000.12345678")``, never a binary float
  (integers are exact Python ints already; ``NaN``/``Infinity`` are refused).
- **Symbols.** Canonical ``BTC-USD`` is ``BTC/USD`` on Kraken; frames are mapped
  back through the subscribed set. Entries for a symbol, channel or ohlc
  interval we did not subscribe to are skipped (logged at DEBUG), as the other
  venues do.
- **Timestamps.** RFC 3339 with micro- or nanoseconds, read as UTC epoch
  milliseconds (sub-millisecond digits are truncated).
- **Candles.** An ohlc snapshot or update carries the running candle of its
  interval: it is emitted with ``closed=False``. Kraken sends no "closed"
  message, so the rule is: when an entry for a *later* ``interval_begin``
  arrives for a symbol, the last values seen for the earlier interval are
  emitted once more with ``closed=True``, before the new candle. Entries for an
  interval older than the running one are late and dropped. Updates come only
  on trades, so a minute without trades closes when the next trade arrives.
- **Gaps.** ``trade_id`` is a sequence number per book, so per symbol it
  increases by exactly 1; a jump is reported as a :class:`SequenceGap`.
- **Liveness.** Kraken sends ``{"channel": "heartbeat"}`` about once a second
  when there is no other traffic, so 10 s of silence means the connection is
  dead. ``status`` frames (trading-engine state) produce no events.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from core.adapters.venues.base import Parsed, VenueError
from core.adapters.venues.frames import decimal_field, integer_field, load_object, timestamp_field
from core.domain.market_events import ExchangeCandle, MarketEvent, SequenceGap, Trade
from core.domain.symbols import canonical_symbol, split_symbol

logger = logging.getLogger(__name__)

EXCHANGE = "kraken"
DEFAULT_URL = "wss://ws.kraken.com/v2"
TRADE_CHANNEL = "trade"
OHLC_CHANNEL = "ohlc"
HEARTBEAT_CHANNEL = "heartbeat"
STATUS_CHANNEL = "status"
SUBSCRIBE_METHOD = "subscribe"
OHLC_INTERVAL_MINUTES = 1
SYSTEM_ONLINE = "online"
IDLE_TIMEOUT_S = 10.0  # heartbeats come about once a second


def kraken_symbol(symbol: str) -> str:
    """The Kraken v2 spelling of a canonical symbol: ``BTC-USD`` -> ``BTC/USD``."""
    base, quote = split_symbol(symbol)
    return f"{base}/{quote}"


def _number(entry: Mapping[str, Any], key: str, *, positive: bool = True) -> Decimal:
    """A JSON number read exactly: positive, or non-negative for volumes. Kraken sends no decimal strings."""
    return decimal_field(entry, key, EXCHANGE, positive=positive, strings=False)


@dataclass(frozen=True, slots=True)
class _TradeEntry:
    trade: Trade
    trade_id: int


class KrakenProtocol:
    """Per-connection state of one Kraken v2 connection: trade ids and running candles per symbol."""

    name = EXCHANGE

    def __init__(
        self, symbols: Sequence[str], *, url: str = DEFAULT_URL, idle_timeout_s: float = IDLE_TIMEOUT_S
    ) -> None:
        canonical = list(dict.fromkeys(canonical_symbol(symbol) for symbol in symbols))
        if not canonical:
            raise ValueError("KrakenProtocol needs at least one symbol")
        self._by_venue = {kraken_symbol(symbol): symbol for symbol in canonical}
        self._url = url
        self._idle_timeout_s = idle_timeout_s
        self._last_trade_id: dict[str, int] = {}
        self._running: dict[str, ExchangeCandle] = {}

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._by_venue.values())

    def url(self) -> str:
        return self._url

    def subscribe_frames(self) -> Sequence[str]:
        venue_symbols = list(self._by_venue)
        trade = {"channel": TRADE_CHANNEL, "symbol": venue_symbols, "snapshot": True}
        ohlc = {"channel": OHLC_CHANNEL, "symbol": venue_symbols, "interval": OHLC_INTERVAL_MINUTES}
        return [json.dumps({"method": SUBSCRIBE_METHOD, "params": params}) for params in (trade, ohlc)]

    @property
    def idle_timeout_s(self) -> float:
        return self._idle_timeout_s

    def parse(self, frame: str | bytes, now_ms: int) -> Parsed:
        message = load_object(frame, EXCHANGE)
        if "method" in message or "success" in message:
            self._reply(message)
            return Parsed()
        channel = message.get("channel")
        if channel == HEARTBEAT_CHANNEL:
            return Parsed()
        if channel == STATUS_CHANNEL:
            self._status(message)
            return Parsed()
        if channel == TRADE_CHANNEL:
            return Parsed(events=self._trades(_data(message)))
        if channel == OHLC_CHANNEL:
            return Parsed(events=self._candles(_data(message)))
        logger.debug("kraken: skipping a frame of channel %r", channel)
        return Parsed()

    def _reply(self, message: Mapping[str, Any]) -> None:
        method = message.get("method")
        if message.get("success") is False:
            detail = f"kraken {method or 'request'} refused: {message.get('error')!r}"
            raise VenueError(detail, fatal=method == SUBSCRIBE_METHOD)
        logger.debug("kraken %s acknowledged: %r", method, message.get("result"))

    def _status(self, message: Mapping[str, Any]) -> None:
        for entry in _data(message):
            system = entry.get("system")
            if system != SYSTEM_ONLINE:
                logger.warning("kraken trading engine is %r", system)

    def _subscribed(self, entries: list[dict[str, Any]], channel: str) -> list[tuple[str, dict[str, Any]]]:
        """The entries of subscribed symbols, each with its canonical symbol."""
        chosen: list[tuple[str, dict[str, Any]]] = []
        for entry in entries:
            venue = entry.get("symbol")
            symbol = self._by_venue.get(venue) if isinstance(venue, str) else None
            if symbol is None:
                logger.debug("kraken: skipping a %s entry of unsubscribed symbol %r", channel, venue)
            elif channel == OHLC_CHANNEL and entry.get("interval") != OHLC_INTERVAL_MINUTES:
                logger.debug("kraken: skipping a %r-minute ohlc entry of %s", entry.get("interval"), symbol)
            else:
                chosen.append((symbol, entry))
        return chosen

    def _trades(self, entries: list[dict[str, Any]]) -> list[MarketEvent]:
        # all or nothing: every entry is read before any state changes
        parsed = [_trade_entry(symbol, entry) for symbol, entry in self._subscribed(entries, TRADE_CHANNEL)]
        events: list[MarketEvent] = []
        for item in parsed:
            symbol = item.trade.symbol
            last = self._last_trade_id.get(symbol)
            if last is not None and item.trade_id > last + 1:
                events.append(SequenceGap(exchange=EXCHANGE, symbol=symbol, expected=last + 1, received=item.trade_id))
            if last is None or item.trade_id > last:
                self._last_trade_id[symbol] = item.trade_id
            else:
                logger.debug("kraken %s trade id %d repeats or precedes %d", symbol, item.trade_id, last)
            events.append(item.trade)
        return events

    def _candles(self, entries: list[dict[str, Any]]) -> list[MarketEvent]:
        # all or nothing: every entry is read before any state changes
        parsed = [_candle_entry(symbol, entry) for symbol, entry in self._subscribed(entries, OHLC_CHANNEL)]
        events: list[MarketEvent] = []
        for candle in parsed:
            running = self._running.get(candle.symbol)
            if running is not None:
                if candle.open_time_ms < running.open_time_ms:
                    logger.debug("kraken %s late ohlc entry for %d dropped", candle.symbol, candle.open_time_ms)
                    continue
                if candle.open_time_ms > running.open_time_ms:
                    events.append(replace(running, closed=True))
            self._running[candle.symbol] = candle
            events.append(candle)
        return events


def _trade_entry(symbol: str, entry: Mapping[str, Any]) -> _TradeEntry:
    trade_id = integer_field(entry, "trade_id", EXCHANGE)
    trade = Trade(
        exchange=EXCHANGE,
        symbol=symbol,
        price=_number(entry, "price"),
        size=_number(entry, "qty"),
        ts_ms=timestamp_field(entry, "timestamp", EXCHANGE, strict=False),
        trade_id=str(trade_id),
    )
    return _TradeEntry(trade=trade, trade_id=trade_id)


def _candle_entry(symbol: str, entry: Mapping[str, Any]) -> ExchangeCandle:
    return ExchangeCandle(
        exchange=EXCHANGE,
        symbol=symbol,
        open_time_ms=timestamp_field(entry, "interval_begin", EXCHANGE, strict=False),
        open=_number(entry, "open"),
        high=_number(entry, "high"),
        low=_number(entry, "low"),
        close=_number(entry, "close"),
        volume=_number(entry, "volume", positive=False),
        closed=False,
    )


def _data(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    data = message.get("data")
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        raise VenueError(f"kraken {message.get('channel')} frame without a list of objects in 'data'")
    return data
