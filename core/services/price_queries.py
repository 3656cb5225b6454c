"""Price queries: the latest price per symbol, OHLCV buckets over a range, and cross-source consensus.

Use cases over two ports: a cache of the latest price per (symbol, source)
(Redis) and the tick history (PostgreSQL). Validation and the consensus
arithmetic are pure functions of their inputs; the clock is injected.

Decisions (also in docs/design/price-queries.md):

* **Latest price** of a symbol is the freshest source's latest tick, and
  ``source`` names that real source (the seed answered "aggregated"; a
  consensus has its own call). Ties on the timestamp go to the source whose
  name sorts first. The cache answers first; symbols it does not know
  (expired entries, Redis down) are read from PostgreSQL in one query. A
  symbol with no tick anywhere is absent from the answer, not an error.
  ``staleness_ms`` is never negative (ticks may be up to a minute ahead).
* **Price range** covers ``start_time <= ts < end_time`` (at most 2 years: seed 004's cap for aggregated
  ranges; every range is aggregated, the interval defaulting to 1h)
  and answers the first ``limit`` non-empty buckets, oldest first, so the
  next page starts at the last bucket's end. Buckets sit on UTC boundaries of
  the interval; a bucket cut by ``start_time`` keeps its boundary timestamp
  and holds only the ticks inside the range. A source filter is matched
  case-insensitively and an unknown source simply has no buckets.
* **Consensus** gives each source one vote: its latest price inside the
  window ``(end - 5 min, end]``. Counting ticks instead would let a chatty
  source (one tick per trade) outvote a quiet one (one tick a second), and a
  consensus is about agreement between venues. ``std_dev`` is the
  *population* standard deviation: the sources present are the whole
  population voting, and it is defined (0) for a single source. The
  arithmetic is exact Decimal (:mod:`core.domain.consensus`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from core.domain.consensus import Consensus, consensus_of
from core.domain.errors import InvalidArgument
from core.domain.prices import MAX_SOURCE_LENGTH
from core.domain.symbols import canonical_symbol
from core.domain.timeframes import Timeframe

logger = logging.getLogger(__name__)

MAX_SYMBOLS = 100
MAX_RANGE_DAYS = 730  # seed 004: aggregated ranges up to 2 years (raw ones 90 days; the route has no raw form)
MAX_RANGE_MS = MAX_RANGE_DAYS * 24 * 3600 * 1000
DEFAULT_INTERVAL = Timeframe.H1
DEFAULT_RANGE_LIMIT = 1_000
MAX_RANGE_LIMIT = 10_000
CONSENSUS_WINDOW_MS = 5 * 60 * 1000
# Last millisecond a google.protobuf.Timestamp can hold (9999-12-31T23:59:59.999Z).
MAX_TIME_MS = 253_402_300_799_999


class SourcePrice(Protocol):
    """One source's tick of a symbol (the cache's and the history's rows both fit)."""

    @property
    def symbol(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def price(self) -> Decimal: ...
    @property
    def volume(self) -> Decimal: ...
    @property
    def ts_ms(self) -> int: ...


class LatestPriceCache(Protocol):
    async def latest(self, symbol: str) -> Sequence[SourcePrice]: ...


@dataclass(frozen=True, slots=True)
class RangeQuery:
    """A validated price-range request: ticks with ``start_ms <= ts < end_ms``."""

    symbol: str
    start_ms: int
    end_ms: int
    interval: Timeframe
    source: str | None
    limit: int


@dataclass(frozen=True, slots=True)
class PriceBucket:
    open_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    num_feeds: int


class PriceHistory(Protocol):
    """Reads of stored ticks; each raises :class:`~core.domain.errors.Unavailable` when the store is down."""

    async def latest(self, symbols: Sequence[str]) -> Sequence[SourcePrice]: ...
    async def buckets(self, query: RangeQuery) -> Sequence[PriceBucket]: ...
    async def latest_per_source(
        self, symbols: Sequence[str], *, after_ms: int, until_ms: int
    ) -> Sequence[SourcePrice]: ...


@dataclass(frozen=True, slots=True)
class LatestQuote:
    symbol: str
    source: str
    price: Decimal
    volume: Decimal
    ts_ms: int
    staleness_ms: int
    cached: bool = False  # answered by the latest-price cache, not PostgreSQL


def parse_symbols(symbols: Sequence[str]) -> list[str]:
    """Canonical, de-duplicated symbols in request order; InvalidArgument naming a bad one."""
    if not symbols:
        raise InvalidArgument("at least one symbol is required")
    if len(symbols) > MAX_SYMBOLS:
        raise InvalidArgument(f"at most {MAX_SYMBOLS} symbols per request (got {len(symbols)})")
    return list(dict.fromkeys(canonical_symbol(s) for s in symbols))


def check_time(name: str, ms: int | None) -> int:
    if ms is None:
        raise InvalidArgument(f"{name} is required")
    if not 0 <= ms <= MAX_TIME_MS:
        raise InvalidArgument(f"{name} must be between 1970-01-01 and 9999-12-31 UTC")
    return ms


def range_query(
    symbol: str, *, start_ms: int | None, end_ms: int | None, interval: Timeframe | None, source: str, limit: int
) -> RangeQuery:
    """Validate a price-range request; each InvalidArgument message names the offending field."""
    start = check_time("start_time", start_ms)
    end = check_time("end_time", end_ms)
    if end <= start:
        raise InvalidArgument("end_time must be after start_time")
    if end - start > MAX_RANGE_MS:
        raise InvalidArgument(f"the range from start_time to end_time is longer than {MAX_RANGE_DAYS} days")
    if limit == 0:
        limit = DEFAULT_RANGE_LIMIT
    if not 1 <= limit <= MAX_RANGE_LIMIT:
        raise InvalidArgument(f"limit must be 1 to {MAX_RANGE_LIMIT}, or 0 for {DEFAULT_RANGE_LIMIT} (got {limit})")
    wanted_source = source.strip().lower()
    if len(wanted_source) > MAX_SOURCE_LENGTH:
        raise InvalidArgument(f"source is longer than {MAX_SOURCE_LENGTH} characters")
    return RangeQuery(canonical_symbol(symbol), start, end, interval or DEFAULT_INTERVAL, wanted_source or None, limit)


def freshest(prices: Iterable[SourcePrice]) -> SourcePrice | None:
    """The newest tick; on equal timestamps the source whose name sorts first."""
    return min(prices, key=lambda p: (-p.ts_ms, p.source), default=None)


def votes_by_symbol(rows: Iterable[SourcePrice]) -> dict[str, dict[str, Decimal]]:
    """One vote per (symbol, source): the price of that source's newest tick."""
    newest: dict[tuple[str, str], SourcePrice] = {}
    for row in rows:
        current = newest.get((row.symbol, row.source))
        if current is None or row.ts_ms > current.ts_ms:
            newest[(row.symbol, row.source)] = row
    votes: dict[str, dict[str, Decimal]] = {}
    for (symbol, source), row in newest.items():
        votes.setdefault(symbol, {})[source] = row.price
    return votes


FALLBACK_LOG_EVERY_S = 5.0


class PriceQueries:
    def __init__(self, cache: LatestPriceCache, history: PriceHistory, *, clock_ms: Callable[[], int]) -> None:
        self._cache = cache
        self._history = history
        self._clock_ms = clock_ms
        # the fallback is said at most every FALLBACK_LOG_EVERY_S, with how many reads it served: a Redis
        # outage under load otherwise writes one line per request
        self._fallback_logged_at = -FALLBACK_LOG_EVERY_S
        self._fallbacks_unlogged = 0
        # latest-price reads per symbol the cache answered (hit) or PostgreSQL had to (miss): /metrics
        self.cache_hits = self.cache_misses = 0

    async def latest(self, symbols: Sequence[str]) -> list[LatestQuote]:
        """The freshest source's latest price per known symbol, in request order."""
        wanted = parse_symbols(symbols)
        found = await self._from_cache(wanted)
        missing = [s for s in wanted if s not in found]
        from_cache = set(found)
        self.cache_hits += len(wanted) - len(missing)
        self.cache_misses += len(missing)
        if missing:
            for symbol, row in _freshest_by_symbol(await self._history.latest(missing)).items():
                found.setdefault(symbol, row)
        now = self._clock_ms()
        return [
            LatestQuote(p.symbol, p.source, p.price, p.volume, p.ts_ms, max(0, now - p.ts_ms), s in from_cache)
            for s, p in ((s, found[s]) for s in wanted if s in found)
        ]

    async def price_range(
        self,
        symbol: str,
        *,
        start_ms: int | None,
        end_ms: int | None,
        interval: Timeframe | None,
        source: str,
        limit: int,
    ) -> list[PriceBucket]:
        """OHLCV buckets oldest first: the first ``limit`` non-empty buckets from ``start_ms``."""
        query = range_query(symbol, start_ms=start_ms, end_ms=end_ms, interval=interval, source=source, limit=limit)
        return list(await self._history.buckets(query))

    async def consensus(self, symbols: Sequence[str], *, at_ms: int | None) -> list[Consensus]:
        """Consensus per symbol over the window ending at ``at_ms`` (now when None), in request order."""
        wanted = parse_symbols(symbols)
        end = self._clock_ms() if at_ms is None else check_time("time", at_ms)
        rows = await self._history.latest_per_source(wanted, after_ms=end - CONSENSUS_WINDOW_MS, until_ms=end)
        votes = votes_by_symbol(rows)
        return [consensus_of(s, votes[s], end) for s in wanted if s in votes]

    async def _from_cache(self, symbols: Sequence[str]) -> dict[str, SourcePrice]:
        """What the cache knows; a cache that fails counts as empty (the history answers instead)."""
        results = await asyncio.gather(*(self._cache.latest(s) for s in symbols), return_exceptions=True)
        found: dict[str, SourcePrice] = {}
        failures = 0
        for symbol, result in zip(symbols, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancellation and the like go through
                failures += 1
                continue
            best = freshest(result)
            if best is not None:
                found[symbol] = best
        if failures:
            self._fallbacks_unlogged += 1
            now = time.monotonic()
            if now - self._fallback_logged_at >= FALLBACK_LOG_EVERY_S:
                first = next(r for r in results if isinstance(r, Exception))
                logger.warning(
                    "latest-price cache unreadable for %d symbols, reading PostgreSQL (%d reads since the last "
                    "such line): %r",
                    failures,
                    self._fallbacks_unlogged,
                    first,
                )
                self._fallback_logged_at, self._fallbacks_unlogged = now, 0
        return found


def _freshest_by_symbol(rows: Iterable[SourcePrice]) -> dict[str, SourcePrice]:
    grouped: dict[str, list[SourcePrice]] = {}
    for row in rows:
        grouped.setdefault(row.symbol, []).append(row)
    return {symbol: p for symbol, group in grouped.items() if (p := freshest(group)) is not None}
