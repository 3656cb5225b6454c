"""Reads of the indicators: the latest MACD-V of a series, its current trade signal, the alert history.

Validation and the page-token format live here; the stores answer already
validated queries. The history is newest first and keyset-paginated on
``(triggered_at, id)``; the token is that pair sealed with an AEAD, versioned,
in URL-safe base64 and opaque to callers.
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from core.domain.errors import InvalidArgument, NotFound, WarmingUp
from core.domain.indicators import MacdVParams
from core.domain.signals import Direction, Stage, Strength, derive_strength
from core.domain.symbols import canonical_symbol
from core.domain.timeframes import TIMEFRAMES, Timeframe
from core.services.indicators import AlertRecord, IndicatorReading, IndicatorStates, StoredCloses

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000
PAGE_TOKEN_VERSION = 3
_PAGE_TOKEN = struct.Struct(">qq")  # triggered_at (epoch ms) and id of the last alert served, sealed


@dataclass(frozen=True, slots=True)
class AlertQuery:
    """One page of alert history, newest first; ``None`` filters match everything."""

    exchange_id: int | None
    symbol: str | None
    timeframe: Timeframe | None
    since_ms: int | None
    after: tuple[int, int] | None  # (triggered_ms, id) of the last alert of the previous page
    limit: int


class AlertReader(Protocol):
    async def latest(self, exchange_id: int, symbol: str, timeframe: Timeframe) -> AlertRecord | None: ...
    async def page(self, query: AlertQuery) -> list[AlertRecord]: ...


SIGNAL_TYPE_STATE = "momentum_state"  # public signal_type of a current signal (an alert's are in core.domain.signals)


@dataclass(frozen=True, slots=True)
class CurrentSignal:
    """The signal of a series' latest ready reading (docs/design/current-signal.md)."""

    reading: IndicatorReading
    signal_type: str
    direction: Direction
    strength: Strength
    stage: Stage
    price: Decimal  # the close of the reading's candle
    time_ms: int  # that candle's close time


def current_signal(reading: IndicatorReading, price: Decimal) -> CurrentSignal:
    """Direction from the signal line (bullish at or above it, as the stage rules read "rising"), strength from
    |MACD-V| on the alerts' floors, the reading's stage; price and time of the reading's candle."""
    value = reading.value
    direction = Direction.BULLISH if value.macd_v >= value.signal else Direction.BEARISH
    return CurrentSignal(
        reading=reading,
        signal_type=SIGNAL_TYPE_STATE,
        direction=direction,
        strength=derive_strength(value.macd_v),
        stage=value.stage,
        price=price,
        time_ms=reading.timeframe.close_time(value.open_time),
    )


@dataclass(frozen=True, slots=True)
class AlertPage:
    records: list[AlertRecord]
    next_page_token: str  # empty on the last page


class IndicatorQueries:
    def __init__(
        self,
        *,
        states: IndicatorStates,
        history: StoredCloses,
        alerts: AlertReader,
        exchange_ids: Mapping[str, int],
        page_tokens: PageTokens,
        params: MacdVParams | None = None,
    ) -> None:
        self._page_tokens = page_tokens
        self._states = states
        self._history = history
        self._alerts = alerts
        self._exchange_ids = exchange_ids
        self._params = params or MacdVParams()

    async def indicator(self, exchange: str, symbol: str, timeframe: Timeframe | None) -> IndicatorReading:
        name, exchange_id = self._exchange(exchange)
        symbol = canonical_symbol(symbol)
        tf = _required(timeframe)
        value = await self._states.latest((name, symbol, tf))
        symbol_id = await self._history.symbol_id(exchange_id, symbol)
        if value is None and symbol_id is None:
            raise NotFound(f"unknown symbol {symbol!r} on exchange {name!r}: no MACD-V for it")
        if value is None:
            raise WarmingUp(f"no MACD-V for {name} {symbol} {tf} yet: no candle of it has closed since indicators ran")
        if not value.ready:
            raise WarmingUp(f"MACD-V for {name} {symbol} {tf} is still warming up (too few closed candles)")
        return IndicatorReading(name, exchange_id, symbol, symbol_id or 0, tf, value, self._params)

    async def signal(self, exchange: str, symbol: str, timeframe: Timeframe | None) -> CurrentSignal:
        """The current signal of a series, from its latest ready MACD-V reading (NotFound/WarmingUp as
        :meth:`indicator`); the price is the exact close of the reading's candle."""
        reading = await self.indicator(exchange, symbol, timeframe)
        value = reading.value
        closes = await self._history.closes_before(
            reading.exchange_id, [(reading.symbol, reading.timeframe, value.open_time + 1)], 1
        )
        found = closes[0] if closes else []
        if not found or found[-1].open_time != value.open_time:
            raise WarmingUp(f"the candle of the last MACD-V of {reading.exchange} {reading.symbol} is not stored yet")
        return current_signal(reading, found[-1].price)

    async def last_alert(self, exchange: str, symbol: str, timeframe: Timeframe | None) -> AlertRecord | None:
        """The most recent alert of a series, if any."""
        _, exchange_id = self._exchange(exchange)
        return await self._alerts.latest(exchange_id, canonical_symbol(symbol), _required(timeframe))

    async def alert_history(
        self,
        *,
        exchange: str,
        symbol: str,
        timeframe: Timeframe | None,
        since_ms: int | None,
        page_size: int,
        page_token: str,
    ) -> AlertPage:
        if page_size == 0:
            page_size = DEFAULT_PAGE_SIZE
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be between 1 and {MAX_PAGE_SIZE} (got {page_size})")
        if since_ms is not None and since_ms < 0:
            raise InvalidArgument("since_time must not be before 1970-01-01 UTC")
        query = AlertQuery(
            exchange_id=self._exchange(exchange)[1] if exchange.strip() else None,  # empty: every exchange
            symbol=canonical_symbol(symbol) if symbol.strip() else None,
            timeframe=timeframe,
            since_ms=since_ms,
            after=self._page_tokens.decode(page_token) if page_token else None,
            limit=page_size + 1,
        )
        records = await self._alerts.page(query)
        if len(records) <= page_size:
            return AlertPage(records, "")
        last = records[page_size - 1]
        return AlertPage(records[:page_size], self._page_tokens.encode(last.triggered_ms, last.id))

    def _exchange(self, exchange: str) -> tuple[str, int]:
        """The exchange's name and id: an empty name is InvalidArgument, an unknown one NotFound."""
        name = exchange.strip().lower()
        if not name:
            raise InvalidArgument("exchange is required")
        if name not in self._exchange_ids:
            raise NotFound(f"unknown exchange {exchange!r}")
        return name, self._exchange_ids[name]


