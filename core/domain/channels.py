"""Public stream channel names (CONTRACT.md, WebSocket gateway): parsing and canonical form.

Pure code. The public forms are::

    candles:{SYMBOL}:{TF}            candles:{exchange}:{SYMBOL}:{TF}
    signals:{SYMBOL}:{TF}            signals:{exchange}:{SYMBOL}:{TF}
    indicators:{SYMBOL}:{TF}         indicators:{exchange}:{SYMBOL}:{TF}
    prices:{SYMBOL}                  prices:{exchange}:{SYMBOL}

The short forms mean the default exchange, which the caller supplies. Symbols
are accepted as ``BTC/USD`` or in lower case and canonicalised to ``BTC-USD``;
families, exchanges and timeframes are case-insensitive. Anything else raises
:class:`InvalidChannel` (a ``ValueError``) whose message can go to the client.
These are *public* names; the internal Redis channels they map to are built
by ``core.adapters.redis_keys`` and never leave the core.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection
from dataclasses import dataclass, replace

from core.domain.errors import InvalidArgument
from core.domain.symbols import InvalidSymbol, canonical_symbol
from core.domain.timeframes import TIMEFRAMES, Timeframe

MAX_CHANNEL_LENGTH = 100
PART_SEPARATOR = ":"
# Seed 004's streams (issue 17): ``prices:all:{SYMBOL}`` carries the price updates of every source (exchange)
# of a symbol, ``prices:all:*`` those of every symbol (the WebSocket gateway's ``price_updates:all``). No
# exchange may be named ``all``; ``*`` is no symbol, so neither stream can be confused with another.
ALL_SOURCES = "all"
ALL_SYMBOLS = "*"
EXCHANGE_NAME_PATTERN = r"[a-z][a-z0-9_]{0,31}"
_EXCHANGE_NAME = re.compile(EXCHANGE_NAME_PATTERN)


class ChannelFamily(enum.StrEnum):
    CANDLES = "candles"
    SIGNALS = "signals"
    INDICATORS = "indicators"
    PRICES = "prices"

    @property
    def has_timeframe(self) -> bool:
        return self is not ChannelFamily.PRICES


FAMILIES: tuple[ChannelFamily, ...] = tuple(ChannelFamily)


class InvalidChannel(InvalidArgument, ValueError):
    """A channel name the gateway cannot serve; ``str()`` says why, safe to show a client."""

    def __init__(self, name: object, reason: str) -> None:
        shown = name if isinstance(name, str) and len(name) <= MAX_CHANNEL_LENGTH else _shorten(name)
        super().__init__(f"invalid channel {shown!r}: {reason}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Channel:
    """One public stream. ``exchange`` is None when the name relied on the default exchange."""

    family: ChannelFamily
    exchange: str | None
    symbol: str
    timeframe: Timeframe | None

    def resolve(self, default_exchange: str) -> Channel:
        """The same channel with its exchange filled in: the identity used for keys and sequences."""
        if self.exchange is not None:
            return self
        return replace(self, exchange=default_exchange)

    def public_name(self, default_exchange: str) -> str:
        """Canonical public name: the short form on the default exchange, the explicit form otherwise.

        ``candles:coinbase:BTC-USD:1h`` and ``candles:btc/usd:1h`` are the same stream when
        coinbase is the default; both become ``candles:BTC-USD:1h``.
        """
        parts: list[str] = [self.family.value]
        if self.exchange is not None and self.exchange != default_exchange:
            parts.append(self.exchange)
        parts.append(self.symbol)
        if self.timeframe is not None:
            parts.append(self.timeframe.value)
        return PART_SEPARATOR.join(parts)


def explicit_name(channel: Channel) -> str:
    """The name with its exchange always spelled out (``candles:coinbase:BTC-USD:1h``): the name inside
    every published event and every answer of the core, whatever the default exchange of a reader is."""
    parts = [channel.family.value, channel.exchange or "", channel.symbol]
    if channel.timeframe is not None:
        parts.append(channel.timeframe.value)
    return PART_SEPARATOR.join(parts)


def all_prices_channel(symbol: str) -> Channel:
    """The stream of every source's price updates of ``symbol`` (canonical), or of every symbol for
    :data:`ALL_SYMBOLS`."""
    return Channel(ChannelFamily.PRICES, ALL_SOURCES, symbol, None)


def parse_channel(name: str, *, exchanges: Collection[str] | None = None) -> Channel:
    """Parse one public channel name.

    ``exchanges``, when given, is the set of exchange names an explicit form may use.
    """
    if not isinstance(name, str):
        raise InvalidChannel(name, "a channel name must be a string")
    text = name.strip()
    if not text:
        raise InvalidChannel(name, "empty channel name")
    if len(text) > MAX_CHANNEL_LENGTH:
        raise InvalidChannel(name, f"longer than {MAX_CHANNEL_LENGTH} characters")
    parts = text.split(PART_SEPARATOR)
    if any(not part.strip() for part in parts):
        raise InvalidChannel(name, "empty part between ':' separators")
    try:
        family = ChannelFamily(parts[0].lower())
    except ValueError:
        raise InvalidChannel(name, f"unknown channel family {parts[0]!r}; expected one of {_FAMILY_LIST}") from None
    rest = parts[1:]
    if family.has_timeframe:
        if len(rest) not in (2, 3):
            raise InvalidChannel(name, f"expected {family}:SYMBOL:TF or {family}:EXCHANGE:SYMBOL:TF")
        timeframe: Timeframe | None = _timeframe(name, rest[-1])
        rest = rest[:-1]
    else:
        if len(rest) not in (1, 2):
            raise InvalidChannel(name, f"expected {family}:SYMBOL or {family}:EXCHANGE:SYMBOL")
        timeframe = None
    exchange = _exchange(name, rest[0], exchanges) if len(rest) == 2 else None
    try:
        symbol = canonical_symbol(rest[-1])
    except InvalidSymbol as exc:
        raise InvalidChannel(name, str(exc)) from None
    return Channel(family=family, exchange=exchange, symbol=symbol, timeframe=timeframe)


def _timeframe(name: str, text: str) -> Timeframe:
    try:
        return Timeframe.parse(text)
    except ValueError:
        raise InvalidChannel(name, f"unknown timeframe {text!r}; expected one of {', '.join(TIMEFRAMES)}") from None


def _exchange(name: str, text: str, exchanges: Collection[str] | None) -> str:
    exchange = text.strip().lower()
    if not _EXCHANGE_NAME.fullmatch(exchange):
        raise InvalidChannel(name, f"malformed exchange name {text!r}")
    if exchanges is not None and exchange not in exchanges:
        known = ", ".join(sorted(exchanges)) or "none"
        raise InvalidChannel(name, f"unknown exchange {exchange!r}; expected one of {known}")
    return exchange


def _shorten(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_CHANNEL_LENGTH else text[:MAX_CHANNEL_LENGTH] + "…"


_FAMILY_LIST = ", ".join(FAMILIES)
