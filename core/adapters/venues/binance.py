"""Binance Spot market streams: the pure protocol (URL, frames in, market events out).

Pure, sans-I/O code; :mod:`core.adapters.venues.runner` owns the socket. Format
source: Binance's ``web-socket-streams.md`` (binance/binance-spot-api-docs).

- **Subscription.** Streams are named in the combined-stream URL,
  ``wss://stream.binance.com:9443/stream?streams=btcusdt@trade/btcusdt@kline_1m``,
  so :meth:`BinanceProtocol.subscribe_frames` sends nothing. The subscription is
  part of the connection itself: no window in which the socket is open but not
  yet subscribed, no request id or reply to track, nothing to resend after a
  reconnect, and none of the 5 incoming messages per second that Binance allows
  a connection is spent on control frames. A ``{"result": null, "id": N}`` reply
  (to a ``SUBSCRIBE`` someone else sent) is accepted and ignored.
- **Symbols.** Canonical ``BASE-QUOTE`` becomes ``basequote`` in stream names
  (``BTC-USDT`` -> ``btcusdt``). Binance symbols carry no separator, so a frame's
  ``s`` is mapped back only through the subscribed set, never guessed. Data for
  a symbol, event type or kline interval we did not subscribe to is skipped
  (logged at DEBUG), as the other venues do.
- **Limits.** One connection carries at most 1024 streams (two per symbol here,
  so 512 symbols; more raise ``ValueError``) and accepts 5 incoming messages per
  second, which URL subscription never approaches.
- **Keep-alive.** The server sends a protocol-level ping about every 20 s (the
  websockets client answers it) and closes every connection after 24 h; it may
  announce a shutdown with a ``serverShutdown`` event, read here as a fatal
  error so that the runner reconnects at once. The runner reconnects after the
  24 h disconnect as after any other. With no application heartbeat, the idle
  timeout (``IDLE_TIMEOUT_S``) is long; the runner's pings catch dead sockets.
- **Gaps.** Binance streams carry no sequence across messages or symbols, so a
  lost frame cannot be seen in general. Per symbol, though, the trade id ``t``
  increases by exactly 1, so a jump is reported as a :class:`SequenceGap`
  (kline frames are snapshots of the running candle and need none).
- **Errors.** ``{"code": N, "msg": ...}`` and ``{"error": {"code", "msg"}}`` are
  fatal: the connection's subscription state is unknown, and a new connection
  restores it from the URL. Unreadable frames are non-fatal.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from core.adapters.venues.base import Parsed, VenueError
from core.adapters.venues.frames import decimal_field, integer_field, load_object
from core.domain.market_events import ExchangeCandle, MarketEvent, SequenceGap, Trade
from core.domain.symbols import canonical_symbol, split_symbol

logger = logging.getLogger(__name__)

EXCHANGE = "binance"
DEFAULT_BASE = "wss://stream.binance.com:9443"
COMBINED_STREAM_PATH = "/stream?streams="
MAX_STREAMS_PER_CONNECTION = 1024
STREAMS_PER_SYMBOL = 2  # <symbol>@trade and <symbol>@kline_1m
MAX_SYMBOLS_PER_CONNECTION = MAX_STREAMS_PER_CONNECTION // STREAMS_PER_SYMBOL
KLINE_INTERVAL = "1m"
TRADE_EVENT = "trade"
KLINE_EVENT = "kline"
SERVER_SHUTDOWN_EVENT = "serverShutdown"
# Binance sends no application heartbeat (its pings are protocol-level and are not frames). Kline streams are
# documented to update every 2 s, so 90 s without a frame means the feed stalled (at worst, a very quiet symbol
# set costs one reconnect); a dead TCP connection is caught sooner by the runner's own protocol pings.
IDLE_TIMEOUT_S = 90.0


def binance_symbol(symbol: str) -> str:
    """The Binance spelling of a canonical symbol: ``BTC-USDT`` -> ``BTCUSDT``."""
    base, quote = split_symbol(symbol)
    return f"{base}{quote}"


def _error_text(error: Any) -> str:
    if isinstance(error, Mapping):
        return f"code {error.get('code')!r}: {error.get('msg')!r}"
    return repr(error)


class BinanceProtocol:
    """Per-connection state of one Binance Spot combined-stream connection."""

    name = EXCHANGE

    def __init__(
        self, symbols: Sequence[str], *, url: str = DEFAULT_BASE, idle_timeout_s: float = IDLE_TIMEOUT_S
    ) -> None:
        canonical = list(dict.fromkeys(canonical_symbol(symbol) for symbol in symbols))
        if not canonical:
            raise ValueError("BinanceProtocol needs at least one symbol")
        if len(canonical) > MAX_SYMBOLS_PER_CONNECTION:
            raise ValueError(
                f"{len(canonical)} symbols need {len(canonical) * STREAMS_PER_SYMBOL} streams; "
                f"a Binance connection carries at most {MAX_STREAMS_PER_CONNECTION}"
            )
        self._by_venue: dict[str, str] = {}
        for symbol in canonical:
            venue = binance_symbol(symbol)
            if venue in self._by_venue:
                raise ValueError(f"{symbol} and {self._by_venue[venue]} are both {venue} on Binance")
            self._by_venue[venue] = symbol
        self._base = url.rstrip("/")
        self._idle_timeout_s = idle_timeout_s
        self._last_trade_id: dict[str, int] = {}

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(self._by_venue.values())

    def streams(self) -> list[str]:
        """Stream names, two per symbol: ``btcusdt@trade``, ``btcusdt@kline_1m``."""
        names: list[str] = []
        for venue in self._by_venue:
            lower = venue.lower()
            names += [f"{lower}@{TRADE_EVENT}", f"{lower}@{KLINE_EVENT}_{KLINE_INTERVAL}"]
        return names

    def url(self) -> str:
        return f"{self._base}{COMBINED_STREAM_PATH}{'/'.join(self.streams())}"

    def subscribe_frames(self) -> Sequence[str]:
        return ()  # subscribed through the URL

    @property
    def idle_timeout_s(self) -> float:
        return self._idle_timeout_s

    def parse(self, frame: str | bytes, now_ms: int) -> Parsed:
        message = load_object(frame, EXCHANGE)
        if "error" in message:
            raise VenueError(f"binance error {_error_text(message['error'])}", fatal=True)
        if "code" in message and "msg" in message:
            raise VenueError(f"binance error {_error_text(message)}", fatal=True)
        if "result" in message and "id" in message:
            logger.debug("binance reply to request %r: %r", message["id"], message["result"])
            return Parsed()
        shutdown = message.get("event")
        if isinstance(shutdown, Mapping) and shutdown.get("e") == SERVER_SHUTDOWN_EVENT:
            raise VenueError("binance announced a server shutdown", fatal=True)
        payload = message.get("data") if "stream" in message else message  # combined envelope, or a raw payload
        if not isinstance(payload, dict):
            raise VenueError(f"binance stream payload is not an object: {type(payload).__name__}")
        return Parsed(events=self._events(payload))

    def _events(self, payload: dict[str, Any]) -> list[MarketEvent]:
        event_type = payload.get("e")
        if event_type == SERVER_SHUTDOWN_EVENT:
            raise VenueError("binance announced a server shutdown", fatal=True)
        if event_type not in (TRADE_EVENT, KLINE_EVENT):
            logger.debug("binance: skipping an event of type %r", event_type)
            return []
        venue = payload.get("s")
        symbol = self._by_venue.get(venue) if isinstance(venue, str) else None
        if symbol is None:
            logger.debug("binance: skipping a %s event of unsubscribed symbol %r", event_type, venue)
            return []
        if event_type == TRADE_EVENT:
            return self._trade(symbol, payload)
        return self._kline(symbol, payload)

    def _trade(self, symbol: str, payload: Mapping[str, Any]) -> list[MarketEvent]:
        trade_id = integer_field(payload, "t", EXCHANGE)
        trade = Trade(
            exchange=EXCHANGE,
            symbol=symbol,
            price=decimal_field(payload, "p", EXCHANGE),
            size=decimal_field(payload, "q", EXCHANGE),
            ts_ms=integer_field(payload, "T", EXCHANGE),
            trade_id=str(trade_id),
        )
        events: list[MarketEvent] = []
        last = self._last_trade_id.get(symbol)
        if last is not None and trade_id > last + 1:
            events.append(SequenceGap(exchange=EXCHANGE, symbol=symbol, expected=last + 1, received=trade_id))
        if last is None or trade_id > last:
            self._last_trade_id[symbol] = trade_id
        else:
            logger.debug("binance %s trade id %d repeats or precedes %d", symbol, trade_id, last)
        events.append(trade)
        return events

    def _kline(self, symbol: str, payload: Mapping[str, Any]) -> list[MarketEvent]:
        kline = payload.get("k")
        if not isinstance(kline, dict):
            raise VenueError(f"binance kline event without a 'k' object: {kline!r}")
        if kline.get("i") != KLINE_INTERVAL:
            logger.debug("binance: skipping a %r kline of %s", kline.get("i"), symbol)
            return []
        closed = kline.get("x")
        if not isinstance(closed, bool):
            raise VenueError(f"binance kline closed flag 'x' is not a boolean: {closed!r}")
        candle = ExchangeCandle(
            exchange=EXCHANGE,
            symbol=symbol,
            open_time_ms=integer_field(kline, "t", EXCHANGE),
            open=decimal_field(kline, "o", EXCHANGE),
            high=decimal_field(kline, "h", EXCHANGE),
            low=decimal_field(kline, "l", EXCHANGE),
            close=decimal_field(kline, "c", EXCHANGE),
            volume=decimal_field(kline, "v", EXCHANGE, positive=False),
            closed=closed,
        )
        return [candle]
