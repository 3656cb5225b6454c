"""Candle reads: the Redis window first, PostgreSQL for what lies before it, merged without gap or duplicate.

The window holds the newest closed candles of each (exchange, symbol,
timeframe) and PostgreSQL holds all of them, so the answer is: what the
window has in the requested range, completed by PostgreSQL strictly before
the window's oldest candle. Candles come back oldest first, at most ``limit``:
with no ``start`` the newest ones (before ``end`` if given), with ``start``
the first ones from it. Ranges are half-open: ``start <= open_time < end``.

When the window cannot be read (Redis down or frozen: the reader raises
``StorageUnavailable("redis")``), the whole answer comes from PostgreSQL: it
holds every closed candle (the writer stores a candle there before it adds it
to the window), so the answer is the same, only slower. A read never mixes a
half-read window with history. PostgreSQL being unavailable is UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.domain.errors import InvalidArgument, NotFound, StorageUnavailable
from core.domain.symbols import canonical_symbol
from core.domain.timeframes import Timeframe

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000
DEFAULT_TIMEFRAME = Timeframe.H1
# Checked queries kept by their raw arguments (a hot read repeats the same few): at most this many, then all go.
QUERY_MEMO_SIZE = 4096
REDIS = "redis"  # the dependency named by a window read's StorageUnavailable


@dataclass(frozen=True, slots=True)
class CandleQuery:
    exchange: str
    symbol: str
    timeframe: Timeframe
    limit: int
    start_ms: int | None
    end_ms: int | None

    @property
    def newest(self) -> bool:
        """No start: the newest ``limit`` candles (before ``end``)."""
        return self.start_ms is None


@dataclass(frozen=True, slots=True)
class Span:
    """What to read from one store: ``start <= open_time < end``, the first (or newest) ``limit``."""

    start_ms: int | None
    end_ms: int | None
    limit: int
    newest: bool


Rows = list[tuple[int, bytes]]  # (open time, serialized Candle), oldest first


class CandleRows(Protocol):
    """The window reads raise ``StorageUnavailable("redis")`` when Redis cannot answer; ``history`` raises
    ``StorageUnavailable("postgresql")`` when PostgreSQL cannot."""

    async def window_oldest(self, query: CandleQuery) -> int | None: ...

    async def window(self, query: CandleQuery, span: Span) -> Rows: ...

    async def newest_in_window(self, query: CandleQuery, span: Span) -> tuple[int | None, list[bytes]]: ...

    async def history(self, query: CandleQuery, span: Span) -> Rows: ...


class ExchangeIds(Protocol):
    def __contains__(self, name: object) -> bool: ...


class CandleQueries:
    def __init__(self, rows: CandleRows, exchanges: ExchangeIds) -> None:
        self._rows = rows
        self._exchanges = exchanges
        self._checked: dict[tuple[object, ...], CandleQuery] = {}

    def query(
        self,
        exchange: str,
        symbol: str,
        timeframe: Timeframe | None,
        limit: int,
        start_ms: int | None,
        end_ms: int | None,
    ) -> CandleQuery:
        """A checked query: unknown exchange → NotFound; bad symbol, limit or range → InvalidArgument.

        A query checked once is kept by its raw arguments, so a repeated read (the hot candle path) costs one
        dictionary look-up instead of the normalizing and the symbol's regular expression; its exchange is
        still looked up every time. Only valid queries are kept: a refused one is refused again."""
        raw = (exchange, symbol, timeframe, limit, start_ms, end_ms)
        checked = self._checked.get(raw)
        if checked is not None and checked.exchange in self._exchanges:
            return checked
        checked = self._check(raw)
        if len(self._checked) >= QUERY_MEMO_SIZE:
            self._checked.clear()
        self._checked[raw] = checked
        return checked

    def _check(self, raw: tuple[str, str, Timeframe | None, int, int | None, int | None]) -> CandleQuery:
        exchange, symbol, timeframe, limit, start_ms, end_ms = raw
        name = exchange.strip().lower()
        if not name:
            raise InvalidArgument("exchange is required")
        if name not in self._exchanges:
            raise NotFound(f"unknown exchange {exchange!r}")
        if not 0 <= limit <= MAX_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_LIMIT} (got {limit})")
        if start_ms is not None and end_ms is not None and end_ms <= start_ms:
            raise InvalidArgument("end_time must be after start_time")
        timeframe = timeframe or DEFAULT_TIMEFRAME
        return CandleQuery(name, canonical_symbol(symbol), timeframe, limit or DEFAULT_LIMIT, start_ms, end_ms)

    async def candles(self, query: CandleQuery) -> Sequence[bytes]:
        try:
            return await self._merged(query)
        except StorageUnavailable as exc:
            if exc.dependency != REDIS:
                raise
        history = await self._rows.history(query, Span(query.start_ms, query.end_ms, query.limit, query.newest))
        return [c for _, c in history]

    async def _merged(self, query: CandleQuery) -> Sequence[bytes]:
        if query.newest:  # the common read: the window answers alone when it holds enough
            oldest, recent = await self._rows.newest_in_window(query, Span(None, query.end_ms, query.limit, True))
            missing = query.limit - len(recent)
            if not missing:
                return recent
            older = await self._rows.history(query, Span(None, _before(query.end_ms, oldest), missing, True))
            return [c for _, c in older] + recent
        oldest = await self._rows.window_oldest(query)
        if oldest is not None and query.start_ms is not None and query.start_ms >= oldest:
            return [
                c for _, c in await self._rows.window(query, Span(query.start_ms, query.end_ms, query.limit, False))
            ]
        older = await self._rows.history(query, Span(query.start_ms, _before(query.end_ms, oldest), query.limit, False))
        missing = query.limit - len(older)
        newer = await self._window(query, oldest, oldest, query.end_ms, missing, newest=False) if missing else []
        return [c for _, c in older + newer]

    async def _window(
        self,
        query: CandleQuery,
        oldest: int | None,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        *,
        newest: bool,
    ) -> Rows:
        if oldest is None or (end_ms is not None and end_ms <= oldest):
            return []
        return await self._rows.window(query, Span(start_ms, end_ms, limit, newest))


def _before(end_ms: int | None, window_oldest: int | None) -> int | None:
    """PostgreSQL is read strictly before the window (and before ``end``)."""
    bounds = [b for b in (end_ms, window_oldest) if b is not None]
    return min(bounds) if bounds else None