def _required(timeframe: Timeframe | None) -> Timeframe:
    if timeframe is None:
        raise InvalidArgument(f"timeframe is required; one of {', '.join(TIMEFRAMES)}")
    return timeframe


class PageTokens:
    """Opaque cursors of alert pages: ``(time, id)`` of the last alert served, sealed with an AEAD
    (ChaCha20-Poly1305) under a key derived from a secret the core instances share (``shared_secrets`` in
    PostgreSQL, through HKDF-SHA256).

    The id is an internal one and a cursor travels to public clients, so the
    pair is encrypted and authenticated with a random nonce: a client can
    neither read the id nor forge or alter a cursor, and any instance of the
    deployment can read any instance's cursor. The version byte is the
    associated data. Cursors of version 2 (the former XOR pad and HMAC) are
    refused as expired: a client starts again from the first page
    (docs/design/page-tokens.md).
    """

    def __init__(self, key: bytes) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(key)
        self._aead = ChaCha20Poly1305(derived)

    def encode(self, triggered_ms: int, alert_id: int) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, _PAGE_TOKEN.pack(triggered_ms, alert_id), _VERSION_BYTE)
        return base64.urlsafe_b64encode(_VERSION_BYTE + nonce + sealed).decode().rstrip("=")

    def decode(self, token: str) -> tuple[int, int]:
        """``(triggered_ms, id)`` of a token :meth:`encode` made with the same secret; InvalidArgument otherwise."""
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
        except (ValueError, binascii.Error, UnicodeEncodeError):
            raise InvalidArgument(_BAD_TOKEN) from None
        if raw[:1] in _RETIRED_VERSIONS and len(raw) == _RETIRED_TOKEN_BYTES:
            raise InvalidArgument(_EXPIRED_TOKEN)
        if len(raw) != _TOKEN_BYTES or raw[:1] != _VERSION_BYTE:
            raise InvalidArgument(_BAD_TOKEN)
        nonce, sealed = raw[1 : 1 + _NONCE_BYTES], raw[1 + _NONCE_BYTES :]
        try:
            plain = self._aead.decrypt(nonce, sealed, _VERSION_BYTE)
        except InvalidTag:
            raise InvalidArgument(_BAD_TOKEN) from None
        triggered_ms, alert_id = _PAGE_TOKEN.unpack(plain)
        return int(triggered_ms), int(alert_id)


_HKDF_INFO = b"perseus alert page token v3"
_VERSION_BYTE = bytes([PAGE_TOKEN_VERSION])
_NONCE_BYTES = 12
_TAG_BYTES = 16
_TOKEN_BYTES = 1 + _NONCE_BYTES + _PAGE_TOKEN.size + _TAG_BYTES
_RETIRED_VERSIONS = (b"\x02",)  # the XOR pad and a 12-byte HMAC tag: version, time, masked id, tag
_RETIRED_TOKEN_BYTES = 1 + 8 + 8 + 12
_BAD_TOKEN = "malformed page_token; pass the next_page_token of the previous page"
_EXPIRED_TOKEN = "expired page_token: it was made by an earlier release; start again from the first page"
