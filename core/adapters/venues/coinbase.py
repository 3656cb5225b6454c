"""Coinbase Advanced Trade public market data: the pure protocol (URL, frames in, market events out).

Pure, sans-I/O code; :mod:`core.adapters.venues.runner` owns the socket. Format
source: Coinbase's Advanced Trade WebSocket channel reference
(``wss://advanced-trade-ws.coinbase.com``, no authentication).

- **Subscription.** One frame per channel, as Coinbase's own SDK sends them:
  ``{"type": "subscribe", "product_ids": [], "channel": "heartbeats"}`` first
  (so the connection is kept open even when a market is quiet), then
  ``{"type": "subscribe", "product_ids": ["BTC-USD", ...], "channel": "market_trades"}``.
  Product ids are the canonical symbols (``BTC-USD`` is ``BTC-USD``); trades for
  a product we did not ask for are skipped. Coinbase answers ``-USDC`` market
  data subscriptions with the ``-USD`` product's data, so configure ``-USD``.
- **Trades are the source.** ``market_trades`` events carry ``trade_id``,
  ``product_id``, ``price``, ``size`` (decimal strings, kept exact) and ``time``
  (ISO-8601 UTC, truncated to milliseconds). The ``candles`` channel is not
  used: its candles are 5-minute ones, and :class:`ExchangeCandle` means a
  1-minute candle; Perseus builds Coinbase candles from the trades.
- **Snapshots.** On every (re)connect Coinbase first sends a ``snapshot`` event
  with recent trades. They are real trades and are emitted like ``update``
  trades; some were already delivered on the previous connection, and the
  pipeline drops those by trade identity (exchange, symbol, trade id) when
  storing them.
- **Gaps.** ``sequence_num`` counts every message of one connection across all
  channels (heartbeats included), so a jump means messages were lost, but not
  which product they were for: one :class:`SequenceGap` is emitted per
  subscribed symbol. Sequence numbers restart with each connection (and a
  protocol instance lives for one connection).
- **Liveness.** Heartbeats arrive every second; 10 s of silence means the
  connection is dead. Heartbeats and ``subscriptions`` acks produce no events.
- **Errors.** ``{"type": "error", "message": ...}`` (e.g. a rejected
  subscription) is fatal: the runner reconnects and subscribes again.
  Unreadable frames are non-fatal. Other channels are ignored, as Coinbase asks
  clients to ignore messages they do not support.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from core.adapters.venues.base import Parsed, VenueError
from core.adapters.venues.frames import decimal_field, timestamp_field
from core.domain.market_events import MarketEvent, SequenceGap, Trade
from core.domain.symbols import canonical_symbol

logger = logging.getLogger(__name__)

EXCHANGE = "coinbase"
DEFAULT_URL = "wss://advanced-trade-ws.coinbase.com"
SUBSCRIBE = "subscribe"
MARKET_TRADES_CHANNEL = "market_trades"
HEARTBEATS_CHANNEL = "heartbeats"
SUBSCRIPTIONS_CHANNEL = "subscriptions"
ERROR_TYPE = "error"
TRADE_EVENT_TYPES = ("snapshot", "update")
IDLE_TIMEOUT_S = 10.0  # heartbeats come every second
ERROR_FIELDS = ("message", "reason")
MAX_SHOWN = 200  # characters of a bad frame quoted in an error
MAX_SHOWN_ERROR = 500


class CoinbaseProtocol:
    """Per-connection state of the Coinbase Advanced Trade market data feed."""

    name = EXCHANGE

    def __init__(self, symbols: Sequence[str], *, url: str = DEFAULT_URL, idle_timeout_s: float = IDLE_TIMEOUT_S):
        if not symbols:
            raise ValueError("coinbase: at least one symbol is needed")
        self._symbols = tuple(dict.fromkeys(canonical_symbol(s) for s in symbols))
        self._subscribed = frozenset(self._symbols)
        self._url = url
        self._idle_timeout_s = idle_timeout_s
        self._last_sequence: int | None = None

    def url(self) -> str:
        return self._url

    @property
    def idle_timeout_s(self) -> float:
        return self._idle_timeout_s

    def subscribe_frames(self) -> list[str]:
        return [
            json.dumps({"type": SUBSCRIBE, "product_ids": [], "channel": HEARTBEATS_CHANNEL}),
            json.dumps({"type": SUBSCRIBE, "product_ids": list(self._symbols), "channel": MARKET_TRADES_CHANNEL}),
        ]

    def parse(self, frame: str | bytes, now_ms: int) -> Parsed:
        message = _decode(frame)
        if message.get("type") == ERROR_TYPE:
            details = " ".join(str(message[key]) for key in ERROR_FIELDS if message.get(key))
            raise VenueError(f"coinbase error: {details or _shown(frame)}"[:MAX_SHOWN_ERROR], fatal=True)
        channel = message.get("channel")
        sequence = message.get("sequence_num")
        if not isinstance(channel, str) or type(sequence) is not int:
            raise VenueError(f"coinbase: frame without channel or sequence_num: {_shown(frame)}")
        events: list[MarketEvent] = self._check_sequence(sequence)
        if channel == MARKET_TRADES_CHANNEL:
            events += self._trades(message)
        elif channel in (HEARTBEATS_CHANNEL, SUBSCRIPTIONS_CHANNEL):
            pass
        else:
            logger.debug("coinbase: ignoring a frame of channel %r", channel)
        return Parsed(events=events)

    def _check_sequence(self, sequence: int) -> list[MarketEvent]:
        last = self._last_sequence
        if last is not None and sequence <= last:
            logger.debug("coinbase: sequence_num %d repeats or precedes %d", sequence, last)
            return []
        self._last_sequence = sequence
        if last is None or sequence == last + 1:
            return []
        return [SequenceGap(EXCHANGE, symbol, expected=last + 1, received=sequence) for symbol in self._symbols]

    def _trades(self, message: Mapping[str, Any]) -> list[MarketEvent]:
        trades: list[MarketEvent] = []
        for event in _list(message, "events"):
            if not isinstance(event, Mapping) or event.get("type") not in TRADE_EVENT_TYPES:
                raise VenueError(f"coinbase: unreadable market_trades event: {str(event)[:MAX_SHOWN]}")
            for entry in _list(event, "trades"):
                trade = _trade(entry)
                if trade.symbol in self._subscribed:
                    trades.append(trade)
                else:
                    logger.debug("coinbase: skipping a trade of unsubscribed product %s", trade.symbol)
        return trades


def _decode(frame: str | bytes) -> dict[str, Any]:
    try:
        message = json.loads(frame)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are ValueErrors
        raise VenueError(f"coinbase: unreadable frame: {_shown(frame)}") from exc
    if not isinstance(message, dict):
        raise VenueError(f"coinbase: frame is not a JSON object: {_shown(frame)}")
    return message


def _list(container: Mapping[str, Any], key: str) -> list[Any]:
    value = container.get(key)
    if not isinstance(value, list):
        raise VenueError(f"coinbase: {key!r} is not a list")
    return value


def _trade(entry: Any) -> Trade:
    if not isinstance(entry, Mapping):
        raise VenueError(f"coinbase: unreadable trade: {str(entry)[:MAX_SHOWN]}")
    try:
        trade_id, product_id = entry["trade_id"], entry["product_id"]
        if not isinstance(trade_id, str) or not trade_id:
            raise ValueError("trade_id is not a non-empty string")
        return Trade(
            exchange=EXCHANGE,
            symbol=canonical_symbol(product_id),
            price=decimal_field(entry, "price", EXCHANGE, numbers=False),
            size=decimal_field(entry, "size", EXCHANGE, numbers=False),
            ts_ms=timestamp_field(entry, "time", EXCHANGE),
            trade_id=trade_id,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise VenueError(f"coinbase: unreadable trade {str(entry)[:MAX_SHOWN]}: {exc}") from exc


def _shown(frame: str | bytes) -> str:
    return repr(frame[:MAX_SHOWN])
