"""The gateway's own reading of public channel names (CONTRACT.md, WebSocket gateway). Pure code.

The gateway may not import the core, and it wants to answer a malformed name
at once instead of after a round trip, so it checks the *syntax* here::

    candles:{SYMBOL}:{TF}     candles:{exchange}:{SYMBOL}:{TF}
    signals:{SYMBOL}:{TF}     signals:{exchange}:{SYMBOL}:{TF}
    indicators:{SYMBOL}:{TF}  indicators:{exchange}:{SYMBOL}:{TF}
    prices:{SYMBOL}           prices:{exchange}:{SYMBOL}
    prices:all:{SYMBOL}       every source (exchange) of the symbol (seed 004)
    price_updates:all         every symbol, every source (internal and admin keys)

and computes the canonical explicit name (``candles:sim:BTC-USD:1h``) the core
will use, given the default exchange. Whether an exchange exists is the
core's decision: it rejects a request naming an unknown one, and the gateway
passes that on as ``INVALID_CHANNEL``.
"""

from __future__ import annotations

import re

MAX_CHANNEL_LENGTH = 100
SEPARATOR = ":"
FAMILIES_WITH_TIMEFRAME = frozenset({"candles", "signals", "indicators"})
FAMILIES = ("candles", "signals", "indicators", "prices")
TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")
ALL_SOURCES = "all"
EVERY_PRICE = "price_updates:all"  # seed 004's name; the core's stream is prices:all:*
EVERY_PRICE_CANONICAL = "prices:all:*"
_EXCHANGE = re.compile(r"[a-z][a-z0-9_]{0,31}")
_ASSET = re.compile(r"[A-Z0-9]{1,20}")


class InvalidChannel(ValueError):
    """A name that is not a public channel; ``str()`` says why and is safe to show the client."""

    def __init__(self, name: object, reason: str) -> None:
        text = str(name)
        shown = text if len(text) <= MAX_CHANNEL_LENGTH else text[:MAX_CHANNEL_LENGTH] + "…"
        super().__init__(f"invalid channel {shown!r}: {reason}")


def canonical_channel(name: object, default_exchange: str) -> str:
    """The canonical explicit name of ``name``, or raise :class:`InvalidChannel`.

    >>> canonical_channel("candles:btc/usd:1H", "sim")
    'candles:sim:BTC-USD:1h'
    """
    if not isinstance(name, str):
        raise InvalidChannel(name, "a channel name must be a string")
    if not name.strip():
        raise InvalidChannel(name, "empty channel name")
    if len(name) > MAX_CHANNEL_LENGTH or not name.isascii():
        raise InvalidChannel(name, f"a channel name is at most {MAX_CHANNEL_LENGTH} ASCII characters")
    if name.strip().lower() == EVERY_PRICE:
        return EVERY_PRICE_CANONICAL
    parts = [part.strip() for part in name.split(SEPARATOR)]
    family = parts[0].lower()
    if family not in FAMILIES:
        raise InvalidChannel(name, f"unknown channel family {parts[0]!r}; expected one of {', '.join(FAMILIES)}")
    rest = parts[1:]
    timeframe: str | None = None
    if family in FAMILIES_WITH_TIMEFRAME:
        if len(rest) not in (2, 3):
            raise InvalidChannel(name, f"expected {family}:SYMBOL:TF or {family}:EXCHANGE:SYMBOL:TF")
        timeframe = rest.pop().lower()
        if timeframe not in TIMEFRAMES:
            raise InvalidChannel(name, f"unknown timeframe {timeframe!r}; expected one of {', '.join(TIMEFRAMES)}")
    elif len(rest) not in (1, 2):
        raise InvalidChannel(name, f"expected {family}:SYMBOL or {family}:EXCHANGE:SYMBOL")
    exchange = rest[0].lower() if len(rest) == 2 else default_exchange
    if not _EXCHANGE.fullmatch(exchange):
        raise InvalidChannel(name, f"malformed exchange name {rest[0]!r}")
    if exchange == ALL_SOURCES and family != "prices":
        raise InvalidChannel(name, f"only prices channels take {ALL_SOURCES!r} for the exchange")
    symbol = _symbol(name, rest[-1])
    return SEPARATOR.join(p for p in (family, exchange, symbol, timeframe) if p is not None)


def all_sources_channel(symbol: object) -> str:
    """``prices:all:{SYMBOL}`` of a symbol as seed 004's clients write it (``BTC/USD``), or raise
    :class:`InvalidChannel`."""
    if not isinstance(symbol, str) or not symbol.isascii() or len(symbol) > MAX_CHANNEL_LENGTH // 2:
        raise InvalidChannel(symbol, "a symbol is a string such as BTC/USD")
    name = f"prices:{ALL_SOURCES}:{symbol.strip()}"
    return SEPARATOR.join(("prices", ALL_SOURCES, _symbol(name, symbol.strip())))


def _symbol(name: str, text: str) -> str:
    separators = [ch for ch in text if ch in "-/"]
    base, _, quote = text.upper().replace("/", "-").partition("-")
    if len(separators) != 1 or not _ASSET.fullmatch(base) or not _ASSET.fullmatch(quote):
        raise InvalidChannel(name, f"malformed symbol {text!r}; expected BASE-QUOTE such as BTC-USD")
    return f"{base}-{quote}"


def event_family(canonical: str) -> str:
    return canonical.partition(SEPARATOR)[0]
