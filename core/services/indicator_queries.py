"""Reads of the indicators: the latest MACD-V of a series, its current trade signal, the alert history.

Validation and the page-token format live here; the stores answer already
validated queries. The history is newest first and keyset-paginated on
``(triggered_at, id)``; the token is that pair, versioned, in URL-safe base64
and opaque to callers.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from core.domain.errors import InvalidArgument, NotFound
from core.domain.indicators import MacdVParams, MacdVValue
from core.domain.symbols import canonical_symbol
from core.domain.timeframes import TIMEFRAMES, Timeframe
from core.services.indicators import AlertRecord, IndicatorStates, StoredCloses

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1_000
PAGE_TOKEN_VERSION = 2
_PAGE_TOKEN = struct.Struct(">Bqq")  # version, triggered_at (epoch ms), masked id of the last alert served


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


@dataclass(frozen=True, slots=True)
class IndicatorReading:
    """The latest MACD-V of a series with everything internal callers see."""

    exchange: str
    exchange_id: int
    symbol: str
    symbol_id: int  # 0 when the symbol is not registered
    timeframe: Timeframe
    value: MacdVValue
    params: MacdVParams


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
        if value is None:
            raise NotFound(f"no MACD-V for {name} {symbol} {tf} yet: no candle of it has closed since indicators ran")
        if not value.ready:
            raise NotFound(f"MACD-V for {name} {symbol} {tf} is still warming up (too few closed candles)")
        symbol_id = await self._history.symbol_id(exchange_id, symbol)
        return IndicatorReading(name, exchange_id, symbol, symbol_id or 0, tf, value, self._params)

    async def signal(self, exchange: str, symbol: str, timeframe: Timeframe | None) -> AlertRecord:
        """The current trade signal of a series: its most recent alert."""
        name, exchange_id = self._exchange(exchange)
        symbol = canonical_symbol(symbol)
        tf = _required(timeframe)
        record = await self._alerts.latest(exchange_id, symbol, tf)
        if record is None:
            raise NotFound(f"no trade signal for {name} {symbol} {tf} yet")
        return record

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
    """Opaque cursors of alert pages: ``(time, id)`` of the last alert served, sealed with a secret the
    core instances share (``shared_secrets`` in PostgreSQL).

    The id is an internal one, and a cursor travels to public clients, so it
    is masked (XOR with a keyed hash of the time) and the token carries a MAC:
    a client can neither read the id nor forge a cursor, and any instance can
    read any instance's cursor.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encode(self, triggered_ms: int, alert_id: int) -> str:
        body = _PAGE_TOKEN.pack(PAGE_TOKEN_VERSION, triggered_ms, alert_id ^ self._pad(triggered_ms))
        return base64.urlsafe_b64encode(body + self._tag(body)).decode().rstrip("=")

    def decode(self, token: str) -> tuple[int, int]:
        """``(triggered_ms, id)`` of a token :meth:`encode` made; InvalidArgument otherwise."""
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
            body, tag = raw[: _PAGE_TOKEN.size], raw[_PAGE_TOKEN.size :]
            version, triggered_ms, masked = _PAGE_TOKEN.unpack(body)
        except (ValueError, binascii.Error, struct.error, UnicodeEncodeError):
            raise InvalidArgument(_BAD_TOKEN) from None
        if version != PAGE_TOKEN_VERSION or not hmac.compare_digest(tag, self._tag(body)):
            raise InvalidArgument(_BAD_TOKEN)
        return triggered_ms, masked ^ self._pad(triggered_ms)

    def _pad(self, triggered_ms: int) -> int:
        digest = hmac.digest(self._key, b"pad" + triggered_ms.to_bytes(8, "big", signed=True), "sha256")
        return int.from_bytes(digest[:8], "big", signed=True)

    def _tag(self, body: bytes) -> bytes:
        return hmac.digest(self._key, b"tag" + body, "sha256")[:_TAG_BYTES]


_TAG_BYTES = 12
_BAD_TOKEN = "malformed page_token; pass the next_page_token of the previous page"
